"""seccomp: the system calls a container may not make at all (man 2 seccomp).

Namespaces change what a container *sees* and capabilities what its root
*may do*, but every container still talks to the host's one kernel through
some 450 system calls, and a few reach things no namespace wraps: the kernel
keyring, kernel modules, the clock, eBPF, the kernel log. seccomp ("secure
computing") lets a process hand the kernel a small classic-BPF program that
runs on *every* system call it (and every descendant) makes. The program sees
the call's number, the ABI it came through and its six raw arguments, never
the memory they point to, and returns a verdict: allow, fail with an errno,
kill, ... A filter survives fork and execve and cannot be removed, only
stacked with more filters, which is why the container's init loads it last,
just before execve(2).

Nobody writes that BPF by hand: libseccomp (seccomp_init(3),
seccomp_rule_add(3), seccomp_load(3)) compiles rules such as "keyctl ->
EPERM" or "clone with CLONE_NEWUSER in arg 0 -> EPERM" into it, once per ABI
the machine runs (on x86-64 also 32-bit x86 and x32 programs: otherwise an
``int 0x80`` would walk around a filter written for 64-bit numbers). We call
it through pyseccomp, a ctypes binding with the API of libseccomp's own
Python module. ``export_pfc`` on ``build_filter(...)`` prints what it made.

The policy is Docker's default seccomp profile (moby's
``profiles/seccomp/default.json``; docs.docker.com, "Seccomp security
profiles for Docker") turned inside out. Docker's profile is an *allow* list:
about 350 calls pass, a few more pass back when the container keeps a
capability (mount with CAP_SYS_ADMIN, reboot with CAP_SYS_BOOT, ...), and
everything else fails with EPERM. Ours is a *deny* list of the calls Docker
leaves out that matter: default action ALLOW, each listed call EPERM unless
the container keeps the capability Docker pairs it with. It behaves closely,
not identically:

* Calls Docker's list has never heard of (newer than the profile, or rare
  ones such as ``afs_syscall``) fail with EPERM under Docker; here the
  kernel decides.
* ptrace, process_vm_readv and process_vm_writev need CAP_SYS_PTRACE, as in
  older Docker releases. Docker now allows them on kernels >= 4.8, where
  ptrace can no longer be used to step around a seccomp filter.
* adjtimex and clock_adjtime stay allowed, as in Docker: whether they *set*
  the clock is a field of the struct they point to, which seccomp cannot
  read; the kernel itself refuses setting without CAP_SYS_TIME.
* socket(AF_VSOCK) is refused to 64-bit programs only. A 32-bit x86 program
  may create sockets through socketcall(2), whose arguments are in memory:
  libseccomp could only refuse every socket it makes.
* name_to_handle_at is allowed (it only names a file, as Docker decided);
  open_by_handle_at, the half that opens one, needs CAP_DAC_READ_SEARCH.
* clone3 fails with ENOSYS, not EPERM, unless CAP_SYS_ADMIN: its flags sit in
  a struct seccomp cannot read, so, as Docker does, we pretend the kernel is
  too old; glibc then falls back to clone(2), whose flags are arguments.
"""

import errno
import os

from ..errors import ContainerStartError, KernelFeatureMissing

# <sched.h>: the clone flags that make new namespaces (see kernel/namespaces.py).
# CLONE_NEWTIME (0x80) is not here: in clone(2) the low byte is the exit signal,
# so a time namespace comes only from unshare(2) or clone3(2), both refused.
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

# personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26,
# PER_LINUX32|UNAME26, and 0xffffffff, which only asks for the current one.
# Any other persona (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, MMAP_PAGE_ZERO, ...)
# weakens the defences of the programs run next.
ALLOWED_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

AF_VSOCK = 40  # <sys/socket.h>: sockets to the hypervisor, a way out of a VM's containers

# The system calls each rule denies, the capabilities any one of which lifts it
# (none: always denied, whatever the container keeps), and why, in one line.
# Grouped as Docker's profile groups them.
DENIED = [
    (("add_key", "keyctl", "request_key"), (),
     "the kernel keyring is not namespaced: it holds the host's and other containers' keys"),
    (("acct",), ("CAP_SYS_PACCT",), "switches process accounting on or off for the whole host"),
    (("bpf",), ("CAP_SYS_ADMIN", "CAP_BPF"), "loads eBPF programs into the host's kernel"),
    (("settimeofday", "stime", "clock_settime", "clock_settime64"), ("CAP_SYS_TIME",),
     "sets the clock, which is the host's: there is no clock namespace to set"),
    (("init_module", "finit_module", "delete_module"), ("CAP_SYS_MODULE",),
     "loads or unloads code in the host's kernel"),
    (("create_module", "query_module", "get_kernel_syms"), (),
     "module calls from before Linux 2.6, kept only to be refused"),
    (("iopl", "ioperm"), ("CAP_SYS_RAWIO",), "raw access to the host's I/O ports"),
    (("reboot",), ("CAP_SYS_BOOT",),
     "reboots the machine (inside a pid namespace: stops the container)"),
    (("kexec_load", "kexec_file_load"), (), "loads a new kernel for the host to boot into"),
    (("mount", "umount", "umount2", "mount_setattr", "fsopen", "fsconfig", "fsmount", "fspick",
      "move_mount", "open_tree"), ("CAP_SYS_ADMIN",),
     "changes mounts: could uncover what the container's root and masked paths hide"),
    (("pivot_root",), (), "changes the root of the mount namespace: the runtime already did"),
    (("setns", "unshare"), ("CAP_SYS_ADMIN",),
     "joins or makes namespaces, a way around the container's own"),
    (("sethostname", "setdomainname"), ("CAP_SYS_ADMIN",),
     "renames the UTS namespace: the runtime set the hostname"),
    (("swapon", "swapoff"), (), "changes the host's swap space"),
    (("quotactl", "quotactl_fd"), ("CAP_SYS_ADMIN",),
     "changes disk quotas of the host's filesystems"),
    (("lookup_dcookie",), ("CAP_SYS_ADMIN",), "profiling: turns a cookie into a host path"),
    (("fanotify_init",), ("CAP_SYS_ADMIN",), "watches file accesses on whole host filesystems"),
    (("syslog",), ("CAP_SYS_ADMIN", "CAP_SYSLOG"),
     "reads or clears the kernel log, which is not namespaced"),
    (("sysfs", "_sysctl", "ustat"), (), "obsolete interfaces that tell about the host"),
    (("open_by_handle_at",), ("CAP_DAC_READ_SEARCH",),
     "opens any file of a filesystem by handle, outside the container's root "
     "(the 2014 'shocker' escape)"),
    (("perf_event_open",), ("CAP_SYS_ADMIN", "CAP_PERFMON"),
     "profiles the host's kernel and other processes, and leaks kernel addresses"),
    (("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
      "process_madvise"), ("CAP_SYS_PTRACE",),
     "inspects or changes another process (memory, registers, open files)"),
    (("userfaultfd",), (), "lets a process stall the kernel mid-copy, a staple of kernel exploits"),
    (("uselib",), (), "obsolete a.out library loading"),
    (("vm86", "vm86old"), (), "virtual 8086 mode (32-bit x86), a long history of kernel bugs"),
    (("nfsservctl",), (), "removed in Linux 3.1"),
    (("get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "mbind"), ("CAP_SYS_NICE",),
     "NUMA memory placement, a host-wide resource"),
    (("move_pages",), (), "moves another process's pages between NUMA nodes"),
    (("chroot",), ("CAP_SYS_CHROOT",), "changes the root directory"),
    (("vhangup",), ("CAP_SYS_TTY_CONFIG",), "hangs up the terminal"),
]


def available() -> bool:
    """Can this machine build filters: is pyseccomp importable and libseccomp loadable?

    Importing pyseccomp opens libseccomp.so.2, so calling this before
    pivot_root also makes ``load_default_filter`` work after it.
    """
    try:
        _library()
        return True
    except KernelFeatureMissing:
        return False


def denied_syscalls(capabilities: set[str]) -> dict[str, str]:
    """Every system call the default filter refuses a container keeping ``capabilities``,
    with why, in one short line each (argument conditions, if any, said first).

    Names the ABIs of this machine do not have are left out (when libseccomp can
    be asked; without it, the whole policy is listed).
    """
    known = _known_names()
    return {name: why for name, why, _, _, _ in _rules(_capability_names(capabilities))
            if known is None or name in known}


def load_default_filter(capabilities: set[str]) -> None:
    """Install the default filter for a container keeping ``capabilities``, in all the
    threads of the calling process. It binds every later child and execve, for good.

    The kernel accepts a filter only from a process that has set no_new_privs
    (prctl(PR_SET_NO_NEW_PRIVS)) or holds CAP_SYS_ADMIN: otherwise a filter
    could trick a setuid program it runs. We do not set no_new_privs behind the
    caller's back (``--security-opt no-new-privileges=false`` would not be
    honoured); the container's init sets it, or still holds CAP_SYS_ADMIN.
    """
    program = build_filter(capabilities)
    try:
        program.load()
    except OSError as e:
        _refused(e.errno)


# --- compiled once, loaded at every start ----------------------------------------------
#
# Compiling the filter means importing pyseccomp and asking libseccomp to build
# some 470 BPF instructions: ~20 ms, more than the rest of a container's start.
# The result depends only on the capability set and this policy, so it is
# compiled once, kept as raw BPF (seccomp_export_bpf(3)) in a cache file, and
# each start hands those bytes straight to the kernel with seccomp(2): no
# pyseccomp, no libseccomp on the start path.

SYS_SECCOMP = {"x86_64": 317, "aarch64": 277, "riscv64": 277, "ppc64le": 358,
               "s390x": 348}.get(os.uname().machine)
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1


def cached_program(capabilities: set[str], cache_dir: str) -> bytes | None:
    """The default filter for ``capabilities`` as raw BPF, compiled on first use and kept in
    ``cache_dir``; None where no filter can be built (no pyseccomp or libseccomp)."""
    # The key: this file (the policy: a new policy, a new key, named by its size and
    # time), the capability set as a bit mask, the machine. No hashing: hashlib alone
    # would cost every start ~2 ms to import.
    from .capabilities import NUMBERS
    policy = os.stat(__file__)
    mask = sum(1 << NUMBERS[name] for name in _capability_names(capabilities) if name in NUMBERS)
    key = f"{policy.st_size:x}-{policy.st_mtime_ns:x}-{mask:x}-{os.uname().machine}"
    path = os.path.join(cache_dir, f"{key}.bpf")
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        pass
    if not available():
        return None
    import tempfile
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryFile() as out:
        build_filter(capabilities).export_bpf(out)
        out.seek(0)
        program = out.read()
    from ..paths import atomic_write
    atomic_write(path, program, durable=False)
    return program


def load_program(program: bytes) -> None:
    """seccomp(SECCOMP_SET_MODE_FILTER, TSYNC, &{len, filter}): install raw BPF (8 bytes per
    instruction: u16 code, u8 jt, u8 jf, u32 k) in every thread of this process."""
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    if SYS_SECCOMP is None:
        raise KernelFeatureMissing(f"seccomp: unknown syscall number on {os.uname().machine}")
    fprog = SockFprog(len(program) // 8, program)
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(ctypes.c_long(SYS_SECCOMP), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                          ctypes.c_long(SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(fprog))
    if result != 0:
        _refused(ctypes.get_errno())


def _refused(code: int):
    """The kernel said no to a filter: why, in the learner's terms."""
    if code == errno.EACCES:
        raise ContainerStartError(
            "seccomp: the kernel refused the filter: set no_new_privs first, or load "
            "it while CAP_SYS_ADMIN is still effective (before setuid to a non-root user)")
    if code == errno.EINVAL:
        raise KernelFeatureMissing(
            "seccomp: this kernel does not take seccomp filters (CONFIG_SECCOMP_FILTER)")
    if code == errno.ESRCH:
        raise ContainerStartError("seccomp: another thread of this process has a different filter")
    raise ContainerStartError(f"seccomp: loading the filter failed: {os.strerror(code)}")


def build_filter(capabilities: set[str]):
    """The default filter for ``capabilities``, compiled but not loaded: a
    ``pyseccomp.SyscallFilter`` (``export_pfc(sys.stdout)`` shows its logic)."""
    seccomp = _library()
    rules = _rules(_capability_names(capabilities))
    native = _empty_filter(seccomp)
    _add_rules(seccomp, native, rules, [seccomp.system_arch()], compat=False)
    compat_arches = _compat_arches(seccomp)
    if compat_arches:
        # A second filter for the other ABIs, merged in: seccomp_merge(3) wants
        # filters with the same attributes and no architecture in common.
        compat = _empty_filter(seccomp)
        for arch in compat_arches:
            compat.add_arch(arch)
        compat.remove_arch(seccomp.Arch.NATIVE)
        _add_rules(seccomp, compat, rules, compat_arches, compat=True)
        native.merge(compat)
    return native


# --- the rules -----------------------------------------------------------------------

def _rules(capabilities: set[str]) -> list:
    """(syscall, why, errno, conditions, compat too) for everything denied.

    ``conditions`` is a list of alternatives, each a tuple of argument
    comparisons (index, operator name, datum, datum two) that must all hold;
    an empty list means the call is denied whatever its arguments.
    """
    rules = []
    for names, unless, why in DENIED:
        if not capabilities & set(unless):
            rules.extend((name, why, errno.EPERM, [], True) for name in names)
    if "CAP_SYS_ADMIN" not in capabilities:
        rules.append(("clone", "only with a CLONE_NEW* flag: new namespaces need CAP_SYS_ADMIN",
                      errno.EPERM, _namespace_clones(), True))
        rules.append(("clone3", "fails with ENOSYS, so libc falls back to clone, whose flags "
                      "a filter can read", errno.ENOSYS, [], True))
    rules.append(("personality", "only unusual personas (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, "
                  "...): asking and Linux/Linux32/UNAME26 pass", errno.EPERM,
                  _unusual_personas(), True))
    # Not for compat ABIs: there socket() can come through socketcall(2) (see the docstring).
    rules.append(("socket", "only AF_VSOCK: sockets to the hypervisor, 64-bit programs only",
                  errno.EPERM, [((0, "EQ", AF_VSOCK, 0),)], False))
    return rules


def _namespace_clones() -> list:
    """clone(2) calls asking for any new namespace: one alternative per flag."""
    # s390 passes clone's flags second (its stack pointer comes first).
    index = 1 if os.uname().machine.startswith("s390") else 0
    return [((index, "MASKED_EQ", flag, flag),) for flag in CLONE_NAMESPACE_FLAGS.values()]


def _unusual_personas() -> list:
    """personality(2) arguments outside ``ALLOWED_PERSONAS``, as single comparisons.

    libseccomp takes one comparison per argument in a rule, and rules are
    ORed, so "none of these five values" has to be said as a union of
    one-comparison sets. The ordinary personas use only bits 3 and 17 (the
    *free* bits); call every other bit of the 32 a *flag* bit. A value is
    refused when:
      * it does not fit in 32 bits; or
      * some flag bit is set and the next flag bit (cyclically) is clear: this
        catches every value with a flag bit set, except those with *all* flag
        bits set, since walking round from a set bit one meets a clear one;
      * it has all flag bits set but is not 0xffffffff: three values.
    """
    free = 0x8 | 0x20000
    flag_bits = [1 << bit for bit in range(32) if not (1 << bit) & free]
    alternatives = [((0, "GT", 0xFFFFFFFF, 0),)]
    for i, bit in enumerate(flag_bits):
        following = flag_bits[(i + 1) % len(flag_bits)]
        alternatives.append(((0, "MASKED_EQ", bit | following, bit),))
    for cleared in (0x8, 0x20000, 0x20008):
        alternatives.append(((0, "EQ", 0xFFFFFFFF & ~cleared, 0),))
    return alternatives


def _capability_names(capabilities) -> set[str]:
    """``{"sys_admin", "CAP_NET_RAW"}`` -> ``{"CAP_SYS_ADMIN", "CAP_NET_RAW"}``."""
    names = set()
    for name in capabilities or ():
        upper = name.strip().upper()
        names.add(upper if upper.startswith("CAP_") else "CAP_" + upper)
    return names


# --- libseccomp ----------------------------------------------------------------------

def _library():
    """The pyseccomp module; KernelFeatureMissing when it or libseccomp is missing."""
    try:
        import pyseccomp  # opens libseccomp.so.2 (Debian: libseccomp2) with ctypes
    except (ImportError, OSError, RuntimeError) as e:
        raise KernelFeatureMissing(
            f"seccomp filters need pyseccomp and libseccomp ({e}): "
            "pip install pyseccomp; apt-get install libseccomp2") from None
    return pyseccomp


def _compat_arches(seccomp) -> tuple:
    """The 32-bit ABIs this 64-bit machine also runs (Docker's archMap), to filter too."""
    arch = seccomp.Arch
    return {arch.X86_64: (arch.X86, arch.X32), arch.AARCH64: (arch.ARM,),
            arch.S390X: (arch.S390,)}.get(seccomp.system_arch(), ())


def _empty_filter(seccomp):
    """A filter that allows everything, with the attributes both halves share."""
    program = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    settings = [
        # A syscall from an ABI the filter does not cover kills the process: a
        # 32-bit call on an ARM host, say. (The default kills only the thread.)
        (seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS),
        # Leave no_new_privs to the caller (see load_default_filter).
        (seccomp.Attr.CTL_NNP, 0),
        # Filter every thread of the process, not just the calling one.
        (seccomp.Attr.CTL_TSYNC, 1),
        # A deny list means every allowed call runs past the denied numbers:
        # a binary tree of comparisons (libseccomp >= 2.5) instead of a line.
        (seccomp.Attr.CTL_OPTIMIZE, 2),
        # Report the kernel's own errno from seccomp_load, not ECANCELED.
        (seccomp.Attr.API_SYSRAWRC, 1),
    ]
    for attribute, value in settings:
        try:
            program.set_attr(attribute, value)
        except OSError:
            pass  # an older libseccomp: keep its default
    return program


def _known(seccomp, name: str, arches) -> bool:
    """Is ``name`` a real system call on one of ``arches``? libseccomp's
    name->number gives -1 for names it never heard of, and a negative
    "pseudo" number for calls other architectures have (stime on x86-64)."""
    return any(seccomp.resolve_syscall(arch, name) >= 0 for arch in arches)


def _known_names() -> set[str] | None:
    """The names of ``DENIED`` and the argument rules that exist on this machine's ABIs;
    None without libseccomp."""
    try:
        seccomp = _library()
    except KernelFeatureMissing:
        return None
    arches = [seccomp.system_arch(), *_compat_arches(seccomp)]
    names = {name for names, _, _ in DENIED for name in names}
    names |= {"clone", "clone3", "personality", "socket"}
    return {name for name in names if _known(seccomp, name, arches)}


def _add_rules(seccomp, program, rules, arches, compat: bool) -> None:
    """Add ``rules`` to ``program``, leaving out calls unknown on all of its ``arches``."""
    for name, _, code, conditions, for_compat in rules:
        if (compat and not for_compat) or not _known(seccomp, name, arches):
            continue  # e.g. vm86 on a filter for arm64: nothing to deny
        action = seccomp.ERRNO(code)
        for comparisons in conditions or [()]:
            args = [seccomp.Arg(index, getattr(seccomp, op), a, b)
                    for index, op, a, b in comparisons]
            program.add_rule(action, name, *args)
