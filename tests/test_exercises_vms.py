"""Notebook 4's exercises: the reference solutions pass their checks, wrong answers fail.

The kernel check runs the learner's parser on this host's ``uname -a`` and, as
root, on a container's; the VM's line is built from the release in the header
of the kernel file the lab boots (booting QEMU here would add seconds and is
tested in test_vm.py).
"""

import os
import sys

import pytest

from minirt.lab import vm
from minirt.lab.checks.vms import MIB, check_instances_that_fit, check_kernel_release

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "notebooks", "solutions"))
import vms as solution  # noqa: E402

MEASURED = {"container": 5.7 * MIB, "VM (QEMU TCG (no KVM))": 195 * MIB}


def needs_root():
    if os.geteuid() != 0:
        (pytest.fail if os.environ.get("MINIRT_STRICT") == "1" else pytest.skip)("needs root")


def vm_uname_line():
    try:
        kernel = vm.find_kernel()
    except Exception:
        return None, None
    release = vm.kernel_release(kernel)
    return (f"Linux minirt-vm {release} #1 SMP PREEMPT_DYNAMIC x86_64 GNU/Linux\n"
            if release else None), kernel


def test_density_solution_passes_on_measured_figures(capsys):
    assert check_instances_that_fit(solution.instances_that_fit, MEASURED)
    assert "10 × VM" in capsys.readouterr().out


def test_wrong_density_answers_fail():
    assert not check_instances_that_fit(lambda per, budget: round(budget / per), MEASURED)
    assert not check_instances_that_fit(lambda per, budget: budget / per, MEASURED)
    assert not check_instances_that_fit(lambda per, budget: int(per // budget), MEASURED)
    assert not check_instances_that_fit(lambda per, budget: -(-budget // per), MEASURED)  # ceil


def test_kernel_release_solution_passes_on_host_and_container(request, monkeypatch, capsys):
    needs_root()
    engine = request.getfixturevalue("engine")  # a private state root and cgroup parent
    monkeypatch.setenv("MINIRT_ROOT", engine.root)
    monkeypatch.setenv("MINIRT_CGROUP_PARENT", engine.cgroup_parent)
    vm_line, kernel = vm_uname_line()
    assert check_kernel_release(solution.kernel_release_from_uname, vm_line, kernel)
    out = capsys.readouterr().out
    assert "inside a container" in out and "the host's own kernel" in out
    if vm_line:
        assert "inside the VM" in out


def test_wrong_kernel_release_answers_fail():
    vm_line, kernel = vm_uname_line()
    for wrong in (lambda text: text.split()[1],            # the hostname
                  lambda text: text.split()[-1],           # the OS name
                  lambda text: text.split(" ")[2],         # breaks on leading spaces
                  lambda text: os.uname().release):        # ignores its input
        assert not check_kernel_release(wrong, vm_line, kernel)
