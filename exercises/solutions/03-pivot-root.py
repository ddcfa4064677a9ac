"""Exercise 03, a reference solution: pivot_root(2) into the container's root."""

import os

from minirt.kernel import syscalls

PUT_OLD = ".oldroot"


def pivot_into(root: str, trace=None) -> None:
    """Make the mount at ``root`` the root of this mount namespace; detach the old root."""
    os.makedirs(os.path.join(root, PUT_OLD), exist_ok=True)
    syscalls.pivot_root(root, os.path.join(root, PUT_OLD))
    os.chdir("/")
    syscalls.umount(f"/{PUT_OLD}", syscalls.MNT_DETACH)  # lazily: the host's mounts are busy
    os.rmdir(f"/{PUT_OLD}")
