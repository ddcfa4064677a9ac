"""Exercise 03: make the container's root filesystem its ``/``, and cut the way back.

minirt calls ``pivot_into(root, trace)`` in the container's PID 1, inside its
own mount namespace (every mount private), once ``root`` is ready: the image
mounted there (an overlay, so ``root`` is a mount point), with /proc, /sys and
/dev inside. Right after your function returns, minirt looks things up at
paths such as ``/etc/passwd`` and ``/bin/sh``: they must be the image's.

minirt's system call wrappers are yours to use (``minirt/kernel/syscalls.py``):

    syscalls.pivot_root(new_root, put_old)   # raises OSError with the errno
    syscalls.umount(target, flags)           # umount2(2)
    syscalls.MNT_DETACH
"""

import os  # noqa: F401

from minirt.kernel import syscalls  # noqa: F401


def pivot_into(root: str, trace=None) -> None:
    """Make the mount at ``root`` the root of this mount namespace; detach the old root.

    After the call:

    * ``/`` is ``root`` (for this process and every process it starts), and
      the working directory is ``/``;
    * the host's old root is not mounted anywhere in this namespace (not even
      under some hidden directory), so no path, ``..`` or second chroot leads
      back to the host's files;
    * the directory the old root was moved to is gone too.

    ``trace`` records steps for ``minirt run --trace``; you may ignore it.
    Raises OSError if a system call fails (EINVAL: ``root`` is not a mount
    point, or ``put_old`` is not under it).
    """
    # TODO 1: pivot_root(2) needs a place, inside the new root, to put the old one:
    #         make a directory there, e.g. os.path.join(root, ".oldroot").
    # TODO 2: syscalls.pivot_root(root, that directory): now "/" is root, and the old root
    #         is mounted at /.oldroot.
    # TODO 3: os.chdir("/"): the working directory still points into the old root.
    # TODO 4: detach the old root with syscalls.umount("/.oldroot", syscalls.MNT_DETACH)
    #         (lazily: the host's mounts are busy), then os.rmdir("/.oldroot").
    # Why not just os.chroot(root)? Try it: which step of the check fails, and why?
    raise NotImplementedError("pivot_into() is not written yet: see the TODOs in pivot_into.py")
