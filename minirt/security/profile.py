"""A container's security choices in one record, and the last steps before execve.

``docker run`` flags and what each changes here:

    --privileged              every capability, no seccomp, no masked or read-only
                              paths, /sys writable, all the host's devices
    --cap-add / --cap-drop    the capability set (capabilities.py)
    --security-opt seccomp=unconfined        no seccomp filter (seccomp.py)
    --security-opt no-new-privileges=false   allow setuid binaries to gain privileges
    --user UID[:GID] | NAME[:GROUP]          who the command runs as
    --read-only               the root filesystem mounted read-only

The order of ``harden`` matters, and is runc's: capabilities are dropped
while we still hold CAP_SETPCAP; the user changes next (a setuid away from 0
clears the capabilities left, as no keepcaps flag is set); no_new_privs then
forbids any later execve to *gain* privileges (setuid bits, file
capabilities); the seccomp filter goes last, because once loaded it also
binds us (or before the setuid when no_new_privs is off: the kernel lets only
a process with no_new_privs or CAP_SYS_ADMIN load one).
"""

import os

from ..errors import UsageError
from ..record import Record
from . import capabilities

PR_SET_NO_NEW_PRIVS = 38


class SecurityProfile(Record):
    """What ``harden`` and ``paths.apply`` do for one container."""

    __slots__ = ("capabilities", "seccomp", "no_new_privs", "mask_paths", "user", "privileged",
                 "seccomp_program")

    def __init__(self, capabilities: frozenset, seccomp: bool = True, no_new_privs: bool = True,
                 mask_paths: bool = True, user: str = "", privileged: bool = False):
        self.capabilities = capabilities   # names kept in the bounding set
        self.seccomp = seccomp             # load the default filter
        self.no_new_privs = no_new_privs   # prctl(PR_SET_NO_NEW_PRIVS)
        self.mask_paths = mask_paths       # masked and read-only paths (paths.py)
        self.user = user                   # --user, resolved inside the container
        self.privileged = privileged
        self.seccomp_program = None        # raw BPF, compiled by the parent (seccomp.py)


def parse_security_opts(options) -> dict:
    """``--security-opt`` values: ``seccomp=unconfined``, ``no-new-privileges[=true|false]``."""
    found = {}
    for option in options or ():
        key, _, value = option.partition("=")
        if key == "seccomp" and value == "unconfined":
            found["seccomp"] = False
        elif key == "no-new-privileges" and value in ("", "true", "false"):
            found["no_new_privs"] = value != "false"
        else:
            raise UsageError(f"unsupported --security-opt {option!r}: minirt knows "
                             "seccomp=unconfined and no-new-privileges[=true|false]")
    return found


def from_spec(spec) -> SecurityProfile:
    """The profile a spec asks for (flags checked when the spec was made)."""
    opts = parse_security_opts(spec.security_opt)
    privileged = spec.privileged
    return SecurityProfile(
        capabilities=capabilities.effective_set(spec.cap_add, spec.cap_drop, privileged),
        seccomp=opts.get("seccomp", True) and not privileged,
        no_new_privs=opts.get("no_new_privs", True) and not privileged,
        mask_paths=not privileged, user=spec.user, privileged=privileged)


# --- the user --------------------------------------------------------------------------

def resolve_user(user: str, etc: str = "/etc") -> tuple[int, int, list[int], str]:
    """``--user`` -> (uid, gid, supplementary gids, home), read from the container's
    /etc/passwd and /etc/group (names need them; numbers do not)."""
    name, _, group = user.partition(":")
    passwd = _table(os.path.join(etc, "passwd"))
    entry = next((e for e in passwd if name in (e[0], e[2])), None)
    if name.isdigit():
        uid = int(name)
        gid = int(entry[3]) if entry else uid if not group else 0
        home = entry[5] if entry else "/"
    elif entry is None:
        raise UsageError(f"unable to find user {name}: no matching entries in passwd file")
    else:
        uid, gid, home = int(entry[2]), int(entry[3]), entry[5]
    groups = _table(os.path.join(etc, "group"))
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((g for g in groups if g[0] == group), None)
            if found is None:
                raise UsageError(f"unable to find group {group}: no matching entries in group file")
            gid = int(found[2])
    login = entry[0] if entry else None
    extra = sorted({int(g[2]) for g in groups if login and login in g[3].split(",")} - {gid})
    return uid, gid, [gid] + extra, home


def _table(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f
                    if line.strip() and not line.startswith("#") and line.count(":") >= 3]
    except OSError:
        return []


# --- the last steps before execve ---------------------------------------------------

def harden(profile: SecurityProfile, trace) -> dict:
    """Capabilities, user, no_new_privs, seccomp, in that order (see the docstring).

    Returns environment updates (HOME for --user). Called in the container's
    init after pivot_root, just before the exec.
    """
    env = {}
    if not profile.privileged:
        with trace.step("drop capabilities", keep=len(profile.capabilities)) as step:
            dropped = capabilities.drop_bounding(profile.capabilities)
            if step is not None:
                step.detail["dropped"] = len(dropped)
    # Loading a filter needs no_new_privs or CAP_SYS_ADMIN: without no_new_privs, load it
    # while we are still root (runc's order); the filter allows setuid and setgroups.
    early_filter = profile.seccomp and not profile.no_new_privs
    if early_filter:
        _load_seccomp(profile, trace)
    if profile.user:
        uid, gid, groups, home = resolve_user(profile.user)
        with trace.step("setuid", uid=uid, gid=gid, groups=groups):
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
        env["HOME"] = home
    if profile.no_new_privs:
        with trace.step("prctl", option="PR_SET_NO_NEW_PRIVS"):
            from ..kernel import syscalls
            syscalls.prctl(PR_SET_NO_NEW_PRIVS, 1)
    if profile.seccomp and not early_filter:
        _load_seccomp(profile, trace)
    return env


def _load_seccomp(profile: SecurityProfile, trace) -> None:
    """Hand the kernel the filter the parent compiled (none where pyseccomp is missing)."""
    if profile.seccomp_program:
        from . import seccomp
        with trace.step("seccomp", action="EPERM for Docker's denied syscalls",
                        instructions=len(profile.seccomp_program) // 8):
            seccomp.load_program(profile.seccomp_program)


def prepare(spec, cache_dir: str) -> SecurityProfile:
    """The profile for ``spec``, with its seccomp filter compiled (or read from
    ``cache_dir``): done by the parent, so the container's init only loads bytes."""
    profile = from_spec(spec)
    if profile.seccomp:
        from . import seccomp
        profile.seccomp_program = seccomp.cached_program(set(profile.capabilities), cache_dir)
    return profile
