"""Checks for exercise 02: real containers whose /dev the student's populate_dev() made.

What a container sees is compared with what runc (and minirt) give it:
``CHAR_DEVICES`` and ``SYMLINKS`` of ``minirt/kernel/devices.py``.
"""

from minirt.exercises import Hint, last_line
from minirt.kernel.devices import CHAR_DEVICES, SYMLINKS


def container(ctx, *args) -> str:
    """What ``minirt run --rm ARGS`` prints; a Hint when the container did not run."""
    done = ctx.with_busybox("run", "--rm", *args)
    if done.returncode != 0:
        said = last_line(done.stderr)
        if "NotImplementedError" in said:
            raise Hint("the container did not start: your populate_dev() still raises "
                       "NotImplementedError")
        if "ptmx" in said:
            raise Hint(f"the container's terminal could not be opened ({said}): -t opens "
                       "/dev/pts/ptmx, so mount a new devpts instance at dev/pts")
        raise Hint(f"`minirt run` failed, exit status {done.returncode}: {said}")
    return done.stdout.decode(errors="replace")


# --- the steps -------------------------------------------------------------------------------

def null_and_urandom_work(ctx):
    said = container(ctx, "busybox", "sh", "-c",
                     "echo gone > /dev/null && head -c 16 /dev/urandom | wc -c").strip()
    if said != "16":
        raise Hint(f"`head -c 16 /dev/urandom | wc -c` printed {said!r}, not 16: is urandom "
                   "the character device 1:9?")
    return "`echo > /dev/null` works, `head -c 16 /dev/urandom` gives 16 bytes"


def nodes_have_their_numbers_and_modes(ctx):
    script = ("for n in " + " ".join(CHAR_DEVICES) + "; do "
              "stat -c '%n|%F|%t|%T|%a' /dev/$n 2>/dev/null || echo \"/dev/$n|missing\"; done")
    for line in container(ctx, "busybox", "sh", "-c", script).splitlines():
        path, kind, *rest = line.split("|")
        name = path.removeprefix("/dev/")
        major, minor, mode = CHAR_DEVICES[name]
        if kind == "missing":
            raise Hint(f"/dev/{name} is missing: mknod it (a character device {major}:{minor})")
        if kind != "character special file":
            raise Hint(f"/dev/{name} is a {kind}, not a character device: give mknod "
                       "stat.S_IFCHR | mode")
        seen_major, seen_minor, seen_mode = int(rest[0], 16), int(rest[1], 16), int(rest[2], 8)
        if (seen_major, seen_minor) != (major, minor):
            raise Hint(f"/dev/{name} is device {seen_major}:{seen_minor}, not {major}:{minor} "
                       "(os.makedev(major, minor); see devices.txt)")
        if seen_mode != mode:
            raise Hint(f"/dev/{name} has mode {seen_mode:o}, not {mode:o}: mknod applies the "
                       "umask, so chmod the node afterwards")
    return ", ".join(f"{name} {major}:{minor}" for name, (major, minor, _) in CHAR_DEVICES.items())


def dev_is_a_small_world(ctx):
    script = ("cat /proc/self/mountinfo; echo ---; ls -a /dev; echo ---; "
              "for n in " + " ".join(SYMLINKS) + "; do echo \"$n $(readlink /dev/$n)\"; done")
    mountinfo, listing, links = container(ctx, "busybox", "sh", "-c", script).split("---\n")
    fstype = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fstype[left.split()[4]] = right.split()[0]
    for point, wanted in (("/dev", "tmpfs"), ("/dev/pts", "devpts"), ("/dev/shm", "tmpfs")):
        if fstype.get(point) != wanted:
            seen = f"a {fstype[point]}" if point in fstype else "no mount at all"
            raise Hint(f"{point} should be a {wanted} of its own; /proc/self/mountinfo shows "
                       f"{seen} there")
    for line in links.splitlines():
        name, _, target = line.partition(" ")
        if target != SYMLINKS[name]:
            raise Hint(f"/dev/{name} should be a symlink to {SYMLINKS[name]}; readlink says "
                       f"{target or 'nothing (missing, or not a link)'!r}")
    expected = set(CHAR_DEVICES) | set(SYMLINKS) | {"pts", "shm", ".", ".."}
    extra = sorted(set(listing.split()) - expected)
    if extra:
        raise Hint(f"/dev holds more than a container should see: {', '.join(extra[:8])}: "
                   "mount a fresh tmpfs on it before making the nodes")
    return "a tmpfs, with devpts at /dev/pts, a tmpfs at /dev/shm and the five links"


def tty_works(ctx):
    said = container(ctx, "-t", "busybox", "tty").strip()
    if not said.startswith("/dev/pts/"):
        raise Hint(f"with -t, `tty` printed {said!r}: its terminal should be in the "
                   "container's devpts, /dev/pts/0")
    return f"`minirt run -t busybox tty` prints {said}"


STEPS = [
    ("/dev/null swallows, /dev/urandom gives bytes", null_and_urandom_work),
    ("each device node has its major, minor and mode", nodes_have_their_numbers_and_modes),
    ("/dev is a tmpfs of its own, with its links, /dev/pts and /dev/shm", dev_is_a_small_world),
    ("-t gives the container a terminal from its own /dev/pts", tty_works),
]
