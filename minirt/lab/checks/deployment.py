"""Checks for notebook 1 (traditional deployment): capabilities and a disk of one's own.

``check_decode_capabilities(fn)``
    ``fn(cap_hex) -> set[str]`` turns a capability mask as ``/proc/PID/status``
    prints it (``CapEff:	000001ffffffffff``) into capability names
    (``{"CAP_CHOWN", ...}``). Checked against masks read from real processes:
    this one, a child that kept only Docker's default set (``capset(2)``), and
    a child that dropped root (``setuid(2)``); then a few edge masks.

``check_make_disk(fn)``
    ``fn(path, size_mib)`` mounts a tmpfs of ``size_mib`` MiB on ``path``. Run
    in a forked child inside a throw-away mount namespace, so whatever it mounts
    disappears with the child; the size is measured with ``statvfs``.

Both print a verdict and return True or False; neither raises (see ``verdict``).
"""

import ctypes
import os
import shutil
import tempfile

from .child import in_child
from .verdict import run_check

# Capability names in bit order, as in linux/capability.h (man 7 capabilities).
CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]

# The capabilities Docker leaves a container by default (moby's
# oci/caps/defaults.go): 14 of the 41, as one mask.
DOCKER_DEFAULT_MASK = 0x00000000A80425FB

CHILD_TIMEOUT = 20.0


def capability_names(mask: int) -> set[str]:
    """The names of the bits set in ``mask``; a bit this list does not know is ``CAP_<bit>``."""
    return {CAPABILITIES[bit] if bit < len(CAPABILITIES) else f"CAP_{bit}"
            for bit in range(64) if mask >> bit & 1}


def cap_eff(status_text: str) -> str:
    """The ``CapEff`` hex string from a ``/proc/PID/status`` text."""
    return next(line.split()[1] for line in status_text.splitlines()
                if line.startswith("CapEff:"))


# --- real processes, read in forked children --------------------------------------

def _in_child(action, timeout: float = CHILD_TIMEOUT) -> dict:
    """Run ``action() -> dict`` in a forked child (``child.in_child``); errors become
    ``{"error": ...}``, so a dropped uid or a mount namespace dies with the child."""
    try:
        return in_child(action, timeout=timeout)
    except NotImplementedError:
        return {"error": "NotImplementedError"}
    except Exception as e:  # ChildError, a timeout, a child that died: all reported
        return {"error": str(e)}


def _status_after(setup) -> str:
    """``/proc/self/status`` of a forked child after ``setup()`` changed its privileges."""
    def action():
        # Opened before the change: a process that dropped root may no longer be
        # allowed to open its own /proc files (it is made non-dumpable), but it can
        # still read a file it already has open; the text is generated at read time.
        with open("/proc/self/status") as f:
            setup()
            return {"status": f.read()}
    reply = _in_child(action, timeout=5)
    if "error" in reply:
        raise OSError(f"could not prepare a test process: {reply['error']}")
    return reply["status"]


def _keep_only(mask: int) -> None:
    """capset(2): keep only ``mask`` in the effective and permitted sets."""
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    low, high = mask & 0xFFFFFFFF, mask >> 32
    data = (Data * 2)(Data(low, low, 0), Data(high, high, 0))
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _drop_root() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)  # from root to "nobody": the kernel clears every capability


def real_samples() -> list[tuple[str, str]]:
    """(which process, its CapEff) for this process and, as root, two reduced children."""
    with open("/proc/self/status") as f:
        samples = [(f"this process (uid {os.geteuid()})", cap_eff(f.read()))]
    if os.geteuid() == 0:
        samples.append(("a child that kept only Docker's default capabilities",
                        cap_eff(_status_after(lambda: _keep_only(DOCKER_DEFAULT_MASK)))))
        samples.append(("a child that switched from root to uid 65534 (nobody)",
                        cap_eff(_status_after(_drop_root))))
    return samples


EDGE_SAMPLES = [
    ("only bit 0", "0000000000000001"),
    ("only the highest known bit (40)", "0000010000000000"),
    ("bits 0, 21 and 39", "0000008000200001"),
    ("nothing at all", "0000000000000000"),
]


# --- check 1: decode a capability mask ----------------------------------------------

def check_decode_capabilities(decode_capabilities) -> bool:
    """Does ``decode_capabilities(hex) -> set[str]`` name the right capabilities?"""
    return run_check("decode_capabilities", _body_decode, decode_capabilities)


def _body_decode(verdict, decode) -> None:
    for label, hex_mask in real_samples() + EDGE_SAMPLES:
        answer = decode(hex_mask)
        if not isinstance(answer, (set, frozenset)):
            verdict.bad(f"for {hex_mask} you returned a {type(answer).__name__}, not a set",
                        "collect the names in a set(): `names = set()` ... `names.add(...)`")
            return
        expected = capability_names(int(hex_mask, 16))
        if answer == expected:
            verdict.good(f"{label}: {hex_mask} -> {len(expected)} capabilities"
                         + (f" ({', '.join(sorted(expected))})" if 0 < len(expected) <= 3 else ""))
            continue
        missing, extra = sorted(expected - answer), sorted(answer - expected)
        text = f"{label}: {hex_mask}"
        if missing:
            text += f"; missing {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else "")
        if extra:
            text += f"; not set but returned {', '.join(extra[:4])}" + (" ..." if len(extra) > 4 else "")
        verdict.bad(text, _decode_hint(missing, extra))
        return


def _decode_hint(missing: list[str], extra: list[str]) -> str:
    if any(name.lower() == e.lower() or name[4:].lower() == e.lower()
           for name in missing for e in extra):
        return "spell the names as the kernel does: upper case with the CAP_ prefix, e.g. CAP_CHOWN"
    if "CAP_CHOWN" in missing:
        return "bit 0 is CAP_CHOWN: does your loop start at bit 0?"
    if extra and not missing:
        return "test each bit with `mask >> bit & 1`; a name belongs in the set only when its bit is 1"
    return ("the string is hexadecimal: int(cap_hex, 16); bit n (counting from 0) is "
            "CAPABILITIES[n]")


# --- check 2: a disk of a given size ------------------------------------------------

def check_make_disk(make_disk, size_mib: int = 7) -> bool:
    """Does ``make_disk(path, size_mib)`` mount a tmpfs of exactly that size on ``path``?"""
    return run_check("make_disk", _body_disk, make_disk, size_mib)


def _body_disk(verdict, make_disk, size_mib: int) -> None:
    if os.geteuid() != 0:
        verdict.bad("this check mounts a filesystem, which needs root (this process is "
                    f"uid {os.geteuid()})", "run the lab as root to try it for real")
        return
    scratch = tempfile.mkdtemp(prefix="minirt-lab1-check-")
    disk = os.path.join(scratch, "disk")
    os.mkdir(disk)
    try:
        reply = _in_child(lambda: _try_disk(make_disk, disk, size_mib))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the mount died with the child's namespace
    if "error" in reply:
        if reply["error"] == "NotImplementedError":
            raise NotImplementedError
        verdict.bad(f"make_disk({disk!r}, {size_mib}) raised {reply['error']}",
                    reply.get("line", ""))
        return
    if not verdict.expect(reply["mounted"], "something is mounted on the path",
                          "mount a tmpfs there: mount -t tmpfs -o size=...m tmpfs PATH, "
                          "or minirt.kernel.syscalls.mount(...)"):
        return
    verdict.expect(reply["fstype"] == "tmpfs", f"it is a tmpfs (found {reply['fstype']})",
                   "use the filesystem type 'tmpfs'")
    size = reply["size_bytes"]
    want = size_mib * 2 ** 20
    if not verdict.expect(size == want, f"its size is {size_mib} MiB (statvfs says "
                          f"{size / 2**20:.2f} MiB = {size} bytes)",
                          f"pass the size option: size={size_mib}m (MiB, 1024*1024 bytes); "
                          "without it tmpfs takes half of the RAM"):
        return
    verdict.expect(reply["writable"], "a file can be written on it",
                   "do not mount it read-only")


def _try_disk(make_disk, disk: str, size_mib: int) -> dict:
    """In the forked child: a private mount namespace, then the learner's function."""
    from ...kernel import mounts, namespaces
    namespaces.unshare(["mnt"])
    mounts.make_private("/")  # nothing mounted here reaches the host's namespace
    make_disk(disk, size_mib)
    disk = os.path.realpath(disk)
    reply = {"mounted": mounts.is_mount_point(disk), "fstype": "", "size_bytes": 0,
             "writable": False}
    if reply["mounted"]:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[4] == disk:
                    reply["fstype"] = fields[fields.index("-") + 1]
        st = os.statvfs(disk)
        reply["size_bytes"] = st.f_blocks * st.f_frsize
        try:
            with open(os.path.join(disk, "probe"), "w") as f:
                f.write("ok")
            reply["writable"] = True
        except OSError:
            pass
    return reply
