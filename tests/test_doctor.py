"""`minirt doctor` finds the privilege tier by trying, for each of the three tiers.

The rootless and unprivileged tiers are produced for real on this machine:
a process that drops to uid 65534 (user namespaces still allowed), and one in
a user namespace whose ``max_user_namespaces`` is 0, then drops to 65534.
"""

import json
import os
import subprocess
import sys

from conftest import require
from minirt import doctor
from minirt.lab.checks.child import in_child
from minirt.kernel import mounts, namespaces

NOBODY = 65534


def probe_in_child(prepare) -> dict:
    """Run ``prepare()`` then ``doctor.probe()`` in a forked child; return the report."""
    def probe():
        prepare()
        return doctor.probe().to_dict()
    return in_child(probe, timeout=60)


def drop_to_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    os.environ["HOME"] = "/nonexistent"
    os.chdir("/")


def checks(report) -> dict:
    return {c["name"]: c for c in report["checks"]}


def test_doctor_command_prints_a_table_and_exits_0():
    result = subprocess.run([sys.executable, "-m", "minirt", "doctor"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for name in ("euid", "user namespaces", "cgroup version", "cgroup memory", "cgroup cpu",
                 "cgroup pids", "overlayfs", "pivot_root", "busybox (static)", "pychroot",
                 "qemu", "bootable kernel", "kvm"):
        assert name in result.stdout
    assert "tier: " in result.stdout


def test_doctor_json_is_machine_readable():
    result = subprocess.run([sys.executable, "-m", "minirt", "doctor", "--json"],
                            capture_output=True, text=True, timeout=60)
    report = json.loads(result.stdout)
    assert report["tier"] in ("root", "rootless", "unprivileged")
    assert all({"name", "ok", "value"} <= set(c) for c in report["checks"])


def test_root_tier_as_root():
    require(os.geteuid() == 0, "needs root")
    report = probe_in_child(lambda: None)
    assert report["tier"] == "root"
    assert checks(report)["pivot_root"]["ok"] and checks(report)["overlayfs"]["ok"]


def test_an_ordinary_user_with_user_namespaces_is_rootless():
    require(os.geteuid() == 0, "needs root to become another user")
    with open("/proc/sys/user/max_user_namespaces") as f:
        require(int(f.read()) > 0, "user namespaces are disabled on this machine")

    def ordinary_user_outside_any_chroot():
        mounts.leave_chroot()  # the kernel refuses user namespaces inside a chroot
        drop_to_nobody()

    report = probe_in_child(ordinary_user_outside_any_chroot)
    assert report["tier"] == "rootless"
    assert checks(report)["euid"]["value"] == str(NOBODY)
    assert checks(report)["user namespaces"]["ok"]
    assert not checks(report)["cgroup memory"]["ok"], "nobody cannot create cgroups"


def test_no_user_namespaces_means_unprivileged():
    """Binder's situation: an ordinary user who may not create user namespaces."""
    require(os.geteuid() == 0, "needs root to build the unprivileged setting")

    def lose_user_namespaces():
        # Our own user namespace, ids mapped 1:1 (uid_map written from inside
        # is limited to one id, so map via a helper process that is still root
        # outside); in it, nested user namespaces are capped at 0; then drop to nobody.
        mounts.leave_chroot()
        map_ids_one_to_one_in_new_user_namespace()
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write("0")
        drop_to_nobody()

    report = probe_in_child(lose_user_namespaces)
    assert report["tier"] == "unprivileged"
    assert not checks(report)["user namespaces"]["ok"]
    assert not checks(report)["container namespaces"]["ok"]


def map_ids_one_to_one_in_new_user_namespace() -> None:
    """unshare(CLONE_NEWUSER), with uid/gid maps written by a forked helper."""
    ready_r, ready_w = os.pipe()
    helper = os.fork()
    if helper == 0:  # still in the parent user namespace, with its privileges
        code = 1
        try:
            os.close(ready_w)
            os.read(ready_r, 1)
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{os.getppid()}/{name}", "w") as f:
                    f.write("0 0 4294967295")
            code = 0
        finally:
            os._exit(code)
    os.close(ready_r)
    namespaces.unshare(["user"])
    os.write(ready_w, b"1")
    os.close(ready_w)
    _, status = os.waitpid(helper, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError("could not write the uid/gid maps")
