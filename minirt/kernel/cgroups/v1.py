"""cgroup v1: a separate tree per controller (Documentation/admin-guide/cgroup-v1/).

A container's cgroup is a directory ``minirt/<id>`` in each tree we use:

* ``memory``:  memory.limit_in_bytes (+ memory.memsw.limit_in_bytes = no swap),
  usage in memory.usage_in_bytes, peak in memory.max_usage_in_bytes, OOM kills
  counted by ``oom_kill`` in memory.oom_control;
* ``cpu``:     cpu.cfs_quota_us out of cpu.cfs_period_us (the CFS bandwidth limit);
* ``cpuacct``: CPU time used, in nanoseconds, in cpuacct.usage;
* ``pids``:    pids.max, pids.current;
* ``devices``: which device nodes the container may open (devices.deny, devices.allow):
  the few of its minimal /dev, and none of the host's disks, even through a node it
  makes itself with mknod (``restrict_devices``).
"""

import os

from ... import seams
from ...errors import CgroupError
from ...trace import NULL_TRACE
from . import CGROUP_PARENT, cpu_quota, mounted_hierarchies, read_int, read_keyed, write_file
from .base import Cgroup

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices")

# Docker's default device rules: "m" (mknod) of anything, "rw" of /dev/null, zero,
# full, random, urandom, tty, console, ptmx and the terminals in /dev/pts.
ALLOWED_DEVICES = ("c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm",
                   "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",
                   "c 10:200 rwm")


class V1Cgroup(Cgroup):
    version = 1
    # Moving a whole process (cgroup.procs) takes a global lock whose first use
    # after a quiet spell waits for an RCU grace period: ~8 ms here. Moving just
    # the calling thread through ``tasks`` skips that lock (kernel/cgroup/cgroup.c,
    # cgroup_procs_write_start), and for our single-threaded helper process one
    # thread is the whole process.
    join_file = "tasks"

    def apply(self, limits) -> None:
        if limits.memory is not None:
            directory = self._need("memory", "-m/--memory")
            seams.replaceable("write_memory_limit", self.write_memory_limit)(directory, 1,
                                                                            limits.memory)
        if limits.cpus is not None:
            directory = self._need("cpu", "--cpus")
            write_file(f"{directory}/cpu.cfs_period_us", 100_000, self.trace)
            write_file(f"{directory}/cpu.cfs_quota_us", cpu_quota(limits.cpus), self.trace)
        if limits.pids is not None:
            directory = self._need("pids", "--pids-limit")
            write_file(f"{directory}/pids.max", limits.pids, self.trace)

    def write_memory_limit(self, directory: str, version: int, limit: int) -> None:
        """At most ``limit`` bytes of RAM for the cgroup at ``directory``, and no swap."""
        write_file(f"{directory}/memory.limit_in_bytes", limit, self.trace)
        # Without this the kernel would push the excess to swap instead of
        # enforcing the limit; memsw (RAM + swap) exists only with swap accounting.
        if os.path.exists(f"{directory}/memory.memsw.limit_in_bytes"):
            write_file(f"{directory}/memory.memsw.limit_in_bytes", limit, self.trace)

    def restrict_devices(self) -> None:
        """Deny every device, then allow Docker's short list (devices.deny / devices.allow)."""
        directory = self.dirs.get("devices")
        if directory is None:
            return
        write_file(f"{directory}/devices.deny", "a", self.trace, step="device rule")
        for rule in ALLOWED_DEVICES:
            write_file(f"{directory}/devices.allow", rule, self.trace, step="device rule")

    def _need(self, controller: str, flag: str) -> str:
        if controller not in self.dirs:
            raise CgroupError(f"{flag} needs the cgroup v1 '{controller}' controller, "
                              "which is not mounted on this machine")
        return self.dirs[controller]

    def oom_kills(self) -> int:
        if "memory" not in self.dirs:
            return 0
        return read_keyed(f"{self.dirs['memory']}/memory.oom_control").get("oom_kill", 0)

    def usage(self) -> dict:
        memory, cpuacct, pids = (self.dirs.get(c) for c in ("memory", "cpuacct", "pids"))
        limit = read_int(f"{memory}/memory.limit_in_bytes") if memory else None
        return {
            "memory_bytes": read_int(f"{memory}/memory.usage_in_bytes") if memory else None,
            "memory_peak_bytes": read_int(f"{memory}/memory.max_usage_in_bytes") if memory else None,
            "memory_limit_bytes": limit if limit and limit < 2 ** 62 else None,
            "cpu_ns": read_int(f"{cpuacct}/cpuacct.usage") if cpuacct else None,
            "pids": read_int(f"{pids}/pids.current") if pids else None,
            "pids_limit_hits": read_keyed(f"{pids}/pids.events").get("max") if pids else None,
        }


class V1Driver:
    """Creates container cgroups in each v1 tree that holds a controller we use."""

    version = 1

    def __init__(self, parent: str = CGROUP_PARENT, hierarchies: dict | None = None):
        self.parent = parent
        found = hierarchies or mounted_hierarchies()
        self.roots = {c: found[c] for c in CONTROLLERS if c in found}
        if not self.roots:
            raise CgroupError("no cgroup v1 tree with memory, cpu or pids is mounted")

    def cgroup(self, name: str, trace=NULL_TRACE) -> V1Cgroup:
        dirs = {c: os.path.join(root, self.parent, name) for c, root in self.roots.items()}
        return V1Cgroup(name, dirs, trace)

    def leftovers(self) -> list[str]:
        """Container cgroup directories that still exist under our parent (for leak checks)."""
        found = []
        for root in set(self.roots.values()):
            parent = os.path.join(root, self.parent)
            if os.path.isdir(parent):
                found += [os.path.join(parent, d) for d in os.listdir(parent)
                          if os.path.isdir(os.path.join(parent, d))]
        return sorted(found)
