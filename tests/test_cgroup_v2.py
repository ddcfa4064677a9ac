"""The cgroup v2 driver, on a real cgroup2 hierarchy.

On a hybrid machine the v2 tree exists but v1 holds memory, cpu and pids; the
driver still creates the container's cgroup there, moves it in, accounts CPU
time (cpu.stat works without the cpu controller), kills through cgroup.kill,
and removes it. Where a controller is present, its limit is enforced; where it
is not, asking for that limit is a clear error. (Issue 13 runs the limit tests
in a VM with a pure v2 hierarchy.)
"""

import os
import signal
import tempfile
import time

import pytest

from conftest import CGROUP_PARENT, assert_nothing_left, container_init_pid, minirt_popen
from minirt.engine import Engine
from minirt.errors import CgroupError
from minirt.kernel import syscalls
from minirt.kernel.cgroups import mounted_hierarchies
from minirt.kernel.cgroups.v2 import V2Driver


@pytest.fixture
def v2_engine(state_root, image_store, root_tier):
    mount_point = mounted_hierarchies().get("unified")
    own_mount = None
    if mount_point is None:  # no cgroup2 anywhere: mount one for the test
        own_mount = tempfile.mkdtemp(prefix="minirt-cgroup2-")
        syscalls.mount("cgroup2", own_mount, "cgroup2")
        mount_point = own_mount
    driver = V2Driver(parent=CGROUP_PARENT, mount_point=mount_point)
    engine = Engine(state_root, cgroup_parent=CGROUP_PARENT, cgroups=driver)
    yield engine
    try:
        assert_nothing_left(engine)
    finally:
        if own_mount:
            syscalls.umount(own_mount)
            os.rmdir(own_mount)


def test_container_runs_in_its_own_v2_cgroup(v2_engine):
    result = v2_engine.run("busybox", ["cat", "/proc/self/cgroup"])
    assert result.exit_code == 0
    assert "0::/\n" in result.output, "the cgroup namespace makes its cgroup look like the root"


def test_v2_cgroup_holds_the_container_and_counts_its_cpu(v2_engine, state_root):
    cli = minirt_popen("run", "--rm", "busybox", "sh", "-c", "while :; do :; done",
                       state_root=state_root, env_extra={"MINIRT_CGROUP_VERSION": "2"})
    try:
        init = container_init_pid(v2_engine)
        [directory] = v2_engine.cgroups.leftovers()
        with open(os.path.join(directory, "cgroup.procs")) as f:
            assert str(init) in f.read().split()
        cgroup = v2_engine.cgroups.cgroup(os.path.basename(directory))
        cpu0 = cgroup.usage()["cpu_ns"]
        time.sleep(0.5)
        assert cgroup.usage()["cpu_ns"] - cpu0 > 0.2e9
    finally:
        cli.send_signal(signal.SIGTERM)
        cli.communicate(timeout=10)
    assert cli.returncode == 137


def test_cgroup_kill_empties_the_cgroup(v2_engine, state_root):
    cli = minirt_popen("run", "--rm", "busybox", "sh", "-c", "sleep 100 & sleep 100",
                       state_root=state_root, env_extra={"MINIRT_CGROUP_VERSION": "2"})
    container_init_pid(v2_engine)
    [directory] = v2_engine.cgroups.leftovers()
    cgroup = v2_engine.cgroups.cgroup(os.path.basename(directory))
    cgroup.kill_all()
    assert cgroup.procs() == []
    cli.communicate(timeout=10)
    assert cli.returncode == 137


@pytest.mark.parametrize("controller, options", [
    ("memory", {"memory": "64m"}),
    ("pids", {"pids_limit": 32}),
    ("cpu", {"cpus": 0.5}),
])
def test_v2_limits_hold_or_fail_clearly(v2_engine, controller, options):
    if controller in v2_engine.cgroups.available_controllers():
        probe = {"memory": ["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"],
                 "pids": ["sh", "-c", "for i in $(seq 64); do sleep 5 & done; wait"],
                 "cpu": ["sh", "-c", "cat /proc/self/cgroup"]}[controller]
        result = v2_engine.run("busybox", probe, **options)
        if controller == "memory":
            assert result.exit_code == 137 and result.oom_killed
        elif controller == "pids":
            assert "can't fork" in result.errors
        else:  # the quota itself is checked while it runs in test_limits (v1) and issue 13 (v2)
            assert result.exit_code == 0
    else:
        with pytest.raises(CgroupError, match=f"'{controller}' controller"):
            v2_engine.run("busybox", ["true"], **options)
