"""Reference solutions for notebook 3 (cgroups)."""

import os


def write_memory_limit(cgroup_dir, limit_bytes, version):
    """Write a memory limit: cgroup v1 reads memory.limit_in_bytes, v2 memory.max."""
    name = "memory.limit_in_bytes" if version == 1 else "memory.max"
    with open(os.path.join(cgroup_dir, name), "w") as f:
        f.write(str(limit_bytes))


def cpu_quota(cpus, period_us=100_000):
    """Microseconds of CPU time per period; the kernel refuses less than 1000 µs."""
    return max(1000, int(cpus * period_us))
