"""Watching containers (and VMs) use resources: cgroup counters plus psutil.

Two views of the same processes:

* the **cgroup** view (the kernel's own accounting for the container: memory
  usage and peak, CPU time, number of pids; what ``docker stats`` shows);
* the **process** view (psutil over each process: RSS, and PSS/USS where
  /proc/PID/smaps_rollup is readable, CPU time, threads). For a VM this is the
  only view: the qemu process tree is what it costs the host.

``Sampler.sample()`` returns one ``Sample``; ``watch()`` takes samples at an
interval and returns a tidy time series (a list of samples, or a pandas
DataFrame with ``to_frame`` when pandas is installed).
psutil: https://psutil.readthedocs.io; cgroup files: man 7 cgroups.
"""

import time

import psutil

from ..record import Record


class Sample(Record):
    """One measurement of one target at time ``t`` (seconds since the watch began)."""

    __slots__ = ("target", "t", "memory_bytes", "memory_peak_bytes", "memory_limit_bytes",
                 "cpu_seconds", "cpu_percent", "pids", "rss_bytes", "pss_bytes", "uss_bytes",
                 "threads", "processes")

    def __init__(self, target: str, t: float, memory_bytes=None, memory_peak_bytes=None,
                 memory_limit_bytes=None, cpu_seconds=None, cpu_percent=None, pids=None,
                 rss_bytes=0, pss_bytes=None, uss_bytes=None, threads=0, processes=0):
        self.target = target
        self.t = t
        self.memory_bytes = memory_bytes              # cgroup: memory charged to the group
        self.memory_peak_bytes = memory_peak_bytes    # cgroup: highest value so far
        self.memory_limit_bytes = memory_limit_bytes  # cgroup: -m, or None
        self.cpu_seconds = cpu_seconds                # CPU time used so far
        self.cpu_percent = cpu_percent                # since the previous sample; 100 = 1 CPU
        self.pids = pids                              # cgroup: tasks counted by the pids controller
        self.rss_bytes = rss_bytes                    # psutil: resident set, summed over processes
        self.pss_bytes = pss_bytes                    # psutil: proportional set (shared pages split)
        self.uss_bytes = uss_bytes                    # psutil: pages only these processes use
        self.threads = threads
        self.processes = processes


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (those still alive)."""
    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def process_view(processes: list[psutil.Process]) -> dict:
    """RSS, PSS, USS, CPU seconds and threads summed over ``processes``."""
    view = {"rss_bytes": 0, "pss_bytes": 0, "uss_bytes": 0, "cpu_seconds": 0.0, "threads": 0,
            "processes": 0}
    full = True
    for process in processes:
        try:
            with process.oneshot():
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue  # exited, not yet reaped: it uses nothing any more
                cpu = process.cpu_times()
                view["cpu_seconds"] += cpu.user + cpu.system
                view["threads"] += process.num_threads()
                try:
                    info = process.memory_full_info()  # reads smaps_rollup: PSS and USS
                    view["pss_bytes"] += info.pss
                    view["uss_bytes"] += info.uss
                    view["rss_bytes"] += info.rss
                except (psutil.AccessDenied, AttributeError):
                    full = False
                    view["rss_bytes"] += process.memory_info().rss
                view["processes"] += 1
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    if not full:
        view["pss_bytes"] = view["uss_bytes"] = None
    return view


class Sampler:
    """Samples one target: a container (by its cgroup) or a process tree (by its root pid)."""

    def __init__(self, name: str, cgroup=None, pid: int | None = None):
        if cgroup is None and pid is None:
            raise ValueError("give a cgroup (a container) or a pid (a process tree)")
        self.name, self.cgroup, self.pid = name, cgroup, pid
        self.started = time.monotonic()
        self.previous: tuple[float, float] | None = None  # (wall, cpu seconds)

    @classmethod
    def for_container(cls, engine, container: str) -> "Sampler":
        """A sampler for a running container, by id (or its prefix) or name."""
        config = engine.find_container(container)
        return cls(config.get("name") or config["id"][:12], cgroup=engine.cgroups.cgroup(config["id"]))

    def processes(self) -> list[psutil.Process]:
        if self.cgroup is not None:
            found = []
            for pid in self.cgroup.procs():
                try:
                    found.append(psutil.Process(pid))
                except psutil.NoSuchProcess:
                    pass
            return found
        return process_tree(self.pid)

    def sample(self) -> Sample:
        now = time.monotonic()
        view = process_view(self.processes())
        s = Sample(self.name, now - self.started, **view)
        if self.cgroup is not None:
            usage = self.cgroup.usage()
            s.memory_bytes, s.memory_peak_bytes = usage["memory_bytes"], usage["memory_peak_bytes"]
            s.memory_limit_bytes, s.pids = usage["memory_limit_bytes"], usage["pids"]
            if usage["cpu_ns"] is not None:
                s.cpu_seconds = usage["cpu_ns"] / 1e9  # the kernel's count beats psutil's
        if self.previous is not None and now > self.previous[0]:
            s.cpu_percent = 100.0 * (s.cpu_seconds - self.previous[1]) / (now - self.previous[0])
        self.previous = (now, s.cpu_seconds)
        return s


def watch(samplers: list[Sampler], interval: float = 0.5, duration: float | None = None,
          until=None, max_samples: int = 100_000) -> list[Sample]:
    """Sample every target each ``interval`` seconds, for ``duration`` or ``until()``.

    Stops early when every target has gone (no process left).
    """
    samples: list[Sample] = []
    deadline = None if duration is None else time.monotonic() + duration
    while len(samples) < max_samples:
        taken = [sampler.sample() for sampler in samplers]
        samples += taken
        if all(s.processes == 0 for s in taken):
            break
        if (deadline is not None and time.monotonic() >= deadline) or (until and until()):
            break
        time.sleep(interval)
    return samples


def to_frame(samples: list[Sample]):
    """The samples as a pandas DataFrame (pandas is optional: ImportError without it)."""
    import pandas
    return pandas.DataFrame([s.to_dict() for s in samples])


def host_memory_bytes() -> int:
    return psutil.virtual_memory().total


def stats_row(sample: Sample) -> dict:
    """``docker stats`` columns from a sample: CPU %, MEM USAGE / LIMIT, MEM %, PIDS."""
    limit = sample.memory_limit_bytes or host_memory_bytes()
    usage = sample.memory_bytes if sample.memory_bytes is not None else sample.rss_bytes
    return {"cpu_percent": sample.cpu_percent or 0.0, "memory_bytes": usage,
            "memory_limit_bytes": limit, "memory_percent": 100.0 * usage / limit,
            "pids": sample.pids if sample.pids is not None else sample.threads}
