"""Entering a running container: what ``docker exec`` does (man 2 setns).

A container is a set of namespaces plus a cgroup; a second process joins
them with setns(2), the way ``nsenter`` and runc's exec do::

    caller (host)
     └─ fork: joiner        joins the container's cgroup (through the host's
                            cgroupfs, so first), then setns(2) into its user (if
                            any), ipc, uts, net, cgroup, pid and mnt namespaces;
                            the mnt one last, and it moves the joiner's root and
                            working directory to the container's root
         └─ fork: command   the first process the joiner makes is inside the pid
                            namespace too (a pid namespace, like unshare, applies
                            to children): chdir, stdio, execve(command)

The joiner waits for the command and exits with its status (``docker exec``'s
exit code); with ``detach`` it leaves at once, and the command is re-parented
to the container's PID 1. Errors before the execve (no such command, no such
directory) come back over the same close-on-exec channel as a start's.
"""

import os

from ..kernel import namespaces
from .channel import Channel
from .container import _report
from .init import (DEFAULT_PATH, attach_stdio, container_env, make_console, resolve_command,
                   reset_signals)
from .spec import ExitStatus


def exec_in(pid1: int, spec, cgroup, command: list[str], env: dict, workdir: str | None,
            tty: bool, detach: bool, stdio) -> int:
    """Run ``command`` inside the container whose PID 1 is ``pid1`` (host numbering).

    ``stdio`` is a ``runtime.stdio`` object (Passthrough, Capture, Terminal).
    Returns the command's exit code (128+N for signal N), or 0 with ``detach``.
    """
    from .. import errors
    channel = Channel()
    opened = namespaces.open_namespaces(pid1, spec.namespaces)
    try:
        joiner = os.fork()
        if joiner == 0:
            _join(channel, opened, cgroup, spec, command, env, workdir, tty, detach, stdio)
    finally:
        for _, fd in opened:
            os.close(fd)
    channel.close_write()
    try:
        failure = next((m for m in channel.receive_all() if "error" in m), None)
        if failure is not None:
            os.waitpid(joiner, 0)
            kind = getattr(errors, failure["error"], errors.ContainerStartError)
            if not (isinstance(kind, type) and issubclass(kind, errors.MinirtError)):
                kind = errors.ContainerStartError
            raise kind(failure["message"])
        stdio.after_start()
        if not detach:
            stdio.pump()
        _, status = os.waitpid(joiner, 0)
        return ExitStatus.from_wait_status(status).exit_code
    finally:
        stdio.close()


def _join(channel, opened, cgroup, spec, command, env, workdir, tty, detach, stdio) -> None:
    """The joiner: cgroup, namespaces, fork the command, wait for it (never returns)."""
    code = 125
    try:
        os.close(channel.read_fd)
        if cgroup is not None:
            cgroup.join()
        namespaces.enter(opened)
        child = os.fork()
        if child == 0:
            _run(channel, spec, command, env, workdir, tty, stdio)
        os.closerange(3, 1 << 20)  # the channel's write end too: only the command holds it now
        if detach:
            code = 0
        else:
            _, status = os.waitpid(child, 0)
            code = ExitStatus.from_wait_status(status).exit_code
    except BaseException as e:
        _report(channel, e)
    finally:
        os._exit(code)


def _run(channel, spec, command, env, workdir, tty, stdio) -> None:
    """The command's process, already in every namespace: set up, then execve."""
    code = 126
    try:
        full_env = container_env(spec)
        full_env.update(env)
        fds = stdio.child_fds()
        if tty:  # a terminal of the container's own devpts, its master sent to the caller
            fds = make_console("/dev", stdio.console_socket)
        directory = workdir or spec.workdir or "/"
        try:
            os.chdir(directory)
        except OSError as e:
            raise_start_error(f"cannot change to the working directory {directory!r} in the "
                              f"container: {e.strerror}")
        program = resolve_command(command[0], full_env.get("PATH", DEFAULT_PATH))
        attach_stdio(fds, tty)
        reset_signals()
        os.closerange(3, channel.write_fd)  # only stdin, stdout, stderr reach the command
        os.closerange(channel.write_fd + 1, 1 << 20)
        os.execve(program, command, full_env)
    except BaseException as e:
        code = getattr(e, "exit_code", 126)
        _report(channel, e)
    finally:
        os._exit(code)


def raise_start_error(message: str) -> None:
    from ..errors import ContainerStartError
    raise ContainerStartError(message)
