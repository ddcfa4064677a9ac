"""Shared fixtures: a private state root with busybox built, and tier checks.

Every test uses its own state root and its own cgroup parent
(``minirt-test-<pid>``), so leak checks look only at what the tests created.
Under ``MINIRT_STRICT=1`` (CI) a test that would skip for a missing
capability fails instead: a skipped isolation test is not a passing one.
"""

import os

# Tests check that rmi really deletes: no grace period for freshly written blobs
# (test_image_store shows the grace period itself). Set before minirt is imported.
os.environ.setdefault("MINIRT_GC_GRACE_SECONDS", "0")

import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from minirt.engine import Engine
from minirt.image import busybox
from minirt.kernel import mounts

STRICT = os.environ.get("MINIRT_STRICT") == "1"
CGROUP_PARENT = f"minirt-test-{os.getpid()}"


def require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false, or fail under MINIRT_STRICT=1."""
    if not condition:
        if STRICT:
            pytest.fail(f"MINIRT_STRICT=1 and this test cannot run: {reason}")
        pytest.skip(reason)


_tier = None


def tier() -> str:
    global _tier
    if _tier is None:
        from minirt import doctor
        _tier = doctor.probe().tier
    return _tier


@pytest.fixture
def root_tier():
    require(tier() == "root", f"needs the root tier (this machine is {tier()}); "
            "run the tests as root")


@pytest.fixture(scope="session")
def state_root():
    root = tempfile.mkdtemp(prefix="minirt-test-", dir="/var/tmp")
    os.chmod(root, 0o755)
    yield root
    mounts.unmount_all_under(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def image_store(state_root):
    engine = Engine(state_root)
    busybox.ensure(engine.images)
    return engine.images


@pytest.fixture
def engine(state_root, image_store, root_tier):
    """An Engine on the test state root; checks that each test leaves nothing behind."""
    engine = Engine(state_root, cgroup_parent=CGROUP_PARENT)
    yield engine
    assert_nothing_left(engine)


def assert_nothing_left(engine: Engine, timeout: float = 5.0) -> None:
    """No container dir, cgroup dir, mount, process, veth or address lease of ours remains."""
    deadline = time.monotonic() + timeout
    while True:
        leftovers = {
            "containers": os.listdir(engine.containers_dir) if os.path.isdir(engine.containers_dir) else [],
            "cgroups": engine.cgroups.leftovers(),
            "mounts": mounts.mount_points_under(engine.root),
            "processes": processes_in_cgroups(),
            "veths": new_veths(),
            "leases": leases_under(engine.root),
        }
        if not any(leftovers.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not any(leftovers.values()), f"left behind: {leftovers}"


def host_links(prefix: str = "mrt") -> set[str]:
    """Names of the host's interfaces starting with ``prefix`` (/sys/class/net: no netlink)."""
    try:
        return {n for n in os.listdir("/sys/class/net") if n.startswith(prefix)}
    except OSError:
        return set()


LINKS_AT_START = host_links()  # an earlier run's or the user's own minirt: not ours


def new_veths() -> list[str]:
    """Container veth ends (``mrt`` + 8 hex) that appeared since the tests started."""
    return sorted(n for n in host_links() - LINKS_AT_START if not n.startswith("mrtbr-"))


def leases_under(root: str) -> dict:
    """{network: [container ids]} still holding an address under state root ``root``."""
    import json
    found = {}
    directory = os.path.join(root, "networks")
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if name.endswith(".json"):
            try:
                with open(os.path.join(directory, name)) as f:
                    leases = json.load(f).get("leases") or {}
            except (OSError, ValueError):
                continue
            if leases:
                found[name[:-5]] = sorted(leases)
    return found


def pytest_sessionfinish(session, exitstatus):
    """Remove the bridges the tests' networks made (the default ``bridge`` network's
    included): like docker0 they outlive their containers, but not the test run. And
    this run's own cgroup parents, when empty (each container's removal tries, but one
    removed while a sibling was being created leaves the parent behind)."""
    import glob
    for parent in glob.glob(f"/sys/fs/cgroup/*/{CGROUP_PARENT}") + \
            glob.glob(f"/sys/fs/cgroup/unified/{CGROUP_PARENT}"):
        try:
            os.rmdir(parent)
        except OSError:
            pass  # not empty (a leak the tests report themselves) or gone already
    # Only port-less ones: a bridge with ports belongs to containers still running (another
    # test session's, on a shared machine), and is left to its owner.
    leftover = sorted(n for n in host_links("mrtbr-") - LINKS_AT_START
                      if not os.listdir(f"/sys/class/net/{n}/brif"))
    if leftover:
        try:
            from pyroute2 import IPRoute
        except ImportError:
            return
        with IPRoute() as ipr:
            for name in leftover:
                for index in ipr.link_lookup(ifname=name):
                    try:
                        ipr.link("del", index=index)
                    except Exception:
                        pass


def processes_in_cgroups() -> list[int]:
    """Pids whose cgroup path mentions our test cgroup parent."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                if CGROUP_PARENT in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def minirt_cli(*args, state_root: str, input=None, timeout: float = 60, env=None, **kw):
    """Run ``python -m minirt ARGS`` as a user would, with the test state root.

    Direct mode (``MINIRT_HOST=``) unless ``env`` names a daemon: a developer's daemon
    on the default socket must not take the tests' commands to its own state."""
    full_env = {**os.environ, "MINIRT_ROOT": state_root, "MINIRT_CGROUP_PARENT": CGROUP_PARENT,
                "MINIRT_HOST": "", **(env or {})}
    return subprocess.run([sys.executable, "-m", "minirt", *args], input=input, env=full_env,
                          capture_output=True, timeout=timeout, **kw)


def minirt_popen(*args, state_root: str, env_extra=None, **kw):
    env = {**os.environ, "MINIRT_ROOT": state_root, "MINIRT_CGROUP_PARENT": CGROUP_PARENT,
           "MINIRT_HOST": "", **(env_extra or {})}  # direct mode, as minirt_cli
    return subprocess.Popen([sys.executable, "-m", "minirt", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def container_init_pid(engine: Engine, timeout: float = 10.0) -> int:
    """The host pid of the running test container's PID 1 (NSpid ends in 1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in processes_in_cgroups():
            try:
                with open(f"/proc/{pid}/status") as f:
                    nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
            except (OSError, StopIteration):
                continue
            try:
                started = os.readlink(f"/proc/{pid}/exe") != os.path.realpath(sys.executable)
            except OSError:
                continue
            if len(nspid) == 2 and nspid[1] == "1" and started:  # PID 1, after its execve
                return pid
        time.sleep(0.02)
    raise AssertionError("no running container found")


def wait_for(predicate, timeout: float = 10.0, what: str = "the condition"):
    """``predicate()``'s first true value, polled every 50 ms; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def dead(pid: int) -> bool:
    """Gone, or a zombie waiting for its parent (or the host's init) to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def shims_under(root: str) -> list[int]:
    """Live shim processes working in a container directory under ``root``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "minirt-shim":
                    continue
            if os.readlink(f"/proc/{pid}/cwd").startswith(root):
                found.append(int(pid))
        except OSError:
            continue  # gone, or a zombie (no cwd any more)
    return found
