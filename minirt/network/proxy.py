"""Published ports: minirt's docker-proxy, the userspace TCP relay behind ``-p 8080:80``.

A container on a bridge network has an address (172.30.0.2) that only the
host can reach. ``docker run -p 8080:80`` makes the container's port 80
answer on the host's port 8080. Docker does it twice over: iptables DNAT
rules rewrite each packet's destination inside the kernel (iptables(8),
``-t nat``), and **docker-proxy**, one small userspace process per published
port, accepts connections on the host port and opens a second connection to
the container, copying bytes between the two. The proxy is what serves
``curl 127.0.0.1:8080`` on the host itself: those packets never pass the nat
table's PREROUTING chain, and the kernel will not route a 127.0.0.1 packet
to a bridge anyway. minirt does only the proxy: it is plain sockets, easy to
read, and leaves no firewall rules behind.

One connection through the proxy, in socket(7)/tcp(7) calls:

* ``listen(2)`` on the host port (done by ``bind_ports``), ``accept(2)`` the client;
* ``connect(2)`` to (container address, container port);
* copy bytes both ways. When one side has nothing more to send (``recv``
  returns 0 bytes: its FIN arrived), ``shutdown(SHUT_WR)`` the other side:
  the FIN is passed on, so a client that sends a request, half-closes, and
  waits for the answer still gets it (shutdown(2));
* close both once both directions are done.

Its life cycle, as the Engine drives it:

    bind_ports    binds and listens *in the caller*, so "port 8080 is already
                  in use" is an error of the ``minirt run`` that asked for it,
                  not a line in a log nobody reads
    start_proxy   hands the bound sockets to a fresh ``python -m
                  minirt.network.proxy`` (inherited file descriptors) and
                  waits until it says it is serving
    stop_proxy    SIGTERM, then SIGKILL if it lingers

The proxy also exits by itself when its owner (the ``minirt run``, or the
daemon) exits: it watches a pidfd (pidfd_open(2)) of the owner, a file
descriptor that becomes readable when the process it names terminates.

Only TCP, and by default only on 127.0.0.1: docker binds 0.0.0.0 (every
interface) when no address is given; this lab never exposes a container
beyond the machine unless the student writes ``-p 0.0.0.0:8080:80``.
"""

import errno
import os
import sys

from ..errors import NetworkError, UsageError
from ..record import Record

DEFAULT_HOST_IP = "127.0.0.1"
# At most this many connections per published port at once; the next client
# waits in the kernel's accept queue (listen(2)'s backlog) until one ends.
MAX_CONNECTIONS = 256
BUFFER_SIZE = 64 * 1024
CONNECT_TIMEOUT = 10.0   # seconds to reach the container before giving up on a client
READY_TIMEOUT = 10.0     # seconds start_proxy waits for the proxy to say it serves
STOP_GRACE = 2.0         # seconds between SIGTERM and SIGKILL
PROCESS_NAME = "minirt-proxy"  # what ps and top show (/proc/PID/comm)

_USAGE = "use -p [IP:][HOSTPORT:]CONTAINERPORT, e.g. -p 8080:80"


class PortMapping(Record):
    """One published port: connections to host_ip:host_port go to the container's
    container_port. ``str()`` is docker ps's PORTS column: ``127.0.0.1:8080->80/tcp``."""

    __slots__ = ("host_ip", "host_port", "container_port", "protocol")

    def __init__(self, container_port: int, host_port: int = 0, host_ip: str = DEFAULT_HOST_IP,
                 protocol: str = "tcp"):
        self.host_ip = host_ip                # "127.0.0.1", "0.0.0.0" (every interface), "::1"
        self.host_port = host_port            # 0: any free port (bind_ports fills in the one picked)
        self.container_port = container_port
        self.protocol = protocol              # always "tcp" here

    @classmethod
    def from_dict(cls, data: dict) -> "PortMapping":
        return cls(data["container_port"], data.get("host_port", 0),
                   data.get("host_ip", DEFAULT_HOST_IP), data.get("protocol", "tcp"))

    def __str__(self) -> str:
        host = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{host}:{self.host_port}->{self.container_port}/{self.protocol}"


# --- -p, as docker reads it ------------------------------------------------------------

def parse_publish(text: str) -> PortMapping:
    """One ``-p`` value -> a ``PortMapping``; docker's grammar, ``[[IP:][HOSTPORT]:]CONTAINERPORT[/tcp]``.

    ``8080:80``, ``127.0.0.1:8080:80``, ``0.0.0.0:8080:80``, ``[::1]:8080:80``;
    no host port (``127.0.0.1::80``, ``:80``, ``80``) means any free one, picked
    by the kernel when ``bind_ports`` binds it. No IP means 127.0.0.1.
    """
    def bad(why: str) -> UsageError:
        return UsageError(f"invalid port mapping {text!r}: {why} ({_USAGE})")

    spec = text.strip()
    if not spec:
        raise bad("it is empty")
    spec, slash, protocol = spec.partition("/")
    protocol = protocol.lower() if slash else "tcp"
    if protocol in ("udp", "sctp"):
        raise NetworkError(f"cannot publish {text!r}: minirt publishes only tcp ports, not {protocol}")
    if protocol != "tcp":
        raise bad(f"unknown protocol {protocol!r} (only tcp)")

    if spec.startswith("["):  # an IPv6 address: [::1]:8080:80
        end = spec.find("]")
        if end < 0 or spec[end + 1:end + 2] != ":" or spec.count(":", end) != 2:
            raise bad("write an IPv6 address in brackets, then both ports: "
                      "[ADDRESS]:HOSTPORT:CONTAINERPORT, e.g. [::1]:8080:80")
        host_ip = spec[1:end]
        host_port, container_port = spec[end + 2:].split(":")
    else:
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            host_ip, host_port, container_port = parts
        elif len(parts) == 2:
            host_ip, (host_port, container_port) = "", parts
        else:
            host_ip, host_port, container_port = "", "", parts[0]
        if ":" in host_ip:
            raise bad("write an IPv6 address in brackets, e.g. [::1]:8080:80")

    if not container_port:
        raise bad("the container port is missing")
    mapping = PortMapping(_port(container_port, "container port", bad),
                          _port(host_port, "host port", bad) if host_port else 0,
                          _address(host_ip, bad) if host_ip else DEFAULT_HOST_IP)
    return mapping


def _port(text: str, what: str, bad) -> int:
    low, dash, high = text.partition("-")
    if dash and low.isdigit() and high.isdigit():
        raise bad(f"port ranges such as {text} are not supported: give each port its own -p")
    if not (text.isascii() and text.isdigit()):  # not int(): it would take " 80", "+80", "٨٠"
        raise bad(f"the {what} {text!r} is not a number")
    number = int(text)
    if not 1 <= number <= 65535:
        raise bad(f"the {what} {number} is outside 1-65535")
    return number


def _address(text: str, bad) -> str:
    import ipaddress  # imported late: only a -p with an address pays for it
    try:
        return str(ipaddress.ip_address(text))  # normalised: "::0001" -> "::1"
    except ValueError:
        looks_like_a_name = any(c.isalpha() for c in text) and ":" not in text
        hint = ": write an address such as 127.0.0.1, not a host name" if looks_like_a_name else ""
        raise bad(f"{text!r} is not an IP address{hint}") from None


# --- in the caller: bind, start, stop ---------------------------------------------------

def bind_ports(mappings: list) -> list:
    """Bind and listen on one TCP socket per mapping, in this process; the sockets.

    Binding here, before any proxy exists, makes a busy port an error of the
    command that asked for it. A ``host_port`` of 0 is replaced in its
    mapping by the port the kernel picked. On failure the sockets already
    bound are closed again (and their mappings' picked ports reset to 0).
    """
    listeners, picked = [], []
    try:
        for mapping in mappings:
            listeners.append(_listen(mapping))
            if mapping.host_port == 0:
                mapping.host_port = listeners[-1].getsockname()[1]
                picked.append(mapping)
    except BaseException:
        for listener in listeners:
            listener.close()
        for mapping in picked:
            mapping.host_port = 0
        raise
    return listeners


def _listen(mapping: PortMapping):
    import socket
    if mapping.protocol != "tcp":
        raise NetworkError(f"cannot publish {mapping}: minirt publishes only tcp ports")
    family = socket.AF_INET6 if ":" in mapping.host_ip else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR: a port whose previous proxy just stopped may still have
        # connections in TIME_WAIT; without it, re-publishing it would fail for
        # a minute. It does not allow two listeners on one port (socket(7)).
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # [::] means IPv6 only; 0.0.0.0 is its own -p
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listener.bind((mapping.host_ip, mapping.host_port))
        listener.listen(socket.SOMAXCONN)
    except OSError as e:
        listener.close()
        raise NetworkError(f"cannot publish {mapping}: {_bind_failure(e, mapping)}") from None
    return listener


def _bind_failure(error: OSError, mapping: PortMapping) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"port {mapping.host_port} is already in use on {mapping.host_ip}"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{mapping.host_ip} is not an address of this host"
    if error.errno == errno.EACCES:
        return (f"port {mapping.host_port} is a privileged port: only root (or a process "
                "with CAP_NET_BIND_SERVICE) may bind it")
    return error.strerror or str(error)


def start_proxy(listeners: list, mappings: list, container_ip: str, owner_pid: int,
                log_path: str) -> list:
    """Serve ``listeners`` (from ``bind_ports``, one per mapping) from a proxy process
    relaying to ``container_ip``; the proxy's identity ``[pid, start time]``.

    The proxy is a fresh interpreter (``python -m minirt.network.proxy``), not
    a fork of this one: the caller may be a notebook's or a daemon's process
    with threads. It inherits the listening sockets (``pass_fds``: the same
    descriptor numbers in the child), reads the rest as JSON on stdin, forks
    once more so that it is re-parented to init (never a zombie of the
    caller), and writes ``ready`` on a pipe once it serves. It exits by itself
    when ``owner_pid`` exits. Its stdout and stderr are appended to
    ``log_path``.

    When this returns, the ports are being served; this process's copies of
    the listeners are closed (also when the proxy fails to start, so that
    nothing is left bound).
    """
    import json
    import subprocess
    import time
    from ..engine import process_identity

    if len(listeners) != len(mappings):
        raise ValueError("start_proxy needs exactly one listener per mapping")
    what = ", ".join(map(str, mappings)) or "no ports"
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_parent] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    read_end, write_end = os.pipe()
    request = {"mappings": [m.to_dict() for m in mappings],
               "listen_fds": [listener.fileno() for listener in listeners],
               "container_ip": container_ip, "owner_pid": owner_pid, "ready_fd": write_end}
    pid, status = None, None
    try:
        try:
            with open(log_path, "ab") as log:
                process = subprocess.Popen([sys.executable, "-m", "minirt.network.proxy"],
                                           stdin=subprocess.PIPE, stdout=log, stderr=log,
                                           env=env, cwd="/", start_new_session=True,
                                           pass_fds=(write_end, *request["listen_fds"]))
        except OSError as e:
            raise NetworkError(f"cannot start the proxy for {what}: {log_path}: "
                               f"{e.strerror or e}") from None
        finally:
            os.close(write_end)  # from now on, EOF on read_end means every proxy end is gone
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            process.communicate(json.dumps(request).encode(), timeout=READY_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        pid, status = _await_ready(read_end, deadline)
        if status == "ready" and pid:
            try:
                return process_identity(pid)
            except OSError:
                status = "error it exited right after starting"
    finally:
        os.close(read_end)
        for listener in listeners:
            listener.close()
    # Failed: leave nothing running, and say why (its own words, else its log's last line).
    if pid and _is_proxy(pid):
        try:
            os.kill(pid, 9)  # SIGKILL
        except ProcessLookupError:
            pass
    if status and status.startswith("error "):
        why = status[len("error "):]
    else:
        why = _last_line(log_path) or f"it did not report ready within {READY_TIMEOUT:g} s"
    raise NetworkError(f"cannot start the proxy for {what}: {why}")


def _await_ready(fd: int, deadline: float) -> tuple:
    """Read the proxy's pipe until EOF or the deadline: (its pid, "ready" or "error ...").

    Two writers share the pipe: the launched interpreter says ``pid N`` (the
    child it forked) before it exits, and that child says ``ready``, or
    ``error MESSAGE`` if it cannot serve."""
    import select
    import time
    poller = select.poll()  # not select(): it fails for descriptor numbers >= 1024
    poller.register(fd, select.POLLIN)
    buffer = b""
    pid, status = None, None
    while pid is None or status is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break  # every writer is gone
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace")
            if text.startswith("pid ") and text[4:].isdigit():
                pid = int(text[4:])
            elif text == "ready" or text.startswith("error "):
                status = text
    return pid, status


def _is_proxy(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == PROCESS_NAME
    except OSError:
        return False


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def stop_proxy(identity) -> bool:
    """Stop the proxy named by ``identity``: SIGTERM, and SIGKILL after 2 s; False if it
    was already gone. When it returns True the proxy has exited and its ports are free
    (unless even SIGKILL took more than 2 s: a process stuck in the kernel).

    The signals go through a pidfd (pidfd_send_signal(2)), opened *before*
    checking that the pid still belongs to the proxy: a pidfd names one
    process, not a number, so if the proxy died and its pid were reused by
    another process after the check, the signal could not hit the newcomer.
    """
    import signal
    from ..engine import process_alive
    if not identity:
        return False
    try:
        pidfd = os.pidfd_open(identity[0])
    except (ProcessLookupError, ValueError):
        return False
    try:
        if not process_alive(identity):
            return False
        for number, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, STOP_GRACE)):
            try:
                signal.pidfd_send_signal(pidfd, number)
            except ProcessLookupError:
                return True  # exited meanwhile
            if _exited(pidfd, wait):
                return True
        return True
    finally:
        os.close(pidfd)


def _exited(pidfd: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for the process behind ``pidfd`` to exit (the pidfd
    becomes readable; by then the kernel has closed all its file descriptors)."""
    import select
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


# --- the proxy process -----------------------------------------------------------------

def main() -> None:
    """``python -m minirt.network.proxy``: read the request (JSON) on stdin, fork into
    the background, say ``ready`` on the request's ``ready_fd``, serve until told to stop.
    """
    import json
    request = json.loads(sys.stdin.buffer.read())
    ready_fd = request["ready_fd"]
    try:
        import socket
        with open("/proc/self/comm", "w") as f:
            f.write(PROCESS_NAME)
        mappings = [PortMapping.from_dict(d) for d in request["mappings"]]
        listeners = [socket.socket(fileno=fd) for fd in request["listen_fds"]]
        for listener in listeners:
            listener.setblocking(False)
        try:
            owner = os.pidfd_open(request["owner_pid"])
        except ProcessLookupError:
            raise NetworkError(f"its owner process {request['owner_pid']} has already exited") from None
        _raise_file_limit()
    except Exception as e:
        _log(f"cannot start: {e}")
        _tell(ready_fd, f"error {e}")
        sys.exit(1)
    # Fork once more, as a daemon does: the child is re-parented to init, which
    # reaps it when it exits, so it never lingers as a zombie of its caller.
    pid = os.fork()
    if pid:
        _tell(ready_fd, f"pid {pid}")
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)
    import asyncio
    asyncio.run(_serve(listeners, mappings, request["container_ip"], owner,
                       request["owner_pid"], ready_fd))


def _raise_file_limit() -> None:
    """Two descriptors per connection, 256 connections per port: the usual soft limit
    of 1024 open files would run out at the second port. Raise it to the hard limit."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass


def _tell(fd: int, line: str) -> bool:
    try:
        os.write(fd, line.encode() + b"\n")
        return True
    except OSError:  # EPIPE: start_proxy gave up waiting
        return False


def _log(message: str) -> None:
    import time
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {PROCESS_NAME}[{os.getpid()}]: "
                     f"{message}\n")
    sys.stderr.flush()


async def _serve(listeners: list, mappings: list, container_ip: str, owner: int,
                 owner_pid: int, ready_fd: int) -> None:
    """Accept on every listener until SIGTERM (or SIGINT) or the owner's exit; then close
    the listeners, cancel the connections still open, and return."""
    import asyncio
    import signal
    loop = asyncio.get_running_loop()
    stopping = loop.create_future()

    def stop(why: str) -> None:
        if not stopping.done():
            stopping.set_result(why)

    loop.add_signal_handler(signal.SIGTERM, stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, stop, "SIGINT")
    loop.add_reader(owner, stop, f"its owner process {owner_pid} exited")
    connections = set()
    acceptors = [loop.create_task(_accept(listener, mapping, container_ip, connections))
                 for listener, mapping in zip(listeners, mappings)]
    _log(f"serving {', '.join(map(str, mappings))} for {container_ip}")
    told = _tell(ready_fd, "ready")
    os.close(ready_fd)
    why = await stopping if told else "nobody waited for it to start"
    _log(f"stopping: {why}")
    loop.remove_reader(owner)
    os.close(owner)
    for task in acceptors:
        task.cancel()
    await asyncio.gather(*acceptors, return_exceptions=True)
    for listener in listeners:
        listener.close()  # the ports are free from here on
    for task in list(connections):
        task.cancel()
    if connections:
        await asyncio.wait(list(connections), timeout=STOP_GRACE)


async def _accept(listener, mapping: PortMapping, container_ip: str, connections: set) -> None:
    """Accept clients on ``listener``, at most MAX_CONNECTIONS at once, each relayed
    by its own task."""
    import asyncio
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(MAX_CONNECTIONS)
    while True:
        await slots.acquire()  # a free slot first: beyond the limit, clients wait unaccepted
        try:
            client, address = await loop.sock_accept(listener)
        except OSError as e:
            slots.release()
            if e.errno not in (errno.ECONNABORTED, errno.EINTR):
                _log(f"{mapping}: accept failed: {e.strerror or e}")
                await asyncio.sleep(0.1)  # e.g. EMFILE: give connections time to end, do not spin
            continue
        except BaseException:
            slots.release()
            raise
        task = loop.create_task(_connection(client, address, mapping, container_ip))
        connections.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(connections.discard)
        task.add_done_callback(lambda _: slots.release())


async def _connection(client, address, mapping: PortMapping, container_ip: str) -> None:
    """One client: connect to the container, relay both ways, close both sockets."""
    import asyncio
    import socket
    loop = asyncio.get_running_loop()
    upstream = None
    try:
        client.setblocking(False)
        family = socket.AF_INET6 if ":" in container_ip else socket.AF_INET
        upstream = socket.socket(family, socket.SOCK_STREAM)
        upstream.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(upstream, (container_ip, mapping.container_port)),
                                   CONNECT_TIMEOUT)
        except OSError as e:  # refused (nothing listens there yet), unreachable, timed out
            # (asyncio words it "Connect call failed (ADDRESS)": the errno says more)
            why = "timed out" if isinstance(e, TimeoutError) else \
                os.strerror(e.errno) if e.errno else str(e)
            _log(f"{mapping}: cannot reach {container_ip}:{mapping.container_port} ({why}); "
                 f"closing the connection from {address[0]}:{address[1]}")
            return
        for sock in (client, upstream):
            # As docker-proxy (Go sets it on every TCP connection): forward each chunk
            # at once; Nagle's delay belongs to the endpoints, not to a relay.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await _relay(client, upstream)
    except OSError:
        pass  # a reset or a broken pipe: the connection is over, both get closed
    finally:
        client.close()
        if upstream is not None:
            upstream.close()


async def _relay(client, upstream) -> None:
    """Copy both ways until both directions have seen EOF; if one fails, stop both."""
    import asyncio
    loop = asyncio.get_running_loop()
    copies = [loop.create_task(_copy(client, upstream)), loop.create_task(_copy(upstream, client))]
    try:
        await asyncio.gather(*copies)
    finally:
        for task in copies:
            task.cancel()
        await asyncio.gather(*copies, return_exceptions=True)


async def _copy(source, sink) -> None:
    """Bytes from ``source`` to ``sink`` until ``source``'s EOF, which is passed on as
    ``shutdown(SHUT_WR)``: ``sink``'s peer reads EOF too, and may still answer."""
    import asyncio
    import socket
    loop = asyncio.get_running_loop()
    while data := await loop.sock_recv(source, BUFFER_SIZE):
        await loop.sock_sendall(sink, data)
    sink.shutdown(socket.SHUT_WR)


if __name__ == "__main__":
    main()
