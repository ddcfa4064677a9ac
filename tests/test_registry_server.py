"""The lab's registry process (minirt.registry.server) and the test registries.

The CLI tests start a real CNCF Distribution registry and check, by pid, that
nothing is left running; the fixture tests speak the distribution API to the
registries with plain ``requests``, so a broken fixture fails here and not in
the client's tests.
"""

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import time

import jwt
import pytest
import requests

from conftest import minirt_cli
from minirt.errors import RegistryError
from minirt.registry import server as registry_server
from registry_fixtures import (basic_registry, free_port, registry,  # noqa: F401 (fixtures)
                               require_registry_binary, self_signed, tls_registry,
                               token_registry, workdir)


def record_of(state_root: str) -> dict:
    with open(os.path.join(state_root, "registry", "registry.json")) as f:
        return json.load(f)


def gone(pid: int, started: int, timeout: float = 5.0) -> bool:
    """Has the process (pid + start time) exited within ``timeout``?"""
    server = registry_server.RegistryServer(pid, "127.0.0.1", 0, "", started)
    deadline = time.monotonic() + timeout
    while registry_server.alive(server):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def registries_serving(directory: str) -> list[int]:
    """Pids of docker-registry processes whose config is under ``directory``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "serve" in argv and any(a.startswith(directory) for a in argv):
            found.append(int(pid))
    return found


# -- the process, through the CLI ------------------------------------------------------


def test_registry_start_status_stop_leaves_no_process(workdir):
    require_registry_binary()
    port = free_port()
    started = minirt_cli("registry", "start", "--port", str(port), state_root=workdir)
    assert started.returncode == 0, started.stderr.decode()
    record = record_of(workdir)
    assert f"registry running at 127.0.0.1:{port} (pid {record['pid']})" in started.stdout.decode()
    try:
        assert requests.get(f"http://127.0.0.1:{port}/v2/", timeout=5).status_code == 200

        status = minirt_cli("registry", "status", state_root=workdir)
        assert status.returncode == 0
        assert status.stdout.decode() == (f"registry running at 127.0.0.1:{port} (pid "
                                          f"{record['pid']}), storage {workdir}/registry/data\n")

        again = minirt_cli("registry", "start", "--port", str(port), state_root=workdir)
        assert again.returncode == 0
        assert record_of(workdir) == record, "a second start must return the running registry"
    finally:
        stopped = minirt_cli("registry", "stop", state_root=workdir)
    assert stopped.returncode == 0, stopped.stderr.decode()
    assert gone(record["pid"], record["started"]), "the registry process is still there"
    assert not os.path.exists(os.path.join(workdir, "registry", "registry.json"))

    status = minirt_cli("registry", "status", state_root=workdir)
    assert (status.returncode, status.stdout.decode()) == (1, "registry not running\n")


def test_port_in_use_is_a_one_line_error_and_leaves_nothing(workdir):
    require_registry_binary()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = minirt_cli("registry", "start", "--port", str(port), state_root=workdir)
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert f"port {port} is already in use" in stderr and "--port" in stderr
    assert not os.path.exists(os.path.join(workdir, "registry", "registry.json"))
    assert registries_serving(workdir) == []


def test_start_is_not_fooled_by_another_registry_on_the_port(registry, workdir):
    # e.g. Debian's docker-registry service on :5000: its GET /v2/ answers too
    other = os.path.join(workdir, "other")
    with pytest.raises(RegistryError, match=f"port {registry.port} is already in use"):
        registry_server.start(other, port=registry.port)
    assert registry_server.status(other) is None and registries_serving(other) == []


def test_missing_binary_is_named_with_its_fix(workdir, monkeypatch):
    monkeypatch.setattr(registry_server, "BINARY", "docker-registry-not-installed")
    with pytest.raises(RegistryError, match=r"docker-registry is not installed: run `make setup`"):
        registry_server.start(os.path.join(workdir, "registry"), port=free_port())


def test_basic_auth_needs_an_htpasswd_file(workdir):
    # Distribution would make one up, with a user "docker" and a random password.
    require_registry_binary()
    auth = registry_server.BasicAuth(os.path.join(workdir, "missing"))
    with pytest.raises(RegistryError, match="no htpasswd file at"):
        registry_server.start(os.path.join(workdir, "registry"), port=free_port(), auth=auth)
    assert registries_serving(workdir) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "example.com"])
def test_registry_refuses_to_listen_beyond_loopback(workdir, host):
    with pytest.raises(RegistryError, match="loopback addresses only"):
        registry_server.start(os.path.join(workdir, "registry"), host=host, port=free_port())
    assert not os.path.exists(os.path.join(workdir, "registry", "registry.json"))


def test_status_after_kill_9_says_not_running_and_forgets_the_pid(workdir):
    require_registry_binary()
    started = minirt_cli("registry", "start", "--port", str(free_port()), state_root=workdir)
    assert started.returncode == 0, started.stderr.decode()
    record = record_of(workdir)
    os.kill(record["pid"], signal.SIGKILL)
    assert gone(record["pid"], record["started"])

    status = minirt_cli("registry", "status", state_root=workdir)
    assert (status.returncode, status.stdout.decode()) == (1, "registry not running\n")
    assert not os.path.exists(os.path.join(workdir, "registry", "registry.json"))


def test_stop_never_signals_a_reused_pid(workdir):
    # A record whose pid now names another process, which started at another time
    # (as after a reboot): stop must leave that process alone.
    directory = os.path.join(workdir, "registry")
    os.makedirs(directory)
    other = subprocess.Popen(["sleep", "60"])
    try:
        started = registry_server.process_start_time(other.pid)
        with open(os.path.join(directory, "registry.json"), "w") as f:
            json.dump({"pid": other.pid, "host": "127.0.0.1", "port": 5000, "root": directory,
                       "started": started - 1, "tls": False}, f)
        assert registry_server.status(directory) is None
        assert registry_server.stop(directory) is False
        assert other.poll() is None, "stop signalled a process that is not the registry"
        assert not os.path.exists(os.path.join(directory, "registry.json"))
    finally:
        other.kill()
        other.wait()


# -- the fixtures, proven against the real registry ------------------------------------


def push_blob(url: str, repository: str, data: bytes, headers=None) -> requests.Response:
    """A monolithic blob upload: POST opens the upload, PUT ?digest= sends it all."""
    opened = requests.post(f"{url}/v2/{repository}/blobs/uploads/", headers=headers, timeout=5)
    if opened.status_code != 202:
        return opened
    location = opened.headers["Location"]
    location = location if location.startswith("http") else url + location
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return requests.put(location, params={"digest": digest}, data=data, timeout=5,
                        headers={**(headers or {}), "Content-Type": "application/octet-stream"})


def test_anonymous_registry_takes_pushes_and_deletes(registry):
    assert registry.url == f"http://127.0.0.1:{registry.port}"
    assert requests.get(registry.url + "/v2/", timeout=5).status_code == 200
    config = b"{}"
    assert push_blob(registry.url, "lab/empty", config).status_code == 201
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": []}).encode()
    put = requests.put(registry.url + "/v2/lab/empty/manifests/v1", data=manifest, timeout=5,
                       headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert put.status_code == 201, put.text
    digest = put.headers["Docker-Content-Digest"]
    assert digest == "sha256:" + hashlib.sha256(manifest).hexdigest()
    # storage.delete.enabled: without it this is 405 UNSUPPORTED
    assert requests.delete(f"{registry.url}/v2/lab/empty/manifests/{digest}",
                           timeout=5).status_code == 202


def test_basic_registry_wants_the_student_password(basic_registry):
    server, user, password = basic_registry
    anonymous = requests.get(server.url + "/v2/", timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert requests.get(server.url + "/v2/", auth=(user, "wrong"), timeout=5).status_code == 401
    assert requests.get(server.url + "/v2/", auth=(user, password), timeout=5).status_code == 200


def ask_token(reg, scope: str, auth=None) -> requests.Response:
    return requests.get(reg.token_url, params={"service": reg.service, "scope": scope},
                        auth=auth, timeout=5)


def granted(token: str) -> list[dict]:
    return jwt.decode(token, options={"verify_signature": False})["access"]


def test_token_registry_sends_clients_to_its_token_server(token_registry):
    challenge = requests.get(token_registry.server.url + "/v2/", timeout=5)
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"] == (
        f'Bearer realm="{token_registry.token_url}",service="{token_registry.service}"')


def test_anonymous_token_pulls_public_repositories_only(token_registry):
    url = token_registry.server.url
    answer = ask_token(token_registry, "repository:public/x:pull").json()
    assert answer["token"] == answer["access_token"] and answer["expires_in"] == 300
    bearer = {"Authorization": f"Bearer {answer['token']}"}
    # 404 MANIFEST_UNKNOWN, not 401: the token was accepted
    manifest = requests.get(url + "/v2/public/x/manifests/latest", headers=bearer, timeout=5)
    assert manifest.status_code == 404 and manifest.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert requests.get(url + "/v2/", headers=bearer, timeout=5).status_code == 200

    push = ask_token(token_registry, "repository:public/x:pull,push").json()["token"]
    assert granted(push) == [{"type": "repository", "name": "public/x", "actions": ["pull"]}]
    assert push_blob(url, "public/x", b"layer", {"Authorization": f"Bearer {push}"}).status_code == 401

    private = ask_token(token_registry, "repository:private/x:pull").json()["token"]
    assert granted(private)[0]["actions"] == []
    assert requests.get(url + "/v2/private/x/manifests/latest", timeout=5,
                        headers={"Authorization": f"Bearer {private}"}).status_code == 401
    assert [r["authenticated"] for r in token_registry.requests] == [False, False, False]
    assert token_registry.requests[0]["query"]["scope"] == ["repository:public/x:pull"]


def test_student_token_pushes_and_wrong_password_is_refused(token_registry):
    token = ask_token(token_registry, "repository:private/x:pull,push",
                      auth=token_registry.credentials).json()["token"]
    assert granted(token)[0]["actions"] == ["pull", "push"]
    assert jwt.get_unverified_header(token)["x5c"]  # the signing certificate travels along
    pushed = push_blob(token_registry.server.url, "private/x", b"layer",
                       {"Authorization": f"Bearer {token}"})
    assert pushed.status_code == 201, pushed.text

    wrong = ask_token(token_registry, "repository:private/x:pull", auth=("student", "nope"))
    assert wrong.status_code == 401
    assert [(r["user"], r["authenticated"]) for r in token_registry.requests] == [
        ("student", True), ("student", False)]


def test_token_signed_by_another_key_is_refused(token_registry):
    from cryptography.hazmat.primitives import serialization
    key, cert = self_signed("impostor", rsa_key=True)
    now = int(time.time())
    forged = jwt.encode(
        {"iss": "minirt-test-token-issuer", "sub": "student", "aud": token_registry.service,
         "iat": now, "nbf": now, "exp": now + 300, "jti": "forged",
         "access": [{"type": "repository", "name": "private/x", "actions": ["pull"]}]},
        key, algorithm="RS256",
        headers={"x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]})
    answer = requests.get(token_registry.server.url + "/v2/private/x/manifests/latest", timeout=5,
                          headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 401


def test_tls_registry_speaks_https_only(tls_registry):
    server = tls_registry.server
    assert server.host == "127.0.1.1" and server.url == f"https://127.0.1.1:{server.port}"
    assert requests.get(server.url + "/v2/", verify=tls_registry.ca_cert, timeout=5).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):  # not trusted without the CA
        requests.get(server.url + "/v2/", timeout=5)
    try:
        plain = requests.get(f"http://127.0.1.1:{server.port}/v2/", timeout=5).status_code
    except requests.exceptions.ConnectionError:
        plain = "refused"
    assert plain in (400, "refused")
