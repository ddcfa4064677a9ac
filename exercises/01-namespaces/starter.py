"""Exercise 01: new namespaces and a hostname of your own, through ctypes.

minirt calls your two functions every time it starts a container:

* ``unshare(flags)`` in its helper process, with
  CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWNET|CLONE_NEWPID, just
  before it forks the container's PID 1 (and once more in PID 1, with
  CLONE_NEWCGROUP, after PID 1 has joined its cgroup);
* ``sethostname(name)`` in PID 1, after pivot_root, with the name given to
  ``minirt run -h NAME`` (by default the container's short id).

Python 3.11's ``os`` module wraps neither call: ask the C library through
ctypes. minirt loads this file before pivot_root (afterwards the host's files,
Python's modules included, are out of reach), so import what you need at the top.
"""

import ctypes
import os  # noqa: F401  (os.strerror turns an errno into words)

# TODO 1: load the C library, keeping errno: ctypes.CDLL(None, use_errno=True).
#         (None means "what this process has loaded already", and libc is.)
libc = None


def unshare(flags: int) -> None:
    """Move the calling process into the new namespaces ``flags`` asks for (man 2 unshare).

    ``flags`` is an OR of CLONE_NEW* values from <sched.h>, e.g. CLONE_NEWUTS =
    0x04000000. Returns None once the kernel has done it. When the kernel
    refuses, raises ``OSError(errno, message)`` with the kernel's errno: EPERM
    without privilege, EINVAL for a flag it does not know. Never fail quietly:
    minirt would go on to mount things in the host's namespaces.
    """
    # TODO 2: call libc.unshare(ctypes.c_int(flags)); it returns 0, or -1 on failure.
    # TODO 3: on -1, read the errno with ctypes.get_errno() (libc.errno is not it) and
    #         raise OSError(errno, f"unshare: {os.strerror(errno)}").
    raise NotImplementedError("unshare() is not written yet: see the TODOs in namespaces.py")


def sethostname(name: str) -> None:
    """Set the hostname of the calling process's UTS namespace to ``name`` (man 2 sethostname).

    The C call takes bytes and their length (a size_t); no trailing NUL is
    needed. Returns None; raises OSError with the kernel's errno on failure
    (EINVAL for a name longer than 64 bytes, EPERM without CAP_SYS_ADMIN).
    """
    # TODO 4: encode the name, call libc.sethostname(raw, ctypes.c_size_t(len(raw))) and
    #         raise OSError as in unshare() when it returns -1.
    raise NotImplementedError("sethostname() is not written yet: see the TODOs in namespaces.py")
