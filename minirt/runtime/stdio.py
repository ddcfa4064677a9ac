"""How a container's stdin, stdout and stderr connect to the caller.

* ``Passthrough``: the command writes straight to our own stdout/stderr
  (``minirt run`` in a terminal or a script);
* ``Capture``: output is collected through pipes and returned (the Python API,
  notebooks, tests);
* ``Null``: /dev/null for all three (``exec -d``);
* ``Terminal``: ``-t``: the command gets a pseudo-terminal (man 7 pty) and we
  copy bytes between it and our own terminal, switched to raw mode so that
  keys such as Ctrl-C reach the container's terminal untouched;
* ``Relay``: the same two shapes (pipes, or a terminal) carried over a byte
  stream instead of our own stdio: minirtd's ``docker exec`` over a hijacked
  connection.
"""

import os


class Passthrough:
    console_socket = -1

    def __init__(self, interactive: bool):
        self.stdin = 0 if interactive else os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def child_fds(self) -> tuple[int, int, int]:
        return (self.stdin, 1, 2)

    def after_start(self) -> None:
        if self.stdin != 0:
            os.close(self.stdin)
            self.stdin = -1

    def pump(self) -> None:
        pass

    def close(self) -> None:
        if self.stdin > 0:
            os.close(self.stdin)
            self.stdin = -1

    output = errors = b""


class Capture:
    console_socket = -1

    def __init__(self, input: bytes | None = None):
        self.input = input
        self.stdin_r, self.stdin_w = os.pipe2(os.O_CLOEXEC) if input is not None else (
            os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1)
        self.out_r, self.out_w = os.pipe2(os.O_CLOEXEC)
        self.err_r, self.err_w = os.pipe2(os.O_CLOEXEC)
        self.output = self.errors = b""

    def child_fds(self) -> tuple[int, int, int]:
        return (self.stdin_r, self.out_w, self.err_w)

    def after_start(self) -> None:
        for fd in (self.stdin_r, self.out_w, self.err_w):
            os.close(fd)
        self.stdin_r = self.out_w = self.err_w = -1

    def pump(self) -> None:
        """Collect output until the container closes both streams."""
        import selectors
        chunks = {self.out_r: [], self.err_r: []}
        with selectors.DefaultSelector() as selector:
            for fd in chunks:
                selector.register(fd, selectors.EVENT_READ)
            pending = self.input or b""
            if self.stdin_w >= 0:
                if pending:
                    selector.register(self.stdin_w, selectors.EVENT_WRITE)
                else:
                    os.close(self.stdin_w)
                    self.stdin_w = -1
            while len(selector.get_map()) > 0:
                for key, _ in selector.select():
                    if key.fd == self.stdin_w:
                        try:
                            written = os.write(self.stdin_w, pending[:65536])
                        except BrokenPipeError:
                            written = len(pending)
                        pending = pending[written:]
                        if not pending:
                            selector.unregister(self.stdin_w)
                            os.close(self.stdin_w)
                            self.stdin_w = -1
                        continue
                    data = os.read(key.fd, 65536)
                    if data:
                        chunks[key.fd].append(data)
                    else:
                        selector.unregister(key.fd)
        self.output, self.errors = b"".join(chunks[self.out_r]), b"".join(chunks[self.err_r])

    def close(self) -> None:
        for fd in (self.stdin_r, self.stdin_w, self.out_r, self.out_w, self.err_r, self.err_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.stdin_r = self.stdin_w = self.out_r = self.out_w = self.err_r = self.err_w = -1


class Terminal:
    """``-t``: the command gets a terminal made inside the container (see ``console``)."""

    def __init__(self, interactive: bool):
        import socket
        self.interactive = interactive
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket, self.console_socket = ours.detach(), theirs.detach()
        os.set_inheritable(self.socket, False)
        self.null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.master = -1
        self.saved = None
        self.output = self.errors = b""

    def child_fds(self) -> tuple[int, int, int]:
        return (self.null, self.null, self.null)  # replaced by the terminal inside

    def after_start(self) -> None:
        import fcntl
        import termios
        import tty
        from .console import receive_fd
        os.close(self.console_socket)
        self.console_socket = -1
        self.master = receive_fd(self.socket)
        if os.isatty(0):
            try:  # the container's terminal gets our window size
                size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
            except OSError:
                pass
            # Raw mode: keys (Ctrl-C too) go to the container's terminal as bytes,
            # and its output is not translated a second time by ours.
            self.saved = termios.tcgetattr(0)
            tty.setraw(0)

    def pump(self) -> None:
        """Copy our stdin to the terminal and the terminal to our stdout until it closes."""
        import selectors
        with selectors.DefaultSelector() as selector:
            selector.register(self.master, selectors.EVENT_READ)
            if self.interactive:
                selector.register(0, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fd == 0:
                        data = os.read(0, 4096)
                        if data:
                            os.write(self.master, data)
                        else:
                            selector.unregister(0)
                        continue
                    try:
                        data = os.read(self.master, 65536)
                    except OSError:  # EIO: every process holding the terminal is gone
                        data = b""
                    if not data:
                        return
                    os.write(1, data)

    def close(self) -> None:
        if self.saved is not None:
            import termios
            termios.tcsetattr(0, termios.TCSADRAIN, self.saved)
            self.saved = None
        for fd in (self.master, self.socket, self.console_socket, self.null):
            if fd >= 0:
                os.close(fd)
        self.master = self.socket = self.console_socket = self.null = -1


class Null:
    """No stdio at all: /dev/null for all three (``exec -d``)."""

    console_socket = -1
    output = errors = b""

    def __init__(self):
        self.null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)

    def child_fds(self) -> tuple[int, int, int]:
        return (self.null, self.null, self.null)

    def after_start(self) -> None:
        pass

    def pump(self) -> None:
        pass

    def close(self) -> None:
        if self.null >= 0:
            os.close(self.null)
            self.null = -1


class Relay:
    """The command's stdio carried over a stream: minirtd's exec on a hijacked connection.

    ``stream`` has ``read()`` (b"" at end), ``write(data)`` and ``write_frame(n,
    data)`` (``daemon.server.RawStream``); the caller closes it after the command.
    Without ``tty`` the command gets pipes and its stdout/stderr go out as frames
    (Docker's 8-byte header says which stream); with ``tty`` it gets a terminal
    made inside the container (as ``Terminal``) whose master is copied both ways
    unframed, as a terminal has one stream. ``stdin``: what arrives on the stream
    goes to the command's stdin, and the client's half-close (EOF) closes it;
    else the command reads /dev/null.

    Stdin is copied by a thread with blocking reads: the stream may hold bytes
    already buffered behind the HTTP request, which a select() on the socket
    would never report. ``started(pid)`` and ``resize(h, w)`` are for the caller
    (the exec instance): the joiner's pid once known, the terminal's size.
    """

    def __init__(self, stream, tty: bool = False, stdin: bool = False, started=None):
        import socket
        import threading
        self.stream, self.tty, self.interactive = stream, tty, stdin
        self.started = started
        self.output = self.errors = b""
        self.master = -1
        self.size = None                     # (rows, cols) asked for before the terminal exists
        self._lock = threading.Lock()
        self._input = None
        # The joiner exec_in forks is a child of the thread that calls it: make the
        # Relay on that thread, and the new child in after_start is the joiner.
        self._children_before = _thread_children()
        self.null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.stdin_r = self.stdin_w = self.out_r = self.out_w = self.err_r = self.err_w = -1
        self.socket = self.console_socket = -1
        if tty:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.socket, self.console_socket = ours.detach(), theirs.detach()
            os.set_inheritable(self.socket, False)
        else:
            if stdin:
                self.stdin_r, self.stdin_w = os.pipe2(os.O_CLOEXEC)
            self.out_r, self.out_w = os.pipe2(os.O_CLOEXEC)
            self.err_r, self.err_w = os.pipe2(os.O_CLOEXEC)

    def child_fds(self) -> tuple[int, int, int]:
        if self.tty:
            return (self.null, self.null, self.null)  # replaced by the terminal inside
        return (self.stdin_r if self.stdin_r >= 0 else self.null, self.out_w, self.err_w)

    def after_start(self) -> None:
        import threading
        if self.started is not None:
            fresh = sorted(set(_thread_children()) - set(self._children_before))
            self.started(fresh[0] if fresh else None)
        if self.tty:
            from .console import receive_fd
            os.close(self.console_socket)
            self.console_socket = -1
            master = receive_fd(self.socket)
            with self._lock:
                self.master = master
                if self.size:
                    self._apply_size()
        else:
            for name in ("stdin_r", "out_w", "err_w"):
                if getattr(self, name) >= 0:
                    os.close(getattr(self, name))
                    setattr(self, name, -1)
        if self.interactive:
            # The thread owns its descriptor and closes it itself: closing one that
            # another thread may still write to could hit a reused number.
            if self.tty:
                target = os.dup(self.master)
            else:
                target, self.stdin_w = self.stdin_w, -1
            self._input = threading.Thread(target=self._copy_input, args=(target,),
                                           name="exec-stdin", daemon=True)
            self._input.start()

    def _copy_input(self, target: int) -> None:
        try:
            while True:
                data = self.stream.read()
                if not data:
                    break
                while data:
                    data = data[os.write(target, data):]
        except (OSError, ValueError):
            pass  # the command closed its stdin, or the connection went
        finally:
            os.close(target)  # without a terminal, the client's EOF is the command's EOF

    def resize(self, rows: int, cols: int) -> None:
        with self._lock:
            self.size = (rows, cols)
            if self.master >= 0:
                self._apply_size()

    def _apply_size(self) -> None:
        import fcntl
        import struct
        import termios
        try:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", *self.size, 0, 0))
        except OSError:
            pass

    def pump(self) -> None:
        """Copy output to the stream until the command's side closes (or the client leaves)."""
        import selectors
        streams = {self.master: 0} if self.tty else {self.out_r: 1, self.err_r: 2}
        try:
            with selectors.DefaultSelector() as selector:
                for fd in streams:
                    selector.register(fd, selectors.EVENT_READ)
                while selector.get_map():
                    for key, _ in selector.select():
                        try:
                            data = os.read(key.fd, 65536)
                        except OSError:  # EIO: every process holding the terminal is gone
                            data = b""
                        if not data:
                            selector.unregister(key.fd)
                        elif self.tty:
                            self.stream.write(data)
                        else:
                            self.stream.write_frame(streams[key.fd], data)
        except OSError:
            pass  # the client went away: the command runs on, its output unread
        # The stream is not closed here: the caller closes it once it has recorded the
        # exit code, so a client that asks for the code on EOF always finds it.

    def close(self) -> None:
        with self._lock:
            for name in ("master", "socket", "console_socket", "null", "stdin_r", "stdin_w",
                         "out_r", "out_w", "err_r", "err_w"):
                fd = getattr(self, name)
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                    setattr(self, name, -1)


def _thread_children() -> list[int]:
    """The live children this thread forked (/proc/PID/task/TID/children, man 5 proc)."""
    import threading
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []
