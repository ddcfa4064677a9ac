"""Control groups: limits on what a group of processes may use (man 7 cgroups).

One API, two kernel interfaces. ``Limits`` says what a container may use;
``open_driver()`` picks the driver this machine has:

* cgroup v2 (``v2.py``): one unified tree; limits in ``memory.max``,
  ``cpu.max``, ``pids.max``. Most current distributions, Binder, Kubernetes.
* cgroup v1 (``v1.py``): one tree per controller; limits in
  ``memory.limit_in_bytes``, ``cpu.cfs_quota_us``, ``pids.max``. Older
  distributions and hybrid machines such as this lab's development VM.

Either way a container's cgroup lives at ``<tree>/minirt/<container id>``.
"""

import errno
import os

from ...errors import CgroupError, UsageError
from ...record import Record

CGROUP_PARENT = "minirt"

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


class Limits(Record):
    """What a container may use. ``None`` means unlimited."""

    __slots__ = ("memory", "cpus", "pids")

    def __init__(self, memory: int | None = None, cpus: float | None = None,
                 pids: int | None = None):
        self.memory = memory    # bytes of RAM (no swap on top)
        self.cpus = cpus        # CPUs' worth of time per period, e.g. 0.5
        self.pids = pids        # most processes and threads at once

    @classmethod
    def parse(cls, memory: str | int | None = None, cpus: str | float | None = None,
              pids: str | int | None = None) -> "Limits":
        """Build limits from docker-style strings: ``memory="64m"``, ``cpus="0.5"``."""
        return cls(memory=parse_memory(memory), cpus=parse_cpus(cpus), pids=parse_pids(pids))


def parse_memory(text) -> int | None:
    """``'64m'`` -> 67108864; docker's units b, k, m, g (powers of 1024)."""
    if text is None or isinstance(text, int):
        return text
    spelled = str(text).strip().lower()
    if len(spelled) > 2 and spelled.endswith("b") and spelled[-2] in "kmgt":
        spelled = spelled[:-1]                     # "64mb" means "64m"
    unit = spelled[-1:] if spelled[-1:] in ("b", "k", "m", "g", "t") else ""
    number = spelled[:len(spelled) - len(unit)].strip()
    if not number or number.count(".") > 1 or not number.replace(".", "").isdigit():
        raise UsageError(f"invalid memory limit {text!r}: use a number with an optional "
                         "unit b, k, m or g, e.g. 64m")
    value = int(float(number) * _UNITS[unit])
    if value < 6 * 1024 ** 2:
        raise UsageError(f"memory limit {text!r} is too small: the minimum is 6m")
    return value


def parse_cpus(text) -> float | None:
    """``'0.5'`` -> 0.5 CPUs; must be positive and at most this machine's CPU count."""
    if text is None:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"invalid --cpus value {text!r}: use a number such as 0.5 or 2") from None
    available = os.cpu_count() or 1
    if not 0.01 <= value <= available:
        raise UsageError(f"--cpus {text!r} out of range: choose between 0.01 and {available} "
                         "(the CPUs this machine has)")
    return value


def parse_pids(text) -> int | None:
    """``'32'`` -> 32; docker treats 0 and negative values as unlimited."""
    if text is None:
        return None
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"invalid --pids-limit {text!r}: use a whole number such as 32") from None
    return value if value > 0 else None


def cpu_quota(cpus: float, period_us: int = 100_000) -> int:
    """Microseconds of CPU time allowed per ``period_us`` for ``cpus`` CPUs."""
    return max(1000, int(cpus * period_us))


def read_int(path: str) -> int | None:
    """An integer cgroup file; None when it is absent or its cgroup is going away (ENODEV:
    read while the container's cgroup is removed, e.g. by a sampler racing the cleanup)."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    except OSError as e:
        if e.errno == errno.ENODEV:
            return None
        raise


def read_keyed(path: str) -> dict[str, int]:
    """Parse a flat-keyed cgroup file (``key value`` per line), e.g. memory.events."""
    values = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                    values[parts[0]] = int(parts[1])
    except FileNotFoundError:
        pass
    except OSError as e:  # ENODEV: the cgroup is being removed (see read_int)
        if e.errno != errno.ENODEV:
            raise
    return values


def write_file(path: str, value, trace, step: str = "cgroup write") -> None:
    """Write one cgroup control file, recorded as a trace step (``step``)."""
    with trace.step(step, file=path, value=str(value)):
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError as e:
            raise CgroupError(f"cannot write {value} to {path}: {e.strerror}") from None


def mounted_hierarchies() -> dict[str, str]:
    """Controller name -> mount point of every cgroup hierarchy this process sees.

    The v2 tree is listed under the key ``"unified"``.
    """
    found = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if not tail:
                continue
            if tail[0] == "cgroup2":
                found.setdefault("unified", fields[4])
            elif tail[0] == "cgroup":
                for option in tail[2].split(","):
                    if option in ("memory", "cpu", "cpuacct", "pids", "cpuset", "freezer", "devices"):
                        found.setdefault(option, fields[4])
    return found


def cgroup_version(found: dict[str, str] | None = None) -> int:
    """2 when memory, cpu and pids are all on cgroup v2 (or there is no v1 at all), else 1."""
    found = found or mounted_hierarchies()
    if "unified" in found and not any(c in found for c in ("memory", "cpu", "pids")):
        return 2
    return 1 if any(c in found for c in ("memory", "cpu", "pids")) else 2


def open_driver(version: int | None = None, **options):
    """The cgroup driver for this machine: ``V1Driver`` or ``V2Driver``."""
    found = mounted_hierarchies()
    if (version or cgroup_version(found)) == 2:
        from .v2 import V2Driver
        return V2Driver(mount_point=found.get("unified"), **options)
    from .v1 import V1Driver
    return V1Driver(hierarchies=found, **options)
