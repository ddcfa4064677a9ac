"""Exercise 02: give every container a /dev of its own, with just the devices programs expect.

minirt calls ``populate_dev`` in the container's PID 1, inside its new mount
namespace, after the root filesystem, /proc and /sys are mounted and before
pivot_root: ``dev`` is the absolute path of the future ``/dev`` on the host
side, e.g. ``/var/lib/minirt/containers/<id>/rootfs/dev``.

minirt's mount helpers are yours to use (``minirt/kernel/mounts.py``):

    mounts.tmpfs(target, options="mode=755", flags=MS_NOSUID)
    mounts.devpts(target)          # a new devpts instance: the container's own terminals
    mounts.bind(source, target, recursive=False)

and ``minirt.kernel.devices.copy_host_devices(host_dev, dev)`` for --privileged.
"""

import os
import stat  # noqa: F401  (stat.S_IFCHR: "make a character device", for mknod)

from minirt.kernel import mounts  # noqa: F401
from minirt.kernel.devices import copy_host_devices  # noqa: F401
from minirt.kernel.syscalls import MS_NODEV, MS_NOEXEC, MS_NOSUID  # noqa: F401

# name: (major, minor, mode)
# TODO 1: the device numbers, from the kernel's Documentation/admin-guide/devices.txt
#         ("1 char  Memory devices" lists null, zero, full, random, urandom;
#          "5 char" lists /dev/tty). Everyone may read and write them all: 0o666.
DEVICES = {
    "null": (None, None, 0o666),
    "zero": (None, None, 0o666),
    "full": (None, None, 0o666),
    "random": (None, None, 0o666),
    "urandom": (None, None, 0o666),
    "tty": (None, None, 0o666),
}

# name: where the symlink points
LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}


def populate_dev(dev: str, use_mknod: bool = True, trace=None, host_devices: bool = False) -> None:
    """Mount a fresh tmpfs at ``dev`` and fill it with a container's minimal /dev.

    After the call, ``dev`` holds:

    * the character devices of ``DEVICES``, each with its major and minor
      number and exactly its mode (mknod(2) applies the umask: chmod after);
    * the symlinks of ``LINKS`` (fd, stdin, stdout, stderr, ptmx);
    * ``pts``: a new devpts instance (the container's own pseudo-terminals,
      which ``minirt run -t`` opens through ``pts/ptmx``);
    * ``shm``: a tmpfs, mode 1777, mounted MS_NOSUID|MS_NODEV|MS_NOEXEC.

    ``use_mknod`` is False when the kernel would refuse mknod (in a user
    namespace, rootless): then bind-mount each host node ``/dev/NAME`` onto an
    empty file instead. ``host_devices`` (``--privileged``) asks for every
    device of the host instead of ``DEVICES``: ``copy_host_devices("/dev", dev)``.
    ``trace`` records steps for ``minirt run --trace``; you may ignore it.
    Raises OSError when a mount or mknod fails.
    """
    # TODO 2: create ``dev`` if needed and mount a tmpfs on it ("mode=755,size=65536k":
    #         docker's 64 MiB, so a container cannot fill the host's memory through /dev).
    # TODO 3: for each of DEVICES: os.mknod(path, stat.S_IFCHR | mode, os.makedev(major, minor)),
    #         then os.chmod(path, mode). (Without use_mknod: an empty file and mounts.bind.)
    # TODO 4: the symlinks of LINKS: os.symlink(target, path).
    # TODO 5: mkdir dev/pts and mount a devpts there; mkdir dev/shm and mount a tmpfs there
    #         ("mode=1777,size=65536k", flags MS_NOSUID | MS_NODEV | MS_NOEXEC).
    raise NotImplementedError("populate_dev() is not written yet: see the TODOs in populate_dev.py")
