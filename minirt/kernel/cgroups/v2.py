"""cgroup v2: one unified tree (Documentation/admin-guide/cgroup-v2.rst).

A controller works in a cgroup only when its parent lists it in
``cgroup.subtree_control``; so we enable ``+memory +cpu +pids`` on the way down
to ``minirt/<id>``. The container's files:

* memory.max (+ memory.swap.max = 0), memory.current, memory.peak, and
  ``oom_kill`` in memory.events;
* cpu.max as ``QUOTA PERIOD`` in microseconds, usage_usec in cpu.stat
  (cpu.stat exists even without the cpu controller);
* pids.max, pids.current, ``max`` in pids.events;
* cgroup.kill: writing 1 kills every process inside at once (Linux 5.14+).

The "no internal processes" rule forbids enabling controllers for the children
of a cgroup that itself holds processes, which is why containers live in leaf
cgroups under a process-free ``minirt`` parent.
"""

import os

from ... import seams
from ...errors import CgroupError
from ...trace import NULL_TRACE
from . import CGROUP_PARENT, cpu_quota, mounted_hierarchies, read_int, read_keyed, write_file
from .base import Cgroup

WANTED = ("memory", "cpu", "pids")
_FLAG_OF = {"memory": "-m/--memory", "cpu": "--cpus", "pids": "--pids-limit"}


def holds_processes(directory: str) -> str:
    """Why ``directory``'s children cannot get controllers, if it is a non-root cgroup
    that holds processes (e.g. the root of a container's cgroup namespace); else "".

    The "no internal processes" rule: such a cgroup may not enable memory (EBUSY),
    and enabling the threaded controllers cpu or pids would make it a thread root,
    into whose ordinary children no process can then move (EOPNOTSUPP). The real
    root cgroup, the one without a ``cgroup.type`` file, is exempt.
    """
    if not os.path.exists(os.path.join(directory, "cgroup.type")):
        return ""
    try:
        with open(os.path.join(directory, "cgroup.procs")) as f:
            busy = bool(f.read().split())
    except OSError:
        return ""
    if not busy:
        return ""
    return (f"{directory} is a cgroup that holds processes (a container's own cgroup?): "
            "its children cannot get controllers")


class V2Cgroup(Cgroup):
    version = 2

    def __init__(self, name, dirs, trace=NULL_TRACE, controllers=(), refused=None):
        super().__init__(name, dirs, trace)
        self.controllers = set(controllers)
        self.refused = refused or {}  # controller -> why it could not be enabled

    @property
    def path(self) -> str:
        return self.dirs["unified"]

    def apply(self, limits) -> None:
        if limits.memory is not None:
            self._need("memory")
            seams.replaceable("write_memory_limit", self.write_memory_limit)(self.path, 2,
                                                                            limits.memory)
        if limits.cpus is not None:
            self._need("cpu")
            write_file(f"{self.path}/cpu.max", f"{cpu_quota(limits.cpus)} 100000", self.trace)
        if limits.pids is not None:
            self._need("pids")
            write_file(f"{self.path}/pids.max", limits.pids, self.trace)

    def write_memory_limit(self, directory: str, version: int, limit: int) -> None:
        """At most ``limit`` bytes of RAM for the cgroup at ``directory``, and no swap."""
        write_file(f"{directory}/memory.max", limit, self.trace)
        if os.path.exists(f"{directory}/memory.swap.max"):
            write_file(f"{directory}/memory.swap.max", 0, self.trace)

    def _need(self, controller: str) -> None:
        if controller in self.refused:
            raise CgroupError(f"{_FLAG_OF[controller]} needs the cgroup v2 '{controller}' "
                              f"controller, which could not be enabled: {self.refused[controller]}")
        if controller not in self.controllers:
            raise CgroupError(
                f"{_FLAG_OF[controller]} needs the cgroup v2 '{controller}' controller, which "
                f"is not available in {os.path.dirname(self.path)} (held by cgroup v1, or not "
                "delegated to this user)")

    def kill_all(self, timeout: float = 5.0) -> None:
        kill_file = f"{self.path}/cgroup.kill"
        if os.path.exists(kill_file):
            try:
                with open(kill_file, "w") as f:
                    f.write("1")
            except OSError:
                pass
        super().kill_all(timeout)

    def oom_kills(self) -> int:
        return read_keyed(f"{self.path}/memory.events").get("oom_kill", 0)

    def usage(self) -> dict:
        limit = None
        try:
            with open(f"{self.path}/memory.max") as f:
                text = f.read().strip()
                limit = None if text == "max" else int(text)
        except FileNotFoundError:
            pass
        usec = read_keyed(f"{self.path}/cpu.stat").get("usage_usec")
        return {
            "memory_bytes": read_int(f"{self.path}/memory.current"),
            "memory_peak_bytes": read_int(f"{self.path}/memory.peak"),
            "memory_limit_bytes": limit,
            "cpu_ns": usec * 1000 if usec is not None else None,
            "pids": read_int(f"{self.path}/pids.current"),
            "pids_limit_hits": read_keyed(f"{self.path}/pids.events").get("max"),
        }


class V2Driver:
    """Creates container cgroups under ``<cgroup2 mount>/minirt``."""

    version = 2

    def __init__(self, parent: str = CGROUP_PARENT, mount_point: str | None = None):
        self.parent = parent
        self.root = mount_point or mounted_hierarchies().get("unified")
        if not self.root:
            raise CgroupError("no cgroup2 filesystem is mounted (expected /sys/fs/cgroup)")

    @property
    def parent_dir(self) -> str:
        return os.path.join(self.root, self.parent)

    def available_controllers(self) -> set[str]:
        with open(os.path.join(self.root, "cgroup.controllers")) as f:
            return set(f.read().split())

    def cgroup(self, name: str, trace=NULL_TRACE) -> V2Cgroup:
        controllers, refused = self._prepare_parent(trace)
        return V2Cgroup(name, {"unified": os.path.join(self.parent_dir, name)}, trace, controllers,
                        refused)

    def _prepare_parent(self, trace) -> tuple[set[str], dict[str, str]]:
        """Make ``minirt/`` and enable the controllers we want for its children.

        Returns the controllers enabled and, for each one that could not be, why.
        Where none can be handed down (the tree is rooted at a cgroup that holds
        processes, e.g. inside a container) a run still works, without limits; a
        limit is then a clear error (``V2Cgroup._need``).
        """
        usable = [c for c in WANTED if c in self.available_controllers()]
        refused = {}
        os.makedirs(self.parent_dir, exist_ok=True)
        for directory in (self.root, self.parent_dir):
            control = os.path.join(directory, "cgroup.subtree_control")
            with open(control) as f:
                enabled = set(f.read().split())
            missing = [c for c in usable if c not in enabled]
            if not missing:
                continue
            why = holds_processes(directory)
            if not why:
                try:
                    # Its own step name: handing controllers down is not a limit
                    # ("cgroup write" steps are the limits a run asked for).
                    write_file(control, " ".join("+" + c for c in missing), trace,
                               step="cgroup enable")
                    continue
                except CgroupError as e:
                    why = str(e)
            for c in missing:
                usable.remove(c)
                refused[c] = why
        return set(usable), refused

    def leftovers(self) -> list[str]:
        if not os.path.isdir(self.parent_dir):
            return []
        return sorted(os.path.join(self.parent_dir, d) for d in os.listdir(self.parent_dir)
                      if os.path.isdir(os.path.join(self.parent_dir, d)))


def delegated_root(mount_point: str | None = None) -> str | None:
    """The cgroup v2 subtree an ordinary user may manage, or None.

    systemd's ``Delegate=`` (and an administrator's ``chown``) hands a user a
    cgroup directory together with its ``cgroup.procs`` and
    ``cgroup.subtree_control``; the user's own processes live in a leaf below
    it (the "no internal processes" rule). So: the parent of our own cgroup,
    when this user owns it and both files.
    """
    from . import cgroup_version
    found = mounted_hierarchies()
    root = mount_point or found.get("unified")
    if not root or cgroup_version(found) != 2:
        return None
    try:
        with open("/proc/self/cgroup") as f:
            ours = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
    except (OSError, StopIteration):
        return None
    parent = os.path.dirname(os.path.join(root, ours.lstrip("/")).rstrip("/"))
    if os.path.realpath(parent) == os.path.realpath(root):
        return None  # the root of the tree is never delegated
    try:
        owners = {os.stat(os.path.join(parent, name)).st_uid
                  for name in ("", "cgroup.procs", "cgroup.subtree_control")}
    except OSError:
        return None
    return parent if owners == {os.geteuid()} else None
