"""What both cgroup drivers share: a cgroup is a directory; its files are the API.

Create a cgroup with mkdir(2), move a process in by writing its pid to
``cgroup.procs``, set limits by writing control files, and remove it with
rmdir(2) once no process is left in it.
"""

import errno
import os
import _signal as signal  # the C module under `signal`: same calls, no enums to build (~1 ms)
import time

from ...errors import CgroupError
from ...trace import NULL_TRACE
from . import CGROUP_PARENT


class Cgroup:
    """One container's cgroup, possibly spread over several trees (cgroup v1).

    Subclasses say where each controller's files are and how limits and usage
    are spelled in their cgroup version.
    """

    version = 0

    def __init__(self, name: str, dirs: dict[str, str], trace=NULL_TRACE):
        self.name = name
        self.dirs = dirs          # controller (or "unified") -> directory
        self.trace = trace

    # --- life cycle -------------------------------------------------------
    def create(self) -> None:
        for directory in self.unique_dirs():
            with self.trace.step("cgroup mkdir", path=directory):
                for attempt in range(5):
                    try:
                        os.makedirs(directory)
                        break
                    except FileExistsError:
                        raise CgroupError(f"cgroup {directory} already exists: is a container "
                                          "with this id still running?") from None
                    except FileNotFoundError:
                        # The shared parent was just removed by the last container leaving
                        # it (remove_parent_if_empty), between our two mkdirs: again.
                        if attempt == 4:
                            raise CgroupError(f"cannot create cgroup {directory}: its parent "
                                              "keeps disappearing") from None
                    except OSError as e:
                        raise CgroupError(f"cannot create cgroup {directory}: "
                                          f"{e.strerror}") from None

    # The file a process writes "0" to in order to move itself in.
    join_file = "cgroup.procs"

    def add(self, pid: int) -> None:
        """Move process ``pid`` (and so its future children) into this cgroup."""
        for directory in self.unique_dirs():
            with self.trace.step("cgroup join", file=f"{directory}/cgroup.procs", pid=pid):
                with open(os.path.join(directory, "cgroup.procs"), "w") as f:
                    f.write(str(pid))

    def join(self) -> None:
        """Move the calling (single-threaded) process into this cgroup.

        Children forked afterwards start inside it, so every process of the
        container is counted and limited from its first instruction.
        """
        for directory in self.unique_dirs():
            path = os.path.join(directory, self.join_file)
            with self.trace.step("cgroup join", file=path, pid=0):
                with open(path, "w") as f:
                    f.write("0")

    def procs(self) -> list[int]:
        """Pids of the processes in this cgroup (in any of its trees)."""
        pids = set()
        for directory in self.unique_dirs():
            try:
                with open(os.path.join(directory, "cgroup.procs")) as f:
                    pids.update(int(line) for line in f if line.strip())
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ENODEV):  # ENODEV: removed as we read
                    raise
        return sorted(pids)

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the cgroup until none is left."""
        deadline = time.monotonic() + timeout
        while (pids := self.procs()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.005)

    def remove(self, timeout: float = 5.0) -> None:
        """Remove the cgroup's directories (and the shared parent, when it is empty).

        rmdir fails with EBUSY while a dying process is still being reaped, so
        we kill what is left and retry for a moment.
        """
        for directory in self.unique_dirs():
            if not os.path.isdir(directory):
                continue
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with self.trace.step("cgroup rmdir", path=directory):
                        os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise CgroupError(f"cannot remove cgroup {directory}: {e.strerror}") from None
                    self.kill_all(timeout=0.5)
                    time.sleep(0.002)
            remove_parent_if_empty(os.path.dirname(directory))

    def unique_dirs(self) -> list[str]:
        return sorted(set(self.dirs.values()))

    # --- what subclasses provide -----------------------------------------
    def restrict_devices(self) -> None:
        """Allow only the container's own few devices (v1's devices controller). cgroup v2
        has no files for it (runc attaches an eBPF program): here, nothing."""

    def apply(self, limits) -> None:
        raise NotImplementedError

    def oom_kills(self) -> int:
        """How many times the kernel's OOM killer struck inside this cgroup."""
        raise NotImplementedError

    def usage(self) -> dict:
        """Current use: memory_bytes, memory_peak_bytes, cpu_ns, pids (None if unknown)."""
        raise NotImplementedError


def remove_parent_if_empty(parent: str) -> None:
    """rmdir the shared ``minirt`` parent when the last container has left it."""
    if os.path.basename(parent) != CGROUP_PARENT and not os.path.basename(parent).startswith(
            CGROUP_PARENT + "-"):
        return
    try:
        os.rmdir(parent)
    except OSError:
        pass  # other containers still use it (EBUSY) or it is already gone
