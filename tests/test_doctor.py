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
from minirt.kernel import namespaces

NOBODY = 65534


def probe_in_child(prepare) -> dict:
    """Fork, run ``prepare()`` then ``doctor.probe()`` in the child; return the report."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            prepare()
            data = json.dumps(doctor.probe().to_dict()).encode()
        except BaseException as e:
            data = json.dumps({"error": repr(e)}).encode()
        with os.fdopen(write_fd, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        report = json.loads(f.read())
    os.waitpid(pid, 0)
    assert "error" not in report, report
    return report


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
    report = probe_in_child(drop_to_nobody)
    assert report["tier"] == "rootless"
    assert checks(report)["euid"]["value"] == str(NOBODY)
    assert checks(report)["user namespaces"]["ok"]
    assert not checks(report)["cgroup memory"]["ok"], "nobody cannot create cgroups"


def test_no_user_namespaces_means_unprivileged():
    require(os.geteuid() == 0, "needs root to build the unprivileged setting")
    ready_r, ready_w = os.pipe()
    mapped_r, mapped_w = os.pipe()

    def enter_a_namespace_without_user_namespaces():
        # Our own user namespace (ids mapped 1:1), where we set the limit on
        # nested user namespaces to 0, then drop to nobody: like Binder.
        namespaces.unshare(["user"])
        os.write(ready_w, b"1")
        os.read(mapped_r, 1)
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write("0")
        drop_to_nobody()

    pid_holder = {}
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            enter_a_namespace_without_user_namespaces()
            data = json.dumps(doctor.probe().to_dict()).encode()
        except BaseException as e:
            data = json.dumps({"error": repr(e)}).encode()
        with os.fdopen(write_fd, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(write_fd)
    pid_holder["pid"] = pid
    os.read(ready_r, 1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write("0 0 4294967295")
    os.write(mapped_w, b"1")
    with os.fdopen(read_fd, "rb") as f:
        report = json.loads(f.read())
    os.waitpid(pid, 0)
    assert "error" not in report, report
    assert report["tier"] == "unprivileged"
    assert not checks(report)["user namespaces"]["ok"]
    assert not checks(report)["container namespaces"]["ok"]
