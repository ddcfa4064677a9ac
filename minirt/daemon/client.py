"""The ``minirt`` command as a client of minirtd: a small Docker Engine API client.

Docker concept: ``docker`` itself does nothing to containers. With
``-H unix:///path``, ``DOCKER_HOST`` or the default socket, every command
becomes HTTP requests to the daemon: ``docker run`` is create + attach +
wait + start, ``docker exec`` is exec-create + exec-start (hijacked) + exec
inspect for the exit code. ``minirt`` does the same when ``MINIRT_HOST`` or
``-H`` names a daemon (see ``cli.daemon_host``), through ``RemoteEngine``
here: the methods the CLI calls on ``Engine``, with the same names and, where
practical, the same return shapes, each one a request to the daemon.

Only the standard library: ``http.client`` over an ``AF_UNIX`` socket (or
TCP to 127.0.0.1), so a command pays for no heavier import than that.
Hijacking is done by hand (``RemoteEngine.hijack``): send the request, read
the response header up to its blank line and not a byte further, and the
socket is then the container's stdio, in Docker's 8-byte frames without a
TTY, raw with one (the same framing the shim's attach socket speaks, so the
CLI's copy loop serves both).

Errors: the daemon's ``{"message": ...}`` becomes the ``MinirtError`` its
status means (404 ImageNotFound, ContainerNotFound or NetworkError, 409
ContainerError, 400 UsageError, else MinirtError), so the CLI prints one line
and exits 125 as in direct mode; a daemon nobody answers for is
``DaemonUnreachable``.

Reference: Docker Engine API v1.43,
https://docs.docker.com/reference/api/engine/version/v1.43/
"""

import http.client
import json
import socket
import struct
from urllib.parse import quote, urlencode

from .. import __version__
from ..errors import (CommandNotExecutable, CommandNotFound, ContainerError,
                      ContainerNotFound, ImageNotFound, MinirtError, NetworkError, UsageError)

API_VERSION = "1.43"
PREFIX = f"/v{API_VERSION}"
USER_AGENT = f"minirt-cli/{__version__}"


class DaemonUnreachable(MinirtError):
    """Nothing answers at the daemon's address (not started, stopped, or no permission)."""


def parse_host(text: str) -> tuple[str, object]:
    """``unix:///path`` -> ("unix", path); ``tcp://HOST:PORT`` -> ("tcp", (host, port))."""
    if text.startswith("unix://") and text[len("unix://"):].startswith("/"):
        return "unix", text[len("unix://"):]
    if text.startswith("tcp://"):
        host, sep, port = text[len("tcp://"):].rstrip("/").rpartition(":")
        if sep and port.isdigit():
            return "tcp", (host.strip("[]"), int(port))
    raise UsageError(f"invalid daemon address {text!r}: use unix:///path/to/minirt.sock, "
                     "tcp://127.0.0.1:PORT, or direct (no daemon)")


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix socket: only ``connect`` differs."""

    def __init__(self, path: str, timeout: float | None = None):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def error_for(status: int, message: str, path: str) -> MinirtError:
    """The daemon's error status and message -> the MinirtError direct mode would raise."""
    if message.startswith("No such "):  # docker's words; the Engine's are lower-case
        message = "n" + message[1:]
    if status == 404 and (message.startswith("network ") or path.startswith("/networks/")):
        return NetworkError(message)
    if status == 403 and path.startswith("/networks/"):
        return NetworkError(message)  # a predefined network, or one still in use
    if status == 404:
        image = message.startswith("no such image") or path.startswith("/images/")
        return (ImageNotFound if image else ContainerNotFound)(message)
    if status == 409:
        return ContainerError(message)
    if status == 400:
        return UsageError(message)
    return MinirtError(message)


def frames(read):
    """Docker's multiplexed stream -> (stream number, bytes): an 8-byte header
    ([stream, 0, 0, 0, big-endian length]) before each piece. ``read(n)`` returns
    b"" at the end."""
    buffer = b""
    while True:
        while len(buffer) >= 8 and len(buffer) >= 8 + (size := struct.unpack(">xxxxI", buffer[:8])[0]):
            yield buffer[0], buffer[8:8 + size]
            buffer = buffer[8 + size:]
        data = read(65536)
        if not data:
            return
        buffer += data


class ContainerWait:
    """``POST /containers/{id}/wait`` sent now, its answer read later (``code()``).

    The daemon sends the response header at once, before the container can
    have exited: ``docker run`` waits for that header before it starts the
    container, so no exit is missed, not even an ``--rm`` container's."""

    def __init__(self, engine: "RemoteEngine", container_id: str, condition: str):
        self.connection = engine.connection(timeout=None)
        self.path = f"/containers/{quote(container_id)}/wait"
        self.response = engine.send(self.connection, "POST", self.path,
                                    {"condition": condition})

    def code(self) -> int:
        try:
            answer = json.loads(self.response.read() or b"{}")
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise MinirtError(f"lost the daemon's answer to wait: {e}") from None
        finally:
            self.connection.close()
        if answer.get("Error"):
            raise MinirtError(answer["Error"].get("Message") or str(answer["Error"]))
        return answer.get("StatusCode", -1)


class RemoteImage:
    """What the CLI reads of an image the daemon described (``Image``'s names)."""

    def __init__(self, id: str, name: str, size: int):
        self.id, self.name, self.size = id, name, size


class RemoteEngine:
    """``Engine``'s methods, done by the daemon at ``address`` (``unix:///path``)."""

    remote = True

    def __init__(self, address: str):
        self.address = address
        self.kind, self.where = parse_host(address)

    # --- transport ------------------------------------------------------------------
    def connection(self, timeout: float | None = 30) -> http.client.HTTPConnection:
        if self.kind == "unix":
            conn = UnixHTTPConnection(self.where, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(*self.where, timeout=timeout)
        try:
            conn.connect()
        except OSError as e:
            conn.close()
            raise self.unreachable(e) from None
        return conn

    def unreachable(self, error: OSError) -> DaemonUnreachable:
        if isinstance(error, PermissionError):
            return DaemonUnreachable(f"cannot connect to the minirt daemon at {self.address}: "
                                     "permission denied (the socket is mode 0660: run as root "
                                     "or as a member of the group minirt)")
        return DaemonUnreachable(f"cannot connect to the minirt daemon at {self.address}: "
                                 "is `minirt daemon` running?")

    def probe(self) -> bool:
        """True when something accepts connections at the address (no request sent)."""
        try:
            self.connection(timeout=2).close()
            return True
        except DaemonUnreachable:
            return False

    def send(self, conn, method: str, path: str, query=None, body=None,
             headers: dict | None = None) -> http.client.HTTPResponse:
        """One request on ``conn``; its response (header read), or the daemon's error raised."""
        target = PREFIX + path + ("?" + urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        sent = {"User-Agent": USER_AGENT, **({"Content-Type": "application/json"} if data
                                             is not None else {}), **(headers or {})}
        try:
            conn.request(method, target, body=data, headers=sent)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            if isinstance(e, ConnectionError):
                raise self.unreachable(e) from None
            raise MinirtError(f"the minirt daemon at {self.address} did not answer "
                              f"{method} {path}: {e}") from None
        if response.status >= 400:
            raise self.failure(response.status, response.read(), path)
        return response

    def failure(self, status: int, data: bytes, path: str) -> MinirtError:
        try:
            message = json.loads(data).get("message") or ""
        except (ValueError, AttributeError):
            message = data.decode(errors="replace").strip()
        return error_for(status, message or f"the daemon answered {status}", path)

    def call(self, method: str, path: str, query=None, body=None, timeout: float | None = 30):
        """A request with a JSON (or empty) answer: the parsed value, or None."""
        conn = self.connection(timeout)
        try:
            response = self.send(conn, method, path, query, body)
            data = response.read()
            return json.loads(data) if data and "json" in (
                response.getheader("Content-Type") or "") else None
        finally:
            conn.close()

    def stream(self, method: str, path: str, query=None, body=None):
        """A request whose answer streams (chunked): the response, to read as it comes."""
        conn = self.connection(timeout=None)
        response = self.send(conn, method, path, query, body)
        return conn, response

    def json_lines(self, method: str, path: str, query=None, body=None):
        """A progress stream (pull, push): each JSON line as a dict; an ``{"error"}``
        line raises, as the docker CLI fails on it."""
        conn, response = self.stream(method, path, query, body)
        try:
            while line := response.readline():
                if not line.strip():
                    continue
                message = json.loads(line)
                if message.get("error"):
                    raise MinirtError(message["error"])
                yield message
        finally:
            conn.close()

    def hijack(self, path: str, query=None, body=None) -> socket.socket:
        """``Connection: Upgrade`` to a raw stream (attach, exec start): the socket, its
        HTTP header consumed and nothing after it, so every byte left is the stream's."""
        conn = self.connection(timeout=30)
        sock = conn.sock
        target = PREFIX + path + ("?" + urlencode(query) if query else "")
        data = b"" if body is None else json.dumps(body).encode()
        head = (f"POST {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {USER_AGENT}\r\n"
                f"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        try:
            sock.sendall(head + data)
            header = b""
            while b"\r\n\r\n" not in header:
                peeked = sock.recv(4096, socket.MSG_PEEK)
                if not peeked:
                    raise ConnectionResetError("the daemon closed the connection")
                end = (header + peeked).find(b"\r\n\r\n")
                take = len(peeked) if end < 0 else end + 4 - len(header)
                header += sock.recv(take)  # exactly the header: the stream's bytes stay
        except OSError as e:
            sock.close()
            raise MinirtError(f"the minirt daemon at {self.address} did not answer POST "
                              f"{path}: {e}") from None
        status = int(header.split(b" ", 2)[1])
        if status >= 400:
            fields = dict(line.split(b":", 1) for line in header.split(b"\r\n")[1:] if b":" in line)
            length = int(fields.get(b"Content-Length", b"0").strip() or 0)
            sock.settimeout(5)
            rest = b""
            try:
                while len(rest) < length and (chunk := sock.recv(length - len(rest))):
                    rest += chunk
            except OSError:
                pass
            sock.close()
            raise self.failure(status, rest, path)
        sock.settimeout(None)
        conn.sock = None  # the socket is the caller's now
        return sock

    # --- system ---------------------------------------------------------------------
    def version(self) -> dict:
        return self.call("GET", "/version")

    def requests(self) -> list[dict]:
        """minirt extension: the daemon's request log."""
        return self.call("GET", "/minirt/requests")

    # --- containers -----------------------------------------------------------------
    def reap_stale(self) -> list[str]:
        return []  # the daemon reaps before it lists

    def containers(self, all: bool = True) -> list[dict]:
        """``GET /containers/json``, each entry in ``Engine.containers``'s shape (plus
        ``status_text``: docker's STATUS column, as the daemon words it)."""
        import shlex
        found = []
        for c in self.call("GET", "/containers/json", {"all": "1" if all else "0"}):
            running = c.get("State") == "running"
            found.append({"id": c["Id"], "name": (c.get("Names") or ["/"])[0].lstrip("/"),
                          "image": c.get("Image", ""), "image_id": c.get("ImageID", ""),
                          "command": shlex.split(c.get("Command") or ""),
                          "created": c.get("Created", 0), "running": running,
                          "labels": c.get("Labels") or {},
                          "state": {"status": c.get("State", "")},
                          "status_text": c.get("Status", "")})
        return found

    def inspect(self, ref: str) -> dict:
        return self.call("GET", f"/containers/{quote(ref, safe='')}/json")

    def find_container(self, ref: str) -> dict:
        """A container by name or id, in ``Engine.find_container``'s shape (the fields the
        CLI reads: id, name, tty, stdin, running, auto_remove, state)."""
        found = self.inspect(ref)
        state, config = found.get("State") or {}, found.get("Config") or {}
        return {"id": found["Id"], "name": found.get("Name", "").lstrip("/"),
                "tty": bool(config.get("Tty")), "stdin": bool(config.get("OpenStdin")),
                "running": bool(state.get("Running")),
                "auto_remove": bool((found.get("HostConfig") or {}).get("AutoRemove")),
                "image": config.get("Image", ""), "command": [found.get("Path", "")] +
                list(found.get("Args") or []),
                "state": {"status": state.get("Status"), "exit_code": state.get("ExitCode"),
                          "oom_killed": state.get("OOMKilled")}}

    def create(self, image: str, command=None, *, tty: bool = False, stdin_open: bool = False,
               remove: bool = False, notice=None, name=None, hostname=None, env=None,
               workdir=None, volumes=(), memory=None, cpus=None, pids_limit=None,
               storage=None, network=None, ip=None, publish=(), dns=(), user=None,
               privileged=False, cap_add=(), cap_drop=(), security_opt=(), read_only=False,
               ulimits=()) -> str:
        """``POST /containers/create`` with ``Engine.create``'s options as docker's body.

        ``--network``, ``--ip``, ``-p`` and ``--dns`` become HostConfig.NetworkMode,
        NetworkingConfig's IPAMConfig, HostConfig.PortBindings (``-p`` checked here
        first, as direct mode would) and HostConfig.Dns."""
        from ..kernel.cgroups import Limits
        if storage:
            raise UsageError("--storage is not available through the daemon: it uses "
                             "its own (see `minirt inspect`'s GraphDriver)")
        limits = Limits.parse(memory, cpus, pids_limit)  # bad values fail here, as direct
        host = {"AutoRemove": bool(remove), "Binds": list(volumes or []) or None}
        if limits.memory:
            host["Memory"] = limits.memory
        if limits.cpus:
            host["NanoCpus"] = int(round(limits.cpus * 1e9))
        if limits.pids:
            host["PidsLimit"] = limits.pids
        host.update(NetworkMode=network or "default", Dns=[str(d) for d in dns or ()],
                    PortBindings=port_bindings(publish))
        host.update(Privileged=bool(privileged), CapAdd=list(cap_add or ()) or None,
                    CapDrop=list(cap_drop or ()) or None,
                    SecurityOpt=list(security_opt or ()) or None,
                    ReadonlyRootfs=bool(read_only), Ulimits=client_ulimits(ulimits))
        body = {"Image": image, "Cmd": list(command) if command else None,
                "Env": client_env(env) or None, "WorkingDir": workdir or "",
                "Hostname": hostname or "", "User": user or "", "Tty": bool(tty),
                "OpenStdin": bool(stdin_open),
                "StdinOnce": bool(stdin_open), "AttachStdin": bool(stdin_open),
                "AttachStdout": True, "AttachStderr": True, "HostConfig": host,
                "ExposedPorts": {key: {} for key in host["PortBindings"]} or None}
        if ip:
            body["NetworkingConfig"] = {"EndpointsConfig": {
                network or "default": {"IPAMConfig": {"IPv4Address": ip}}}}
        answer = self.call("POST", "/containers/create", {"name": name} if name else None,
                           body)
        for warning in answer.get("Warnings") or []:
            if notice:
                notice(warning)
        return answer["Id"]

    def start(self, ref: str) -> str:
        try:
            self.call("POST", f"/containers/{quote(ref, safe='')}/start", timeout=150)
        except UsageError as e:
            # "failed to start container NAME: WHY (executable file not found in $PATH)":
            # the words the docker CLI reads to exit 127 (or 126), as a shell would.
            text = str(e)
            why = text.split(": ", 1)[-1].rsplit(" (", 1)[0]
            if text.endswith("(executable file not found in $PATH)"):
                raise CommandNotFound(why) from None
            if text.endswith("(permission denied)"):
                raise CommandNotExecutable(why) from None
            raise
        return ref

    def stop(self, ref: str, timeout: float = 10) -> str:
        self.call("POST", f"/containers/{quote(ref, safe='')}/stop", {"t": int(timeout)},
                  timeout=timeout + 60)
        return ref

    def restart(self, ref: str, timeout: float = 10) -> str:
        self.call("POST", f"/containers/{quote(ref, safe='')}/restart", {"t": int(timeout)},
                  timeout=timeout + 180)
        return ref

    def kill(self, ref: str, signal="KILL") -> str:
        self.call("POST", f"/containers/{quote(ref, safe='')}/kill", {"signal": str(signal)})
        return ref

    def wait(self, ref: str) -> int:
        return self.wait_later(ref, "not-running").code()

    def wait_later(self, ref: str, condition: str = "next-exit") -> ContainerWait:
        return ContainerWait(self, ref, condition)

    def remove_container(self, ref: str, force: bool = False) -> str:
        self.call("DELETE", f"/containers/{quote(ref, safe='')}",
                  {"force": "1"} if force else None, timeout=60)
        return ref

    def attach(self, ref: str, stdin: bool = True) -> socket.socket:
        """The container's stdio (``POST /containers/{id}/attach``, hijacked)."""
        return self.hijack(f"/containers/{quote(ref, safe='')}/attach",
                           {"stream": "1", "stdin": "1" if stdin else "0", "stdout": "1",
                            "stderr": "1"})

    def resize(self, ref: str, height: int, width: int) -> None:
        self.call("POST", f"/containers/{quote(ref, safe='')}/resize", {"h": height, "w": width})

    def logs(self, ref: str, follow: bool = False, tail: int | None = None,
             timestamps: bool = False):
        """``GET /containers/{id}/logs``: (stream name, bytes), as ``Engine.logs`` yields."""
        query = {"stdout": "1", "stderr": "1", "follow": "1" if follow else "0",
                 "timestamps": "1" if timestamps else "0",
                 "tail": "all" if tail is None else str(tail)}
        conn, response = self.stream("GET", f"/containers/{quote(ref, safe='')}/logs", query)
        try:
            if "multiplexed" not in (response.getheader("Content-Type") or ""):
                while data := response.read1(65536):  # a -t container: the terminal's bytes
                    yield "stdout", data
                return
            for number, data in frames(response.read1):
                yield ("stderr" if number == 2 else "stdout"), data
        finally:
            conn.close()

    def top(self, ref: str) -> dict:
        return self.call("GET", f"/containers/{quote(ref, safe='')}/top")

    def commit(self, ref: str, name: str, changes=(), message: str = "") -> RemoteImage:
        repository, tag = split_tag(name)
        query = [("container", ref), ("repo", repository), ("tag", tag),
                 ("comment", message)] + [("changes", c) for c in changes]
        answer = self.call("POST", "/commit", query, {}, timeout=600)
        return RemoteImage(answer["Id"], name, 0)

    # --- exec -----------------------------------------------------------------------
    def exec_create(self, ref: str, command, env=None, workdir=None, tty=False,
                    stdin=False, size=None) -> str:
        body = {"Cmd": list(command), "Env": client_env(env), "WorkingDir": workdir or "",
                "Tty": bool(tty), "AttachStdin": bool(stdin), "AttachStdout": True,
                "AttachStderr": True}
        if size:
            body["ConsoleSize"] = list(size)
        return self.call("POST", f"/containers/{quote(ref, safe='')}/exec", body=body)["Id"]

    def exec_start(self, exec_id: str, tty: bool = False, detach: bool = False):
        """Detached: None; else the hijacked socket carrying the command's stdio."""
        body = {"Detach": bool(detach), "Tty": bool(tty)}
        if detach:
            self.call("POST", f"/exec/{exec_id}/start", body=body)
            return None
        return self.hijack(f"/exec/{exec_id}/start", body=body)

    def exec_inspect(self, exec_id: str) -> dict:
        return self.call("GET", f"/exec/{exec_id}/json")

    def exec_resize(self, exec_id: str, height: int, width: int) -> None:
        self.call("POST", f"/exec/{exec_id}/resize", {"h": height, "w": width})

    # --- images ---------------------------------------------------------------------
    def image_list(self, all: bool = False) -> list[RemoteImage]:
        """``GET /images/json``: one entry per tag, as ``ImageStore.images`` lists them."""
        listed = []
        for summary in self.call("GET", "/images/json", {"all": "1" if all else "0"}):
            for tag in summary.get("RepoTags") or ["<none>:<none>"]:
                listed.append(RemoteImage(summary["Id"], tag, summary.get("Size", 0)))
        return sorted(listed, key=lambda i: i.name)

    def image_inspect(self, name: str) -> dict:
        return self.call("GET", f"/images/{quote(name, safe=':@/')}/json")

    def tag(self, source: str, target: str) -> None:
        repository, tag = split_tag(target)
        self.call("POST", f"/images/{quote(source, safe=':@/')}/tag",
                  {"repo": repository, "tag": tag})

    def remove_image(self, name: str, force: bool = False) -> list[str]:
        """``DELETE /images/{name}``: the digests deleted (as ``Engine.remove_image``)."""
        answer = self.call("DELETE", f"/images/{quote(name, safe=':@/')}",
                           {"force": "1"} if force else None, timeout=120)
        return [entry["Deleted"] for entry in answer or [] if "Deleted" in entry]

    def pull(self, name: str):
        """``POST /images/create``: the daemon's progress lines, as dicts."""
        repository, tag = split_tag(name, default=None)
        query = {"fromImage": repository}
        if tag:
            query["tag"] = tag
        return self.json_lines("POST", "/images/create", query)

    def push(self, name: str):
        repository, tag = split_tag(name, default=None)
        return self.json_lines("POST", f"/images/{quote(repository, safe=':@/')}/push",
                               {"tag": tag} if tag else None)


def port_bindings(publish) -> dict:
    """``-p`` values (``"127.0.0.1:8080:80"`` or ``PortMapping``s) as docker's
    PortBindings: ``{"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}``."""
    if not publish:
        return {}
    from ..network.proxy import PortMapping, parse_publish
    bindings = {}
    for item in publish:
        mapping = item if isinstance(item, PortMapping) else parse_publish(str(item))
        bindings.setdefault(f"{mapping.container_port}/{mapping.protocol}", []).append(
            {"HostIp": mapping.host_ip, "HostPort": str(mapping.host_port or "")})
    return bindings


def client_ulimits(ulimits) -> list[dict] | None:
    """``--ulimit nofile=1024:2048`` -> docker's ``[{"Name", "Soft", "Hard"}]`` (checked here,
    as direct mode would)."""
    from ..engine import parse_ulimits
    found = [{"Name": name[len("RLIMIT_"):].lower(), "Soft": soft, "Hard": hard}
             for name, (soft, hard) in parse_ulimits(ulimits).items()]
    return found or None


def client_env(env) -> list[str]:
    """``-e KEY=VALUE`` as given; a bare ``-e KEY`` takes this process's value (or is left
    out when it has none), as the docker CLI resolves it before it asks the daemon."""
    import os
    resolved = []
    for item in env or []:
        if "=" in item:
            resolved.append(item)
        elif item in os.environ:
            resolved.append(f"{item}={os.environ[item]}")
    return resolved


def split_tag(name: str, default: str | None = "latest") -> tuple[str, str | None]:
    """``host:5000/repo:tag`` -> ("host:5000/repo", "tag"); a digest stays with the tag."""
    if "@" in name:
        repository, _, digest = name.partition("@")
        return repository, digest
    repository, sep, tag = name.rpartition(":")
    if sep and "/" not in tag:
        return repository, tag
    return name, default


def progress_line(message: dict) -> str | None:
    """A pull or push progress message as the line the docker CLI prints when its
    output is not a terminal (no bars: "Downloading" ticks are left out)."""
    status = message.get("status")
    if not status or message.get("progressDetail", {}).get("current") is not None:
        return None
    return f"{message['id']}: {status}" if message.get("id") else status
