"""Exercise 04, a reference solution: a memory limit in a cgroup v1 or v2 directory."""

import os


def _write(path: str, value: int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def write_memory_limit(directory: str, version: int, limit: int) -> None:
    """At most ``limit`` bytes of memory for the cgroup at ``directory``, and no swap."""
    if version == 1:
        _write(f"{directory}/memory.limit_in_bytes", limit)  # first: memsw may not be lower
        if os.path.exists(f"{directory}/memory.memsw.limit_in_bytes"):
            _write(f"{directory}/memory.memsw.limit_in_bytes", limit)  # memory + swap: no swap
    else:
        _write(f"{directory}/memory.max", limit)
        if os.path.exists(f"{directory}/memory.swap.max"):
            _write(f"{directory}/memory.swap.max", 0)  # swap alone: none
