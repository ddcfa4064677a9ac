"""Checks for notebook 3 (cgroups): the learner's limit is written into a real cgroup.

Each check first tries the learner's function on a plain temporary directory
(a stand-in that shows which file was written, for both cgroup versions), then,
where this machine allows it, on a REAL cgroup: a directory
``minirt-exercise-<pid>`` made under the hierarchy's root, with a short-lived
child process moved into it to see the kernel enforce the limit. That cgroup is
always removed, whatever the learner's code did.
"""

import os
import subprocess
import sys
import tempfile
import time

from ...kernel.cgroups import cgroup_version, mounted_hierarchies, read_keyed
from .verdict import run_check

MIB = 1024 ** 2
LIMIT_FILE = {1: "memory.limit_in_bytes", 2: "memory.max"}


def note(verdict, text: str) -> None:
    """A neutral line in the verdict: something the check could not try here."""
    verdict.lines.append(f"  · {text}")


# --- a real cgroup for one check -------------------------------------------------------

def exercise_cgroup_dir(controller: str) -> tuple[str | None, int, str]:
    """Where this machine keeps ``controller``: (cgroup dir to create, version, why not).

    The directory is ``<root of the hierarchy>/minirt-exercise-<pid>``; on
    cgroup v2 the root must list the controller in ``cgroup.controllers``.
    """
    found = mounted_hierarchies()
    version = cgroup_version(found)
    root = found.get(controller if version == 1 else "unified")
    if root is None:
        return None, version, f"no cgroup hierarchy holds the {controller} controller here"
    if version == 2:
        try:
            with open(os.path.join(root, "cgroup.controllers")) as f:
                available = f.read().split()
        except OSError as e:
            return None, version, f"cannot read {root}/cgroup.controllers: {e.strerror}"
        if controller not in available:
            return None, version, f"the {controller} controller is not in {root}/cgroup.controllers"
    return os.path.join(root, f"minirt-exercise-{os.getpid()}"), version, ""


def make_cgroup(directory: str, controller: str, version: int) -> str:
    """mkdir the cgroup (a stale one from an interrupted check is removed first).

    Returns "" when it worked, else why not (e.g. not root).
    """
    remove_cgroup(directory)
    try:
        if version == 2:  # children get a controller only if the parent hands it down
            control = os.path.join(os.path.dirname(directory), "cgroup.subtree_control")
            with open(control) as f:
                enabled = f.read().split()
            if controller not in enabled:
                with open(control, "w") as f:
                    f.write(f"+{controller}")
        os.mkdir(directory)
    except OSError as e:
        return f"cannot create {directory}: {e.strerror} (this needs root)"
    return ""


def real_cgroup(verdict, controller: str) -> tuple[str | None, int]:
    """Create the exercise's real cgroup for ``controller``: (directory, version).

    (None, 0) when this machine cannot (not root, no such controller): the
    verdict notes that the real-cgroup part was skipped, and why.
    """
    directory, version, why = exercise_cgroup_dir(controller)
    if directory is not None:
        why = make_cgroup(directory, controller, version)
    if directory is None or why:
        note(verdict, f"the real-cgroup part was skipped: {why}")
        return None, 0
    return directory, version


def remove_cgroup(directory: str, timeout: float = 5.0) -> None:
    """Kill whatever is left in the cgroup, then rmdir it (EBUSY until the dead are reaped)."""
    deadline = time.monotonic() + timeout
    while os.path.isdir(directory):
        try:
            with open(os.path.join(directory, "cgroup.procs")) as f:
                for pid in f.read().split():
                    try:
                        os.kill(int(pid), 9)
                    except ProcessLookupError:
                        pass
        except OSError:
            pass
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)


def run_in_cgroup(directory: str, code: str, timeout: float = 30.0):
    """Run ``python -c code`` as a child that first moves itself into the cgroup.

    A shell writes its own pid ($$) into cgroup.procs, then execs Python: the
    process is inside the cgroup before it allocates or computes anything.
    Returns (returncode, stdout, CPU seconds used, wall seconds).
    """
    script = 'echo $$ > "$1/cgroup.procs" && exec "$2" -c "$3"'
    started = time.monotonic()
    child = subprocess.Popen(["/bin/sh", "-c", script, "sh", directory, sys.executable, code],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = started + timeout
        while True:
            pid, status, rusage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                child.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the child did not finish in {timeout:g} s")
            time.sleep(0.01)
        wall = time.monotonic() - started
        return (child.returncode, child.stdout.read().decode(errors="replace"),
                rusage.ru_utime + rusage.ru_stime, wall)
    finally:
        if child.returncode is None:
            child.kill()
            child.wait()
        child.stdout.close()


def read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


# --- exercise 3.1: write a memory limit ---------------------------------------------------

def check_write_memory_limit(write_memory_limit) -> bool:
    """``write_memory_limit(cgroup_dir, limit_bytes, version)`` writes the right file."""
    return run_check("Exercise 3.1: write a memory limit", _memory_body, write_memory_limit)


def _memory_body(verdict, write_memory_limit):
    limit = 40 * MIB
    # 1. Stand-ins: a plain directory shows which file the function writes, per version.
    for version in (1, 2):
        with tempfile.TemporaryDirectory(prefix="minirt-exercise-") as fake:
            write_memory_limit(fake, limit, version)
            written = sorted(os.listdir(fake))
            wanted = LIMIT_FILE[version]
            if not verdict.expect(written == [wanted], f"cgroup v{version}: writes {wanted}",
                                  f"it wrote {written or 'nothing'}; cgroup v{version} "
                                  f"reads the memory limit from {wanted}"):
                return
            value = read_text(os.path.join(fake, wanted))
            if not verdict.expect(value == str(limit), f"cgroup v{version}: writes {limit} "
                                  "(plain bytes)", f"it wrote {value!r}: write the number of "
                                  "bytes, as decimal digits, e.g. str(limit_bytes)"):
                return
    # 2. A real cgroup: the kernel reads the file back and enforces it.
    directory, version = real_cgroup(verdict, "memory")
    if directory is None:
        return
    try:
        write_memory_limit(directory, limit, version)
        limit_file = os.path.join(directory, LIMIT_FILE[version])
        value = read_text(limit_file)
        if not verdict.expect(value == str(limit), f"the kernel reads back {value} from "
                              f"{limit_file}", f"it holds {value!r}, not {limit}"):
            return
        # No swap on top: without this the kernel could push the excess to swap
        # instead of killing (the check's job, not the exercise's).
        swap_file = {1: "memory.memsw.limit_in_bytes", 2: "memory.swap.max"}[version]
        if os.path.exists(os.path.join(directory, swap_file)):
            with open(os.path.join(directory, swap_file), "w") as f:
                f.write(str(limit) if version == 1 else "0")
        small, _, _, _ = run_in_cgroup(directory, f"x = b'a' * {8 * MIB}")
        verdict.expect(small == 0, "a child using 8 MiB inside the cgroup runs fine",
                       f"it ended with {small}: is the limit far smaller than {limit} bytes?")
        big, _, _, _ = run_in_cgroup(directory, f"x = b'a' * {2 * limit}")
        verdict.expect(big == -9, f"a child asking for {2 * limit // MIB} MiB is killed "
                       "(SIGKILL, exit code 137 in docker's terms)",
                       f"it ended with {big}, not -9 (SIGKILL): the limit did not hold")
        counter = (read_keyed(os.path.join(directory, "memory.oom_control")) if version == 1
                   else read_keyed(os.path.join(directory, "memory.events"))).get("oom_kill", 0)
        verdict.expect(counter >= 1, f"the cgroup's own counter says oom_kill {counter}",
                       "the cgroup counted no OOM kill")
    finally:
        remove_cgroup(directory)


# --- exercise 3.2: a CPU quota ----------------------------------------------------------------

CPU_CASES = [((0.5,), 50_000), ((1.5,), 150_000), ((2,), 200_000), ((0.25, 50_000), 12_500),
             ((1, 10_000), 10_000), ((0.001,), 1000), ((0.005, 100_000), 1000)]


def check_cpu_quota(cpu_quota) -> bool:
    """``cpu_quota(cpus, period_us=100000) -> int`` matches the kernel's rules and holds."""
    return run_check("Exercise 3.2: a CPU quota", _cpu_body, cpu_quota)


def _cpu_body(verdict, cpu_quota):
    for args, wanted in CPU_CASES:
        got = cpu_quota(*args)
        call = f"cpu_quota({', '.join(map(str, args))})"
        if not isinstance(got, int) or isinstance(got, bool):
            verdict.bad(f"{call} returns an int", f"it returned {got!r} ({type(got).__name__}); "
                        "the kernel accepts only whole microseconds: int(...)")
            return
        hint = (f"it returned {got}: the kernel refuses a quota under 1000 µs (1 ms)"
                if wanted == 1000 else f"it returned {got}: CPUs x period, in microseconds")
        if not verdict.expect(got == wanted, f"{call} == {wanted}", hint):
            return
    # A real cgroup: the quota written, a busy child measured against it.
    directory, version = real_cgroup(verdict, "cpu")
    if directory is None:
        return
    try:
        cpus, period = 0.5, 100_000
        quota = cpu_quota(cpus, period)
        if version == 1:
            with open(os.path.join(directory, "cpu.cfs_period_us"), "w") as f:
                f.write(str(period))
            with open(os.path.join(directory, "cpu.cfs_quota_us"), "w") as f:
                f.write(str(quota))
        else:
            with open(os.path.join(directory, "cpu.max"), "w") as f:
                f.write(f"{quota} {period}")
        busy = "import time\nend = time.monotonic() + 1.2\nwhile time.monotonic() < end: pass"
        code, _, cpu_seconds, wall = run_in_cgroup(directory, busy)
        share = cpu_seconds / wall
        verdict.expect(code == 0 and 0.35 <= share <= 0.65,
                       f"a busy child in a real cgroup with your quota {quota} got "
                       f"{share:.2f} CPUs (asked: {cpus})",
                       f"it got {share:.2f} CPUs (exit {code}): the quota did not hold")
    finally:
        remove_cgroup(directory)


def cleanup() -> list[str]:
    """Remove this process's exercise cgroups (a check interrupted mid-way); say which."""
    removed = []
    for root in set(mounted_hierarchies().values()):
        directory = os.path.join(root, f"minirt-exercise-{os.getpid()}")
        if os.path.isdir(directory):
            remove_cgroup(directory)
            removed.append(directory)
    return removed


__all__ = ["check_write_memory_limit", "check_cpu_quota", "cleanup"]
