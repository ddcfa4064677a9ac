"""The shim: one small supervisor process per detached container.

Why it exists. ``minirt run`` in the foreground is the container's parent: it
waits for it and reports its exit. A detached container (``run -d``, or one
made by ``create`` and started later) must outlive whoever asked for it: the
CLI exits at once, a daemon may restart. Docker solves this with
containerd-shim: for each container a tiny process, detached from the daemon
(its own session, re-parented to init), that is the container's parent. It
holds the container's stdio, writes its logs, keeps its exit status, and so
lets containerd and dockerd come and go. This module is minirt's shim: the
``Engine`` starts one per container at ``create`` (``python -m minirt.engine
shim``, the request on its stdin: a fresh interpreter, in a session of its own,
that forks once more so init adopts it), and it lives until the container
exits, or is removed while only created. ``start`` of an exited container
(and ``restart``) starts a new shim for it, as docker does.

What it does, in order::

    create   write config.json (owner: the shim) and state "created";
             listen on attach.sock and control.sock in the container's dir
    start    launch PID 1 (``ContainerProcess``, or proot's ``EmulatedProcess``)
             with pipes (or a terminal, -t) as its stdio; state "running"
    running  copy output to <id>-json.log (jsonlog.py) and to attach clients,
             attach clients' input to the container's stdin
    exit     read the last output; kill what is left in the cgroup and remove
             it (the mounts went with the mount namespace); state "exited" with
             the exit code (128+N for signal N), OOMKilled and FinishedAt, or,
             for --rm, remove the container's directory; answer waiters; exit

If the shim itself is killed (``kill -9``), the container dies with it
(PR_SET_PDEATHSIG on its helper and on PID 1) and nobody records its exit:
``Engine.reap_stale`` later removes the cgroup and marks it exited with an
unknown exit code and an Error saying why.

Files in the container's directory (beside config.json, state.json, rootfs/...)::

    <id>-json.log  docker's json-file log (see jsonlog.py)
    attach.sock    the attach socket (below), while the shim lives
    control.sock   the Engine's requests (below), while the shim lives
    shim.log       the shim's own stderr: empty unless something went wrong

The attach socket (``attach.sock``, a Unix stream socket). The daemon's
``POST /containers/{id}/attach`` splices its hijacked HTTP connection to it,
and ``minirt start -a`` reads it directly:

* connect at any time from ``create`` on; ``docker run`` is create, attach,
  start, wait, so a client that connects before ``start`` sees all output;
* the shim sends the container's live output (no history: read the log for
  that). Without a terminal, each chunk is framed as in Docker's attach
  stream: an 8-byte header, byte 0 the stream (1 stdout, 2 stderr), bytes 1-3
  zero, bytes 4-7 the payload's length, big-endian, then the payload. With a
  terminal (-t) the bytes are the raw terminal output, unframed;
* bytes the client sends go to the container's stdin, if it was created with
  stdin open (-i): a pipe, or the terminal's master (so with -t, Ctrl-C is the
  byte 0x03, sent to the terminal). Without -i they are dropped. Without a
  terminal, the client closing its sending side (shutdown(SHUT_WR)) closes the
  container's stdin (docker's StdinOnce), and it keeps receiving output;
* when the container has exited and its last output was sent, the shim closes
  the connection: end-of-file is the client's signal to ask for the exit code.

A path longer than a socket address allows (108 bytes: deep state roots and
64-character ids) is reached through ``/proc/self/fd/N/attach.sock`` with N a
descriptor of the directory: ``connect`` does that.

The control socket (``control.sock``) is the Engine's private line to the
shim: one JSON request per connection, one JSON line back. ``{"op": "start"}``
-> ``{"pid": N}``; ``{"op": "kill", "signal": N}``; ``{"op": "resize",
"height": H, "width": W}``; ``{"op": "wait"}`` -> answered when the container
has exited and been cleaned up: ``{"exit_code": N, "oom_killed": bool}``;
``{"op": "shutdown"}`` (``rm``): kill it, clean up, exit. A failure is
``{"error": "ErrorClassName", "message": "..."}``.
"""

import json
import os
import _signal as signal  # the C module under `signal`: same calls, no enums to build (~1 ms)
import selectors
import socket
import struct
import time

from ..errors import ContainerError, MinirtError
from ..paths import remove_tree
from .jsonlog import LogWriter, rfc3339_nano

ATTACH_SOCKET = "attach.sock"
CONTROL_SOCKET = "control.sock"
STREAMS = {1: "stdout", 2: "stderr"}
DRAIN_SECONDS = 2.0   # after PID 1 exits, how long output may still arrive (proot: no pid ns)


def frame(stream: int, data: bytes) -> bytes:
    """Docker's multiplexed stream frame: [stream, 0, 0, 0, length (big-endian u32)] + data."""
    return struct.pack(">BxxxI", stream, len(data)) + data


def read_frames(sock: socket.socket):
    """Yield (stream, bytes) from a framed (non-terminal) attach connection until EOF."""
    buffer = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        buffer += data
        while len(buffer) >= 8:
            stream, size = struct.unpack(">BxxxI", buffer[:8])
            if len(buffer) < 8 + size:
                break
            yield STREAMS.get(stream, "stdout"), buffer[8:8 + size]
            buffer = buffer[8 + size:]


def connect(path: str, timeout: float | None = None) -> socket.socket:
    """Connect to the Unix socket at ``path``, even past sun_path's 108 bytes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if len(os.fsencode(path)) < 100:
            sock.connect(path)
        else:
            directory = os.open(os.path.dirname(path), os.O_PATH | os.O_CLOEXEC)
            try:
                sock.connect(f"/proc/self/fd/{directory}/{os.path.basename(path)}")
            finally:
                os.close(directory)
    except BaseException:
        sock.close()
        raise
    return sock


def request(container_dir: str, message: dict, timeout: float | None = 30) -> dict:
    """Send one request to a container's shim and return its answer.

    Raises ``ConnectionError`` (or FileNotFoundError) when no shim answers.
    """
    with connect(os.path.join(container_dir, CONTROL_SOCKET), timeout=5) as sock:
        sock.sendall(json.dumps(message).encode() + b"\n")
        sock.settimeout(timeout)
        answer = b""
        while not answer.endswith(b"\n"):
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("the container's shim went away without answering")
            answer += data
    return json.loads(answer)


def raise_answer(answer: dict) -> dict:
    """Turn a shim's error answer back into the MinirtError it stands for."""
    if "error" in answer:
        from .. import errors
        kind = getattr(errors, answer["error"], MinirtError)
        if not (isinstance(kind, type) and issubclass(kind, MinirtError)):
            kind = MinirtError
        raise kind(answer["message"])
    return answer


def _listen(name: str) -> socket.socket:
    """A listening Unix socket named ``name`` in the current directory (the container's)."""
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(name)  # relative: the container's directory may be too deep for sun_path
    os.chmod(name, 0o600)
    sock.listen(16)
    sock.setblocking(False)
    return sock


class Shim:
    """The event loop of one container's shim (see the module docstring).

    ``make_process()`` returns a new, unlaunched ``ContainerProcess`` (or
    ``EmulatedProcess``); ``write_state(status, **fields)`` records the
    container's state.json the way ``Engine`` does. The loop runs in the
    container's directory.
    """

    def __init__(self, spec, container_dir: str, make_process, write_state, auto_remove: bool):
        self.spec = spec
        self.container_dir = container_dir
        self.make_process = make_process
        self.write_state = write_state
        self.auto_remove = auto_remove
        self.selector = selectors.DefaultSelector()
        self.process = None
        self.stdio = None
        self.pidfd = -1
        self.status = None           # ExitStatus once PID 1 has exited
        self.outputs = {}            # fd -> stream number, while open
        self.stdin_fd = -1
        self.stdin_pending = b""
        self.close_stdin_when_written = False
        self.clients: list[socket.socket] = []   # attach connections
        self.waiters: list[socket.socket] = []   # control connections answered at the end
        self.started_at = ""
        self.drain_deadline = None
        self.shutting_down = False
        self.done = False

    # --- the loop ------------------------------------------------------------------
    def serve(self, ready) -> None:
        """Listen, record state "created", call ``ready()``, and run until the end."""
        os.chdir(self.container_dir)
        self.log = LogWriter(f"{self.spec.id}-json.log")
        self.attach_listener = _listen(ATTACH_SOCKET)
        self.control_listener = _listen(CONTROL_SOCKET)
        self.selector.register(self.attach_listener, selectors.EVENT_READ, self._accept_attach)
        self.selector.register(self.control_listener, selectors.EVENT_READ, self._accept_control)
        self.write_state("created")
        ready()
        while not self.done:
            timeout = None
            if self.drain_deadline is not None:
                timeout = max(0.0, self.drain_deadline - time.monotonic())
            for key, events in self.selector.select(timeout):
                key.data(key.fileobj, events)
                if self.done:
                    break
            if self.status is not None and not self.done and (
                    not self.outputs or time.monotonic() >= self.drain_deadline):
                self._finish()

    # --- attach clients ------------------------------------------------------------------
    def _accept_attach(self, listener, events) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return
            conn.settimeout(5)  # a client that stops reading is dropped, never waited for
            self.clients.append(conn)
            self.selector.register(conn, selectors.EVENT_READ, self._attach_input)

    def _attach_input(self, conn, events) -> None:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        # Input that comes before start (``docker run -i`` attaches, sends, then starts)
        # waits in stdin_pending, and so does the end of it: written once there is a stdin.
        if data:
            if self.spec.stdin and self.status is None:
                self.stdin_pending += data
                if self.stdin_fd >= 0:
                    self._write_stdin()
            return
        self.selector.unregister(conn)  # it sends no more; it may still read output
        if self.spec.stdin and not self.spec.tty and self.status is None:
            self.close_stdin_when_written = True  # docker's StdinOnce
            if self.stdin_fd >= 0:
                self._write_stdin()

    def _write_stdin(self, fileobj=None, events=0) -> None:
        """Write what clients sent to the container's stdin, never blocking the loop.

        With -t it is the terminal's master, which takes input as fast as a
        terminal does (a blocking write); else a pipe, written as it drains.
        """
        if self.spec.tty:
            os.write(self.stdin_fd, self.stdin_pending)
            self.stdin_pending = b""
            return
        try:
            while self.stdin_pending:
                written = os.write(self.stdin_fd, self.stdin_pending[:65536])
                self.stdin_pending = self.stdin_pending[written:]
        except BlockingIOError:
            pass
        except OSError:  # the container closed its end of stdin
            self.stdin_pending = b""
        registered = self.stdin_fd in self.selector.get_map()
        if self.stdin_pending and not registered:
            self.selector.register(self.stdin_fd, selectors.EVENT_WRITE, self._write_stdin)
        elif not self.stdin_pending:
            if registered:
                self.selector.unregister(self.stdin_fd)
            if self.close_stdin_when_written:
                os.close(self.stdin_fd)
                self.stdio.stdin_w = self.stdin_fd = -1

    def _send(self, stream: int, data: bytes) -> None:
        payload = data if self.spec.tty else frame(stream, data)
        for conn in list(self.clients):
            try:
                conn.sendall(payload)
            except OSError:
                self._drop_client(conn)

    def _drop_client(self, conn) -> None:
        if conn in self.clients:
            self.clients.remove(conn)
        if conn in self.selector.get_map():
            self.selector.unregister(conn)
        conn.close()

    # --- output ---------------------------------------------------------------------------
    def _output(self, fd, events) -> None:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's last user has gone
            data = b""
        stream = self.outputs[fd]
        if data:
            self.log.write(STREAMS[stream], data)
            self._send(stream, data)
            return
        self.selector.unregister(fd)
        del self.outputs[fd]

    # --- requests from the Engine --------------------------------------------------------
    def _accept_control(self, listener, events) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return
            conn.settimeout(5)
            try:
                line = b""
                while not line.endswith(b"\n"):
                    data = conn.recv(65536)
                    if not data:
                        break
                    line += data
                message = json.loads(line)
                answer = self._handle(conn, message)
            except MinirtError as e:
                answer = {"error": type(e).__name__, "message": str(e)}
            except Exception as e:  # a bad request must not take the container down
                answer = {"error": "MinirtError", "message": f"shim: {e!r}"}
            if answer is not None:
                self._answer(conn, answer)

    @staticmethod
    def _answer(conn, answer: dict) -> None:
        try:
            conn.sendall(json.dumps(answer).encode() + b"\n")
        except OSError:
            pass
        conn.close()

    def _handle(self, conn, message: dict) -> dict | None:
        op = message.get("op")
        if op == "start":
            return self._start()
        if op == "kill":
            self._need_running()
            os.kill(self.process.pid, int(message.get("signal", signal.SIGKILL)))
            return {"ok": True}
        if op == "resize":
            self._need_running()
            if self.spec.tty and self.stdio.master >= 0:
                import fcntl
                import termios
                size = struct.pack("HHHH", int(message["height"]), int(message["width"]), 0, 0)
                fcntl.ioctl(self.stdio.master, termios.TIOCSWINSZ, size)
            return {"ok": True}
        if op == "wait":
            self.waiters.append(conn)
            return None
        if op == "shutdown":
            self.waiters.append(conn)
            self.shutting_down = True
            if self.process is None:
                self._finish()
            elif self.status is None:
                os.kill(self.process.pid, signal.SIGKILL)  # the rest as for any exit

            return None
        raise ContainerError(f"unknown request {op!r}")

    def _need_running(self) -> None:
        if self.process is None or self.status is not None:
            raise ContainerError(f"container {self.spec.name} is not running")

    # --- start and exit -------------------------------------------------------------------
    def _start(self) -> dict:
        from .stdio import Capture, Terminal
        if self.process is not None:
            if self.status is None:
                return {"pid": self.process.pid}
            raise ContainerError(f"container {self.spec.name} has exited: start it again "
                                 "with a new start request")
        # docker run is create, attach, start: clients queued on the socket get everything.
        self._accept_attach(self.attach_listener, 0)
        process = self.make_process()
        stdio = Terminal(self.spec.stdin) if self.spec.tty else \
            Capture(b"" if self.spec.stdin else None)
        try:
            process.launch(stdio.child_fds(), stdio.console_socket)
            process.wait_until_running()
            stdio.after_start()
        except BaseException as e:
            stdio.close()
            process.cleanup()
            self.write_state("created", exit_code=getattr(e, "exit_code", 125), error=str(e))
            raise
        self.process, self.stdio = process, stdio
        self.started_at = rfc3339_nano()
        self.write_state("running", pid=process.pid, started_at=self.started_at)
        if self.spec.tty:
            self.outputs = {stdio.master: 1}
            self.stdin_fd = stdio.master
            if not _window_size(stdio.master):
                import fcntl
                import termios
                fcntl.ioctl(stdio.master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        else:
            self.outputs = {stdio.out_r: 1, stdio.err_r: 2}
            self.stdin_fd = stdio.stdin_w
            if self.stdin_fd >= 0:
                os.set_blocking(self.stdin_fd, False)
        for fd in self.outputs:
            self.selector.register(fd, selectors.EVENT_READ, self._output)
        if self.stdin_fd >= 0 and (self.stdin_pending or self.close_stdin_when_written):
            self._write_stdin()  # what attached clients sent before the start
        self.pidfd = os.pidfd_open(getattr(process, "helper_pid", 0) or process.pid)
        self.selector.register(self.pidfd, selectors.EVENT_READ, self._exited)
        return {"pid": process.pid}

    def _exited(self, fd, events) -> None:
        self.selector.unregister(fd)
        os.close(fd)
        self.pidfd = -1
        self.status = self.process.wait()
        self.drain_deadline = time.monotonic() + DRAIN_SECONDS

    def _finish(self) -> None:
        """The container has ended (or is removed unstarted): record, clean up, answer."""
        self.done = True
        for fd in list(self.outputs):
            while fd in self.outputs and self._readable(fd):
                self._output(fd, 0)
            if fd in self.outputs:
                self.selector.unregister(fd)
                del self.outputs[fd]
        self.log.close()
        if self.process is not None:
            self.process.cleanup()
        for listener, name in ((self.attach_listener, ATTACH_SOCKET),
                               (self.control_listener, CONTROL_SOCKET)):
            self.selector.unregister(listener)
            listener.close()
            try:  # before anyone hears we are done: a restart's new shim binds these names
                os.unlink(name)
            except FileNotFoundError:
                pass
        if self.stdio is not None:
            self.stdio.close()
        answer = {"ok": True}
        if self.status is not None:
            answer = {"exit_code": self.status.exit_code, "oom_killed": self.status.oom_killed}
            if self.auto_remove:
                remove_tree(self.container_dir)
            else:
                self.write_state("exited", exit_code=self.status.exit_code,
                                 oom_killed=self.status.oom_killed, started_at=self.started_at,
                                 finished_at=rfc3339_nano())
        for conn in self.waiters:
            self._answer(conn, answer)
        for conn in list(self.clients):
            self._drop_client(conn)

    @staticmethod
    def _readable(fd: int) -> bool:
        import select
        return bool(select.select([fd], [], [], 0)[0])


def _window_size(fd: int) -> bool:
    """Has the terminal a size yet (a client's resize)? 0x0 confuses many programs."""
    import fcntl
    import termios
    rows, cols = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))[:2]
    return bool(rows and cols)
