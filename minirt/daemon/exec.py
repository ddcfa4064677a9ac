"""``docker exec`` over the Engine API: exec instances, started on a hijacked connection.

Docker concept: an exec is two requests. ``POST /containers/{id}/exec`` only
*describes* a command (Cmd, Env, WorkingDir, Tty, which streams to attach) and
answers an id; ``POST /exec/{id}/start`` runs it, and the connection that asked
becomes the command's stdio (hijacked, as ``attach``'s): without a TTY, stdout
and stderr come back framed (8-byte header, stream 1 or 2) and the client's
bytes go to stdin, its half-close being stdin's EOF; with a TTY, a terminal
made inside the container is copied raw both ways and ``POST
/exec/{id}/resize`` sets its size. ``GET /exec/{id}/json`` tells whether it
still runs, its host pid and, once it ended, its exit code: that is how
``docker exec`` learns the code it exits with.

Exec instances live in the daemon's memory only (``Daemon.execs``), as
dockerd's do: they die with it. Each one keeps its config and what happened
(running, pid, exit code); the command itself runs through ``Engine.exec``
(``runtime/enter.py``: setns into the container's namespaces, join its cgroup)
with a ``runtime.stdio.Relay`` connecting it to the socket.

Events (container type, as dockerd): ``exec_create: CMD``, ``exec_start: CMD``,
``exec_die`` with ``execID`` and ``exitCode``.

Reference: Docker Engine API v1.43, ContainerExec, ExecStart, ExecResize,
ExecInspect.
"""

import os
import socket
import sys
import threading

from ..errors import MinirtError
from ..runtime.stdio import Relay
from .api import Reply, _find_container, route
from .server import HTTPError


class ExecInstance:
    """One ``docker exec``: what to run, and (once started) what became of it."""

    def __init__(self, exec_id: str, container: dict, config: dict):
        self.id = exec_id
        self.container_id = container["id"]
        self.container_name = container["name"]
        self.image = container.get("image", "")
        self.cmd = config["Cmd"]
        self.env = config["Env"]
        self.workdir = config["WorkingDir"]
        self.tty = config["Tty"]
        self.user = config["User"]
        self.privileged = config["Privileged"]
        self.attach_stdin = config["AttachStdin"]
        self.attach_stdout = config["AttachStdout"]
        self.attach_stderr = config["AttachStderr"]
        self.console_size = config["ConsoleSize"]   # [rows, cols] for the terminal, or None
        self.started = False
        self.running = False
        self.exit_code = None
        self.pid = 0
        self.relay = None                           # while it runs: for resize

    def set_pid(self, joiner: int | None) -> None:
        """The host pid of the command: the one child of the joiner ``enter.py`` forked."""
        if not joiner:
            return
        try:
            with open(f"/proc/{joiner}/task/{joiner}/children") as f:
                children = [int(p) for p in f.read().split()]
        except OSError:
            children = []
        self.pid = children[0] if children else joiner

    def inspect(self) -> dict:
        return {
            "ID": self.id, "Running": self.running,
            "ExitCode": self.exit_code, "Pid": self.pid,
            "ProcessConfig": {"tty": self.tty, "entrypoint": self.cmd[0],
                              "arguments": self.cmd[1:], "privileged": self.privileged,
                              "user": self.user},
            "OpenStdin": self.attach_stdin, "OpenStderr": self.attach_stderr,
            "OpenStdout": self.attach_stdout, "CanRemove": False,
            "ContainerID": self.container_id, "DetachKeys": "",
        }


def _execs(daemon) -> dict:
    """The daemon's exec instances (created on first use: api.Daemon needs no change)."""
    with daemon.lock:
        if not hasattr(daemon, "execs"):
            daemon.execs = {}
        return daemon.execs


def _instance(request, exec_id: str) -> ExecInstance:
    found = _execs(request.daemon).get(exec_id)
    if found is None:
        raise HTTPError(404, f"No such exec instance: {exec_id}")
    return found


def _console_size(body: dict):
    """``ConsoleSize`` ([height, width], API 1.42+): the terminal's size from the start."""
    size = body.get("ConsoleSize")
    if size is None:
        return None
    if (not isinstance(size, list) or len(size) != 2 or
            not all(isinstance(v, int) and v >= 0 for v in size)):
        raise HTTPError(400, "ConsoleSize must be [height, width]")
    return size if all(size) else None


def _string_list(body: dict, key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HTTPError(400, f"{key} must be a list of strings")
    return value


@route("POST", r"/containers/(?P<ref>[^/]+)/exec")
def exec_create(request, ref):
    """``docker exec``'s first step: describe the command, get an id (nothing runs yet)."""
    body = request.json() or {}
    if not isinstance(body, dict):
        raise HTTPError(400, "the exec config must be a JSON object")
    daemon = request.daemon
    container = _find_container(daemon.engine, ref)
    if not container["running"]:
        raise HTTPError(409, f"Container {container['id']} is not running")
    cmd = _string_list(body, "Cmd")
    if not cmd:
        raise HTTPError(400, "No exec command specified")
    env = _string_list(body, "Env")
    if any("=" not in e for e in env):
        raise HTTPError(400, "Env entries must be KEY=VALUE")
    config = {"Cmd": cmd, "Env": env, "WorkingDir": body.get("WorkingDir") or "",
              "ConsoleSize": _console_size(body),
              "Tty": bool(body.get("Tty")), "User": body.get("User") or "",
              "Privileged": bool(body.get("Privileged")),
              "AttachStdin": bool(body.get("AttachStdin")),
              "AttachStdout": bool(body.get("AttachStdout", True)),
              "AttachStderr": bool(body.get("AttachStderr", True))}
    for ignored in ("User", "Privileged"):
        if config[ignored]:  # every exec runs as the container's root, unprivileged
            print(f"minirtd: WARNING: exec in {container['name']}: {ignored}="
                  f"{config[ignored]!r} is not supported by minirt and is ignored",
                  file=daemon.requests.out, flush=True)
    instance = ExecInstance(os.urandom(32).hex(), container, config)
    execs = _execs(daemon)
    with daemon.lock:
        # As dockerd, an exec is kept while its container is: forget ended ones of
        # containers that are gone, so a long-lived daemon does not grow forever.
        alive = {c["id"] for c in daemon.engine.containers()}
        for old in [e for e in execs.values() if e.container_id not in alive and not e.running]:
            del execs[old.id]
        execs[instance.id] = instance
    daemon.events.publish("container", f"exec_create: {' '.join(cmd)}", container["id"],
                          {"name": container["name"], "image": instance.image,
                           "execID": instance.id})
    return Reply(201, {"Id": instance.id})


@route("POST", r"/exec/(?P<exec_id>[^/]+)/start")
def exec_start(request, exec_id):
    """Run the exec: on this connection (hijacked), or in the background with ``Detach``."""
    instance = _instance(request, exec_id)
    body = request.json() or {}
    if not isinstance(body, dict):
        raise HTTPError(400, "the exec start config must be a JSON object")
    size = _console_size(body) or instance.console_size
    daemon = request.daemon
    with daemon.lock:
        if instance.started:
            raise HTTPError(409, f"exec {exec_id} has already been started")
        instance.started = True
    container = _find_container(daemon.engine, instance.container_id)
    if not container["running"]:
        raise HTTPError(409, f"Container {container['id']} is not running")
    tty = instance.tty  # as dockerd: the exec's own config decides; start's Tty is the client's
    env = list(instance.env)
    if tty and not any(e.startswith("TERM=") for e in env):
        env.insert(0, "TERM=xterm")  # as dockerd: a terminal needs to say which kind
    if body.get("Detach"):
        def detached():  # the Relay is made on the thread that forks: see Relay.after_start
            _run(daemon, instance, Relay(_Discard(), tty=tty, started=instance.set_pid), env)
        instance.running = True
        threading.Thread(target=detached, name=f"exec-{exec_id[:12]}", daemon=True).start()
        return Reply(200, body=b"", content_type=None)  # dockerd: 200 and nothing more
    raw = request.hijack()
    relay = Relay(_Attached(raw, instance), tty=tty, stdin=instance.attach_stdin,
                  started=instance.set_pid)
    if tty and size:
        relay.resize(*size)
    instance.running = True
    try:
        _run(daemon, instance, relay, env)
    finally:
        try:  # wakes the stdin copier still waiting on the client
            raw.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _run(daemon, instance: ExecInstance, relay: Relay, env: list[str]) -> None:
    """Run the command to its end and record how it ended (exec_start ... exec_die)."""
    instance.relay = relay
    attributes = {"name": instance.container_name, "image": instance.image,
                  "execID": instance.id}
    daemon.events.publish("container", f"exec_start: {' '.join(instance.cmd)}",
                          instance.container_id, attributes)
    code = 126
    try:
        code = daemon.engine.exec(instance.container_id, instance.cmd, env=env,
                                  workdir=instance.workdir or None, tty=instance.tty,
                                  stdio=relay, interactive=instance.attach_stdin)
    except MinirtError as e:
        # Reached the client only as output: the HTTP answer (101/200) is already sent.
        # 127 no such command, 126 cannot run it (docker exec's codes); anything else
        # (the container stopped meanwhile, a namespace gone) is 126 too.
        code = e.exit_code if e.exit_code in (126, 127) else 126
        message = f"minirt: {e}\n".encode()
        try:
            if instance.tty:
                relay.stream.write(message)
            else:
                relay.stream.write_frame(2, message)
        except OSError:
            pass
    except Exception as e:
        print(f"minirtd: exec {instance.id[:12]} failed: {type(e).__name__}: {e}",
              file=sys.stderr, flush=True)
    finally:
        instance.exit_code, instance.running = code, False
        instance.relay = None
        daemon.events.publish("container", "exec_die", instance.container_id,
                              {**attributes, "exitCode": str(code)})


class _Attached:
    """The hijacked connection, carrying only the streams the exec attached (as dockerd)."""

    def __init__(self, raw, instance: ExecInstance):
        self.raw = raw
        self.wanted = {1: instance.attach_stdout, 2: instance.attach_stderr}

    def read(self, n: int = 65536) -> bytes:
        return self.raw.read(n)

    def write(self, data: bytes) -> None:
        if self.wanted[1]:
            self.raw.write(data)

    def write_frame(self, stream: int, data: bytes) -> None:
        if self.wanted[stream]:
            self.raw.write_frame(stream, data)


class _Discard:
    """Where a detached exec's output goes: nowhere (as ``docker exec -d``)."""

    def read(self, n: int = 65536) -> bytes:
        return b""

    def write(self, data: bytes) -> None:
        pass

    def write_frame(self, stream: int, data: bytes) -> None:
        pass


@route("POST", r"/exec/(?P<exec_id>[^/]+)/resize")
def exec_resize(request, exec_id):
    """The exec's terminal size (``docker exec -t`` sends it at start and on SIGWINCH)."""
    instance = _instance(request, exec_id)
    height, width = request.int_arg("h", 0), request.int_arg("w", 0)
    if not instance.tty:
        raise HTTPError(409, f"exec {exec_id} has no terminal to resize (it was created "
                        "without Tty)")
    relay = instance.relay
    if relay is not None and height > 0 and width > 0:
        relay.resize(height, width)
    return Reply(200, body=b"", content_type=None)


@route("GET", r"/exec/(?P<exec_id>[^/]+)/json")
def exec_inspect(request, exec_id):
    """``ExecInspect``: running or not, its pid, and its exit code once it ended."""
    return _instance(request, exec_id).inspect()
