"""``docker stats`` over the Engine API: a container's resource use, in Docker's JSON.

Docker concept: the daemon does not compute percentages. It sends raw
counters, and the client divides: CPU % is the container's CPU time used
between two readings (``cpu_stats`` and ``precpu_stats``, nanoseconds) over
the whole machine's CPU time in the same interval (``system_cpu_usage``, from
/proc/stat), times the number of CPUs; MEM % is ``memory_stats.usage`` over
``memory_stats.limit``. So one JSON object carries two readings.

The numbers come from the same ``lab.monitor.Sampler`` that ``minirt stats``
and the notebooks use (the container's cgroup: memory charged, peak, limit,
CPU time, pids), so every front end shows the same container the same way.
One deliberate difference from dockerd: ``memory_stats.stats`` (the cgroup's
memory.stat) leaves out ``inactive_file`` and ``total_inactive_file``. The
docker CLI subtracts that page cache from the usage it prints; ``minirt
stats`` does not, and leaving it out makes both print the same MEM USAGE.

``stream=1`` (the default) sends one object per second until the client
leaves or the container stops; ``stream=0`` one object, read over one second
so CPU % has two readings to compare (``one-shot=1``: at once, no precpu).

Reference: Docker Engine API v1.43, ContainerStats (ContainerStatsResponse).
"""

import os
import time

from ..lab.monitor import Sampler, stats_row
from .api import _find_container, iso_time, route

NANOSECONDS_PER_TICK = 1e9 / os.sysconf("SC_CLK_TCK")
HIDDEN_MEMORY_STATS = ("inactive_file", "total_inactive_file")  # see the module docstring


def system_cpu_ns() -> int:
    """The machine's CPU time so far, all CPUs (the first line of /proc/stat, man 5 proc).

    As dockerd: user, nice, system, idle, iowait, irq and softirq, in nanoseconds.
    """
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(sum(int(v) for v in fields[1:8]) * NANOSECONDS_PER_TICK)


def memory_stat(cgroup) -> dict:
    """The cgroup's memory.stat as numbers (v1: the memory tree; v2: the unified one)."""
    dirs = getattr(cgroup, "dirs", None) or {}   # rootless without cgroups: none
    directory = dirs.get("memory") or dirs.get("unified")
    found = {}
    try:
        with open(os.path.join(directory, "memory.stat")) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if value.strip().isdigit() and key not in HIDDEN_MEMORY_STATS:
                    found[key] = int(value)
    except (OSError, TypeError):
        pass
    return found


class Reading:
    """One sample of the container plus the machine's CPU time at that moment."""

    def __init__(self, sampler: Sampler):
        self.sample = sampler.sample()
        self.system_ns = system_cpu_ns()
        self.time = time.time()
        self.memory_stats = memory_stat(sampler.cgroup)

    def cpu_stats(self) -> dict:
        cpu_ns = int((self.sample.cpu_seconds or 0) * 1e9)
        return {"cpu_usage": {"total_usage": cpu_ns, "usage_in_kernelmode": 0,
                              "usage_in_usermode": 0},
                "system_cpu_usage": self.system_ns, "online_cpus": os.cpu_count() or 1,
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


NO_CPU_STATS = {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


def stats_json(container: dict, now: Reading, before: Reading | None) -> dict:
    """Docker's ContainerStatsResponse from two readings (``before`` None: no precpu)."""
    sample = now.sample
    row = stats_row(sample)  # the same usage and limit `minirt stats` prints
    memory = {"usage": row["memory_bytes"], "limit": row["memory_limit_bytes"],
              "stats": now.memory_stats}
    if sample.memory_peak_bytes is not None:
        memory["max_usage"] = sample.memory_peak_bytes
    pids = {"current": row["pids"] or 0}
    pids_limit = (container.get("limits") or {}).get("pids")
    if pids_limit:
        pids["limit"] = pids_limit
    return {
        "name": "/" + container["name"], "id": container["id"],
        "read": iso_time(now.time), "preread": iso_time(before.time if before else None),
        "pids_stats": pids, "num_procs": 0,
        "blkio_stats": {"io_service_bytes_recursive": None, "io_serviced_recursive": None,
                        "io_queue_recursive": None, "io_service_time_recursive": None,
                        "io_wait_time_recursive": None, "io_merged_recursive": None,
                        "io_time_recursive": None, "sectors_recursive": None},
        "storage_stats": {},
        "cpu_stats": now.cpu_stats(),
        "precpu_stats": before.cpu_stats() if before else NO_CPU_STATS,
        "memory_stats": memory,
    }


@route("GET", r"/containers/(?P<ref>[^/]+)/stats")
def container_stats(request, ref):
    """``docker stats``: one reading per second (``stream=1``), or one (``stream=0``)."""
    engine = request.daemon.engine
    container = _find_container(engine, ref)
    stream = request.flag("stream", True)
    one_shot = request.flag("one-shot")
    sampler = Sampler(container["name"], cgroup=engine.cgroups.cgroup(container["id"]))
    before = None
    if not stream and not one_shot:
        before = Reading(sampler)
        time.sleep(1.0)   # as dockerd: a one-off answer still spans one interval
    with request.json_stream() as out:
        while True:
            now = Reading(sampler)
            out.send(stats_json(container, now, before))
            if not stream or now.sample.processes == 0 and not sampler.cgroup.procs():
                return  # one answer asked for, or the container has stopped
            next_reading = time.monotonic() + 1.0
            if request.client_gone(timeout=1.0):
                return
            time.sleep(max(0.0, next_reading - time.monotonic()))  # a chatty client: still 1/s
            before = now
