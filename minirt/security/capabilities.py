"""Capabilities: root's powers, split into ~40 pieces, and the 14 a container keeps.

Since Linux 2.2 "root" is not one privilege but a set of *capabilities*
(capabilities(7)): CAP_SYS_ADMIN to mount, CAP_SYS_MODULE to load kernel
modules, CAP_NET_ADMIN to configure interfaces, CAP_SYS_PTRACE to trace other
processes, ... Root inside a container is the host's uid 0 (without a user
namespace), so the only thing between it and, say, loading a module into the
host's kernel is which capabilities it has.

Every process carries several sets. The one that matters here is the
**bounding set**: a ceiling no later execve(2) can exceed. At execve a process
of uid 0 gets *permitted = bounding* (the kernel treats root's files as having
every capability), so dropping capabilities from the bounding set, with
prctl(PR_CAPBSET_DROP), is what takes them from the container's command for
good: not even a setuid-root binary gets them back. The ambient set is
cleared too, so nothing is handed on to a non-root program.

Docker keeps 14 (``DOCKER_DEFAULT``): enough for a normal Unix userland
(chown, setuid for ``su``, binding port 80, raw sockets for ``ping``, mknod)
and nothing that reaches the kernel as a whole. ``--cap-add``/``--cap-drop``
change the set; ``--privileged`` keeps them all.
"""

import ctypes

from ..errors import UsageError

# <linux/capability.h>: the number of each capability.
NUMBERS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

# Docker's default set (moby's oci/caps/defaults.go), the same as runc's `runc spec` adds to.
DOCKER_DEFAULT = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
})

# prctl(2) options
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_libc = ctypes.CDLL(None, use_errno=True)


def normalize(name: str) -> str:
    """``sys_admin``, ``SYS_ADMIN`` or ``CAP_SYS_ADMIN`` -> ``CAP_SYS_ADMIN`` (docker takes all)."""
    upper = name.strip().upper()
    if upper == "ALL":
        return "ALL"
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in NUMBERS:
        raise UsageError(f"unknown capability {name!r}: see capabilities(7), e.g. NET_ADMIN")
    return full


def effective_set(add=(), drop=(), privileged: bool = False) -> frozenset:
    """The capabilities a container keeps: Docker's default, minus ``drop``, plus ``add``
    (``ALL`` in either means every one; as in docker, adding wins over dropping)."""
    everything = frozenset(NUMBERS)
    if privileged:
        return everything
    added = {normalize(n) for n in add}
    dropped = {normalize(n) for n in drop}
    kept = set() if "ALL" in dropped else set(DOCKER_DEFAULT) - dropped
    return frozenset(everything if "ALL" in added else kept | added)


def last_cap() -> int:
    """The highest capability this kernel knows (newer kernels know more)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return max(NUMBERS.values())


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    result = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                         ctypes.c_ulong(0), ctypes.c_ulong(0))
    if result == -1:
        errno = ctypes.get_errno()
        import os
        raise OSError(errno, f"prctl: {os.strerror(errno)}")
    return result


def drop_bounding(keep: frozenset) -> list[str]:
    """Drop every capability not in ``keep`` from the bounding set, clear the ambient set;
    the names dropped. Needs CAP_SETPCAP (root has it until it drops that too: last)."""
    keep_numbers = {NUMBERS[n] for n in keep}
    names = {number: name for name, number in NUMBERS.items()}
    dropped = []
    for number in range(last_cap() + 1):
        if number not in keep_numbers and _prctl(PR_CAPBSET_READ, number) == 1:
            _prctl(PR_CAPBSET_DROP, number)
            dropped.append(names.get(number, f"cap {number}"))
    try:
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # kernels before 4.3 have no ambient set
    return dropped


def bounding_set(pid: int | str = "self") -> frozenset:
    """The capability names in a process's bounding set (CapBnd in /proc/PID/status)."""
    return _decode_status_line(pid, "CapBnd:")


def effective_of(pid: int | str = "self") -> frozenset:
    """The capability names a process has in effect now (CapEff in /proc/PID/status)."""
    return _decode_status_line(pid, "CapEff:")


def _decode_status_line(pid, field: str) -> frozenset:
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith(field))
    return frozenset(name for name, number in NUMBERS.items() if mask >> number & 1)
