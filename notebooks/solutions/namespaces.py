"""Reference solutions for notebook 2, "From chroot to namespaces".

Kept outside the learner's notebook; ``tests/test_exercises_namespaces.py``
shows they pass ``minirt.lab.checks.namespaces`` and that wrong answers fail.
"""

import socket

from minirt.kernel import namespaces


def enter_uts_namespace_and_set_hostname(name: str) -> None:
    """Exercise 1: a UTS namespace of our own, then a hostname in it.

    The order is the whole point: sethostname before unshare renames the host.
    """
    namespaces.unshare(["uts"])
    socket.sethostname(name)


def is_in_new_pid_namespace() -> bool:
    """Exercise 2: NSpid lists our pid in each pid namespace, outermost first.

    More than one number means we live in a pid namespace nested below the one
    this /proc belongs to (man 5 proc, /proc/pid/status).
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return len(line.split()[1:]) > 1
    return False
