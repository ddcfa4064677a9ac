"""The lab's local registry: a CNCF Distribution process that minirt starts and stops.

Distribution (``docker-registry`` in Debian, the ``registry:2`` image on Docker
Hub) is the reference implementation of the OCI distribution spec: the HTTP API
under ``/v2/`` that ``docker push`` and ``docker pull`` speak. The spec is at
https://github.com/opencontainers/distribution-spec/blob/main/spec.md; every key
of the registry's config file is described in its configuration reference,
https://distribution.github.io/distribution/about/configuration/ (also
``/usr/share/doc/docker-registry/configuration.md.gz`` here, with the token auth
spec under ``spec/auth/``).

Layout of a registry directory (the lab's is ``<state root>/registry``)::

    config.yml      the registry's configuration, written by ``start``
    data/           its storage: docker/registry/v2/blobs/ and repositories/
    registry.log    what the registry printed (one line per request, errors)
    registry.json   pid record: pid, process start time, address; present while it runs

The pid record holds the process's start time (``/proc/PID/stat``) beside its
pid: after a reboot or a crash the pid may belong to another process, and
``stop`` must never signal that one.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import time

from ..errors import RegistryError
from ..paths import atomic_write
from ..record import Record

BINARY = "docker-registry"

# Registries started by this Python process (a notebook, the tests), by pid: kept so
# that their exit status is collected when they stop, and no zombie is left.
_children: dict[int, subprocess.Popen] = {}


class BasicAuth(Record):
    """HTTP basic auth against an htpasswd file (bcrypt hashes only)."""

    __slots__ = ("htpasswd_path", "realm")

    def __init__(self, htpasswd_path: str, realm: str = "minirt lab registry"):
        self.htpasswd_path = htpasswd_path
        self.realm = realm


class TokenAuth(Record):
    """Bearer tokens from an external token server (Distribution's token auth spec).

    The registry answers ``401`` with ``WWW-Authenticate: Bearer realm=REALM_URL,
    service=SERVICE,scope=...``; the client asks the token server at REALM_URL
    for a JWT, which the registry accepts when it is signed by a certificate in
    ``root_cert_bundle_path``, issued by ``issuer`` and meant for ``service``.
    """

    __slots__ = ("realm_url", "service", "issuer", "root_cert_bundle_path")

    def __init__(self, realm_url: str, service: str, issuer: str, root_cert_bundle_path: str):
        self.realm_url = realm_url
        self.service = service
        self.issuer = issuer
        self.root_cert_bundle_path = root_cert_bundle_path


class RegistryServer(Record):
    """A running registry: its process (pid and start time), address and directory."""

    __slots__ = ("pid", "host", "port", "root", "started", "tls")

    def __init__(self, pid: int, host: str, port: int, root: str, started: int, tls: bool = False):
        self.pid = pid
        self.host = host
        self.port = port
        self.root = root
        self.started = started  # clock ticks since boot: pid + this names one process
        self.tls = tls

    @property
    def address(self) -> str:
        """``host:port``, as it appears in an image reference (127.0.0.1:5000/busybox)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def storage(self) -> str:
        return os.path.join(self.root, "data")

    @property
    def log(self) -> str:
        return os.path.join(self.root, "registry.log")


def start(directory: str, host: str = "127.0.0.1", port: int = 5000, *, auth=None, tls=None,
          timeout: float = 10.0) -> RegistryServer:
    """Start a registry serving ``directory/data`` on ``host:port``, and wait until it answers.

    ``auth`` is None (anyone may pull and push), a ``BasicAuth`` or a ``TokenAuth``;
    ``tls`` is None or ``(cert_path, key_path)``. If a registry already runs
    from ``directory`` it is returned as it is.
    """
    running = status(directory)
    if running:
        return running
    if not is_loopback(host):
        raise RegistryError(f"refusing to serve the lab registry on {host}: it listens on "
                            "loopback addresses only (e.g. 127.0.0.1), so nobody else can "
                            "push to it")
    binary = shutil.which(BINARY)
    if not binary:
        raise RegistryError("docker-registry is not installed: run `make setup` or "
                            "`apt-get install docker-registry`")
    if isinstance(auth, BasicAuth) and not os.path.isfile(auth.htpasswd_path):
        # Distribution would create it, with a user "docker" and a random password.
        raise RegistryError(f"no htpasswd file at {auth.htpasswd_path}: make one with "
                            "`htpasswd -Bbn USER PASSWORD > FILE`")
    if not port_free(host, port):  # else GET /v2/ below could reach the other server
        raise RegistryError(port_in_use(host, port))
    directory = os.path.abspath(directory)
    os.makedirs(os.path.join(directory, "data"), exist_ok=True)
    config = os.path.join(directory, "config.yml")
    atomic_write(config, render_config(directory, host, port, auth, tls).encode(), mode=0o600)

    log_path = os.path.join(directory, "registry.log")
    with open(log_path, "wb") as log:
        # A session of its own: the registry outlives this process (the CLI exits at
        # once) and a Ctrl-C in the terminal that started it does not reach it.
        process = subprocess.Popen([binary, "serve", config], cwd=directory,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = RegistryServer(process.pid, host, port, directory, process_start_time(process.pid),
                            tls=bool(tls))
    atomic_write(os.path.join(directory, "registry.json"),
                 json.dumps(server.to_dict()).encode(), durable=False)

    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if listening(server) and probe(server) in (200, 401):
            _children[process.pid] = process
            return server  # 401: it answers, and wants credentials (auth configured)
        time.sleep(0.05)
    exited = process.poll() is not None
    process.kill()
    process.wait()
    remove_record(directory)
    raise RegistryError(failure_reason(server, exited, timeout))


def status(directory: str) -> RegistryServer | None:
    """The registry running from ``directory``, or None (a stale pid record is removed)."""
    record = os.path.join(directory, "registry.json")
    try:
        with open(record) as f:
            server = RegistryServer(**json.load(f))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):  # half a record from an older minirt: not ours to trust
        remove_record(directory)
        return None
    if not alive(server):
        remove_record(directory)
        return None
    return server


def stop(directory: str, timeout: float = 5.0) -> bool:
    """Stop the registry running from ``directory``: SIGTERM, then SIGKILL after ``timeout``.

    Returns False when none was running. Only the process whose pid *and* start
    time match the pid record is ever signalled.
    """
    server = status(directory)
    if server is None:
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not alive(server):
            break
        try:
            os.kill(server.pid, sig)
        except ProcessLookupError:  # exited between the check and the signal
            break
        deadline = time.monotonic() + wait
        while alive(server) and time.monotonic() < deadline:
            time.sleep(0.02)
    if alive(server):
        raise RegistryError(f"the registry (pid {server.pid}) did not exit after SIGKILL")
    remove_record(directory)
    return True


def render_config(directory: str, host: str, port: int, auth=None, tls=None) -> str:
    """The registry's ``config.yml``: as small as it can be, with why each key is there.

    Strings are written as JSON strings, which YAML reads as double-quoted
    scalars: a path with a space or a colon stays one value.
    """
    q = json.dumps
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [
        "# Written by minirt (minirt/registry/server.py). Every key is described in",
        "# https://distribution.github.io/distribution/about/configuration/",
        "version: 0.1",
        "log:",
        "  level: info",
        "  fields:",
        "    service: registry",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {q(os.path.join(directory, 'data'))}",
        "  delete:",
        "    enabled: true  # DELETE /v2/<name>/manifests/<digest> is refused (405) without it",
        "http:",
        f"  addr: {q(address)}",
        "  # Signs the state of unfinished uploads that clients carry in their URLs.",
        "  # Without it the registry makes one up at each start, and warns.",
        f"  secret: {q(secrets.token_hex(16))}",
        "  headers:",
        "    X-Content-Type-Options: [nosniff]",
    ]
    if tls:
        cert, key = tls
        lines += ["  tls:", f"    certificate: {q(os.path.abspath(cert))}",
                  f"    key: {q(os.path.abspath(key))}"]
    lines += [
        "health:",
        "  storagedriver:",
        "    enabled: false  # no periodic storage probe (and its log lines)",
    ]
    if isinstance(auth, BasicAuth):
        lines += ["auth:", "  htpasswd:", f"    realm: {q(auth.realm)}",
                  f"    path: {q(os.path.abspath(auth.htpasswd_path))}"]
    elif isinstance(auth, TokenAuth):
        lines += ["auth:", "  token:  # clients fetch a JWT from realm, signed by a cert in the bundle",
                  f"    realm: {q(auth.realm_url)}", f"    service: {q(auth.service)}",
                  f"    issuer: {q(auth.issuer)}",
                  f"    rootcertbundle: {q(os.path.abspath(auth.root_cert_bundle_path))}"]
    elif auth is not None:
        raise TypeError(f"auth must be None, BasicAuth or TokenAuth, not {auth!r}")
    return "\n".join(lines) + "\n"


def probe(server: RegistryServer) -> int | None:
    """The status of ``GET /v2/`` (the spec's "API version check"), or None if no answer."""
    import http.client
    if server.tls:
        import ssl
        # Only "is it up?": the certificate is the caller's to check, not ours.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(server.host, server.port, timeout=1,
                                                 context=context)
    else:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=1)
    try:
        connection.request("GET", "/v2/")
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def failure_reason(server: RegistryServer, exited: bool, timeout: float) -> str:
    """One line saying why the registry did not come up, from its log."""
    try:
        with open(server.log, errors="replace") as f:
            log = f.read()
    except OSError:
        log = ""
    if "address already in use" in log:
        return port_in_use(server.host, server.port)
    last = log_message(log.strip().splitlines()[-1]) if log.strip() else "no output"
    if exited:
        return f"the registry exited at start: {last} (log: {server.log})"
    return (f"the registry did not answer GET /v2/ at {server.url} within {timeout:g}s: "
            f"{last} (log: {server.log})")


def port_in_use(host: str, port: int) -> str:
    return (f"port {port} is already in use on {host}: stop what listens there, or choose "
            "another port with --port")


def port_free(host: str, port: int) -> bool:
    """Can a server listen on ``host:port``? (SO_REUSEADDR: as the registry binds it.)"""
    import socket
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def listening(server: RegistryServer) -> bool:
    """Has the registry logged ``listening on HOST:PORT``, i.e. its socket is open?"""
    try:
        with open(server.log, errors="replace") as f:
            return "msg=\"listening on " in f.read()
    except OSError:
        return False


def log_message(line: str) -> str:
    """``time="..." level=fatal msg="..."`` (logrus' format) -> the msg part."""
    import re
    found = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
    return json.loads(f'"{found.group(1)}"') if found else line


def is_loopback(host: str) -> bool:
    import ipaddress
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def process_start_time(pid: int) -> int:
    """Field 22 of ``/proc/PID/stat``: when the process started, in clock ticks since boot."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def alive(server: RegistryServer) -> bool:
    """Is the recorded process still running, and still the same process?"""
    try:
        with open(f"/proc/{server.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    if int(fields[19]) != server.started:
        return False  # the pid now names another process
    if fields[0] == "Z":  # exited; if it was our own child, collect its status
        child = _children.pop(server.pid, None)
        if child:
            child.poll()
        return False
    return True


def remove_record(directory: str) -> None:
    try:
        os.unlink(os.path.join(directory, "registry.json"))
    except FileNotFoundError:
        pass
