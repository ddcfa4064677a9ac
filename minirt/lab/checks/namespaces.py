"""Checks for notebook 2, "From chroot to namespaces".

Every check runs the learner's function in a forked child that ends with
``os._exit`` and sends its answer back through a pipe, so nothing the function
does (unshare, sethostname, mounts) can reach the notebook's own process.
The UTS check goes one step further: its child first moves into a scratch UTS
namespace, so even a wrong answer (``sethostname`` without ``unshare``) renames
only that scratch namespace, never this machine.
"""

import json
import os
import socket

from ...kernel import namespaces
from .child import in_child  # noqa: F401  (re-exported: the notebook uses it)
from .verdict import run_check

__all__ = ["in_child", "check_enter_uts_namespace", "check_is_in_new_pid_namespace"]


def _can_unshare(names) -> bool:
    try:
        return in_child(lambda: True, unshare=names, timeout=10) is True
    except Exception:
        return False


# --- exercise 1: a hostname of your own ---------------------------------------------------

def check_enter_uts_namespace(enter_uts_namespace_and_set_hostname,
                              name: str = "my-container") -> bool:
    """Exercise 1: ``enter_uts_namespace_and_set_hostname(name)``.

    Passes when, after the call, the process is in a UTS namespace other than
    the one it started in, its hostname is ``name`` there, and the host's
    hostname has not changed.
    """
    return run_check("Exercise 1: a hostname of your own (UTS namespace)",
                     _uts_body, enter_uts_namespace_and_set_hostname, name)


def _uts_body(verdict, fn, name):
    host_before = socket.gethostname()
    host_uts = namespaces.namespace_id("self", "uts")
    # The scratch namespace the child starts in: as root a UTS namespace; without
    # root a user namespace too, where we are allowed to make one.
    scratch = ["uts"] if os.geteuid() == 0 else ["user", "uts"]
    if not _can_unshare(scratch):
        verdict.bad("this machine does not let a process create a UTS namespace, so the "
                    "check cannot run your function safely",
                    "run the notebook as root (or where user namespaces are allowed)")
        return

    def attempt():
        start = namespaces.namespace_id("self", "uts")
        returned = fn(name)
        return {"start": start, "after": namespaces.namespace_id("self", "uts"),
                "hostname": socket.gethostname(), "returned": returned}

    seen = in_child(attempt, unshare=scratch)
    host_after = socket.gethostname()
    verdict.expect(host_after == host_before,
                   f"the host's hostname stays {host_before!r}",
                   f"it changed to {host_after!r}!")
    if not verdict.expect(seen["after"] != seen["start"],
                          "your function moves the process into a UTS namespace of its own",
                          "the process is still in the UTS namespace it started in: call "
                          "unshare for 'uts' *before* sethostname, or you rename the whole "
                          "machine"):
        return
    verdict.expect(seen["after"] != host_uts, "that namespace is not the host's")
    verdict.expect(seen["hostname"] == name,
                   f"inside it, the hostname is {name!r}",
                   f"inside, gethostname() says {seen['hostname']!r}, expected {name!r}: "
                   "did you call sethostname(name)?")


# --- exercise 2: am I in a new pid namespace? ---------------------------------------------

def check_is_in_new_pid_namespace(is_in_new_pid_namespace) -> bool:
    """Exercise 2: ``is_in_new_pid_namespace()`` read from /proc/self/status.

    Asked in three places: this process (False), PID 1 of a fresh pid
    namespace (True) and PID 2 there (True). The host's /proc stays mounted,
    so NSpid lists one number per pid namespace level.
    """
    return run_check("Exercise 2: in a new pid namespace or not",
                     _pid_body, is_in_new_pid_namespace)


def _pid_body(verdict, fn):
    outside = in_child(fn)
    if not verdict.expect(outside is False,
                          "on the host (one pid namespace) it answers False",
                          f"on the host it answered {outside!r}: NSpid has a single "
                          "number here"):
        return
    scratch = ["pid"] if os.geteuid() == 0 else ["user", "pid"]
    if not _can_unshare(scratch):
        verdict.bad("this machine does not let a process create a pid namespace, so the "
                    "inside half of the check cannot run",
                    "run the notebook as root (or where user namespaces are allowed)")
        return

    def as_pid_1_and_2():
        first = fn()
        read_fd, write_fd = os.pipe()
        second = os.fork()  # PID 2 of the new namespace
        if second == 0:
            answer = b"error"
            try:
                answer = json.dumps(fn()).encode()
            except BaseException as e:
                answer = json.dumps(f"{type(e).__name__}: {e}").encode()
            finally:
                os.write(write_fd, answer)
                os._exit(0)
        os.close(write_fd)
        data = os.read(read_fd, 4096)
        os.close(read_fd)
        os.waitpid(second, 0)
        return {"pid1": first, "pid2": json.loads(data) if data else None}

    inside = in_child(as_pid_1_and_2, unshare=scratch)
    verdict.expect(inside["pid1"] is True,
                   "as PID 1 of a new pid namespace it answers True",
                   f"there it answered {inside['pid1']!r}: NSpid shows two numbers, the "
                   "host's pid and the pid inside")
    verdict.expect(inside["pid2"] is True,
                   "as PID 2 of that namespace it answers True too",
                   f"there it answered {inside['pid2']!r}: being in a new pid namespace "
                   "is not the same as being PID 1")
