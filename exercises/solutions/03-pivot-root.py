"""Exercise 03, a reference solution: pivot_root(2) into the container's root."""

import errno
import os

from minirt.kernel import mounts, syscalls

PUT_OLD = ".oldroot"


def pivot_into(root: str, trace=None) -> None:
    """Make the mount at ``root`` the root of this mount namespace; detach the old root."""
    os.makedirs(os.path.join(root, PUT_OLD), exist_ok=True)
    new_root = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fchdir(new_root)  # by descriptor: still right if our root changes below
        try:
            syscalls.pivot_root(".", PUT_OLD)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            # minirt itself runs in a chroot, whose "/" is no mount point: pivot_root
            # refuses. Back to the mount namespace's real root first, then again.
            mounts.leave_chroot()
            os.fchdir(new_root)
            syscalls.pivot_root(".", PUT_OLD)
    finally:
        os.close(new_root)
    os.chdir("/")
    syscalls.umount(f"/{PUT_OLD}", syscalls.MNT_DETACH)  # lazily: the host's mounts are busy
    os.rmdir(f"/{PUT_OLD}")
