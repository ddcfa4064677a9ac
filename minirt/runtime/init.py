"""Inside the container: the steps between "new namespaces" and "your command runs".

This code runs as PID 1 of a fresh pid namespace, already inside new mount,
UTS, IPC, network and cgroup namespaces and inside the container's cgroup. It
finishes the sandbox and then replaces itself with the user's command through
execve(2), so no Python stays behind in a running container.
Read ``container_init`` top to bottom: each line is one step of a container start.

Everything this code uses is imported before ``pivot_root``: after it, the
host's files (Python's own modules included) are out of reach.
"""

import os
import _signal as signal  # the C module under `signal`: same calls, no enums to build (~1 ms)
import stat

from .. import seams
from ..errors import CommandNotExecutable, CommandNotFound
from ..kernel import mounts, netdev, rlimits, syscalls
from ..security import paths as security_paths
from ..security import profile as security_profile
from . import console, rootfs

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def container_init(spec, container_dir: str, channel, stdio: tuple[int, int, int], trace,
                   console_socket: int = -1, profile=None) -> None:
    """Become the container: mounts, pivot_root, hostname, loopback, hardening, then exec."""
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)  # die if our parent dies
    # A student's sethostname (``minirt exercise``) lives in a file on the host: find it
    # now, while the host's files are reachable; it is called after pivot_root.
    sethostname = seams.replaceable("sethostname", syscalls.sethostname)
    profile = profile or security_profile.from_spec(spec)  # the parent's, seccomp compiled
    if spec.rlimits:
        import resource  # noqa: F401  (an extension module: load it while host files are reachable)
    if profile.seccomp_program:
        from ..security import seccomp  # noqa: F401  (imported while the host's files are reachable)
    with trace.step("mount", source="none", target="/", fstype="", flags="MS_REC|MS_PRIVATE"):
        mounts.make_private("/")
    root = rootfs.mount_root(spec, container_dir, trace)
    rootfs.mount_etc_files(container_dir, root, trace)
    rootfs.mount_volumes(spec, root, trace)
    rootfs.mount_system(root, trace, use_mknod=os.geteuid() == 0 and "user" not in spec.namespaces,
                        privileged=spec.privileged,
                        borrow_sys="user" in spec.namespaces and "net" not in spec.namespaces)
    if spec.tty:
        with trace.step("open console", device="/dev/pts/ptmx"):
            stdio = make_console(os.path.join(root, "dev"), console_socket)
    if spec.read_only:
        security_paths.read_only_root(root, trace)
    seams.replaceable("pivot_into", mounts.pivot_into)(root, trace)
    if profile.mask_paths:
        security_paths.apply(trace)
    if "uts" in spec.namespaces and spec.hostname:
        with trace.step("sethostname", hostname=spec.hostname):
            sethostname(spec.hostname)
    if "net" in spec.namespaces:
        with trace.step("link up", interface="lo"):
            netdev.set_up("lo")
    env = container_env(spec)
    with trace.step("chdir", path=spec.workdir):
        os.makedirs(spec.workdir, exist_ok=True)
        os.chdir(spec.workdir)
    with trace.step("find command", command=spec.command[0], path=env.get("PATH", DEFAULT_PATH)):
        program = resolve_command(spec.command[0], env.get("PATH", DEFAULT_PATH))
    attach_stdio(stdio, spec.tty)
    if spec.rlimits:
        with trace.step("setrlimit", **spec.rlimits):
            rlimits.apply(spec.rlimits)
    user_env = security_profile.harden(profile, trace)  # the command's last privileges go
    env.update({key: value for key, value in user_env.items() if key not in spec.env})
    reset_signals()
    with trace.step("close fds", keep="0,1,2"):
        # Only stdin, stdout and stderr may reach the command (runc CVE-2024-21626);
        # the channel is close-on-exec and goes away with the exec itself.
        os.closerange(3, channel.write_fd)
        os.closerange(channel.write_fd + 1, 1 << 20)
    # Marked before the call: after a successful execve no Python is left to record
    # it. The parent learns the outcome when the close-on-exec channel closes.
    trace.mark("execve", path=program, argv=spec.command)
    try:
        os.execve(program, spec.command, env)
    except OSError as e:
        raise CommandNotExecutable(f"cannot execute {spec.command[0]!r} in the container: "
                                   f"{e.strerror}") from None


def make_console(dev: str, console_socket: int) -> tuple[int, int, int]:
    """Create the terminal in the container's devpts and hand its master to the parent."""
    master, slave = console.open_console(dev)
    console.send_fd(console_socket, master)
    os.close(master)
    return (slave, slave, slave)


def container_env(spec) -> dict[str, str]:
    """The command's environment: the image's and -e values, plus docker's defaults."""
    env = {"PATH": DEFAULT_PATH}
    env.update(spec.env)
    env.setdefault("HOSTNAME", spec.hostname)
    env.setdefault("HOME", "/root")
    if spec.tty:
        env.setdefault("TERM", "xterm")
    return env


def resolve_command(name: str, path: str) -> str:
    """Find ``name`` the way execvp(3) would, but in the container's root and PATH."""
    candidates = [name] if "/" in name else [os.path.join(d or ".", name) for d in path.split(":")]
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            if not os.access(candidate, os.X_OK):
                raise CommandNotExecutable(f"{name!r} is not executable in the container "
                                           "(permission denied)")
            return candidate
    where = "" if "/" in name else f" in $PATH ({path})"
    raise CommandNotFound(f"executable file {name!r} not found{where} in the image's root "
                          "filesystem")


def attach_stdio(stdio: tuple[int, int, int], tty: bool) -> None:
    """Give the command its stdin/stdout/stderr, in a session of its own.

    With ``-t`` the three are the slave side of a pseudo-terminal, which becomes
    the session's controlling terminal (so Ctrl-C there reaches the command).
    """
    os.setsid()
    if tty:
        console.make_controlling_terminal(stdio[0])
    for target, fd in enumerate(stdio):
        if fd != target:
            os.dup2(fd, target, inheritable=True)
        else:
            os.set_inheritable(target, True)


# Signals set to "ignore" on our side of the exec: Python ignores SIGPIPE and
# SIGXFSZ, and the helper process ignores the ones the parent forwards.
IGNORED_BY_US = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                 signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def reset_signals() -> None:
    """Give the command default signal handling.

    Caught signals reset to default at execve(2) by themselves, but an
    *ignored* signal stays ignored: left so, ``yes | head`` in the container
    would never end (SIGPIPE) and Ctrl-C would do nothing.
    """
    for number in IGNORED_BY_US:
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
