"""minirt's docker-proxy (minirt/network/proxy.py): ``-p`` parsing, binding, and relaying.

No container is needed: a threaded echo server on 127.0.0.1 stands in for the
container, and the proxy relays to it at container_ip 127.0.0.1. All traffic
stays on loopback; every wait is bounded; each test checks that no proxy
process it started is left.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import dead
from minirt.errors import NetworkError, UsageError
from minirt.network import proxy
from minirt.network.proxy import PortMapping, bind_ports, parse_publish, start_proxy, stop_proxy

TIMEOUT = 10.0  # seconds, for every socket operation and every wait
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(proxy.__file__))))


def proxy_pids() -> set[int]:
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == proxy.PROCESS_NAME and not dead(int(pid)):
                    found.add(int(pid))
        except OSError:
            pass
    return found


@pytest.fixture(autouse=True)
def no_proxy_left():
    """Every proxy a test started is gone when it ends (those of others are left alone)."""
    before = proxy_pids()
    yield
    deadline = time.monotonic() + 5
    while (left := proxy_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:  # ours: started during this test
        os.kill(pid, 9)
    assert not left, f"proxy processes left behind: {sorted(left)}"


def wait_until(condition, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_bind(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
        return True


class EchoServer:
    """The stand-in container: echoes each connection until its EOF, then half-closes."""

    def __init__(self, sock: socket.socket | None = None):
        self.sock = sock or socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stopping = False
        self.sock.settimeout(0.1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        conn.settimeout(TIMEOUT)
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stopping = True
        self.thread.join(TIMEOUT)
        self.sock.close()


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def start(tmp_path):
    """start(container_port) -> (mapping, identity) of a proxy owned by this process;
    stopped at the end of the test."""
    started = []

    def start_one(container_port: int, publish: str | None = None):
        mapping = parse_publish(publish or str(container_port))
        listeners = bind_ports([mapping])
        identity = start_proxy(listeners, [mapping], "127.0.0.1", os.getpid(),
                               str(tmp_path / "proxy.log"))
        started.append(identity)
        return mapping, identity

    yield start_one
    for identity in started:
        stop_proxy(identity)


def connect(mapping: PortMapping) -> socket.socket:
    return socket.create_connection((mapping.host_ip, mapping.host_port), timeout=TIMEOUT)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# --- parse_publish -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("8080:80", PortMapping(80, 8080)),
    ("127.0.0.1:8080:80", PortMapping(80, 8080, "127.0.0.1")),
    ("0.0.0.0:8080:80", PortMapping(80, 8080, "0.0.0.0")),
    ("127.0.0.1::80", PortMapping(80, 0, "127.0.0.1")),
    ("80", PortMapping(80, 0, "127.0.0.1")),
    (":80", PortMapping(80, 0, "127.0.0.1")),
    ("8080:80/tcp", PortMapping(80, 8080)),
    ("127.0.0.1:8080:80/tcp", PortMapping(80, 8080)),
    ("0.0.0.0:8080:80/tcp", PortMapping(80, 8080, "0.0.0.0")),
    ("127.0.0.1::80/tcp", PortMapping(80, 0)),
    ("80/tcp", PortMapping(80, 0)),
    ("80/TCP", PortMapping(80, 0)),
    ("65535:1", PortMapping(1, 65535)),
    ("[::1]:8080:80", PortMapping(80, 8080, "::1")),
    ("[::1]::80", PortMapping(80, 0, "::1")),
])
def test_parse_publish_forms(text, expected):
    assert parse_publish(text) == expected


def test_the_default_address_is_loopback_not_every_interface():
    assert parse_publish("8080:80").host_ip == "127.0.0.1"
    assert PortMapping(80).host_ip == "127.0.0.1"


@pytest.mark.parametrize("text, says", [
    ("", "empty"),
    ("http", "'http' is not a number"),
    ("8080:http", "'http' is not a number"),
    ("web:80", "'web' is not a number"),
    ("0:80", "0 is outside 1-65535"),
    ("8080:0", "0 is outside 1-65535"),
    ("65536:80", "65536 is outside 1-65535"),
    ("8080:99999", "99999 is outside 1-65535"),
    ("-1:80", "not a number"),
    ("+80", "not a number"),
    (" 8080 : 80", "not a number"),
    ("8000-8010:80", "ranges"),
    ("127.0.0.1:8080:", "container port is missing"),
    ("localhost:8080:80", "not a host name"),
    ("1.2.3:8080:80", "'1.2.3' is not an IP address"),
    ("256.0.0.1:8080:80", "'256.0.0.1' is not an IP address"),
    ("::1:8080:80", "brackets"),
    ("[::1]:80", "brackets"),
    ("[::1:8080:80", "brackets"),
    ("8080:80/foo", "unknown protocol 'foo'"),
])
def test_parse_publish_rejects_with_one_line_that_quotes_the_input(text, says):
    with pytest.raises(UsageError) as caught:
        parse_publish(text)
    message = str(caught.value)
    assert says in message
    assert repr(text) in message
    assert "\n" not in message
    assert "-p 8080:80" in message  # and how to write it


@pytest.mark.parametrize("text", ["53/udp", "8080:80/udp", "127.0.0.1:5353:53/UDP", "80/sctp"])
def test_parse_publish_only_tcp(text):
    with pytest.raises(NetworkError) as caught:
        parse_publish(text)
    message = str(caught.value)
    assert "only tcp" in message and repr(text) in message and "\n" not in message


def test_port_mapping_reads_like_docker_ps_and_round_trips():
    assert str(PortMapping(80, 8080)) == "127.0.0.1:8080->80/tcp"
    assert str(PortMapping(443, 8443, "0.0.0.0")) == "0.0.0.0:8443->443/tcp"
    assert str(PortMapping(80, 8080, "::1")) == "[::1]:8080->80/tcp"
    mapping = parse_publish("0.0.0.0:8080:80")
    assert mapping.to_dict() == {"host_ip": "0.0.0.0", "host_port": 8080,
                                 "container_port": 80, "protocol": "tcp"}
    assert PortMapping.from_dict(json.loads(json.dumps(mapping.to_dict()))) == mapping


# --- bind_ports ----------------------------------------------------------------------

def test_bind_ports_fills_in_the_port_the_kernel_picked():
    mappings = [parse_publish("80"), parse_publish("127.0.0.1::81")]
    listeners = bind_ports(mappings)
    try:
        ports = [m.host_port for m in mappings]
        assert all(ports) and ports[0] != ports[1]
        assert [s.getsockname() for s in listeners] == [("127.0.0.1", p) for p in ports]
        assert not can_bind(ports[0])
    finally:
        for listener in listeners:
            listener.close()
    assert can_bind(ports[0]) and can_bind(ports[1])


def test_bind_ports_reports_a_busy_port_and_leaves_nothing_bound():
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        busy_port = busy.getsockname()[1]
        first = PortMapping(80, free_port())
        picked = PortMapping(81)  # any port: bound, then released again
        taken = PortMapping(82, busy_port)
        with pytest.raises(NetworkError) as caught:
            bind_ports([first, picked, taken])
        assert str(caught.value) == (f"cannot publish 127.0.0.1:{busy_port}->82/tcp: "
                                     f"port {busy_port} is already in use on 127.0.0.1")
        assert can_bind(first.host_port)
        assert picked.host_port == 0
    finally:
        busy.close()


def test_bind_ports_the_same_port_twice():
    port = free_port()
    with pytest.raises(NetworkError, match=f"port {port} is already in use"):
        bind_ports([PortMapping(80, port), PortMapping(81, port)])
    assert can_bind(port)


def test_bind_ports_an_address_this_host_does_not_have():
    with pytest.raises(NetworkError, match="192.0.2.1 is not an address of this host"):
        bind_ports([parse_publish("192.0.2.1:8080:80")])  # TEST-NET-1: never assigned


# --- the relay -----------------------------------------------------------------------

def test_one_mebibyte_round_trip_with_half_close(echo, start):
    mapping, identity = start(echo.port)
    payload = os.urandom(1 << 20)
    with connect(mapping) as client:
        def send() -> None:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)  # the client is done sending, still reading
        sender = threading.Thread(target=send, daemon=True)  # read while sending: no deadlock
        sender.start()
        received = read_all(client)  # ends at the echo server's FIN, relayed by the proxy
        sender.join(TIMEOUT)
    assert len(received) == len(payload) and received == payload


def test_twenty_concurrent_clients(echo, start):
    mapping, _ = start(echo.port)
    count = 20
    barrier = threading.Barrier(count, timeout=TIMEOUT)
    results, errors = {}, []

    def client(n: int) -> None:
        try:
            payload = f"client {n} ".encode() * (1000 + n)
            with connect(mapping) as sock:
                barrier.wait()  # all twenty connected at once
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                results[n] = read_all(sock) == payload
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not errors
    assert results == {n: True for n in range(count)}
    assert echo.accepted == count


def test_the_container_refusing_closes_the_client_and_the_proxy_keeps_serving(start, tmp_path):
    # Bound but not listening: connecting to it is refused (RST), deterministically.
    container = socket.socket()
    container.bind(("127.0.0.1", 0))
    server = None
    try:
        port = container.getsockname()[1]
        mapping, identity = start(port)
        with connect(mapping) as client:
            assert client.recv(100) == b""  # EOF: the proxy closed it
        log = (tmp_path / "proxy.log").read_text()
        assert f"cannot reach 127.0.0.1:{port} (Connection refused)" in log
        container.listen()  # the "container" starts listening: the same proxy serves it now
        server = EchoServer(container)
        with connect(mapping) as client:
            client.sendall(b"again")
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b"again"
        assert os.path.exists(f"/proc/{identity[0]}")
    finally:
        if server:
            server.close()
        else:
            container.close()


def test_at_most_256_connections_per_port_the_next_waits(start):
    held = []  # the "container" accepts and holds every connection
    server = socket.create_server(("127.0.0.1", 0), backlog=512)
    server.settimeout(0.05)
    stop = threading.Event()

    def hold() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    clients = []
    try:
        mapping, _ = start(server.getsockname()[1])
        for _ in range(proxy.MAX_CONNECTIONS + 1):
            clients.append(connect(mapping))  # the kernel completes the handshake for all
        assert wait_until(lambda: len(held) == proxy.MAX_CONNECTIONS)
        time.sleep(0.3)
        assert len(held) == proxy.MAX_CONNECTIONS  # the 257th is not accepted yet
        # One ends. A plain close would only half-close it (the proxy passes the FIN
        # on, and waits for the container's); a reset ends both directions at once.
        first = clients.pop(0)
        first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        first.close()  # RST: its slot goes to the client waiting
        assert wait_until(lambda: len(held) == proxy.MAX_CONNECTIONS + 1)
    finally:
        for sock in clients:
            sock.close()
        stop.set()
        holder.join(TIMEOUT)
        for sock in held:
            sock.close()
        server.close()


# --- the process ---------------------------------------------------------------------

def test_the_proxy_names_itself_and_is_not_our_child(echo, start):
    _, identity = start(echo.port)
    with open(f"/proc/{identity[0]}/comm") as f:
        assert f.read().strip() == "minirt-proxy"
    with open(f"/proc/{identity[0]}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    assert ppid != os.getpid()  # re-parented: it will never be a zombie of ours
    assert os.readlink(f"/proc/{identity[0]}/cwd") == "/"


def test_stop_proxy_ends_it_and_frees_the_port(echo, start):
    mapping, identity = start(echo.port)
    assert not can_bind(mapping.host_port)
    assert stop_proxy(identity) is True
    assert dead(identity[0])
    assert can_bind(mapping.host_port)  # at once: stop_proxy returned after the exit
    assert stop_proxy(identity) is False  # already gone
    with pytest.raises(OSError):
        connect(mapping)


def test_sigterm_is_a_clean_shutdown_even_with_connections_open(echo, start, tmp_path):
    mapping, identity = start(echo.port)
    with connect(mapping) as client:
        client.sendall(b"half a request")
        assert client.recv(100) == b"half a request"
        began = time.monotonic()
        assert stop_proxy(identity) is True
        assert time.monotonic() - began < proxy.STOP_GRACE  # SIGTERM sufficed, no SIGKILL
        try:
            assert client.recv(100) == b""  # the proxy closed its side
        except ConnectionResetError:
            pass
    assert "stopping: SIGTERM" in (tmp_path / "proxy.log").read_text()


def test_stop_proxy_leaves_another_process_with_a_reused_pid_alone():
    with subprocess.Popen(["sleep", "30"]) as other:
        try:
            with open(f"/proc/{other.pid}/stat") as f:
                start_time = int(f.read().rsplit(")", 1)[1].split()[19])
            assert stop_proxy([other.pid, start_time + 1]) is False  # same pid, another start
            assert other.poll() is None
        finally:
            other.kill()
    assert stop_proxy(None) is False and stop_proxy([]) is False


OWNER = """
import json, os, sys
from minirt.network import proxy
mapping = proxy.parse_publish(sys.argv[1])
listeners = proxy.bind_ports([mapping])
identity = proxy.start_proxy(listeners, [mapping], "127.0.0.1", os.getpid(), sys.argv[2])
print(json.dumps({"identity": identity, "port": mapping.host_port}), flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


def test_the_proxy_exits_when_its_owner_exits(echo, tmp_path):
    log = tmp_path / "proxy.log"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(echo.port), str(log)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": REPO})
    try:
        answer = json.loads(owner.stdout.readline() or "{}")
        pid, port = answer["identity"][0], answer["port"]
        with connect(PortMapping(echo.port, port)) as client:  # serving, for its owner
            client.sendall(b"ping")
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b"ping"
        owner.stdin.close()
        assert owner.wait(TIMEOUT) == 0
        assert wait_until(lambda: dead(pid), 5), "the proxy outlived its owner"
        assert wait_until(lambda: can_bind(port), 5)
        assert f"its owner process {owner.pid} exited" in log.read_text()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(TIMEOUT)


def test_start_proxy_fails_when_the_owner_is_already_gone(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait(TIMEOUT)  # reaped: its pid names no process
    mapping = parse_publish("80")
    listeners = bind_ports([mapping])
    with pytest.raises(NetworkError) as caught:
        start_proxy(listeners, [mapping], "127.0.0.1", gone.pid, str(tmp_path / "proxy.log"))
    assert str(caught.value) == (f"cannot start the proxy for {mapping}: "
                                 f"its owner process {gone.pid} has already exited")
    assert all(listener.fileno() == -1 for listener in listeners)  # closed
    assert can_bind(mapping.host_port)


def test_start_proxy_cannot_write_its_log(tmp_path):
    mapping = parse_publish("80")
    listeners = bind_ports([mapping])
    with pytest.raises(NetworkError, match="no-such-dir"):
        start_proxy(listeners, [mapping], "127.0.0.1", os.getpid(),
                    str(tmp_path / "no-such-dir" / "proxy.log"))
    assert can_bind(mapping.host_port)


def test_the_proxy_process_imports_no_heavy_module():
    code = ("import sys\n"
            "import minirt.network.proxy, asyncio, json, resource, socket\n"
            "bad = {'pyroute2', 'requests', 'minirt.engine', 'minirt.image'} & set(sys.modules)\n"
            "print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=TIMEOUT, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr
