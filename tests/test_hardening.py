"""The escape suite: ten ways out of a container, each stopped by default and (for the lab's
before/after) let through by ``--privileged`` where a privilege is what stopped it.

The probe (tests/escape_probe.py) runs inside a busybox container with the host's
Python bind-mounted read-only, tries each escape and reports what the kernel
said. Nothing it does harms the host (see its docstring). Plus the defaults one
by one, observed from inside: capabilities, no_new_privs, seccomp, masked and
read-only paths, device rules, --user, --read-only, --ulimit, --cap-add.
"""

import json
import os
import tempfile

import pytest

from conftest import require
from minirt.errors import UsageError
from minirt.security import capabilities

pytestmark = pytest.mark.usefixtures("root_tier")

PROBE = os.path.join(os.path.dirname(__file__), "escape_probe.py")
HOST_PYTHON = ["/usr:/usr:ro", "/usr/lib:/lib:ro", "/usr/lib64:/lib64:ro",
               f"{PROBE}:/probe.py:ro"]

# What stops each escape by default, and whether --privileged lets it through.
EXPECTED = {
    "chroot escape": ("pivot_root: the old root is detached, nothing is above /", False),
    "mount the host disk": ("CAP_SYS_ADMIN, seccomp", True),
    "open the kernel log via mknod": ("the device rules (cgroup v1 devices)", True),
    "load a kernel module": ("CAP_SYS_MODULE, seccomp", True),
    "write /proc (sysrq, sys)": ("read-only paths", True),
    "ptrace another process": ("CAP_SYS_PTRACE, seccomp", True),
    "read kernel memory": ("masked paths", True),
    "keyctl": ("seccomp (the keyring is not namespaced)", True),
    "unshare a user namespace": ("seccomp (clone/unshare flags)", True),
    "an inherited fd": ("every fd but 0, 1, 2 closed before execve", False),
}


def root_disk() -> tuple[int, int, str]:
    """Major, minor and filesystem type of the host's root filesystem."""
    dev = os.stat("/").st_dev
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[2] == f"{os.major(dev)}:{os.minor(dev)}":
                return os.major(dev), os.minor(dev), fields[fields.index("-") + 1]
    return os.major(dev), os.minor(dev), ""


@pytest.fixture(scope="module")
def marker():
    """A file only the host can see, on the root filesystem."""
    fd, path = tempfile.mkstemp(prefix="minirt-escape-marker-", dir="/var/tmp")
    os.close(fd)
    yield path
    os.unlink(path)


def probe(engine, marker: str, **options) -> dict:
    major, minor, fstype = root_disk()
    require(major != 0 and fstype, "the host's root is not on a block device here")
    host_fd = os.open(marker, os.O_RDONLY)   # inheritable: would a container see it?
    os.set_inheritable(host_fd, True)
    try:
        result = engine.run("busybox", ["/usr/bin/python3", "-I", "/probe.py", marker,
                                        str(major), str(minor), fstype, str(host_fd)],
                            volumes=HOST_PYTHON, network="none", **options)
    finally:
        os.close(host_fd)
    assert result.exit_code == 0, result.errors
    return json.loads(result.output)


def test_every_escape_fails_in_a_default_container(engine, marker):
    results = probe(engine, marker)
    assert set(results) == set(EXPECTED)
    escaped = {name: r["how"] for name, r in results.items() if r["escaped"]}
    assert not escaped, f"escapes that worked: {escaped}"
    assert "EPERM" in results["keyctl"]["how"]
    assert "EPERM" in results["unshare a user namespace"]["how"]
    assert "EPERM" in results["load a kernel module"]["how"]
    assert "EPERM" in results["mount the host disk"]["how"]
    assert "EPERM" in results["open the kernel log via mknod"]["how"]


def test_privileged_lets_through_what_privileges_stopped(engine, marker):
    results = probe(engine, marker, privileged=True)
    for name, (stopped_by, privileged_escapes) in EXPECTED.items():
        assert results[name]["escaped"] == privileged_escapes, \
            f"{name} (stopped by {stopped_by}) under --privileged: {results[name]['how']}"
    assert "mounted the host's disk" in results["mount the host disk"]["how"]


# --- the defaults, one by one ---------------------------------------------------------------

def status_fields(engine, *names, **options) -> dict:
    result = engine.run("busybox", ["cat", "/proc/self/status"], network="none", **options)
    assert result.exit_code == 0, result.errors
    fields = dict(line.split(":", 1) for line in result.output.splitlines() if ":" in line)
    return {n: fields[n].strip() for n in names}


def decode(mask: str) -> frozenset:
    value = int(mask, 16)
    return frozenset(n for n, bit in capabilities.NUMBERS.items() if value >> bit & 1)


def test_capabilities_no_new_privs_and_seccomp_by_default(engine):
    got = status_fields(engine, "CapBnd", "CapEff", "NoNewPrivs", "Seccomp")
    assert decode(got["CapBnd"]) == capabilities.DOCKER_DEFAULT
    assert decode(got["CapEff"]) == capabilities.DOCKER_DEFAULT
    assert got["NoNewPrivs"] == "1" and got["Seccomp"] == "2"   # 2: a filter is loaded


def test_cap_add_cap_drop_and_security_opts(engine):
    got = status_fields(engine, "CapBnd", "NoNewPrivs", "Seccomp",
                        cap_add=["NET_ADMIN"], cap_drop=["chown", "CAP_KILL"],
                        security_opt=["seccomp=unconfined", "no-new-privileges=false"])
    assert decode(got["CapBnd"]) == (capabilities.DOCKER_DEFAULT | {"CAP_NET_ADMIN"}) - \
        {"CAP_CHOWN", "CAP_KILL"}
    assert got["NoNewPrivs"] == "0" and got["Seccomp"] == "0"
    dropped = engine.run("busybox", ["sh", "-c", "touch /f && chown 1 /f"], network="none",
                         cap_drop=["CHOWN"])
    assert dropped.exit_code != 0 and "Operation not permitted" in dropped.errors
    with pytest.raises(UsageError, match="unknown capability 'CAP_FLY'"):
        engine.run("busybox", ["true"], cap_add=["CAP_FLY"])
    with pytest.raises(UsageError, match="unsupported --security-opt"):
        engine.run("busybox", ["true"], security_opt=["apparmor=x"])


def test_masked_and_read_only_paths(engine):
    out = engine.run("busybox", ["sh", "-c",
                                 "wc -c < /proc/timer_list; ls /sys/firmware | wc -l; "
                                 "echo x > /proc/sys/kernel/domainname 2>&1 || echo refused; "
                                 "grep -c ' /proc/sys ' /proc/self/mountinfo"],
                     network="none")
    timer_bytes, firmware_entries, write, ro_mounts = out.output.split("\n")[:4]
    assert timer_bytes == "0" and firmware_entries == "0"
    assert "refused" in write or "Read-only" in out.errors
    assert int(ro_mounts) >= 1


def test_user_read_only_and_ulimit(engine):
    who = engine.run("busybox", ["sh", "-c", "id -u; id -g; echo $HOME; "
                                 "grep CapEff /proc/self/status"], user="nobody",
                     network="none")
    uid, gid, home, caps = who.output.split("\n")[:4]
    assert (uid, gid, home) == ("65534", "65534", "/nonexistent")  # from its /etc/passwd
    assert decode(caps.split()[1]) == frozenset()
    numeric = engine.run("busybox", ["id"], user="1234:5678", network="none").output
    assert "uid=1234" in numeric and "gid=5678" in numeric
    with pytest.raises(Exception, match="unable to find user nosuchuser"):
        engine.run("busybox", ["true"], user="nosuchuser", network="none")
    ro = engine.run("busybox", ["sh", "-c", "touch /x 2>&1; touch /dev/shm/y && echo shm-ok"],
                    read_only=True, network="none")
    assert "Read-only file system" in ro.output and "shm-ok" in ro.output
    limits = engine.run("busybox", ["sh", "-c", "ulimit -n; ulimit -Hn"], ulimits=["nofile=100:200"],
                        network="none")
    assert limits.output.split() == ["100", "200"]
