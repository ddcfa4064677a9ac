"""Exercise 04: write a container's memory limit into its cgroup.

minirt calls ``write_memory_limit`` in its own process on the host, for
``minirt run -m SIZE``, right after it has made the container's cgroup
directory and before the container's first process moves in. ``directory``
is that cgroup, e.g. ``/sys/fs/cgroup/memory/minirt/<id>`` (cgroup v1, the
memory controller's tree) or ``/sys/fs/cgroup/minirt/<id>`` (cgroup v2, the
one unified tree); ``version`` says which.

A cgroup's files are its API: the kernel makes them when the directory is
made, and writing a number into one sets the limit. Nothing to import.
"""

import os  # noqa: F401  (os.path.exists: is that file there?)


def write_memory_limit(directory: str, version: int, limit: int) -> None:
    """Let the processes of the cgroup at ``directory`` use at most ``limit`` bytes of
    memory, and no swap on top of it.

    * ``version`` 1: write ``limit`` to ``memory.limit_in_bytes``; and, when the file
      ``memory.memsw.limit_in_bytes`` exists (swap accounting is on), ``limit`` there
      too: memory plus swap at most ``limit`` means no swap at all.
    * ``version`` 2: write ``limit`` to ``memory.max``; and, when the file
      ``memory.swap.max`` exists, ``0`` there.

    Values are written as decimal text (``"33554432"``). Never create a file
    that is not there already: the kernel makes a cgroup's files, and an
    optional one is absent when its feature is off. Raises OSError when the
    kernel refuses a value.
    """
    # TODO 1: version 1: open(os.path.join(directory, "memory.limit_in_bytes"), "w") and
    #         write str(limit).
    # TODO 2: then, only if memory.memsw.limit_in_bytes exists, the same value there. (Order
    #         matters on cgroup v1: memsw may never be below the memory limit, so lower the
    #         memory limit first.)
    # TODO 3: version 2: memory.max, then memory.swap.max = 0 if that file exists.
    raise NotImplementedError("write_memory_limit() is not written yet: see the TODOs in "
                              "write_memory_limit.py")
