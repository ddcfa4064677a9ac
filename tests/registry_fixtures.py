"""Real registries for the tests: anonymous, basic auth, token auth and TLS.

Each fixture starts a CNCF Distribution registry (``docker-registry``) through
``minirt.registry.server`` in a temp directory and yields it; afterwards it is
stopped, checked to be gone, and the directory is removed. Import the fixtures
into a test module::

    from registry_fixtures import registry, basic_registry, token_registry, tls_registry

``token_registry`` also runs a token server as Distribution's token auth spec
describes it (``/usr/share/doc/docker-registry/spec/auth/token.md.gz`` and
``jwt.md.gz``; https://distribution.github.io/distribution/spec/auth/token/):
the registry answers ``401`` with ``WWW-Authenticate: Bearer realm=...,
service=...,scope=...``; the client asks the realm for a token for that scope;
the registry checks the token's signature against its ``rootcertbundle``.
"""

import base64
import datetime
import functools
import json
import os
import shutil
import socket
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import require
from minirt.record import Record
from minirt.registry import server as registry_server

USER, PASSWORD = "student", "s3cret"
SERVICE = "minirt-test-registry"  # the token's audience: which registry it is for
ISSUER = "minirt-test-token-issuer"
ACTIONS_FOR_USERS = {"pull", "push"}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def require_registry_binary() -> None:
    require(shutil.which(registry_server.BINARY) is not None,
            "needs docker-registry (CNCF Distribution): run `make setup` or "
            "`apt-get install docker-registry`")


@pytest.fixture
def workdir():
    """A temp directory, removed afterwards (with the registry's storage in it)."""
    path = tempfile.mkdtemp(prefix="minirt-registry-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def running_registry(directory: str, host: str = "127.0.0.1", **options):
    """Start a registry in ``directory/registry``; a generator that stops it at its end."""
    require_registry_binary()
    root = os.path.join(directory, "registry")
    server = registry_server.start(root, host, free_port(host), **options)
    try:
        yield server
    finally:
        registry_server.stop(root)
        assert not registry_server.alive(server), f"registry pid {server.pid} still running"
        assert not os.path.exists(os.path.join(root, "registry.json"))


@pytest.fixture
def registry(workdir):
    """An anonymous registry on 127.0.0.1:<free port>: anyone may pull and push."""
    yield from running_registry(workdir)


@pytest.fixture
def basic_registry(workdir):
    """A registry with HTTP basic auth; yields (server, "student", "s3cret")."""
    import bcrypt
    # Distribution reads bcrypt hashes only; bcrypt writes $2b$, Apache's htpasswd $2y$
    # (the same algorithm). Write $2y$, as `htpasswd -B` would.
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    htpasswd = os.path.join(workdir, "htpasswd")
    with open(htpasswd, "w") as f:
        f.write(f"{USER}:{hashed.replace('$2b$', '$2y$', 1)}\n")
    auth = registry_server.BasicAuth(htpasswd, realm="minirt test registry")
    for server in running_registry(workdir, auth=auth):
        yield server, USER, PASSWORD


class TokenRegistry(Record):
    """What ``token_registry`` yields: the registry and its token server."""

    __slots__ = ("server", "token_url", "service", "credentials", "requests")

    def __init__(self, server, token_url: str, service: str, credentials: tuple, requests: list):
        self.server = server            # the RegistryServer
        self.token_url = token_url      # the realm: http://127.0.0.1:<port>/token
        self.service = service
        self.credentials = credentials  # ("student", "s3cret")
        self.requests = requests        # one dict per request the token server got


@pytest.fixture
def token_registry(workdir):
    """A registry with token auth, and the token server it sends clients to.

    Policy: student/s3cret get the pull and push they ask for, on any repository;
    anonymous clients get pull on ``public/...`` only; wrong credentials get 401.
    """
    key, cert = token_signing_identity()
    bundle = os.path.join(workdir, "token-signer.crt")
    with open(bundle, "wb") as f:
        f.write(cert_pem(cert))
    issuer = TokenServer(key, cert)
    thread = threading.Thread(target=issuer.serve_forever, daemon=True)
    thread.start()
    try:
        auth = registry_server.TokenAuth(issuer.url, SERVICE, ISSUER, bundle)
        for server in running_registry(workdir, auth=auth):
            yield TokenRegistry(server, issuer.url, SERVICE, (USER, PASSWORD), issuer.requests)
    finally:
        issuer.shutdown()
        issuer.server_close()
        thread.join(5)
        assert not thread.is_alive(), "token server thread still running"


class TLSRegistry(Record):
    """What ``tls_registry`` yields: the registry and the CA file that trusts its cert."""

    __slots__ = ("server", "ca_cert")

    def __init__(self, server, ca_cert: str):
        self.server = server
        self.ca_cert = ca_cert


@pytest.fixture
def tls_registry(workdir):
    """A registry serving HTTPS on 127.0.1.1:<free port>, with a self-signed certificate.

    127.0.1.1 is a loopback address but not "localhost" or 127.0.0.1, which
    docker (and the lead's client) treat as insecure-allowed: there, HTTPS it is.
    The certificate is its own CA; it is written as ``ca.crt`` for clients.
    """
    from cryptography.hazmat.primitives import serialization
    key, cert = self_signed("127.0.1.1", ip="127.0.1.1")
    ca, key_path = os.path.join(workdir, "ca.crt"), os.path.join(workdir, "registry.key")
    with open(ca, "wb") as f:
        f.write(cert_pem(cert))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    for server in running_registry(workdir, host="127.0.1.1", tls=(ca, key_path)):
        yield TLSRegistry(server, ca)


# -- the token server ----------------------------------------------------------------


class TokenServer(ThreadingHTTPServer):
    """``GET /token?service=S&scope=repository:NAME:pull,push``: a signed JWT, as JSON.

    The answer is ``{"token", "access_token", "expires_in", "issued_at"}``; both
    token fields carry the same JWT (older clients read ``token``, OAuth2 ones
    ``access_token``). Every request is recorded in ``requests``.
    """

    daemon_threads = True

    def __init__(self, key, cert):
        super().__init__(("127.0.0.1", 0), TokenHandler)
        self.key, self.cert = key, cert
        self.requests: list[dict] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}/token"

    def grant(self, user: str | None, scopes: list[str]) -> list[dict]:
        """The access entries for ``user`` (None: anonymous): what was asked, within policy.

        Granting less than asked is not an error (the spec): the registry then
        answers 401 or 403 to the request that needs more.
        """
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            asked = [a for a in actions.split(",") if a]
            if user is not None:
                allowed = [a for a in asked if a in ACTIONS_FOR_USERS]
            elif kind == "repository" and name.startswith("public/"):
                allowed = [a for a in asked if a == "pull"]
            else:
                allowed = []
            access.append({"type": kind, "name": name, "actions": allowed})
        return access

    def token(self, user: str | None, access: list[dict]) -> str:
        import jwt
        from cryptography.hazmat.primitives import serialization
        now = datetime.datetime.now(datetime.timezone.utc)
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "iat": now,
                  "nbf": now - datetime.timedelta(seconds=10),  # the registry's clock may lag
                  "exp": now + datetime.timedelta(seconds=300), "jti": uuid.uuid4().hex,
                  "access": access}
        # x5c: the signing certificate itself (base64 DER, not URL-safe); the registry
        # checks it chains to its rootcertbundle and then verifies with its key.
        der = self.cert.public_bytes(serialization.Encoding.DER)
        return jwt.encode(claims, self.key, algorithm="RS256",
                          headers={"x5c": [base64.b64encode(der).decode()]})


class TokenHandler(BaseHTTPRequestHandler):
    server: TokenServer

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        user, valid = self.credentials()
        self.server.requests.append({"path": url.path, "query": query,
                                     "authenticated": user is not None and valid, "user": user})
        if url.path != "/token":
            return self.answer(404, {"errors": [{"code": "NOT_FOUND"}]})
        if user is not None and not valid:
            return self.answer(401, {"errors": [{"code": "UNAUTHORIZED",
                                                 "message": "wrong user name or password"}]},
                               {"WWW-Authenticate": 'Basic realm="minirt test token server"'})
        token = self.server.token(user, self.server.grant(user, query.get("scope", [])))
        issued = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.answer(200, {"token": token, "access_token": token, "expires_in": 300,
                          "issued_at": issued.replace("+00:00", "Z")})

    def credentials(self) -> tuple[str | None, bool]:
        """(user name or None when anonymous, whether the password is right)."""
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None, True
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return "", False
        return user, (user, password) == (USER, PASSWORD)

    def answer(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # quiet: the tests read self.server.requests
        pass


# -- certificates ----------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def token_signing_identity():
    """An RSA key and its self-signed certificate (made once per session: RSA is slow)."""
    return self_signed(ISSUER, rsa_key=True)


def self_signed(common_name: str, ip: str | None = None, rsa_key: bool = False):
    """(key, certificate) valid for a day; with ``ip``, for that address (SAN)."""
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID
    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if rsa_key
           else ec.generate_private_key(ec.SECP256R1()))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               # Its own CA: clients trust it directly as ca.crt.
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return key, builder.sign(key, hashes.SHA256())


def cert_pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM)
