"""On a pure cgroup v2 hierarchy: the doctor says which controllers are enabled and
writable, and minirt agrees, also where the cgroup tree is rooted at a busy cgroup.

Guest-only: vmtest/guest-run names this file on pytest's command line in the
issue-13 QEMU guest (booted with cgroup_no_v1=all). Its name does not match
``test_*.py``, so ``make test`` on a host, whatever its cgroups, does not collect it.
"""

import os
import time

from conftest import CGROUP_PARENT, require
from minirt import doctor
from minirt.engine import Engine
from minirt.errors import CgroupError
from minirt.kernel import mounts, namespaces, syscalls
from minirt.kernel.cgroups import cgroup_version, mounted_hierarchies
from minirt.kernel.cgroups.v2 import V2Driver
from minirt.lab.checks.child import in_child
from test_doctor import checks, probe_in_child

CONTROLLERS = ("memory", "cpu", "pids")


def pure_v2_root() -> str:
    found = mounted_hierarchies()
    require(os.geteuid() == 0 and cgroup_version(found) == 2 and "unified" in found,
            "needs root on a pure cgroup v2 machine (the vmtest guest)")
    return found["unified"]


def subtree_control(directory: str) -> list[str]:
    with open(os.path.join(directory, "cgroup.subtree_control")) as f:
        return f.read().split()


def test_each_controller_is_enabled_and_its_limit_file_written(tmp_path):
    root = pure_v2_root()
    try:  # as after boot: the root hands pids to no child (refused if a child uses it)
        with open(os.path.join(root, "cgroup.subtree_control"), "w") as f:
            f.write("-pids")
        disabled = True
    except OSError:
        disabled = False
    report = probe_in_child(lambda: None)
    found = checks(report)
    assert found["cgroup version"]["value"] == "v2"
    for controller in CONTROLLERS:
        check = found[f"cgroup {controller}"]
        assert check["ok"] and check["value"] == "writable", check
        assert "cgroup.subtree_control" in check["detail"], check
        assert controller in subtree_control(root)
    if disabled:
        assert "enabled now" in found["cgroup pids"]["detail"]
    assert not [d for d in os.listdir(root) if d.startswith("minirt-probe-")]


def in_a_container_cgroup_namespace(action) -> dict:
    """Run ``action()`` in a child that lives in a cgroup of its own, in a new cgroup and
    mount namespace with cgroup2 mounted afresh: as a process in a Docker container
    (cgroupns=private) sees it, the cgroup at the root of its tree holds processes."""
    root = pure_v2_root()
    with open(os.path.join(root, "cgroup.subtree_control"), "w") as f:
        f.write(" ".join("+" + c for c in CONTROLLERS))  # available to the nested cgroup
    nested = os.path.join(root, f"minirt-nested-{os.getpid()}")
    os.mkdir(nested)

    def inside():
        with open(os.path.join(nested, "cgroup.procs"), "w") as f:
            f.write("0")
        namespaces.unshare(["cgroup", "mnt"])
        mounts.make_private("/")
        syscalls.umount(root, 2)  # MNT_DETACH: one superblock cannot be mounted twice there
        syscalls.mount("cgroup2", root, "cgroup2")
        return action()
    try:
        return in_child(inside)
    finally:
        deadline = time.monotonic() + 5
        while os.path.isdir(nested):
            for child in sorted(os.listdir(nested)):  # what the action left, deepest first
                if os.path.isdir(os.path.join(nested, child)):
                    for grandchild in os.listdir(os.path.join(nested, child)):
                        if os.path.isdir(os.path.join(nested, child, grandchild)):
                            os.rmdir(os.path.join(nested, child, grandchild))
                    os.rmdir(os.path.join(nested, child))
            try:
                os.rmdir(nested)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def test_a_cgroup_root_that_holds_processes_cannot_enable_controllers():
    """The doctor says no controller is usable there (the "no internal processes"
    rule), rather than "writable" because a probe directory could be made."""
    found = checks(in_a_container_cgroup_namespace(lambda: doctor.probe().to_dict()))
    assert found["cgroup version"]["value"] == "v2"
    for controller in CONTROLLERS:
        check = found[f"cgroup {controller}"]
        assert not check["ok"] and check["value"] == "not enabled", check
        assert "holds processes" in check["detail"], check


def test_minirt_there_runs_without_limits_and_refuses_limits_clearly(state_root, image_store):
    """And minirt agrees with the doctor: a run works, each limit is a clear error."""
    def runs():
        engine = Engine(state_root, cgroup_parent=CGROUP_PARENT,
                        cgroups=V2Driver(parent=CGROUP_PARENT))
        result = {"plain": engine.run("busybox", ["true"]).exit_code}
        for name, option in (("memory", {"memory": "64m"}), ("pids", {"pids_limit": 16}),
                             ("cpu", {"cpus": 0.5})):
            try:
                engine.run("busybox", ["true"], **option)
                result[name] = ""
            except CgroupError as e:
                result[name] = str(e)
        result["left"] = engine.cgroups.leftovers()
        return result

    result = in_a_container_cgroup_namespace(runs)
    assert result["plain"] == 0
    for controller in CONTROLLERS:
        assert f"'{controller}' controller" in result[controller], result
        assert "could not be enabled" in result[controller], result
    assert result["left"] == []
