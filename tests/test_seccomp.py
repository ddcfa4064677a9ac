"""The default seccomp filter on the real kernel (minirt/security/seccomp.py).

A filter can never be unloaded, so every check forks: the child sets
no_new_privs (as the container's init does), loads the filter, makes one system
call through libc's syscall(3) and sends back 0 or the errno through a pipe.
The same call made without a filter is the control: when *it* already fails
with EPERM (not root, or these tests themselves run under Docker's filter),
the check proves nothing and is skipped.
"""

import ctypes
import errno
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import require
from minirt.errors import ContainerStartError
from minirt.kernel import syscalls
from minirt.security import seccomp

pytestmark = pytest.mark.skipif(not seccomp.available(),
                                reason="pyseccomp or libseccomp.so.2 is missing")

# Docker's default capability set: what `docker run` keeps.
DOCKER_14 = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
})
WITH_SYS_ADMIN = DOCKER_14 | {"CAP_SYS_ADMIN"}
NO_FILTER = None

PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PTRACE_TRACEME = 0
KEYCTL_GET_KEYRING_ID = 0
KEY_SPEC_SESSION_KEYRING = -3
AF_VSOCK = 40
X32_SYSCALL_BIT = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def number(name: str) -> int:
    """The system call's number on this machine, as libseccomp knows it."""
    import pyseccomp
    return pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)


def syscall(name_or_number, *args) -> int:
    """Make a raw system call; OSError with its errno when it fails."""
    nr = number(name_or_number) if isinstance(name_or_number, str) else name_or_number
    result = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, f"{name_or_number}: {os.strerror(code)}")
    return result


def in_child(action, capabilities=DOCKER_14, prepare=None):
    """Run ``action`` in a forked child under the default filter for ``capabilities``
    (``NO_FILTER``: none), after ``prepare``; what it returned, or the errno it raised.
    Results travel as JSON, so ``action`` returns something json can carry."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            if prepare is not None:
                prepare()
            if capabilities is not NO_FILTER:
                syscalls.prctl(PR_SET_NO_NEW_PRIVS, 1)
                seccomp.load_default_filter(set(capabilities))
            try:
                reply = {"value": action()}
            except OSError as e:
                reply = {"errno": e.errno}
        except BaseException as e:  # noqa: BLE001 (the parent shows what went wrong)
            reply = {"error": f"{type(e).__name__}: {e}"}
        try:
            os.write(write_end, json.dumps(reply).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    reply = json.loads(data or b'{"error": "the child died without a word"}')
    assert "error" not in reply, reply["error"]
    return reply


def errno_of(action, capabilities=DOCKER_14, prepare=None) -> int:
    """0 when ``action`` succeeded in the child, else its errno."""
    return in_child(action, capabilities, prepare).get("errno", 0)


def denied_by_filter(action, expected=errno.EPERM, prepare=None) -> None:
    """``action`` fails with ``expected`` under Docker's 14 capabilities, and the
    control (no filter) shows it is the filter that refused."""
    control = errno_of(action, NO_FILTER, prepare)
    require(control != expected, f"without any filter this call already fails with "
            f"{errno.errorcode.get(control)}: nothing to learn here")
    assert errno_of(action, DOCKER_14, prepare) == expected


def private_mount_namespace() -> None:
    """Our own mount namespace, private: a mount that slips through stays in the child."""
    from minirt.kernel import mounts
    syscalls.unshare(CLONE_NEWNS)
    mounts.make_private("/")  # in a chroot (fresh-check) from the namespace's real root


def mount_tmpfs(target: str):
    return lambda: syscalls.mount("minirt-seccomp-test", target, "tmpfs")


# --- refused with the default capabilities ------------------------------------------

def test_keyctl_is_refused():
    denied_by_filter(lambda: syscall("keyctl", KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0))


def test_unshare_of_a_user_namespace_is_refused():
    denied_by_filter(lambda: syscalls.unshare(CLONE_NEWUSER))


def test_unshare_of_a_mount_namespace_is_refused():
    denied_by_filter(lambda: syscalls.unshare(CLONE_NEWNS))


def test_mount_is_refused(tmp_path):
    denied_by_filter(mount_tmpfs(str(tmp_path)), prepare=private_mount_namespace)


def test_init_module_is_refused():
    denied_by_filter(lambda: syscall("init_module", 0, 0, 0))


def test_ptrace_traceme_is_refused():
    denied_by_filter(lambda: syscall("ptrace", PTRACE_TRACEME, 0, 0, 0))


def test_perf_event_open_is_refused():
    denied_by_filter(lambda: syscall("perf_event_open", 0, 0, -1, -1, 0))


def test_clone3_looks_unimplemented():
    # Without a filter clone3(NULL, 0) is EINVAL (args too small); under it, ENOSYS.
    denied_by_filter(lambda: syscall("clone3", 0, 0), expected=errno.ENOSYS)


def test_clone_with_a_namespace_flag_is_refused():
    # fork(2) through raw clone with CLONE_NEWNET: the flag alone decides.
    def clone_into_new_net():
        pid = syscall("clone", CLONE_NEWNET | 17, 0, 0, 0, 0)  # 17 = SIGCHLD
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return pid
    denied_by_filter(clone_into_new_net)


def test_vsock_sockets_are_refused():
    denied_by_filter(lambda: socket.socket(AF_VSOCK, socket.SOCK_STREAM).close())


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the x32 ABI is x86-64's")
def test_the_x32_abi_is_filtered_too():
    # keyctl by its x32 number: the filter answers before the kernel looks at the
    # ABI (most kernels have x32 off and would say ENOSYS).
    x32_keyctl = X32_SYSCALL_BIT | number("keyctl")
    assert errno_of(lambda: syscall(x32_keyctl, 0, KEY_SPEC_SESSION_KEYRING, 0)) == errno.EPERM


def test_only_dockers_personas_pass():
    rng = random.Random(1)
    values = list(seccomp.ALLOWED_PERSONAS) + [
        1, 7, 9, 0x40000, 0x400000, 0x20001, 0x20009, 0x10008, 0x7FFFFFFF, 0x80000000,
        0xFFFFFFFE, 0xFFFFFFF7, 0xFFFDFFFF, 0xFFFDFFF7, 0x100000000, 0x100000008,
    ] + [rng.getrandbits(32) for _ in range(200)] + [rng.getrandbits(64) for _ in range(20)]

    def try_each():
        refused = []
        for value in values:
            try:
                syscall("personality", value)
                syscall("personality", 0)  # back to PER_LINUX
            except OSError as e:
                refused.append([value, e.errno])
        return refused

    refused = in_child(try_each)["value"]
    assert all(code == errno.EPERM for _, code in refused)
    assert {value for value, _ in refused} == \
        {value for value in values if value not in seccomp.ALLOWED_PERSONAS}


def test_every_listed_call_is_refused_by_the_kernel():
    """What ``denied_syscalls`` lists is what the loaded filter refuses.

    Every argument is -1, so each call fails on its arguments (EINVAL, EFAULT,
    EBADF, ENOSYS, ...) rather than do anything, in namespaces of the child's
    own; the control run shows which errno the kernel itself gives. vhangup
    takes no argument to spoil and is left out.
    """
    explained = seccomp.denied_syscalls(set(DOCKER_14))
    conditional = {"clone", "clone3", "personality", "socket"}
    names = sorted(name for name in explained
                   if name not in conditional | {"vhangup"} and number(name) >= 0)

    def try_each():
        results = {}
        for name in names:
            try:
                syscall(name, -1, -1, -1, -1, -1, -1)
                results[name] = 0
            except OSError as e:
                results[name] = e.errno
        return results

    def isolate():
        syscalls.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET)

    require(os.geteuid() == 0, "isolating the sweep in new namespaces needs root")
    control = in_child(try_each, NO_FILTER, prepare=isolate)["value"]
    judged = [name for name in names if control[name] != errno.EPERM]
    assert len(judged) > 40, f"too many calls refused even without a filter: {control}"
    filtered = in_child(try_each, prepare=isolate)["value"]
    assert {name: filtered[name] for name in judged if filtered[name] != errno.EPERM} == {}


# --- what still works -----------------------------------------------------------------

def test_ordinary_calls_still_work(tmp_path):
    path = tmp_path / "hello"
    path.write_text("hello")

    def ordinary():
        pid = os.getpid()
        with open(path) as f:
            text = f.read()
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()
        syscall("personality", 0xFFFFFFFF)  # asking is allowed
        return [pid > 0, text]

    assert in_child(ordinary)["value"] == [True, "hello"]


def test_fork_threads_and_subprocess_still_work():
    """fork uses clone without namespace flags; glibc's threads and posix_spawn try
    clone3 first, get ENOSYS and fall back to clone."""
    def make_processes():
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        forked = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        box = []
        thread = threading.Thread(target=lambda: box.append(threading.get_native_id()))
        thread.start()
        thread.join()
        spawned = subprocess.run(["/bin/sh", "-c", "exit 3"]).returncode
        return [forked, len(box), spawned]

    assert in_child(make_processes)["value"] == [7, 1, 3]


def test_unshare_is_refused_but_fork_works():
    def both():
        try:
            syscalls.unshare(CLONE_NEWUSER)
            unshared = 0
        except OSError as e:
            unshared = e.errno
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        return [unshared, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])]

    assert in_child(both)["value"] == [errno.EPERM, 0]


# --- capabilities bring calls back --------------------------------------------------

def test_sys_admin_allows_unshare_and_mount_again(tmp_path):
    require(os.geteuid() == 0, "mount namespaces and mounts need root")
    assert errno_of(lambda: syscalls.unshare(CLONE_NEWNS), WITH_SYS_ADMIN) != errno.EPERM
    assert errno_of(mount_tmpfs(str(tmp_path)), WITH_SYS_ADMIN,
                    prepare=private_mount_namespace) != errno.EPERM
    # ... and the kernel agreed: both really happened.
    assert errno_of(lambda: syscalls.unshare(CLONE_NEWNS), WITH_SYS_ADMIN) == 0
    assert errno_of(mount_tmpfs(str(tmp_path)), WITH_SYS_ADMIN,
                    prepare=private_mount_namespace) == 0
    assert not os.path.ismount(tmp_path)  # it stayed in the child's namespace


def test_sys_admin_makes_clone3_real_again():
    assert errno_of(lambda: syscall("clone3", 0, 0), WITH_SYS_ADMIN) != errno.ENOSYS


def test_sys_ptrace_allows_process_vm_readv():
    # Reading zero bytes from ourselves: harmless, and it shows which rule decided.
    read_nothing = lambda: syscall("process_vm_readv", os.getpid(), 0, 0, 0, 0, 0)  # noqa: E731
    assert errno_of(read_nothing, DOCKER_14) == errno.EPERM
    assert errno_of(read_nothing, DOCKER_14 | {"CAP_SYS_PTRACE"}) == 0


# --- denied_syscalls ---------------------------------------------------------------

def test_denied_syscalls_explains_each_entry():
    explained = seccomp.denied_syscalls(set(DOCKER_14))
    for name in ("keyctl", "add_key", "request_key", "mount", "umount2", "unshare", "setns",
                 "init_module", "finit_module", "ptrace", "perf_event_open", "bpf", "clone",
                 "clone3", "personality", "open_by_handle_at", "kexec_load", "userfaultfd",
                 "acct", "clock_settime", "iopl", "reboot", "move_pages"):
        assert name in explained, name
    for name, why in explained.items():
        assert why.strip() and "\n" not in why and len(why) <= 120, (name, why)
        assert number(name) != -1, f"{name}: libseccomp does not know it"
    assert "keyring" in explained["keyctl"]
    assert "shocker" in explained["open_by_handle_at"]
    assert "ENOSYS" in explained["clone3"]
    assert "chroot" not in explained  # Docker's 14 keep CAP_SYS_CHROOT


def test_capabilities_lift_what_docker_lifts():
    with_admin = seccomp.denied_syscalls(set(WITH_SYS_ADMIN))
    for name in ("mount", "umount2", "unshare", "setns", "clone", "clone3", "bpf",
                 "perf_event_open"):
        assert name not in with_admin, name
    for name in ("keyctl", "init_module", "ptrace", "open_by_handle_at", "kexec_load"):
        assert name in with_admin, name
    everything = {cap for _, unless, _ in seccomp.DENIED for cap in unless} | {"CAP_SYS_ADMIN"}
    # Even a container with every capability is refused what no namespace contains.
    assert set(seccomp.denied_syscalls(everything)) >= {
        "keyctl", "add_key", "request_key", "kexec_load", "userfaultfd", "personality",
        "pivot_root", "swapon"}
    assert "open_by_handle_at" in seccomp.denied_syscalls({"CAP_SYS_ADMIN"})
    assert "open_by_handle_at" not in seccomp.denied_syscalls({"dac_read_search"})


# --- loading -------------------------------------------------------------------------

def test_without_no_new_privs_or_sys_admin_the_kernel_refuses_the_filter():
    require(os.geteuid() == 0, "needs root, to become nobody")

    def as_nobody():
        os.setgid(65534)
        os.setuid(65534)  # every capability goes
        try:
            seccomp.load_default_filter(set(DOCKER_14))
        except ContainerStartError as e:
            return str(e)
        return "loaded"

    message = in_child(as_nobody, NO_FILTER)["value"]
    assert "no_new_privs" in message


def test_the_filter_costs_little(capsys):
    """Not a timed assertion: the numbers are printed for the curious."""
    rounds = 200_000

    def measure():
        def per_call():
            start = time.perf_counter_ns()
            for _ in range(rounds):
                os.getpid()
            return (time.perf_counter_ns() - start) / rounds
        before = per_call()
        syscalls.prctl(PR_SET_NO_NEW_PRIVS, 1)
        started = time.perf_counter_ns()
        seccomp.load_default_filter(set(DOCKER_14))
        load_us = (time.perf_counter_ns() - started) / 1000
        return [before, per_call(), load_us]

    before, after, load_us = in_child(measure, NO_FILTER)["value"]
    with tempfile.TemporaryFile() as f:
        seccomp.build_filter(set(DOCKER_14)).export_bpf(f)
        instructions = f.tell() // 8  # struct sock_filter is 8 bytes
    with capsys.disabled():
        print(f"\nseccomp: {instructions} BPF instructions, built and loaded in {load_us:.0f} us; "
              f"getpid() {before:.0f} ns -> {after:.0f} ns per call (Python loop included)",
              file=sys.stderr)
    assert instructions > 0
