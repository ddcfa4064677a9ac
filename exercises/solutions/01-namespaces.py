"""Exercise 01, a reference solution: unshare(2) and sethostname(2) through ctypes."""

import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result == -1:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags: int) -> None:
    """Move the calling process into the new namespaces ``flags`` asks for (man 2 unshare)."""
    _check(libc.unshare(ctypes.c_int(flags)), "unshare")


def sethostname(name: str) -> None:
    """Set the hostname of the calling process's UTS namespace to ``name`` (man 2 sethostname)."""
    raw = name.encode()
    _check(libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")
