"""Exercise 02, a reference solution: a container's minimal /dev."""

import os
import stat

from minirt.kernel import mounts
from minirt.kernel.devices import copy_host_devices
from minirt.kernel.syscalls import MS_NODEV, MS_NOEXEC, MS_NOSUID

# name: (major, minor, mode), from Documentation/admin-guide/devices.txt
DEVICES = {
    "null": (1, 3, 0o666),
    "zero": (1, 5, 0o666),
    "full": (1, 7, 0o666),
    "random": (1, 8, 0o666),
    "urandom": (1, 9, 0o666),
    "tty": (5, 0, 0o666),
}

LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}


def populate_dev(dev: str, use_mknod: bool = True, trace=None, host_devices: bool = False) -> None:
    """Mount a fresh tmpfs at ``dev`` and fill it with a container's minimal /dev."""
    os.makedirs(dev, exist_ok=True)
    mounts.tmpfs(dev, "mode=755,size=65536k")
    if host_devices:
        copy_host_devices("/dev", dev)  # makes the links too
    else:
        for name, (major, minor, mode) in DEVICES.items():
            path = os.path.join(dev, name)
            if use_mknod:
                os.mknod(path, stat.S_IFCHR | mode, os.makedev(major, minor))
                os.chmod(path, mode)  # mknod applied the umask
            else:
                open(path, "w").close()
                mounts.bind(f"/dev/{name}", path, recursive=False)
        for name, target in LINKS.items():
            os.symlink(target, os.path.join(dev, name))
    os.makedirs(os.path.join(dev, "pts"), exist_ok=True)
    mounts.devpts(os.path.join(dev, "pts"))
    os.makedirs(os.path.join(dev, "shm"), exist_ok=True)
    mounts.tmpfs(os.path.join(dev, "shm"), "mode=1777,size=65536k",
                 MS_NOSUID | MS_NODEV | MS_NOEXEC)
