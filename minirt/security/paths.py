"""Masked and read-only paths: the corners of /proc and /sys a container must not touch.

/proc and /sys are windows onto the *host's* kernel, and only part of what
they show is namespaced. ``/proc/kcore`` is the host's physical memory as an
ELF core file; ``/proc/sysrq-trigger`` reboots or crashes the host on one
written character; ``/proc/sys`` holds the kernel's global tunables;
``/proc/keys`` lists keys of the kernel's keyring. runc therefore, on every
container Docker starts (its config.json ``linux.maskedPaths`` and
``linux.readonlyPaths``):

* **masks** some paths: a file gets /dev/null bind-mounted over it (it reads
  as empty), a directory gets an empty read-only tmpfs;
* makes others **read-only**: each is bind-mounted onto itself, then that
  bind mount is remounted MS_RDONLY (mount(2): a bind mount's own flags can
  differ from the filesystem's).

Applied after pivot_root, so the paths are the container's own. ``--privileged``
skips both, and the lab's escape tests show what each one stops.
"""

import os

from ..kernel import mounts, syscalls

# runc's defaults (libcontainer/specconv/example.go), as Docker uses them.
MASKED = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
          "/sys/firmware", "/sys/devices/virtual/powercap")
READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def mask(path: str) -> bool:
    """Hide ``path``: /dev/null over a file, an empty read-only tmpfs over a directory.
    False when the path does not exist on this kernel (nothing to hide)."""
    if not os.path.lexists(path):
        return False
    if os.path.isdir(path):
        syscalls.mount("tmpfs", path, "tmpfs", syscalls.MS_RDONLY, "size=0,mode=0555")
    else:
        syscalls.mount("/dev/null", path, "", syscalls.MS_BIND)
    return True


def make_read_only(path: str) -> bool:
    """Bind ``path`` onto itself and remount that bind read-only. False when absent."""
    if not os.path.lexists(path):
        return False
    mounts.bind(path, path, readonly=True)
    return True


def apply(trace, masked=MASKED, read_only=READ_ONLY) -> None:
    """Mask and write-protect, recording each path that exists here."""
    for path in masked:
        if os.path.lexists(path):
            with trace.step("mask", path=path, how="tmpfs" if os.path.isdir(path) else "/dev/null"):
                mask(path)
    for path in read_only:
        if os.path.lexists(path):
            with trace.step("read-only", path=path, flags="MS_BIND then MS_REMOUNT|MS_RDONLY"):
                make_read_only(path)


def read_only_root(root: str, trace) -> None:
    """``--read-only``: the container's root mount read-only (its other mounts, volumes,
    /dev and the /etc files, stay as they are: a remount is not recursive)."""
    # ``root`` is already a mount point (the overlay): MS_BIND|MS_REMOUNT changes the
    # flags of that one mount, not of the filesystem under it.
    with trace.step("mount", source=root, target=root, fstype="",
                    flags="MS_BIND|MS_REMOUNT|MS_RDONLY"):
        mounts.remount_read_only(root)
