"""A student copies ``minirt/`` alone into an empty folder: with only the standard library
and psutil it builds busybox and runs a container; the optional pieces say what they need.

``python -S`` starts without site-packages (so nothing from this venv leaks in);
the folder holds the copy and psutil, nothing else.
"""

import os
import shutil
import subprocess
import sys

import psutil
import pytest

import minirt

pytestmark = pytest.mark.usefixtures("root_tier")


@pytest.fixture
def copy(tmp_path):
    folder = tmp_path / "student"
    shutil.copytree(os.path.dirname(minirt.__file__), folder / "minirt",
                    ignore=shutil.ignore_patterns("__pycache__", "exercise.json"))
    shutil.copytree(os.path.dirname(psutil.__file__), folder / "psutil",
                    ignore=shutil.ignore_patterns("__pycache__"))
    state = tmp_path / "state"
    yield folder, str(state)
    from minirt.kernel import mounts
    mounts.unmount_all_under(str(state))


def bare(folder, state, *args):
    env = {"PATH": os.environ["PATH"], "MINIRT_ROOT": state, "MINIRT_HOST": "",
           "MINIRT_CGROUP_PARENT": f"minirt-test-{os.getpid()}"}
    return subprocess.run([sys.executable, "-S", "-m", "minirt", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_copy_runs_a_container_with_only_the_standard_library_and_psutil(copy):
    folder, state = copy
    imported = subprocess.run([sys.executable, "-S", "-c", "import pyroute2"], cwd=folder,
                              capture_output=True)
    assert imported.returncode != 0, "the bare interpreter must not see the venv's packages"
    init = bare(folder, state, "init")
    assert init.returncode == 0, init.stderr
    ran = bare(folder, state, "run", "--rm", "busybox", "echo", "hi")
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "hi\n", "")


def test_optional_pieces_say_what_they_need_in_one_line(copy):
    folder, state = copy
    assert bare(folder, state, "init").returncode == 0
    bridged = bare(folder, state, "run", "--rm", "--network", "bridge", "busybox", "true")
    assert bridged.returncode == 125
    assert bridged.stderr.splitlines() == [
        "minirt: --network bridge needs pyroute2, the netlink library minirt drives bridges "
        "and veths with: pip install pyroute2 (or use --network none or host)"]
    pulled = bare(folder, state, "pull", "127.0.0.1:1/nothing")
    assert pulled.returncode == 125 and len(pulled.stderr.splitlines()) == 1
    assert "pip install requests" in pulled.stderr
    doctor = bare(folder, state, "doctor")
    assert "seccomp" in doctor.stdout and "pip install pyseccomp" in doctor.stdout
