"""Checks for exercise 04: the student's write_memory_limit() behind ``minirt run -m``.

The first three steps run real containers on this machine's cgroup version
(v1 on the lab's hybrid VM; v2 on a cgroup v2 machine, or with
``MINIRT_CGROUP_VERSION=2`` where v2 has the memory controller). The last one
calls the function directly on plain directories laid out like cgroups of
both versions, with and without their swap file, so both branches are checked
whichever version this machine runs.
"""

import json
import os

from minirt.exercises import Hint, last_line
from minirt.kernel.cgroups import cgroup_version, mounted_hierarchies

MIB = 1024 ** 2
LIMIT = 32 * MIB


def not_started(done) -> Hint:
    said = last_line(done.stderr)
    if "NotImplementedError" in said:
        return Hint("the container did not start: your write_memory_limit() still raises "
                    "NotImplementedError")
    return Hint(f"the container did not start (exit status {done.returncode}): {said}")


def version() -> int:
    """The cgroup version minirt uses here (``MINIRT_CGROUP_VERSION`` forces one)."""
    return int(os.environ.get("MINIRT_CGROUP_VERSION") or cgroup_version())


def memory_cgroup_of(pid: int) -> str:
    """The directory of the memory cgroup process ``pid`` is in, seen from the host."""
    found = mounted_hierarchies()
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if (version() == 1 and "memory" in controllers.split(",")) or \
                    (version() == 2 and controllers == ""):
                root = found["memory" if version() == 1 else "unified"]
                return os.path.join(root, path.lstrip("/"))
    raise Hint(f"process {pid} is in no memory cgroup")


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


# --- the steps -------------------------------------------------------------------------------

def remove_every_container(ctx) -> None:
    """``rm -f`` all containers of the check's state root: a detached one whose start
    failed stays behind as "created", its shim waiting (as docker keeps it)."""
    listed = ctx.with_busybox("ps", "-a", "-q")
    for container in listed.stdout.decode().split():
        ctx.with_busybox("rm", "-f", container)


def limit_is_in_the_cgroup(ctx):
    try:
        done = ctx.with_busybox("run", "-d", "-m", "32m", "busybox", "sleep", "60")
        if done.returncode != 0:
            raise not_started(done)
        container = done.stdout.decode().split()[-1]
        shown = ctx.with_busybox("inspect", container)
        pid = json.loads(shown.stdout)[0]["State"]["Pid"]
        try:
            directory = memory_cgroup_of(pid)
        except (OSError, ValueError):  # no such process, or it ended between the two reads
            raise Hint("the container (`sleep 60` under -m 32m) ended at once: was it "
                       "OOM-killed? Is the limit written in bytes (33554432)?") from None
        if version() == 1:
            wanted = {"memory.limit_in_bytes": LIMIT, "memory.memsw.limit_in_bytes": LIMIT}
        else:
            wanted = {"memory.max": LIMIT, "memory.swap.max": 0}
        for name, value in wanted.items():
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                continue  # memsw / swap.max: only with swap accounting
            seen = read(path)
            if seen != str(value):
                raise Hint(f"with -m 32m, the container's {name} holds {seen}, not {value} "
                           f"({path})")
        return ", ".join(f"{name} = {value}" for name, value in wanted.items()
                         if os.path.exists(os.path.join(directory, name)))
    finally:
        remove_every_container(ctx)


def within_the_limit_runs(ctx):
    done = ctx.with_busybox("run", "--rm", "-m", "32m", "busybox",
                  "dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=1")
    if done.returncode == 137:
        raise Hint("a container using 8 MiB under -m 32m was OOM-killed: is the limit written "
                   "in bytes (33554432), not in MiB or KiB?")
    if done.returncode != 0:
        raise not_started(done)
    return "`dd bs=8M` (8 MiB at once) under -m 32m exits 0"


def over_the_limit_is_killed(ctx):
    done = ctx.with_busybox("run", "--rm", "-m", "32m", "busybox",
                  "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
    if done.returncode == 0:
        raise Hint("a container allocated 64 MiB at once under -m 32m and was not stopped: "
                   "the limit is not in memory.limit_in_bytes / memory.max (or, with swap, "
                   "the excess went to swap: the memsw / swap.max file)")
    if done.returncode != 137:
        raise not_started(done)
    return "`dd bs=64M` under -m 32m is OOM-killed (exit status 137)"


# Runs in a throwaway interpreter with the student's folder on the path.
PROBE = r"""
import json, sys
from write_memory_limit import write_memory_limit
seen = {}
for name, (directory, version) in json.loads(sys.argv[1]).items():
    try:
        write_memory_limit(directory, version, 50331648)
        seen[name] = ""
    except Exception as e:
        seen[name] = f"{type(e).__name__}: {e}"
print(json.dumps(seen))
"""

# name: (version, the files such a cgroup has, what each should hold afterwards; None: untouched)
FAKE_CGROUPS = {
    "cgroup v1 with swap accounting": (1, {"memory.limit_in_bytes": "50331648",
                                           "memory.memsw.limit_in_bytes": "50331648",
                                           "memory.usage_in_bytes": None}),
    "cgroup v1 without swap accounting": (1, {"memory.limit_in_bytes": "50331648",
                                              "memory.usage_in_bytes": None}),
    "cgroup v2 with swap": (2, {"memory.max": "50331648", "memory.swap.max": "0",
                                "memory.current": None}),
    "cgroup v2 without swap": (2, {"memory.max": "50331648", "memory.current": None}),
}


def both_versions_on_files(ctx):
    cases = {}
    for number, (name, (cgroup_v, files)) in enumerate(FAKE_CGROUPS.items()):
        directory = os.path.join(ctx.state_root, "fake-cgroups", str(number))
        os.makedirs(directory)
        for file in files:
            open(os.path.join(directory, file), "w").close()
        cases[name] = (directory, cgroup_v)
    done = ctx.python("-c", PROBE, json.dumps(cases))
    if done.returncode != 0:
        raise Hint(f"write_memory_limit.py does not load: {last_line(done.stderr)}")
    errors = json.loads(done.stdout.decode().splitlines()[-1])
    for name, (directory, cgroup_v) in cases.items():
        if errors[name]:
            if "NotImplementedError" in errors[name]:
                raise Hint("write_memory_limit() still raises NotImplementedError")
            raise Hint(f"on a {name}, write_memory_limit(..., {cgroup_v}, 50331648) raised "
                       f"{errors[name]}")
        files = FAKE_CGROUPS[name][1]
        made = sorted(set(os.listdir(directory)) - set(files))
        if made:
            raise Hint(f"on a {name}, your function created {', '.join(made)}: write only "
                       "files that are there (a real cgroup refuses new files)")
        for file, wanted in files.items():
            seen = read(os.path.join(directory, file))
            if wanted is None and seen:
                raise Hint(f"on a {name}, {file} was written ({seen!r}): leave it alone")
            if wanted is not None and seen != wanted:
                raise Hint(f"on a {name} (version {cgroup_v}), {file} holds "
                           f"{repr(seen) if seen else 'nothing'} after a 48 MiB limit, not "
                           f"{wanted!r}")
    return "v1 with/without memsw, v2 with/without swap.max: the right files, nothing more"


STEPS = [
    ("-m 32m puts the limit into the container's cgroup", limit_is_in_the_cgroup),
    ("a container within its limit runs", within_the_limit_runs),
    ("a container over its limit is OOM-killed", over_the_limit_is_killed),
    ("both cgroup versions get the right files (checked on plain directories)",
     both_versions_on_files),
]
