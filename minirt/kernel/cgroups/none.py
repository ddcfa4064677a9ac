"""No cgroups: what a container gets when this user may not create any.

Rootless, without a cgroup v2 subtree delegated to the user (systemd's
Delegate=), there is no directory we may write limits into. Containers still
run, isolated by namespaces; the engine turns -m and --pids-limit into rlimits
(``kernel/rlimits.py``, weaker, and it says so). A limit that reaches this
driver anyway is an error that says so, never a silent no-op.
"""

from ...errors import CgroupError


class NoCgroup:
    version = 0
    dirs: dict = {}

    def __init__(self, name: str, trace=None):
        self.name, self.trace = name, trace

    def create(self) -> None:
        pass

    def apply(self, limits) -> None:
        asked = [flag for flag, value in (("-m", limits.memory), ("--cpus", limits.cpus),
                                          ("--pids-limit", limits.pids)) if value is not None]
        if asked:
            raise CgroupError(f"{', '.join(asked)} cannot be enforced here: limits need a cgroup "
                              "this user may write (run as root, or get a delegated cgroup v2 "
                              "subtree); `minirt doctor` shows what this machine allows")

    def join(self) -> None:
        pass

    def restrict_devices(self) -> None:
        pass  # rootless: the user namespace refuses mknod, and the host's nodes stay the user's

    def procs(self) -> list[int]:
        return []

    def kill_all(self, timeout: float = 5.0) -> None:
        pass

    def remove(self, timeout: float = 5.0) -> None:
        pass

    def oom_kills(self) -> int:
        return 0

    def usage(self) -> dict:
        return dict.fromkeys(("memory_bytes", "memory_peak_bytes", "memory_limit_bytes",
                              "cpu_ns", "pids", "pids_limit_hits"))


class NoCgroupDriver:
    version = 0
    parent = ""

    def cgroup(self, name: str, trace=None) -> NoCgroup:
        return NoCgroup(name, trace)

    def leftovers(self) -> list[str]:
        return []
