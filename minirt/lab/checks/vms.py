"""Checks for notebook 4 (containers vs virtual machines).

The learner's functions run on real data: memory per instance measured in the
notebook, and ``uname -a`` as printed by this host, by a container (root tier)
and by the QEMU guest the notebook booted. The kernel release the learner
parses from the VM's output is compared with the one written in the header of
the kernel file QEMU booted: two independent sources that must agree.
"""

import os
import subprocess

from .verdict import run_check

MIB, GIB = 1024 ** 2, 1024 ** 3


def note(verdict, text: str) -> None:
    """A neutral line in the verdict: something the check could not try here."""
    verdict.lines.append(f"  · {text}")


def size(n) -> str:
    """Bytes as a person would say them: 128 MiB, 2 GiB, 300."""
    for unit, factor in (("GiB", GIB), ("MiB", MIB)):
        if n >= factor:
            return f"{n / factor:g} {unit}"
    return f"{n:g}"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- exercise 4.1: density ---------------------------------------------------------------------

FIT_CASES = [(100, 1000, 10), (300, 1000, 3), (600, 1000, 1), (1000, 1000, 1), (1500, 1000, 0),
             (128 * MIB, 2 * GIB, 16), (5.5 * MIB, 2 * GIB, 372), (195 * MIB, 2 * GIB, 10)]


def check_instances_that_fit(instances_that_fit, measured: dict | None = None,
                             budget_bytes: int = 2 * GIB) -> bool:
    """``instances_that_fit(per_instance_bytes, budget_bytes) -> int``.

    ``measured`` maps a label (e.g. ``"VM (QEMU TCG (no KVM))"``) to memory per
    instance in bytes, measured in the notebook: the check runs the learner's
    function on those too and says what the answer means.
    """
    return run_check("Exercise 4.1: how many fit?", _fit_body, instances_that_fit,
                     measured or {}, budget_bytes)


def _fit_body(verdict, instances_that_fit, measured, budget_bytes):
    for per, budget, wanted in FIT_CASES:
        got = instances_that_fit(per, budget)
        call = f"instances_that_fit({size(per)}, {size(budget)})"
        if not _is_int(got):
            verdict.bad(f"{call} returns an int", f"it returned {got!r} ({type(got).__name__}): "
                        "you cannot start a fraction of an instance")
            return
        if not verdict.expect(got == wanted, f"{call} == {wanted}",
                              f"it returned {got}: only whole instances fit, so round down "
                              "(floor division //), never up"):
            return
    if not measured:
        note(verdict, "no measured figures were passed in: run the measurement cells first")
        return
    for label, per in measured.items():
        if not per or per <= 0:
            continue
        wanted = int(budget_bytes // per)
        got = instances_that_fit(per, budget_bytes)
        verdict.expect(got == wanted, f"measured here: {got} × {label} "
                       f"({per / MIB:.1f} MiB each) fit in {budget_bytes // MIB} MiB",
                       f"for {per:.0f} bytes each it returned {got}, expected {wanted}")


# --- exercise 4.2: which kernel? -------------------------------------------------------------

UNAME_SAMPLES = [
    ("Linux build-01 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) "
     "x86_64 GNU/Linux\n", "6.1.0-18-amd64"),
    ("Linux laptop 5.15.0-91-generic #101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023 x86_64 "
     "x86_64 x86_64 GNU/Linux", "5.15.0-91-generic"),
    ("  Linux minirt-vm 6.6.8 #1 SMP Mon Jan  1 00:00:00 UTC 2024 x86_64 GNU/Linux  ", "6.6.8"),
]


def host_uname() -> str:
    return subprocess.run(["uname", "-a"], capture_output=True, text=True, check=True).stdout


def container_uname() -> tuple[str | None, str]:
    """``uname -a`` printed inside a minirt container (or None and why not)."""
    if os.geteuid() != 0:
        return None, "starting a container needs the root tier here"
    try:
        import minirt
        result = minirt.run("busybox", ["uname", "-a"])
    except Exception as e:  # a set-up problem, not the learner's
        return None, f"the container did not run: {e}"
    if result.exit_code != 0:
        return None, f"the container exited with {result.exit_code}: {result.errors.strip()}"
    return result.output, ""


def check_kernel_release(kernel_release_from_uname, vm_uname: str | None = None,
                         vm_kernel: str | None = None) -> bool:
    """``kernel_release_from_uname(text) -> str``: the release field of ``uname -a``.

    ``vm_uname`` is what the VM printed for ``uname -a``; ``vm_kernel`` the
    kernel file QEMU booted, whose header names its release independently.
    """
    return run_check("Exercise 4.2: which kernel?", _kernel_body, kernel_release_from_uname,
                     vm_uname, vm_kernel)


def _kernel_body(verdict, parse, vm_uname, vm_kernel):
    for text, wanted in UNAME_SAMPLES:
        got = parse(text)
        if not verdict.expect(got == wanted, f"{text.split()[1]}'s uname -a -> {wanted!r}",
                              f"it returned {got!r}: uname -a prints kernel name, hostname, "
                              "release, ... separated by spaces (and may end in a newline)"):
            return
    host = os.uname().release
    got = parse(host_uname())
    if not verdict.expect(got == host, f"this host's uname -a -> {host!r}",
                          f"it returned {got!r} for this host"):
        return
    inside, why = container_uname()
    container_release = None
    if inside is None:
        note(verdict, f"the container part was skipped: {why}")
    else:
        container_release = parse(inside)
        verdict.expect(container_release == host,
                       f"inside a container -> {container_release!r}: the host's own kernel",
                       f"it returned {container_release!r} for {inside.strip()!r}")
    if not vm_uname:
        note(verdict, "no VM output was passed in: boot the VM in the cells above first")
        return
    vm_release = parse(vm_uname)
    header = ""
    if vm_kernel:
        from ..vm import kernel_release
        try:
            header = kernel_release(vm_kernel)
        except OSError:
            header = ""
    if header:
        verdict.expect(vm_release == header,
                       f"inside the VM -> {vm_release!r}, as the header of {vm_kernel} says",
                       f"it returned {vm_release!r}; the kernel file says {header!r}")
    else:
        verdict.expect(bool(vm_release) and vm_release in vm_uname,
                       f"inside the VM -> {vm_release!r}", f"it returned {vm_release!r}")
    if verdict.passed:
        note(verdict, f"so: the container runs the host's kernel ({host}); the VM booted its "
             f"own ({vm_release})" if container_release else
             f"so: the host runs {host}; the VM booted its own kernel ({vm_release})")

__all__ = ["check_instances_that_fit", "check_kernel_release"]
