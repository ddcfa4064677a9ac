"""minirtd's transport: the daemon's socket and the HTTP/1.1 spoken over it.

Docker concept: the client/server split. ``docker`` is only a client; dockerd
listens on a Unix socket (``/var/run/docker.sock``) and serves the Docker
Engine API, plain HTTP/1.1, over it. The socket's file permissions are the
whole access control: whoever may connect may start containers as root, so
the socket is ``0660`` and group ``docker``. minirtd does the same:

* ``/run/minirt/minirt.sock`` as root, ``$XDG_RUNTIME_DIR/minirt.sock`` otherwise,
  or ``-H unix:///path``; mode ``0660``, group ``minirt`` when that group exists;
* TCP only as ``-H tcp://127.0.0.1:PORT`` (loopback), with a warning: like
  dockerd's ``tcp://`` without TLS, anyone on this machine can then use it;
* a socket file nobody answers on (a daemon that was killed) is replaced; a
  live one is left alone: "a daemon is already listening on ...";
* SIGTERM or SIGINT: stop accepting, end the event streams, remove the socket.

HTTP: keep-alive connections (``Content-Length`` on every plain response),
chunked transfer encoding for streams (``Request.json_stream``) and for
uploads read as they arrive, with a cap (``Request.body_reader``: build contexts), and
*hijacking* for attach/exec (``Request.hijack``): after the response header the
connection stops being HTTP and carries the container's raw stdin/stdout.
Every request is logged (method, path, status, time taken) to stderr and to an
in-memory ring the notebooks read over ``GET /minirt/requests``, so a learner
can watch ``docker run`` become create + attach + start + wait.

What each path means lives in ``api.py``; this module knows nothing of
images or containers. Reference: Docker Engine API v1.43,
https://docs.docker.com/reference/api/engine/version/v1.43/ ("Hijacking" under
``POST /containers/{id}/attach``).
"""

import collections
import http.server
import json
import os
import re
import select
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading
import time
import traceback
from urllib.parse import parse_qs, urlsplit

from .. import __version__
from ..errors import MinirtError, UsageError

MAX_JSON_BODY = 16 * 1024 * 1024   # bytes: a request body larger than this gets 413
DRAIN_LIMIT = 1024 * 1024          # unread body bytes we read and drop to keep a connection
IDLE_TIMEOUT = 300                 # seconds an idle keep-alive connection stays open
LOG_ENTRIES = 1000                 # requests remembered for GET /minirt/requests


class HTTPError(Exception):
    """Answer the request with ``status`` and Docker's error body ``{"message": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class DaemonError(MinirtError):
    """The daemon cannot start (its address is taken, refused or unusable)."""


# --- addresses -------------------------------------------------------------------------
def default_socket_path() -> str:
    if os.geteuid() == 0:
        return "/run/minirt/minirt.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime:
        raise DaemonError("XDG_RUNTIME_DIR is not set, so minirtd has no private place for its "
                          "socket: give one with -H unix:///path/to/minirt.sock")
    return os.path.join(runtime, "minirt.sock")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_address(text: str | None) -> tuple[str, object]:
    """``-H``'s value -> ("unix", path) or ("tcp", (host, port)); refuses what is unsafe."""
    if not text:
        return "unix", default_socket_path()
    if text.startswith("unix://"):
        path = text[len("unix://"):]
        if not os.path.isabs(path):
            raise UsageError(f"invalid address {text!r}: use unix:///an/absolute/path")
        return "unix", path
    if text.startswith("tcp://"):
        rest = text[len("tcp://"):].rstrip("/")
        host, sep, port = rest.rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"invalid address {text!r}: use tcp://127.0.0.1:PORT")
        if host not in LOOPBACK and not host.startswith("127."):
            raise DaemonError(
                f"refusing to listen on {text}: the Docker Engine API has no authentication of "
                "its own, and whoever reaches it can run anything as the daemon's user. Use a "
                "Unix socket (the default), or tcp://127.0.0.1:PORT for this machine only")
        return "tcp", (host, int(port))
    raise UsageError(f"invalid address {text!r}: use unix:///path/to/minirt.sock or "
                     "tcp://127.0.0.1:PORT")


def address_text(kind: str, where) -> str:
    return f"unix://{where}" if kind == "unix" else f"tcp://{where[0]}:{where[1]}"


def _prepare_socket_path(path: str) -> None:
    """Make room for our socket: replace a stale one, refuse a live one or a non-socket."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise DaemonError(f"{path} exists and is not a socket: remove it or choose another "
                          "address with -H unix:///path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # a socket file nobody listens on: left by a daemon that was killed
        return
    except OSError as e:
        raise DaemonError(f"cannot tell whether a daemon listens on unix://{path}: {e}") from None
    finally:
        probe.close()
    raise DaemonError(f"a daemon is already listening on unix://{path}: stop it first, or "
                      "choose another address with -H unix:///path")


def _socket_group() -> int | None:
    try:
        import grp
        return grp.getgrnam("minirt").gr_gid
    except (ImportError, KeyError):
        return None


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True          # a hung client never keeps the daemon from exiting
    request_queue_size = 64

    def server_bind(self):
        path = self.server_address
        _prepare_socket_path(path)
        old = os.umask(0o117)      # born 0660: no moment where anyone else may connect
        try:
            self.socket.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o660)
        group = _socket_group()
        if group is not None:
            os.chown(path, -1, group)
        self.socket_inode = os.stat(path).st_ino

    def remove_socket(self) -> None:
        """Remove our socket file (only ours: another daemon may have replaced it)."""
        try:
            if os.stat(self.server_address).st_ino == self.socket_inode:
                os.unlink(self.server_address)
        except (FileNotFoundError, AttributeError):
            pass


class TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, handler):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def remove_socket(self) -> None:
        pass


# --- the request log -------------------------------------------------------------------
class RequestLog:
    """Every request: to stderr as one line, and into a ring the notebook reads."""

    def __init__(self, out=None, size: int = LOG_ENTRIES):
        self.out = out if out is not None else sys.stderr
        self.entries = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        self._print_lock = threading.Lock()  # print() writes text and newline apart: one at a time
        self._next = 1

    def start(self, method: str, path: str, agent: str, remember: bool = True) -> dict:
        with self._lock:
            entry = {"id": self._next, "time": time.time(), "method": method, "path": path,
                     "status": None, "duration_ms": None, "agent": agent, "stream": False}
            self._next += 1
            if remember:
                self.entries.append(entry)
        return entry

    def responded(self, entry: dict, status: int, stream: bool, started: float) -> None:
        entry["status"], entry["stream"] = status, stream
        if stream:  # a long-lived answer: say so now, and once more when it ends
            self._print(entry, f"{status} streaming after {_ms(started):.1f}ms")

    def finish(self, entry: dict, started: float) -> None:
        entry["duration_ms"] = round(_ms(started), 3)
        self._print(entry, (f"{entry['status']} " if not entry["stream"] else "ended ") +
                    f"{entry['duration_ms']:.1f}ms")

    def _print(self, entry: dict, what: str) -> None:
        try:
            with self._print_lock:
                print(f"minirtd: {entry['method']} {entry['path']} {what} {entry['agent']}",
                      file=self.out, flush=True)
        except (OSError, ValueError):
            pass  # nobody reads our stderr any more: keep serving

    def since(self, after_id: int = 0) -> list[dict]:
        with self._lock:
            return [dict(e) for e in self.entries if e["id"] > after_id]


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


# --- one request -----------------------------------------------------------------------
class Request:
    """What a handler gets: the parsed request, and ways to answer it.

    A handler usually just returns a value (see ``api.py``). The answering
    methods here are for the ones that cannot: ``json_stream`` (chunked JSON
    lines: pulls, events) and ``hijack`` (the raw connection: attach, exec).
    """

    def __init__(self, conn: "Connection", method: str, target: str):
        self._conn = conn
        self.method = method
        self.target = target                 # as sent, e.g. /v1.43/images/json?all=1
        self.raw_path = ""                   # /v1.43/images/json (read_target sets it)
        self.path = ""                       # without /v1.NN (api.py sets it)
        self.api_version = None              # "1.43" when the path named one
        self.query = {}                      # {"all": ["1"]}
        self.headers = conn.headers
        self.daemon = None                   # api.Daemon: the engine, events, request log
        self.max_body = MAX_JSON_BODY
        self._body = None
        self._reader = None                  # a BodyReader, once a handler streams the body

    # --- reading --------------------------------------------------------------------------
    def read_target(self) -> None:
        """Path and query from the target: a path, or an absolute URL (HTTP/1.1 allows
        ``GET http://localhost/_ping``); 400 when ``urlsplit`` cannot read it."""
        try:
            split = urlsplit(self.target)
        except ValueError as e:  # "http://[/_ping": an [IPv6] host that never closes
            raise HTTPError(400, f"malformed request target: {e}") from None
        self.raw_path = self.path = split.path
        self.query = parse_qs(split.query, keep_blank_values=True)

    def arg(self, name: str, default=None):
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean query parameter as docker reads them: 1/true/True/yes is true."""
        value = self.arg(name)
        if value is None:
            return default
        return value.strip().lower() in ("1", "true", "yes", "on")

    def int_arg(self, name: str, default=None):
        value = self.arg(name)
        if value in (None, ""):
            return default
        try:
            return int(value)
        except ValueError:
            raise HTTPError(400, f"invalid value for {name}: {value!r} is not a number") from None

    @property
    def declared_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        if not re.fullmatch(r"[0-9]{1,18}", value.strip()):  # int() takes "+3", "1_0", "\u0663"
            self._conn.close_connection = True
            raise HTTPError(400, f"invalid Content-Length {value!r}")
        return int(value)

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def check_body_size(self) -> None:
        """413 at once when the declared body is over the cap (before reading any of it)."""
        length = self.declared_length
        if self.max_body is not None and length is not None and length > self.max_body:
            self._conn.close_connection = True  # its body is still on the wire: do not reuse
            raise HTTPError(413, f"request body too large: {length} bytes, and minirtd accepts "
                            f"at most {self.max_body} bytes here")

    def body(self) -> bytes:
        """The whole request body (at most ``max_body`` bytes, else 413)."""
        if self._body is None:
            self.check_body_size()
            if self.chunked:
                self._body = BodyReader(self, self.max_body).read()  # chunked: decoded there
            else:
                length = self.declared_length or 0
                self._body = self._conn.rfile.read(length) if length else b""
                if len(self._body) < length:
                    self._conn.close_connection = True
                    raise HTTPError(400, "the request body ended before its Content-Length")
        return self._body

    def json(self, default=None):
        """The body parsed as JSON; ``default`` when there is none; 400 when malformed."""
        data = self.body()
        if not data.strip():
            return default
        try:
            return json.loads(data)
        except ValueError as e:
            raise HTTPError(400, f"malformed JSON in the request body: {e}") from None
        except RecursionError:  # json.loads recurses once per [ or {: [[[[... exhausts it
            raise HTTPError(400, "malformed JSON in the request body: nested too deeply") from None

    @property
    def body_stream(self):
        """The connection's input, for a handler that streams a large body (tar uploads)."""
        return self._conn.rfile

    def body_reader(self, limit: int | None) -> "BodyReader":
        """The body as a file-like object read as it arrives (a build context, a tar upload):
        ``Content-Length`` or chunked, and 413 once it passes ``limit`` bytes, even midway.
        What the handler leaves unread is drained after it (or the connection closed)."""
        if self._reader is None:
            length = self.declared_length
            if limit is not None and length is not None and length > limit:
                self._conn.close_connection = True  # the body is still on the wire
                raise HTTPError(413, f"request body too large: {length} bytes, and minirtd "
                                f"accepts at most {limit} bytes here")
            self._reader = BodyReader(self, limit)
        return self._reader

    # --- answering ------------------------------------------------------------------------
    @property
    def responded(self) -> bool:
        return self._conn.status is not None

    def send(self, status: int, body: bytes = b"", content_type: str | None = "application/json",
             headers: dict | None = None) -> None:
        """A complete response with a Content-Length (the connection stays open)."""
        conn = self._conn
        conn.start_response(status, headers)
        if content_type and (body or status not in (204, 304)):
            conn.send_header("Content-Type", content_type)
        if status not in (204, 304):
            conn.send_header("Content-Length", str(len(body)))
        conn.end_headers()
        if self.method != "HEAD" and status not in (204, 304):
            conn.wfile.write(body)
        conn.wfile.flush()

    def send_json(self, status: int, value, headers: dict | None = None) -> None:
        self.send(status, json.dumps(value).encode() + b"\n", "application/json", headers)

    def json_stream(self, status: int = 200, content_type: str = "application/json",
                    headers: dict | None = None) -> "JSONStream":
        """Start a chunked response of JSON lines (``docker pull``'s progress, events)."""
        return JSONStream(self._conn, status, content_type, headers)

    def hijack(self, content_type: str = "application/vnd.docker.raw-stream",
               headers: dict | None = None) -> "RawStream":
        """Take the connection over after the response header (attach, exec start).

        A client that asked for ``Connection: Upgrade`` / ``Upgrade: tcp`` gets
        ``101 UPGRADED``; an older one gets ``200 OK``. Either way what follows
        on the socket is no longer HTTP, and the connection closes after.
        """
        conn = self._conn
        tokens = [t.strip().lower() for t in conn.headers.get("Connection", "").split(",")]
        upgrade = "upgrade" in tokens and conn.headers.get("Upgrade", "").lower() == "tcp"
        conn.close_connection = True
        if upgrade:
            conn.start_response(101, headers, reason="UPGRADED")
            conn.send_header("Connection", "Upgrade")
            conn.send_header("Upgrade", "tcp")
        else:
            conn.start_response(200, headers)
        conn.send_header("Content-Type", content_type)
        conn.end_headers()
        conn.wfile.flush()
        conn.connection.settimeout(None)  # stdin may stay quiet for hours
        return RawStream(conn)

    def client_gone(self, timeout: float = 0.0) -> bool:
        """True when the client has closed its side (checked without consuming input)."""
        sock = self._conn.connection
        try:
            ready, _, _ = select.select([sock], [], [], timeout)
            return bool(ready) and sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


class BodyReader:
    """A request body read piece by piece (``Request.body_reader``), never past its end."""

    def __init__(self, request: Request, limit: int | None):
        self._conn, self._rfile = request._conn, request._conn.rfile
        self.limit = limit
        self.chunked = request.chunked
        self._left = 0 if self.chunked else (request.declared_length or 0)  # in this chunk
        self.received = 0
        self.finished = not self.chunked and self._left == 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if self.finished or n == 0:
            return b""
        if self.chunked and self._left == 0:
            size = self._chunk_size(self._rfile.readline(1024))
            if size == 0:
                self._skip_trailers()
                self.finished = True
                return b""
            if self.limit is not None and self.received + size > self.limit:
                self._too_large()   # refused from the chunk's header, before reading it
            self._left = size
        data = self._rfile.read(min(n, self._left))
        if not data:
            self._conn.close_connection = True
            raise ConnectionResetError("the client stopped sending the request body")
        self._left -= len(data)
        self.received += len(data)
        if self._left == 0:
            if self.chunked and self._rfile.readline(3) not in (b"\r\n", b"\n"):
                self._malformed("a chunk's data must end with CRLF")
            elif not self.chunked:
                self.finished = True
        if self.limit is not None and self.received > self.limit:
            self._too_large()
        return data

    def _chunk_size(self, line: bytes) -> int:
        """A chunk's header ``1a2b[;extension]``: hex digits only (``int(x, 16)`` would also
        take ``-5``, ``+3``, ``0x5`` and ``1_0``)."""
        digits = line.split(b";")[0].strip()
        if not re.fullmatch(rb"[0-9a-fA-F]{1,16}", digits):
            self._malformed("a chunk size must be hex digits")
        return int(digits, 16)

    def _skip_trailers(self) -> None:
        """Trailer fields after the last chunk, up to an empty line. A line that is not
        ``Name: value`` is no trailer: more likely the next request, reached because the
        body lacked its final CRLF; reading on would take it for part of this one."""
        while line := self._rfile.readline(1024).strip():
            if not re.fullmatch(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:.*", line):
                self._malformed("a trailer must be a Name: value line")

    def _malformed(self, why: str):
        self._conn.close_connection = True  # where this body ends is unknown: so is the next
        raise HTTPError(400, f"malformed chunked request body: {why}")

    def _too_large(self):
        self._conn.close_connection = True
        raise HTTPError(413, f"request body too large: more than {self.limit} bytes, and "
                        f"minirtd accepts at most {self.limit} bytes here")

    def drain(self, limit: int) -> bool:
        """Read and drop up to ``limit`` more bytes; True when the body is then all read."""
        dropped = 0
        while not self.finished and dropped <= limit:
            dropped += len(self.read(65536))
        return self.finished


class JSONStream:
    """A chunked HTTP response whose chunks are JSON lines; ``send`` flushes each one."""

    def __init__(self, conn: "Connection", status: int, content_type: str, headers: dict | None):
        self._conn = conn
        # HTTP/1.0 has no chunked encoding: write the lines raw and close at the end.
        self._chunked = conn.request_version != "HTTP/1.0"
        conn.start_response(status, headers, stream=True)
        conn.send_header("Content-Type", content_type)
        if self._chunked:
            conn.send_header("Transfer-Encoding", "chunked")
        else:
            conn.close_connection = True
        conn.end_headers()
        conn.wfile.flush()
        self.closed = False

    def send(self, value) -> None:
        self.write(json.dumps(value).encode() + b"\n")

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._conn.wfile.write(data)
        self._conn.wfile.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._chunked:
                self._conn.wfile.write(b"0\r\n\r\n")
                self._conn.wfile.flush()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if kind is None:
            self.close()
        else:
            self._conn.close_connection = True  # a stream cut short: the client sees EOF
        return False


STDIN, STDOUT, STDERR = 0, 1, 2


class RawStream:
    """A hijacked connection: bytes both ways, no HTTP.

    ``read`` goes through the connection's buffer first (the client may have
    sent stdin right behind its request), ``write`` straight to the socket.
    ``write_frame`` writes Docker's multiplexed format, used when the container
    has no TTY: an 8-byte header (stream 0/1/2, three zero bytes, big-endian
    length) before each piece of output, so stdout and stderr share one socket.
    """

    def __init__(self, conn: "Connection"):
        self._conn = conn
        self.socket = conn.connection

    def read(self, n: int = 65536) -> bytes:
        return self._conn.rfile.read1(n)

    def write(self, data: bytes) -> None:
        self.socket.sendall(data)

    def write_frame(self, stream: int, data: bytes) -> None:
        self.socket.sendall(struct.pack(">BxxxL", stream, len(data)) + data)

    def close_write(self) -> None:
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def fileno(self) -> int:
        return self.socket.fileno()


# --- the connection handler ------------------------------------------------------------
class Connection(http.server.BaseHTTPRequestHandler):
    """One client connection; each request on it goes to the server's ``app``."""

    protocol_version = "HTTP/1.1"
    server_version = f"minirtd/{__version__}"
    sys_version = "(linux)"
    timeout = IDLE_TIMEOUT

    def address_string(self) -> str:
        return self.client_address[0] if self.client_address else "unix"

    def log_message(self, format, *args) -> None:
        pass  # RequestLog does our logging

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True

    def __getattr__(self, name):
        if name.startswith("do_"):  # every method goes to dispatch; the routes say which exist
            return self.dispatch
        raise AttributeError(name)

    def parse_request(self) -> bool:
        """http.server's parsing, minus HTTP/0.9: ``GET /path`` with no version gets a 400,
        as from dockerd (Go's net/http never spoke 0.9), not a bare body."""
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            self.send_error(400, f"Bad request syntax ({self.requestline!r}): no HTTP version")
            return False
        return True

    def send_error(self, code, message=None, explain=None):
        """Errors the base class raises itself (bad request line, huge headers): as JSON.

        A request line refused before its version was read leaves http.server's
        ``request_version`` at "HTTP/0.9", which has no status line and no headers:
        the answer would be a bare body. We always answer in HTTP/1.1, then close;
        without the body when the refused line asked for HEAD (``command`` is unset).
        """
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            self.request_version = self.protocol_version
        words = (getattr(self, "requestline", "") or "").split()
        method = self.command or (words[0] if words else "")
        body = json.dumps({"message": message or self.responses.get(code, ("error",))[0]}).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if method != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass

    def start_response(self, status: int, headers: dict | None = None, reason: str | None = None,
                       stream: bool = False) -> None:
        if self.status is not None:
            raise RuntimeError("this request has already been answered")
        self.status = status
        self.send_response(status, reason)
        for name, value in {**self.server.app.headers(), **(headers or {})}.items():
            self.send_header(name, value)
        self.server.log.responded(self.log_entry, status, stream or status == 101, self.started)

    def dispatch(self):
        self.status = None
        self.started = time.monotonic()
        app, log = self.server.app, self.server.log
        polling_log = self.path.partition("?")[0].endswith("/minirt/requests")
        self.log_entry = log.start(self.command, self.path, self.headers.get("User-Agent", ""),
                                   remember=not polling_log)
        request = Request(self, self.command, self.path)
        try:
            request.read_target()
            app(request)
        except HTTPError as e:
            self._fail(request, e.status, e.message)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-answer
        except Exception as e:  # no request may take the daemon down: answer 500, keep serving
            traceback.print_exc(file=sys.stderr)
            self._fail(request, 500, f"minirtd internal error: {type(e).__name__}: {e}")
        finally:
            if self.status is None:
                self.close_connection = True
                self.status = 500
                log.responded(self.log_entry, 500, False, self.started)
            if not self.close_connection:
                self._drain(request)
            log.finish(self.log_entry, self.started)

    def _fail(self, request: Request, status: int, message: str) -> None:
        if self.status is None:
            try:
                request.send_json(status, {"message": message})
            except OSError:
                self.close_connection = True
        else:
            self.close_connection = True  # already mid-answer: all we can do is hang up

    def _drain(self, request: Request) -> None:
        """Read what the handler left of the body, so the next request starts clean."""
        if request._reader is not None:
            try:
                if not request._reader.drain(DRAIN_LIMIT):
                    self.close_connection = True
            except (HTTPError, OSError):
                self.close_connection = True
            return
        if request._body is not None:
            return
        try:
            if request.chunked:
                BodyReader(request, DRAIN_LIMIT).read()
            elif (request.declared_length or 0) > DRAIN_LIMIT:
                self.close_connection = True
            elif request.declared_length:
                self.rfile.read(request.declared_length)
        except (HTTPError, OSError):
            self.close_connection = True


# --- running it ------------------------------------------------------------------------
def make_server(address: str | None, app) -> socketserver.BaseServer:
    """Bind the address (``-H``'s value) and attach ``app`` (an ``api.Daemon``)."""
    kind, where = parse_address(address)
    try:
        server = (UnixServer if kind == "unix" else TCPServer)(where, Connection)
    except OSError as e:
        if e.errno == 98:  # EADDRINUSE
            raise DaemonError(f"a daemon (or another program) is already listening on "
                              f"{address_text(kind, where)}") from None
        raise DaemonError(f"cannot listen on {address_text(kind, where)}: {e.strerror or e}") from None
    server.app, server.log = app, app.requests
    server.address = address_text(kind, where)
    server.kind = kind
    return server


def start_shim_factory(engine):
    """The process that forks the daemon's shims (Engine.serve_shim_factory): started
    once, so a ``docker run`` does not pay a fresh interpreter's start-up. Returns
    (process, its directory), or None when it cannot start (shims are then spawned)."""
    import subprocess
    import tempfile
    directory = tempfile.mkdtemp(prefix="minirtd-shims-")  # short: a socket path is <108 bytes
    path = os.path.join(directory, "factory.sock")
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_parent] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    process = subprocess.Popen([sys.executable, "-m", "minirt.engine", "shim-factory", path],
                               env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            os.rmdir(directory)
            return None
        time.sleep(0.01)
    engine.shim_factory = path
    return process, directory


def stop_shim_factory(factory) -> None:
    if factory is None:
        return
    import shutil
    process, directory = factory
    process.terminate()
    try:
        process.wait(timeout=5)
    except Exception:
        process.kill()
        process.wait()
    shutil.rmtree(directory, ignore_errors=True)


def serve(address: str | None = None, root: str | None = None, out=None) -> int:
    """Run minirtd until SIGTERM or SIGINT; returns the exit status."""
    from ..engine import Engine
    from .api import Daemon
    out = out or sys.stderr
    app = Daemon(Engine(root), log=RequestLog(out))
    server = make_server(address, app)
    factory = start_shim_factory(app.engine)
    from .containers import adopt_running
    adopt_running(app)
    app.address = server.address
    if server.kind == "tcp":
        print(f"minirtd: WARNING: the API on {server.address} is unauthenticated and "
              "unencrypted: any process on this machine can use it to run containers as "
              f"{'root' if os.geteuid() == 0 else 'this user'}", file=out, flush=True)
        app.warnings.append(f"WARNING: API is accessible on http://{server.address[6:]} "
                            "without encryption and without authentication.")
    stop = threading.Event()
    received = []

    def on_signal(number, frame):
        received.append(number)
        stop.set()

    previous = {n: signal.signal(n, on_signal) for n in (signal.SIGTERM, signal.SIGINT)}
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="minirtd-accept", daemon=True)
    worker.start()
    print(f"minirtd {__version__}: serving the Docker Engine API {app.api_version} on "
          f"{server.address} (state in {app.engine.root}); try: "
          f"docker -H {server.address} version", file=out, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()          # stop accepting; requests under way finish on their threads
        app.events.close()         # event streams end
        server.server_close()
        server.remove_socket()
        stop_shim_factory(factory)
        for number, handler in previous.items():
            signal.signal(number, handler)
    name = signal.Signals(received[0]).name if received else "a request"
    print(f"minirtd: stopped ({name}), {server.address} closed", file=out, flush=True)
    return 0


def main(argv: list[str] | None = None) -> None:
    """The ``minirtd`` console script: same flags as ``minirt daemon``."""
    import argparse
    from . import arguments, command
    parser = argparse.ArgumentParser(prog="minirtd", description="minirt's daemon: the Docker "
                                     "Engine API on a Unix socket")
    arguments(parser)
    args = parser.parse_args(argv)
    try:
        code = command(args)
    except MinirtError as e:
        print(f"minirtd: {e}", file=sys.stderr)
        code = e.exit_code
    sys.stdout.flush()
    sys.stderr.flush()
    # As ``minirt`` does: leave without the interpreter's tear-down. The socket is
    # already gone; what is left are daemon threads of connections being closed.
    os._exit(code)
