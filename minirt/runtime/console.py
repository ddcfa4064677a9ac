"""The container's terminal for ``-t`` (man 7 pty, man 4 pts).

A pseudo-terminal is a pair: the *master* side, which a terminal emulator (or
``minirt``) reads and writes, and the *slave* side (``/dev/pts/N``), which the
program uses as its terminal. We create the pair *inside* the container, from
its own ``/dev/ptmx``, so the slave is a device of the container's devpts and
``tty`` there answers ``/dev/pts/0``. The master's file descriptor then travels
to the parent over a Unix socket (SCM_RIGHTS): the OCI runtime spec calls this
the console socket.
"""

import fcntl
import os
import struct

TIOCGPTN = 0x80045430     # get the pty number of a master
TIOCSPTLCK = 0x40045431   # (un)lock the slave; unlockpt(3)
TIOCSCTTY = 0x540E        # make a terminal the session's controlling terminal


def open_console(dev: str = "/dev") -> tuple[int, int]:
    """Open a new pty pair from the devpts mounted at ``dev``/pts; return (master, slave)."""
    master = os.open(f"{dev}/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
    slave = os.open(f"{dev}/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    return master, slave


def make_controlling_terminal(fd: int) -> None:
    """After setsid(2): let ``fd``'s terminal deliver Ctrl-C etc. to this session."""
    fcntl.ioctl(fd, TIOCSCTTY, 0)


def send_fd(sock_fd: int, fd: int) -> None:
    """Pass an open file descriptor to the process at the other end of a Unix socket."""
    import socket
    with socket.socket(fileno=os.dup(sock_fd)) as sock:
        socket.send_fds(sock, [b"console"], [fd])


def receive_fd(sock_fd: int) -> int:
    import socket
    with socket.socket(fileno=os.dup(sock_fd)) as sock:
        _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    if not fds:
        raise OSError("the container sent no terminal")
    return fds[0]
