"""Runs INSIDE a container (the host's Python bind-mounted read-only): tries ten ways out
and prints one JSON object, an entry per attempt: {"escaped": bool, "how": str}.

"escaped" means the attempt did what an attacker wanted (reached the host's files,
got a syscall through, found a host fd); "how" says what the kernel answered.
Nothing here harms the host: the module load is given /dev/null (the kernel
parses and rejects it, so only *whether the call was allowed* is learned), the
host disk is mounted read-only and unmounted, /proc/sys is written only in a
UTS-namespaced file (the container's own domain name), nothing is written to
/proc/sysrq-trigger (opening it for writing is the test).

Usage: python3 escape_probe.py MARKER_PATH DISK_MAJOR DISK_MINOR DISK_FSTYPE INHERITED_FD
"""

import ctypes
import errno
import json
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
SYS_FINIT_MODULE, SYS_KEYCTL, SYS_PTRACE = 313, 250, 101   # x86_64
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 1


def errname(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def in_child(action) -> tuple[bool, str]:
    """Run ``action`` in a forked child (so chroot/unshare do not stick); (escaped, how)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            result = action()
        except OSError as e:
            result = (False, errname(e.errno))
        except Exception as e:  # report, never crash the probe
            result = (False, repr(e))
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return tuple(json.loads(data)) if data else (False, "the child died")


def syscall(number: int, *args) -> int:
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    if result == -1:
        raise OSError(ctypes.get_errno(), "")
    return result


# --- the attempts -----------------------------------------------------------------------

def chroot_escape(marker: str):
    """The classic: chroot into a subdirectory, walk up past the root, chroot again."""
    os.makedirs("/tmp/jail", exist_ok=True)
    os.chroot("/tmp/jail")
    for _ in range(64):
        os.chdir("..")
    os.chroot(".")
    return (os.path.exists(marker), "reached the host's files" if os.path.exists(marker)
            else "still inside the container's root (pivot_root left no way up)")


def host_disk(marker: str, major: int, minor: int, fstype: str):
    """Make a node for the host's root disk and mount it (with the flags it already has:
    the kernel shares the mounted filesystem; nothing is written), then look for the
    host-only marker file."""
    node = "/tmp/hostdisk"
    try:
        os.mknod(node, 0o600 | 0o060000, os.makedev(major, minor))  # S_IFBLK
    except FileExistsError:
        pass
    os.makedirs("/tmp/hostfs", exist_ok=True)
    if libc.mount(node.encode(), b"/tmp/hostfs", fstype.encode(), ctypes.c_ulong(0), None) != 0:
        return (False, f"mount refused ({errname(ctypes.get_errno())})")
    try:
        seen = os.path.exists("/tmp/hostfs" + marker)
    finally:
        libc.umount2(b"/tmp/hostfs", 2)
    return (True, "mounted the host's disk" + (", saw the host's files" if seen else ""))


def kernel_log():
    """A character device the container has no node for: make one (mknod keeps working by
    default, as in Docker), then try to open the host's kernel log through it."""
    node = "/tmp/kmsg"
    try:
        os.mknod(node, 0o600 | 0o020000, os.makedev(1, 11))  # S_IFCHR, /dev/kmsg
    except FileExistsError:
        pass
    try:
        # For writing: reading it also needs CAP_SYSLOG, which would hide what the device
        # rules do. Nothing is written.
        fd = os.open(node, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        return (False, f"open refused ({errname(e.errno)})")
    os.close(fd)
    return (True, "opened the host's kernel log for writing")


def load_module():
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        syscall(SYS_FINIT_MODULE, fd, ctypes.addressof(ctypes.c_char(b"\0")), 0)
        return (True, "a module was loaded?!")
    except OSError as e:
        # EPERM: the call was stopped (seccomp or no CAP_SYS_MODULE). Anything else: the
        # kernel got as far as parsing /dev/null as a module, i.e. the call was allowed.
        return (e.errno != errno.EPERM, f"finit_module: {errname(e.errno)}")
    finally:
        os.close(fd)


def write_proc():
    found = []
    escaped = False
    for path in ("/proc/sysrq-trigger", "/proc/sys/kernel/domainname"):
        if not os.path.exists(path):
            found.append(f"{path}: absent on this kernel")
            continue
        try:
            fd = os.open(path, os.O_WRONLY)
            if path.endswith("domainname"):  # namespaced (UTS): harmless to write
                os.write(fd, b"escape-test")
            os.close(fd)
            escaped = True
            found.append(f"{path}: writable")
        except OSError as e:
            found.append(f"{path}: {errname(e.errno)}")
    return (escaped, "; ".join(found))


def ptrace_sibling():
    pid = os.fork()
    if pid == 0:
        import time
        time.sleep(10)
        os._exit(0)
    try:
        syscall(SYS_PTRACE, 16, pid, 0, 0)  # PTRACE_ATTACH (the kill below ends it)
        return (True, "attached to another process")
    except OSError as e:
        return (False, f"ptrace: {errname(e.errno)}")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def read_kernel_memory():
    found, escaped = [], False
    for path in ("/proc/kcore", "/proc/timer_list"):
        if not os.path.exists(path):
            found.append(f"{path}: absent on this kernel")
            continue
        try:
            with open(path, "rb") as f:
                size = len(f.read(4096))
            escaped = escaped or size > 0
            found.append(f"{path}: {size} bytes" + (" (masked)" if size == 0 else ""))
        except OSError as e:
            found.append(f"{path}: {errname(e.errno)}")
    return (escaped, "; ".join(found))


def keyring():
    try:
        key = syscall(SYS_KEYCTL, 0, -3, 0)  # KEYCTL_GET_KEYRING_ID, the session keyring
        return (True, f"keyctl answered (keyring {key})")
    except OSError as e:
        return (False, f"keyctl: {errname(e.errno)}")


def user_namespace():
    if libc.unshare(ctypes.c_int(CLONE_NEWUSER)) == 0:
        return (True, "a new user namespace: all capabilities inside it")
    return (False, f"unshare(CLONE_NEWUSER): {errname(ctypes.get_errno())}")


def inherited_fd(number: int):
    try:
        os.fstat(number)
        return (True, f"fd {number} is open in here")
    except OSError as e:
        return (False, f"fd {number}: {errname(e.errno)}; open: {sorted(os.listdir('/proc/self/fd'))}")


def main() -> None:
    marker, major, minor, fstype, fd = sys.argv[1:6]
    results = {
        "chroot escape": in_child(lambda: chroot_escape(marker)),
        "mount the host disk": in_child(lambda: host_disk(marker, int(major), int(minor), fstype)),
        "open the kernel log via mknod": in_child(kernel_log),
        "load a kernel module": in_child(load_module),
        "write /proc (sysrq, sys)": in_child(write_proc),
        "ptrace another process": in_child(ptrace_sibling),
        "read kernel memory": in_child(read_kernel_memory),
        "keyctl": in_child(keyring),
        "unshare a user namespace": in_child(user_namespace),
        "an inherited fd": in_child(lambda: inherited_fd(int(fd))),
    }
    print(json.dumps({name: {"escaped": e, "how": how} for name, (e, how) in results.items()}))


if __name__ == "__main__":
    main()
