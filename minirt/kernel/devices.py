"""A minimal /dev for a container: only the devices a program expects.

Docker (runc) gives a container a fresh tmpfs at /dev holding null, zero, full,
random, urandom and tty, a private devpts for terminals, /dev/shm, and a few
symlinks. The host's disks and other devices are simply not there.
Device numbers: Documentation/admin-guide/devices.txt in the kernel tree.
"""

import os
import stat

from ..trace import NULL_TRACE
from . import mounts

# name: (major, minor, mode)
CHAR_DEVICES = {
    "null": (1, 3, 0o666),
    "zero": (1, 5, 0o666),
    "full": (1, 7, 0o666),
    "random": (1, 8, 0o666),
    "urandom": (1, 9, 0o666),
    "tty": (5, 0, 0o666),
}

SYMLINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}


def populate_dev(dev: str, use_mknod: bool = True, trace=NULL_TRACE,
                 host_devices: bool = False) -> None:
    """Mount a tmpfs at ``dev`` and fill it with the minimal set of devices.

    As root we create the nodes with mknod(2). Without that privilege (a user
    namespace) the kernel refuses mknod, so we bind-mount the host's nodes
    instead, as rootless runtimes do. ``host_devices`` (``--privileged``)
    recreates every device node of the host's /dev instead, its disks included.
    """
    os.makedirs(dev, exist_ok=True)
    with trace.step("mount", source="tmpfs", target=dev, fstype="tmpfs", flags="MS_NOSUID"):
        mounts.tmpfs(dev, "mode=755,size=65536k")
    if host_devices:
        with trace.step("mknod", devices="every device of the host's /dev"):
            copy_host_devices("/dev", dev)
        _mount_pts_and_shm(dev, trace)
        return
    with trace.step("mknod" if use_mknod else "bind devices", devices=list(CHAR_DEVICES)):
        for name, (major, minor, mode) in CHAR_DEVICES.items():
            path = os.path.join(dev, name)
            if use_mknod:
                os.mknod(path, stat.S_IFCHR | mode, os.makedev(major, minor))
                os.chmod(path, mode)  # mknod applies the umask
            else:
                open(path, "w").close()
                mounts.bind(f"/dev/{name}", path, recursive=False)
        for name, target in SYMLINKS.items():
            os.symlink(target, os.path.join(dev, name))
    _mount_pts_and_shm(dev, trace)


def copy_host_devices(host_dev: str, dev: str) -> int:
    """mknod each character and block device of ``host_dev`` (and its subdirectories
    but pts, shm, mqueue) under ``dev``, same numbers and modes; how many."""
    count = 0
    for directory, subdirs, names in os.walk(host_dev):
        subdirs[:] = [d for d in subdirs if directory != host_dev or
                      d not in ("pts", "shm", "mqueue", "hugepages")]
        target_dir = os.path.join(dev, os.path.relpath(directory, host_dev))
        os.makedirs(target_dir, exist_ok=True)
        for name in names:
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and \
                    not (directory == host_dev and name in SYMLINKS):  # ptmx: ours, below
                path = os.path.join(target_dir, name)
                os.mknod(path, st.st_mode, st.st_rdev)
                os.chmod(path, stat.S_IMODE(st.st_mode))
                count += 1
    for name, target in SYMLINKS.items():
        if not os.path.lexists(os.path.join(dev, name)):
            os.symlink(target, os.path.join(dev, name))
    return count


def _mount_pts_and_shm(dev: str, trace) -> None:
    """/dev/pts (a new devpts instance: the container's own terminals) and /dev/shm."""
    os.makedirs(os.path.join(dev, "pts"), exist_ok=True)
    with trace.step("mount", source="devpts", target=f"{dev}/pts", fstype="devpts",
                    flags="MS_NOSUID|MS_NOEXEC"):
        mounts.devpts(os.path.join(dev, "pts"))
    os.makedirs(os.path.join(dev, "shm"), 0o1777, exist_ok=True)
    with trace.step("mount", source="shm", target=f"{dev}/shm", fstype="tmpfs",
                    flags="MS_NOSUID|MS_NODEV|MS_NOEXEC"):
        mounts.tmpfs(os.path.join(dev, "shm"), "mode=1777,size=65536k",
                     mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC)
