"""Checks for exercise 01: real containers, started by the student's copy of minirt.

Every container runs with the student's unshare() and sethostname(). The last
step calls the two functions directly, in a throwaway process that first moves
into a scratch UTS namespace, so a wrong sethostname renames only that one;
when a container does not start, the functions are tried alone the same way,
to say which one failed and how.
"""

import json
import os
import socket

from minirt.exercises import Hint, last_line

NAMESPACES = ("pid", "uts", "ipc", "net", "mnt")


def container(ctx, *args) -> str:
    """What ``minirt run --rm ARGS`` prints; a Hint when the container did not run."""
    done = ctx.with_busybox("run", "--rm", *args)
    if done.returncode != 0:
        said = last_line(done.stderr)
        why = diagnose(ctx)
        if why:
            raise Hint(f"{why} (so the container did not start: {said})")
        raise Hint(f"`minirt run` failed, exit status {done.returncode}: {said}")
    return done.stdout.decode(errors="replace")


# minirt's message can hide the cause (its network set-up calls unshare in a child that
# only reports "refused"): so try the two functions alone, in a throwaway interpreter.
DIAGNOSE = r"""
import json, os, socket
import namespaces

FLAGS = {"mnt": 0x00020000, "uts": 0x04000000, "ipc": 0x08000000, "pid": 0x20000000,
         "net": 0x40000000}
ASKED = "CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWPID|CLONE_NEWNET"

def where(name):
    try:  # a new pid namespace shows in pid_for_children, unreadable until a child is born
        return os.readlink(f"/proc/self/ns/{'pid_for_children' if name == 'pid' else name}")
    except FileNotFoundError:
        return ""

def attempt():
    before = {name: where(name) for name in FLAGS}
    try:
        namespaces.unshare(sum(FLAGS.values()))
    except BaseException as e:
        return f"your unshare({ASKED}) raised {type(e).__name__}: {e}"
    stayed = [name for name in FLAGS if where(name) == before[name]]
    if stayed:
        return (f"your unshare({ASKED}) returned, but left the process in its old "
                f"{', '.join(stayed)} namespace(s): pass the flags to libc.unshare unchanged, "
                "and raise OSError when it returns -1")
    try:  # safe: this process has a UTS namespace of its own now
        namespaces.sethostname("probe")
    except BaseException as e:
        return f"your sethostname('probe') raised {type(e).__name__}: {e}"
    if socket.gethostname() != "probe":
        return (f"after your sethostname('probe'), the hostname is {socket.gethostname()!r}: "
                "pass the encoded name and its length to libc.sethostname")
    return ""

print(json.dumps(attempt()))
"""


def diagnose(ctx) -> str:
    """What is wrong with the student's functions, tried alone; "" when nothing shows."""
    done = ctx.python("-c", DIAGNOSE)
    if done.returncode != 0:
        return f"namespaces.py does not load: {last_line(done.stderr)}"
    return json.loads(done.stdout.decode().splitlines()[-1])


# --- the steps -------------------------------------------------------------------------------

def a_container_runs(ctx):
    container(ctx, "busybox", "true")
    return "`minirt run --rm busybox true` exits 0"


def hostname_is_the_containers_own(ctx):
    host_before = socket.gethostname()
    inside = container(ctx, "-h", "exercise-01", "busybox", "hostname").strip()
    host_after = socket.gethostname()
    if host_after != host_before:
        raise Hint(f"the HOST's hostname changed from {host_before!r} to {host_after!r}! "
                   "sethostname() ran outside a new UTS namespace (set it back with "
                   f"`hostname {host_before}`)")
    if inside == host_before:
        raise Hint(f"inside, `hostname` says {inside!r}, the host's name: sethostname() did "
                   "not set anything (does it call libc.sethostname with the encoded name "
                   "and its length?)")
    if inside != "exercise-01":
        raise Hint(f"inside, `hostname` says {inside!r}, expected 'exercise-01' (from -h): "
                   "pass the bytes of the name and exactly their length")
    return f"'exercise-01' inside, {host_before!r} still on the host"


def namespaces_are_new(ctx):
    script = f"echo $$; for n in {' '.join(NAMESPACES)}; do readlink /proc/self/ns/$n; done"
    lines = container(ctx, "busybox", "sh", "-c", script).split()
    if len(lines) != 1 + len(NAMESPACES):
        raise Hint(f"the container printed {lines!r}, not a pid and {len(NAMESPACES)} links")
    if lines[0] != "1":
        raise Hint(f"the container's command is pid {lines[0]}, not 1: there was no new pid "
                   "namespace (is CLONE_NEWPID among the flags unshare() was given?)")
    shared = [name for name, link in zip(NAMESPACES, lines[1:])
              if link == os.readlink(f"/proc/self/ns/{name}")]
    if shared:
        raise Hint(f"the container shares the host's {', '.join(shared)} namespace(s): pass "
                   "all of the flags to libc.unshare, unchanged")
    return "pid 1, and pid, uts, ipc, net and mnt links differ from the host's"


# Runs in a throwaway interpreter: into a scratch UTS namespace (minirt's own unshare),
# then the student's two functions with arguments the kernel must refuse.
PROBE = r"""
import json
from minirt.kernel import syscalls
syscalls.unshare(0x04000000)
import namespaces
seen = {}
for name, call in (("unshare", lambda: namespaces.unshare(0x1)),
                   ("sethostname", lambda: namespaces.sethostname("x" * 65))):
    try:
        call()
        seen[name] = ["returned", 0]
    except OSError as e:
        seen[name] = ["OSError", e.errno]
    except Exception as e:
        seen[name] = [type(e).__name__, str(e)]
print(json.dumps(seen))
"""


def errors_carry_the_errno(ctx):
    done = ctx.python("-c", PROBE)
    if done.returncode != 0:
        raise Hint(f"importing namespaces.py failed: {last_line(done.stderr)}")
    seen = json.loads(done.stdout.decode().splitlines()[-1])
    for name, call in (("unshare", "unshare(0x1), a flag the kernel does not know"),
                       ("sethostname", "sethostname() of a 65-byte name")):
        kind, detail = seen[name]
        if kind == "NotImplementedError":
            raise Hint(f"{name}() still raises NotImplementedError")
        if kind == "returned":
            raise Hint(f"{call} returned quietly: when the C call returns -1, raise "
                       "OSError(ctypes.get_errno(), ...)")
        if kind != "OSError":
            raise Hint(f"{call} raised {kind}: {detail}; it should raise OSError with the errno")
        if detail != 22:
            raise Hint(f"{call} raised OSError with errno {detail!r}, not EINVAL (22): read it "
                       "with ctypes.get_errno() from a libc loaded with use_errno=True")
    return "unshare(0x1) and a 65-byte hostname raise OSError(EINVAL)"


STEPS = [
    ("a container starts and runs a command", a_container_runs),
    ("the container has the hostname given with -h; the host keeps its own",
     hostname_is_the_containers_own),
    ("the container has its own pid, uts, ipc, net and mnt namespaces", namespaces_are_new),
    ("errors come back as OSError with the kernel's errno", errors_carry_the_errno),
]
