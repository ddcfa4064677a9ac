"""Checks for exercise 03: real containers whose root the student's pivot_into() set.

A marker file made on the host (in the check's private state root) must stay
out of reach from inside: by its path, through a leftover mount of the old
root, and through the classic chroot escape.
"""

import os
import secrets

from minirt.exercises import Hint, last_line

# Mounts a container has besides "/" (minirt's /proc masks included): anything else is a leak.
EXPECTED_MOUNTS = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")

# Run as root in the container (CAP_SYS_CHROOT, as in docker): chroot into a new directory
# while keeping the working directory outside it (nsenter -r DIR -w /: chdir to the old "/"
# after the chroot), climb with "..", and chroot to wherever that ends: the mount
# namespace's real root. After pivot_root that is the image; after a mere chroot, the host.
ESCAPE = """mkdir -p /escape && nsenter -r/escape -w/ bin/busybox sh -c '
cd -P ../../../../../../../../.. && bin/busybox chroot . /bin/sh -c "echo reached; cat {marker}"
' 2>&1; true
"""


def container(ctx, *args) -> str:
    """What ``minirt run --rm ARGS`` prints; a Hint when the container did not run."""
    done = ctx.with_busybox("run", "--rm", *args)
    if done.returncode != 0:
        said = last_line(done.stderr)
        if "NotImplementedError" in said:
            raise Hint("the container did not start: your pivot_into() still raises "
                       "NotImplementedError")
        if "not found" in said or "No such file" in said:
            raise Hint(f"the container did not start ({said}): after pivot_into, minirt "
                       "finds the command at paths inside the image: is '/' the new root, "
                       "and the working directory '/'?")
        raise Hint(f"`minirt run` failed, exit status {done.returncode}: {said}")
    return done.stdout.decode(errors="replace")


def host_marker(ctx) -> tuple[str, str]:
    """A file only the host has: (its path, its content)."""
    if not getattr(ctx, "marker", None):
        path = os.path.join(ctx.state_root, "on-the-host-only")
        content = f"host-secret-{secrets.token_hex(6)}"
        with open(path, "w") as f:
            f.write(content + "\n")
        ctx.marker = (path, content)
    return ctx.marker


def image_names(ctx) -> set[str]:
    """The names at the top of busybox's root: its layers' (``MINIRT_ROOT/layers/*``)."""
    layers = os.path.join(ctx.state_root, "layers")
    names = set()
    for layer in os.listdir(layers):
        names.update(os.listdir(os.path.join(layers, layer)))
    return names


# --- the steps -------------------------------------------------------------------------------

def root_is_the_image(ctx):
    first = container(ctx, "busybox", "head", "-n", "1", "/etc/group").strip()
    if first != "root:x:0:":
        raise Hint(f"/etc/group inside starts {first!r}, not busybox's 'root:x:0:': '/' is "
                   "not the image")
    return "/etc/group inside is busybox's (root:x:0:)"


def host_is_out_of_reach(ctx):
    path, content = host_marker(ctx)
    said = container(ctx, "busybox", "sh", "-c",
                     f"cat {path} 2>/dev/null; echo ---; cat /proc/self/mountinfo; echo ---; "
                     "ls -a /")
    found, mountinfo, listing = said.split("---\n")
    if content in found:
        raise Hint(f"the container read {path}, a file on the host, at the same path: its "
                   "'/' is still the host's")
    for line in mountinfo.splitlines():
        point = line.split()[4]
        if point != "/" and not any(point == m or point.startswith(m + "/")
                                    for m in EXPECTED_MOUNTS):
            raise Hint(f"/proc/self/mountinfo inside shows a mount at {point}: the old root "
                       "is still mounted in the container; detach it with umount2(MNT_DETACH)")
    extra = sorted(set(listing.split()) - image_names(ctx) - {".", "..", "proc", "sys", "dev"})
    if extra:
        raise Hint(f"`ls -a /` inside shows {', '.join(extra)}, which busybox's image does not "
                   "have: remove the directory the old root was put in")
    return "no host file by its path, no old root in mountinfo, nothing extra in /"


def chroot_escape_fails(ctx):
    path, content = host_marker(ctx)
    said = container(ctx, "busybox", "sh", "-c", ESCAPE.format(marker=path))
    if content in said:
        raise Hint("a process in the container escaped to the host: chroot into a "
                   "subdirectory, `cd ..` past it, `chroot .`, and it read the host's files. "
                   "chroot changes one process's root; pivot_root changes the mount "
                   "namespace's, and unmounting the old root leaves nothing to climb to")
    if "reached" not in said:
        raise Hint(f"the escape attempt did not get as far as its second chroot ({said!r}); "
                   "does the container have busybox's /bin and its working directory at '/'?")
    return "mkdir, chroot, cd .., chroot . lands in the container's own root"


STEPS = [
    ("a container starts with the image as its root", root_is_the_image),
    ("no path leads back to the host's files", host_is_out_of_reach),
    ("the classic chroot escape stays inside the container", chroot_escape_fails),
]
