"""How a container's stdin, stdout and stderr connect to the caller.

* ``Passthrough``: the command writes straight to our own stdout/stderr
  (``minirt run`` in a terminal or a script);
* ``Capture``: output is collected through pipes and returned (the Python API,
  notebooks, tests);
* ``Null``: /dev/null for all three (``exec -d``);
* ``Terminal``: ``-t``: the command gets a pseudo-terminal (man 7 pty) and we
  copy bytes between it and our own terminal, switched to raw mode so that
  keys such as Ctrl-C reach the container's terminal untouched.
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
