"""Resource limits per process (man 2 setrlimit): the fallback when there is no cgroup.

A rootless user without a delegated cgroup cannot write memory.max or pids.max,
but any process may lower its own rlimits, and its children inherit them. They
are weaker than cgroup limits, and minirt says so when it uses them:

* ``RLIMIT_AS`` caps each process's *virtual* address space, not the memory the
  group uses: an allocation past it fails (ENOMEM) instead of an OOM kill, and
  several processes may together use more;
* ``RLIMIT_NPROC`` counts every process of the *user* (its real uid), not only
  the container's;
* there is none for a share of the CPU: ``--cpus`` needs a cgroup.
"""

from ..errors import CgroupError

WEAKER = ("limits enforced with rlimits, weaker than cgroups (no cgroup for this user): "
          "-m caps each process's virtual memory, --pids-limit counts all of this user's "
          "processes")


def from_limits(limits) -> dict[str, int]:
    """The rlimits standing in for ``limits``; refuses what rlimits cannot express."""
    if limits.cpus is not None:
        raise CgroupError("--cpus cannot be enforced here: a CPU share needs a cgroup this user "
                          "may write (run as root, or get a delegated cgroup v2 subtree)")
    found = {}
    if limits.memory is not None:
        found["RLIMIT_AS"] = limits.memory
    if limits.pids is not None:
        found["RLIMIT_NPROC"] = limits.pids
    return found


def apply(rlimits: dict) -> None:
    """Set this process's rlimits (inherited by what it execs and forks): a value is
    both limits, a [soft, hard] pair (``--ulimit``) each."""
    import resource
    for name, value in rlimits.items():
        soft, hard = value if isinstance(value, (list, tuple)) else (value, value)
        resource.setrlimit(getattr(resource, name), (soft, hard))
