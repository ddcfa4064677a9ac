"""Mounts: building a container's root filesystem (man 2 mount, man 2 pivot_root).

The order matters and each step has a reason:

1. make every mount in the new mount namespace private, so nothing we mount
   propagates back to the host (and nothing the host mounts leaks in);
2. mount the root (an overlay of image layers plus a writable upper dir);
3. mount /proc, /sys and /dev inside it;
4. ``pivot_root`` into it and detach the old root, so no path leads back to the
   host's files; ``chroot`` alone can be escaped (see the escape test).
"""

import errno
import os

from ..trace import NULL_TRACE
from . import syscalls
from .syscalls import (MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE,
                       MS_RDONLY, MS_REC, MS_REMOUNT)


def make_private(path: str = "/") -> None:
    """Stop mount events propagating between this namespace and the host.

    In a chroot, "/" is not a mount point and the kernel refuses (EINVAL): then
    we do it from the namespace's real root and come back (``leave_chroot``).
    """
    try:
        syscalls.mount("none", path, "", MS_REC | MS_PRIVATE)
    except OSError as e:
        if e.errno != errno.EINVAL or path != "/":
            raise
        chroot_dir = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        try:
            leave_chroot()
            syscalls.mount("none", "/", "", MS_REC | MS_PRIVATE)
            os.fchdir(chroot_dir)
            os.chroot(".")
        finally:
            os.close(chroot_dir)


def overlay(lower_dirs, upper: str, work: str, target: str, userxattr: bool = False) -> None:
    """Mount an overlayfs: read-only ``lower_dirs`` (top first) under a writable ``upper``.

    Reads fall through to the first layer that has the file; writes copy the
    file up into ``upper``; deletions leave whiteouts there. The image's layer
    directories are never modified (Documentation/filesystems/overlayfs.rst).
    In a user namespace (rootless) overlayfs keeps its markers in ``user.*``
    extended attributes, since ``trusted.*`` ones need real root: ``userxattr``.
    """
    options = f"lowerdir={':'.join(lower_dirs)},upperdir={upper},workdir={work}"
    if userxattr:
        options += ",userxattr"
    syscalls.mount("overlay", target, "overlay", 0, options)


def bind(source: str, target: str, readonly: bool = False, recursive: bool = True) -> None:
    """Make ``source`` visible at ``target`` too; optionally read-only there.

    A read-only bind needs two calls: the kernel ignores MS_RDONLY on the first
    MS_BIND and applies it only on a remount of the new mount point.
    """
    syscalls.mount(source, target, "", MS_BIND | (MS_REC if recursive else 0))
    if readonly:
        remount_read_only(target)


def remount_read_only(target: str) -> None:
    """Make the mount at ``target`` read-only (only that mount: MS_BIND|MS_REMOUNT).

    The flags it already has (nosuid, nodev, noexec) are repeated: in a user
    namespace the kernel refuses a remount that would clear them (they are
    "locked" by whoever mounted them first). statvfs's ST_* equal the MS_* bits.
    """
    kept = os.statvfs(target).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
    syscalls.mount("none", target, "", MS_BIND | MS_REMOUNT | MS_RDONLY | kept)


def proc(target: str, readonly: bool = True) -> None:
    """Mount procfs; it shows the pid namespace of the process that mounts it."""
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (MS_RDONLY if readonly else 0)
    syscalls.mount("proc", target, "proc", flags)


def sysfs(target: str, readonly: bool = True) -> None:
    """Mount sysfs (read-only unless asked): it shows the network devices of our net
    namespace, and much of the host's hardware."""
    syscalls.mount("sysfs", target, "sysfs",
                   MS_NOSUID | MS_NODEV | MS_NOEXEC | (MS_RDONLY if readonly else 0))


def tmpfs(target: str, options: str = "mode=755", flags: int = MS_NOSUID) -> None:
    """Mount a memory-backed filesystem."""
    syscalls.mount("tmpfs", target, "tmpfs", flags, options)


def devpts(target: str) -> None:
    """Mount a new devpts instance: the container gets its own pty numbering."""
    syscalls.mount("devpts", target, "devpts", MS_NOSUID | MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620")


def pivot_into(new_root: str, trace=None) -> None:
    """Make ``new_root`` this namespace's ``/`` and detach the old root.

    ``pivot_root(".", ".")`` stacks the old root on top of the new one at the
    same place; unmounting ``.`` with MNT_DETACH then removes it, leaving no
    path back to the host (the trick runc uses, see man 2 pivot_root NOTES).
    The new root must itself be a mount point (EINVAL otherwise): bind-mount a
    plain directory onto itself first.

    pivot_root also needs the *current* root to be a mount point, which it is
    not when minirt itself runs in a chroot (a build root, some CI systems).
    Joining our own mount namespace again with setns(2) resets our root to the
    namespace's real root, after which the pivot works as usual.
    """
    trace = trace or NULL_TRACE
    target = os.open(new_root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with trace.step("pivot_root", new_root=new_root, put_old=new_root):
            os.fchdir(target)
            try:
                syscalls.pivot_root(".", ".")
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                leave_chroot()
                os.fchdir(target)
                syscalls.pivot_root(".", ".")
    finally:
        os.close(target)
    with trace.step("umount", target="old root", flags="MNT_DETACH"):
        syscalls.umount(".", MNT_DETACH)
    os.chdir("/")


def leave_chroot() -> None:
    """Set our root back to the root of our mount namespace (see ``pivot_into``)."""
    fd = os.open("/proc/self/ns/mnt", os.O_RDONLY)
    try:
        syscalls.setns(fd, 0x00020000)  # CLONE_NEWNS
    finally:
        os.close(fd)


def is_mount_point(path: str) -> bool:
    """True when ``path`` is listed as a mount point in this namespace's mountinfo."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def mount_points_under(prefix: str) -> list[str]:
    """Mount points in this namespace at or below ``prefix`` (for leak checks)."""
    prefix = os.path.realpath(prefix)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def unmount_all_under(prefix: str) -> None:
    """Detach every mount at or below ``prefix``, deepest first."""
    for point in sorted(mount_points_under(prefix), key=len, reverse=True):
        try:
            syscalls.umount(point, MNT_DETACH)
        except OSError:
            pass
