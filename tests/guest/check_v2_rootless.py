"""The rootless tier on cgroup v2 with delegation (issue 13), in the QEMU guest.

An administrator (or systemd's Delegate=) gives a user a cgroup directory with
its cgroup.procs and cgroup.subtree_control; the user's processes live in a
leaf below it. minirt, run by that user, creates its containers' cgroups in
that subtree and enforces real memory and pids limits. A user without one is
told, honestly, that limits fall back to weaker rlimits.

Guest-only (see check_v2_doctor.py): named on pytest's command line by vmtest/guest-run.
"""

import os
import shutil
import tempfile

import pytest

from check_v2_doctor import pure_v2_root
from test_rootless import NOBODY, run_as_nobody

CONTROLLERS = ("memory", "pids", "cpu")


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def nobody_store():
    store = tempfile.mkdtemp(prefix="minirt-v2-rootless-", dir="/var/tmp")
    os.chown(store, NOBODY, NOBODY)
    yield store
    shutil.rmtree(store, ignore_errors=True)


def run_as_nobody_in(cgroup: str, store: str, *args) -> tuple[int, str, str]:
    """`minirt ARGS` as nobody, started inside ``cgroup`` (where its session would live)."""
    return run_as_nobody(store, *args,
                         prepare=lambda: write(os.path.join(cgroup, "cgroup.procs"), "0"))


@pytest.fixture
def delegated_subtree():
    """/sys/fs/cgroup/lab-user owned by nobody, with the session leaf below it."""
    root = pure_v2_root()
    write(os.path.join(root, "cgroup.subtree_control"), " ".join("+" + c for c in CONTROLLERS))
    delegated = os.path.join(root, "lab-user")
    session = os.path.join(delegated, "session")
    os.mkdir(delegated)
    try:
        for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
            os.chown(os.path.join(delegated, name), NOBODY, NOBODY)
        os.mkdir(session)
        yield session
    finally:
        for directory, _, _ in sorted(os.walk(delegated), key=lambda w: len(w[0]), reverse=True):
            os.rmdir(directory)  # minirt removed its own cgroups; these are empty now


def test_a_user_with_a_delegated_subtree_gets_real_limits(delegated_subtree, nobody_store):
    code, _, err = run_as_nobody_in(delegated_subtree, nobody_store, "init")
    assert code == 0, err
    code, out, _ = run_as_nobody_in(delegated_subtree, nobody_store, "doctor")
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("cgroup ")}
    for controller in ("memory", "pids"):
        assert " yes " in rows[controller] and "lab-user" in rows[controller], rows
    code, _, err = run_as_nobody_in(delegated_subtree, nobody_store, "run", "--rm", "-m", "64m",
                                    "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=200M",
                                    "count=1")
    assert code == 137 and "OOMKilled" in err, err
    assert "weaker" not in err, "real cgroup limits, not the rlimit fallback"
    code, _, err = run_as_nobody_in(delegated_subtree, nobody_store, "run", "--rm",
                                    "--pids-limit", "8", "busybox", "sh", "-c",
                                    "for i in $(seq 20); do sleep 2 & done; wait")
    assert "can't fork" in err, err
    code, _, err = run_as_nobody_in(delegated_subtree, nobody_store, "run", "--rm",
                                    "--cpus", "0.5", "busybox", "true")
    assert code == 0, f"--cpus accepted: the cpu controller is delegated too ({err})"


def test_a_user_without_delegation_is_told_limits_are_weaker(nobody_store):
    root = pure_v2_root()
    leaf = os.path.join(root, "lab-guest")  # root-owned: nothing delegated
    os.mkdir(leaf)
    try:
        code, _, err = run_as_nobody_in(leaf, nobody_store, "init")
        assert code == 0, err
        code, _, err = run_as_nobody_in(leaf, nobody_store, "run", "--rm", "-m", "64m",
                                        "busybox", "true")
        assert code == 0 and "weaker than cgroups" in err, err
    finally:
        os.rmdir(leaf)
