"""Linux namespaces: what a process can see (man 7 namespaces).

A container is mostly a process placed in fresh namespaces: its own process ids
(pid), mount table (mnt), hostname (uts), System V IPC (ipc), network stack
(net), cgroup root (cgroup) and, for rootless use, user and group ids (user).
"""

import errno
import os

from .. import seams
from . import syscalls

# The clone(2)/unshare(2) flag of each namespace, by the name /proc/PID/ns uses.
FLAGS = {
    "mnt": 0x00020000,     # CLONE_NEWNS
    "uts": 0x04000000,     # CLONE_NEWUTS
    "ipc": 0x08000000,     # CLONE_NEWIPC
    "user": 0x10000000,    # CLONE_NEWUSER
    "pid": 0x20000000,     # CLONE_NEWPID
    "net": 0x40000000,     # CLONE_NEWNET
    "cgroup": 0x02000000,  # CLONE_NEWCGROUP
}

# What ``minirt run`` gives every container (docker's defaults, plus cgroup).
CONTAINER_NAMESPACES = ("mnt", "uts", "ipc", "net", "pid", "cgroup")


def flags_of(names) -> int:
    """The OR of the unshare flags for namespace ``names``."""
    value = 0
    for name in names:
        value |= FLAGS[name]
    return value


FLAG_NAMES = {"mnt": "CLONE_NEWNS", "uts": "CLONE_NEWUTS", "ipc": "CLONE_NEWIPC",
              "user": "CLONE_NEWUSER", "pid": "CLONE_NEWPID", "net": "CLONE_NEWNET",
              "cgroup": "CLONE_NEWCGROUP"}


def flag_names(names) -> str:
    """``["mnt", "pid"]`` -> ``"CLONE_NEWNS|CLONE_NEWPID"``, as strace would print them."""
    return "|".join(FLAG_NAMES[name] for name in names)


def unshare(names) -> None:
    """Move this process into new namespaces ``names``.

    A new pid namespace applies to the children made after this call: the
    first child forked becomes PID 1 there. The others apply at once.
    """
    if not seams.replaced("unshare"):
        syscalls.unshare(flags_of(names))
        return
    # A student's unshare (``minirt exercise``) that returns without moving us would
    # let the next steps remount and pivot_root the host's own namespaces: see first.
    before = {name: _own_namespace(name) for name in names}
    seams.replaceable("unshare", syscalls.unshare)(flags_of(names))
    stayed = [name for name in names if _own_namespace(name) == before[name]]
    if stayed:
        from ..errors import ContainerStartError
        raise ContainerStartError(
            f"unshare({flag_names(names)}) returned, but this process is still in the same "
            f"{', '.join(stayed)} namespace(s): minirt stops here rather than mount in the "
            "host's namespaces")


def _own_namespace(name: str) -> str:
    # A new pid namespace is for our children: /proc/self/ns/pid_for_children shows it,
    # and cannot be read at all until the first child is born in it.
    try:
        return namespace_id("self", "pid_for_children" if name == "pid" else name)
    except FileNotFoundError:
        return ""


def can_unshare(names) -> bool:
    """Would the kernel give this process new namespaces ``names``? Tried in a child."""
    pid = os.fork()
    if pid == 0:
        try:
            unshare(names)
            os._exit(0)
        finally:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def create_held(name: str) -> int:
    """A new, empty namespace of kind ``name`` that no process is in yet: an open fd to it.

    A namespace lives as long as something refers to it: a process in it, a
    bind mount of its ``/proc/PID/ns/<name>`` file (``ip netns add``), or an
    open file descriptor. So a child unshares, the parent opens the child's
    ``/proc/CHILD/ns/<name>``, and the child exits: the fd alone keeps the
    namespace alive. Docker prepares a container's network this way, before
    the container's first process exists; that process then joins it with
    setns(2). Close the fd to let the namespace go (when nobody is in it).
    """
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            unshare([name])
            os.write(ready_w, b"1")
            os.read(done_r, 1)          # wait until the parent holds the namespace
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(errno.EPERM, f"a new {name} namespace was refused")
        return os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)                # the child reads EOF and exits
        os.waitpid(pid, 0)


def map_to_root(outside_uid: int, outside_gid: int) -> None:
    """In a new user namespace, become root: map our own ids to 0 (man 7 user_namespaces).

    An unprivileged process may write one line for itself, its own uid and gid,
    after denying setgroups(2). Inside, uid 0 has every capability over the
    namespaces this user namespace owns, and none over the host.
    """
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {outside_uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {outside_gid} 1")


def namespace_id(pid: int | str, name: str) -> str:
    """The identity of a process's namespace, e.g. ``'pid:[4026531836]'``.

    Two processes share a namespace exactly when these strings are equal.
    """
    return os.readlink(f"/proc/{pid}/ns/{name}")


# The order to join a running container's namespaces in (``docker exec``): the user
# namespace first (it owns the others), the mount namespace last (after it, /proc
# and the host's paths are the container's).
ENTER_ORDER = ("user", "ipc", "uts", "net", "cgroup", "pid", "mnt")


def open_namespaces(pid: int, names) -> list[tuple[str, int]]:
    """Open ``/proc/PID/ns/<name>`` for each of ``names``, in ``ENTER_ORDER``."""
    return [(name, os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC))
            for name in ENTER_ORDER if name in names]


def enter(opened: list[tuple[str, int]]) -> None:
    """setns(2) into each namespace ``open_namespaces`` opened, then close the files.

    Joining a pid namespace changes only where this process's *children* go,
    as unshare does: the caller forks next. Joining a mount namespace also
    moves this process's root and working directory to that namespace's root.
    """
    for name, fd in opened:
        syscalls.setns(fd, FLAGS[name])
        os.close(fd)
