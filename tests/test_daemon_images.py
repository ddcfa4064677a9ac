"""minirtd's pull, push, login, build and history, driven by docker-py and the docker CLI.

Registries are real (CNCF Distribution, from registry_fixtures): an anonymous
one and one with basic auth (student / s3cret). Images are published to them
with minirt's own push from a separate store, so a pull through the daemon
fetches a layer it does not have ("Pull complete") beside one it has
("Already exists"). Every name a test gives an image is removed afterwards.
"""

import base64
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time

import docker
import pytest
import requests

from daemon_fixtures import UnixHTTPConnection, docker_cli, process_gone, start_daemon
from minirt.engine import Engine
from minirt.errors import ImageNotFound
from minirt.image import busybox
from minirt.image.archive import MANIFEST_TYPES
from minirt.image.store import ImageStore
from minirt.registry.push import push
from registry_faults import FaultProxy, layered_image
from registry_fixtures import (basic_registry, free_port, registry,  # noqa: F401
                               token_registry, workdir)

CONTEXT_CAP = 1 << 20   # the daemon under test refuses build contexts over 1 MiB


# --- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def daemon_dir():
    # /tmp, not pytest's tmp_path: a Unix socket's path must fit in 108 bytes.
    directory = tempfile.mkdtemp(prefix="minirtd-img-", dir="/tmp")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(state_root, image_store, daemon_dir):
    # MINIRT_CONFIG: no login stored for the daemon's user, so only what clients send counts.
    env = {"MINIRT_CONFIG": os.path.join(daemon_dir, "minirt-config"),
           "MINIRT_MAX_BUILD_CONTEXT": str(CONTEXT_CAP)}
    running = start_daemon(state_root, f"unix://{daemon_dir}/minirt.sock", daemon_dir, env=env)
    yield running
    running.stop()
    assert running.process.returncode == 0, running.log
    assert not os.path.exists(running.socket_path), "minirtd left its socket file behind"
    assert process_gone(running.process.pid)
    leftovers = [n for n in os.listdir(state_root) if n.startswith("minirt-build-context-")]
    assert not leftovers, f"build contexts left behind: {leftovers}"


@pytest.fixture
def client(daemon, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))  # no stored logins
    client = docker.DockerClient(base_url=daemon.address, timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module", autouse=True)
def no_build_cache_left(state_root, image_store):
    """Builds tag their cached steps (minirt-build-cache:*): forget them afterwards."""
    yield
    from minirt.image import build
    build.prune_cache(Engine(state_root))


@pytest.fixture
def names(state_root):
    """Image names a test creates in the daemon's store; removed afterwards."""
    created: list[str] = []
    yield created
    engine = Engine(state_root)
    for name in created:
        try:
            engine.remove_image(name, force=True)
        except ImageNotFound:
            pass


@pytest.fixture
def source(workdir):
    """Another store (another machine, in effect): busybox plus one layer of its own."""
    store = ImageStore(os.path.join(workdir, "source"))
    busybox.ensure(store)
    image = layered_image(store, "lab/app:1", "busybox", [300_000], workdir,
                          seed=time.monotonic_ns())
    return store, image


def publish(store: ImageStore, local: str, remote: str, **kw):
    """Tag ``local`` as ``remote`` in ``store`` and push it with minirt's own client."""
    store.tag(remote, store.resolve(local).manifest_digest)
    try:
        return push(store, remote, **kw)
    finally:
        store.untag(remote)


def hidden_blobs(state_root: str) -> list[str]:
    """Temp files of unfinished downloads in the daemon's store (none may stay)."""
    blobs = os.path.join(state_root, "images", "blobs", "sha256")
    return [n for n in os.listdir(blobs) if n.startswith(".")] if os.path.isdir(blobs) else []


def statuses(lines: list[dict]) -> list[str]:
    return [line.get("status", "") for line in lines]


def auth_header(username: str, password: str, server: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(
        {"username": username, "password": password, "serveraddress": server}).encode()).decode()




def context_tar(files: dict[str, bytes]) -> io.BytesIO:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    data.seek(0)
    return data


# --- pull ----------------------------------------------------------------------------------
def test_docker_py_pull_streams_each_layer_then_is_up_to_date(client, registry, source, names):
    store, image = source
    remote = f"{registry.address}/lab/app"
    publish(store, "lab/app:1", f"{remote}:1")
    names.append(f"{remote}:1")
    since = int(time.time()) - 1
    lines = list(client.api.pull(remote, tag="1", stream=True, decode=True))
    assert not [line for line in lines if "error" in line], lines
    assert {"status": "Pulling from lab/app", "id": "1"} in lines
    base, own = image.layers[0].digest, image.layers[-1].digest
    assert {"status": "Already exists", "id": base[7:19]} in lines   # busybox is here already
    mine = [line for line in lines if line.get("id") == own[7:19]]
    assert mine[-1]["status"] == "Pull complete"
    downloading = [line for line in mine if line["status"] == "Downloading"]
    assert downloading and downloading[-1]["progressDetail"]["current"] == image.layers[-1].size
    assert downloading[-1]["progressDetail"]["total"] == image.layers[-1].size
    assert downloading[-1]["progress"].startswith("[")
    assert any(s.startswith("Digest: sha256:") for s in statuses(lines))
    assert statuses(lines)[-1] == f"Status: Downloaded newer image for {remote}:1"

    pulled = client.images.pull(remote, tag="1")  # docker-py's high level: the same, quietly
    assert pulled.id == image.id and f"{remote}:1" in pulled.tags
    again = list(client.api.pull(remote, tag="1", stream=True, decode=True))
    assert statuses(again)[-1] == f"Status: Image is up to date for {remote}:1"
    assert not any(s == "Pull complete" for s in statuses(again))
    events = client.events(decode=True, since=since, until=int(time.time()) + 1,
                           filters={"type": "image", "event": "pull"})
    assert f"{remote}:1" in [e["Actor"]["ID"] for e in events]


def test_pull_of_an_unknown_tag_is_404_with_the_registrys_error(client, daemon, registry, source):
    store, _ = source
    publish(store, "lab/app:1", f"{registry.address}/lab/app:1")
    with pytest.raises(docker.errors.NotFound) as missing:   # before any progress: a 404
        client.images.pull(f"{registry.address}/lab/app", tag="nope")
    assert "manifest unknown" in missing.value.explanation
    with pytest.raises(docker.errors.NotFound) as missing:
        client.images.pull(f"{registry.address}/lab/nothing-here", tag="1")
    assert "manifest unknown" in missing.value.explanation
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(f"{registry.address}/lab/app:nope")
    assert daemon.request("GET", "/_ping")[0] == 200


def test_pull_from_a_registry_that_is_down_is_a_clear_error(client, daemon):
    with pytest.raises(docker.errors.APIError) as refused:
        client.api.pull(f"127.0.0.1:{free_port()}/lab/app", tag="1")
    assert refused.value.status_code == 500
    assert "cannot reach the registry" in refused.value.explanation
    status, _, body = daemon.request("POST", "/v1.43/images/create?fromImage=Not%20A%20Name")
    assert status == 400 and "invalid reference" in body["message"]
    status, _, body = daemon.request("POST", "/v1.43/images/create?fromSrc=-")
    assert status == 501 and "minirt import" in body["message"]
    assert daemon.request("GET", "/_ping")[0] == 200


class Recorder:
    """What LazyStream's users see of it: ``send``, called from many threads."""

    def __init__(self):
        import threading
        self.lock, self.lines = threading.Lock(), []

    def send(self, value):
        with self.lock:
            self.lines.append(json.dumps(value))


def test_json_progress_is_rate_limited_per_layer_and_thread_safe():
    import threading
    from minirt.daemon.images import JSONProgress
    stream = Recorder()
    progress = JSONProgress(stream)
    digests = [f"sha256:{i:x}" + "0" * 63 for i in range(4)]

    took = {}

    def download(digest):
        started = time.monotonic()
        bar = progress.layer(digest, 100_000, "Downloading")
        for _ in range(100_000 // 100):
            bar.update(100)          # a thousand small chunks
        bar.close("Pull complete")
        took[digest] = time.monotonic() - started

    threads = [threading.Thread(target=download, args=(d,)) for d in digests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [json.loads(line) for line in stream.lines]
    for digest in digests:
        mine = [line for line in lines if line.get("id") == digest[7:19]]
        assert mine[0]["status"] == "Pulling fs layer" and mine[-1]["status"] == "Pull complete"
        updates = [line for line in mine if line["status"] == "Downloading"]
        assert 1 <= len(updates) <= took[digest] / 0.1 + 2   # one per 100 ms, not a thousand
        assert updates[-1]["progressDetail"] == {"current": 100_000, "total": 100_000}
        assert updates[-1]["progress"].startswith("[" + "=" * 50 + "]")


@pytest.fixture
def slow_image(registry, workdir):
    """``PROXY/lab/slow:1``: a 2 MB layer, served 16 KiB per 20 ms through a fault proxy."""
    store = ImageStore(os.path.join(workdir, "slow-source"))
    busybox.ensure(store)
    image = layered_image(store, "lab/slow:1", "busybox", [2_000_000], workdir,
                          seed=time.monotonic_ns())
    publish(store, "lab/slow:1", f"{registry.address}/lab/slow:1")
    proxy = FaultProxy(registry.address)
    try:
        yield proxy, image
    finally:
        proxy.close()


def test_download_progress_is_rate_limited_and_a_broken_download_is_an_error(
        client, daemon, state_root, slow_image, names):
    proxy, image = slow_image
    layer = image.layers[-1]
    proxy.faults[layer.digest] = "slow"
    remote = f"{proxy.address}/lab/slow"
    names.append(f"{remote}:1")
    started = time.monotonic()
    lines = list(client.api.pull(remote, tag="1", stream=True, decode=True))
    took = time.monotonic() - started
    progress = [line["progressDetail"]["current"] for line in lines
                if line.get("status") == "Downloading" and line.get("id") == layer.digest[7:19]]
    # The registry client reads 1 MiB at a time: an update per MiB, at most one per 100 ms.
    assert 2 <= len(progress) <= took / 0.1 + 3
    assert progress == sorted(progress) and progress[-1] == layer.size
    assert statuses(lines)[-1].startswith("Status: Downloaded newer image")
    client.images.remove(f"{remote}:1")

    proxy.faults[layer.digest] = "truncate"
    lines = list(client.api.pull(remote, tag="1", stream=True, decode=True))
    assert "error" in lines[-1] and "nothing was stored" in lines[-1]["error"]
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(f"{remote}:1")
    assert hidden_blobs(state_root) == []
    assert daemon.request("GET", "/_ping")[0] == 200


def test_a_client_that_hangs_up_stops_the_pull(daemon, state_root, slow_image, names):
    proxy, image = slow_image
    proxy.faults[image.layers[-1].digest] = "slow"
    remote = f"{proxy.address}/lab/slow"
    names.append(f"{remote}:1")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(10)
        raw.connect(daemon.socket_path)
        raw.sendall(f"POST /v1.43/images/create?fromImage={remote}&tag=1 HTTP/1.1\r\n"
                    "Host: d\r\nContent-Length: 0\r\n\r\n".encode())
        received = b""
        while b"Downloading" not in received:
            received += raw.recv(65536)
    deadline = time.monotonic() + 10   # the next progress write fails, and the pull stops
    while hidden_blobs(state_root) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hidden_blobs(state_root) == []
    status, _, _ = daemon.request("GET", f"/v1.43/images/{remote}:1/json")
    assert status == 404                       # no image appeared from the abandoned pull
    assert "Traceback" not in daemon.log       # a client leaving is no daemon error
    assert daemon.request("GET", "/_ping")[0] == 200


# --- push and login ------------------------------------------------------------------------
def test_docker_py_push_to_a_basic_auth_registry_needs_the_login(client, basic_registry, names):
    server, user, password = basic_registry
    remote = f"{server.address}/lab/pushed"
    client.images.get("busybox").tag(remote, "1")
    names.append(f"{remote}:1")
    refused = list(client.images.push(remote, tag="1", stream=True, decode=True))
    assert refused[0] == {"status": f"The push refers to repository [{remote}]"}
    assert "error" in refused[-1] and "needs a login" in refused[-1]["error"]

    lines = list(client.images.push(remote, tag="1", stream=True, decode=True,
                                    auth_config={"username": user, "password": password}))
    assert not [line for line in lines if "error" in line], lines
    assert "Pushed" in statuses(lines)
    aux = [line["aux"] for line in lines if "aux" in line][-1]
    assert aux["Tag"] == "1" and aux["Digest"].startswith("sha256:") and aux["Size"] > 0
    assert any(s.startswith(f"1: digest: {aux['Digest']} size: ") for s in statuses(lines))
    manifest = requests.get(f"http://{server.address}/v2/lab/pushed/manifests/1",
                            auth=(user, password), timeout=10,
                            headers={"Accept": ", ".join(MANIFEST_TYPES)})
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"] == aux["Digest"]

    again = list(client.images.push(remote, tag="1", stream=True, decode=True,
                                    auth_config={"username": user, "password": password}))
    assert "Layer already exists" in statuses(again)


def test_docker_py_login_checks_the_password_with_the_registry(client, basic_registry):
    server, user, password = basic_registry
    answer = client.login(user, password, registry=server.address, reauth=True)
    assert answer["Status"] == "Login Succeeded"
    with pytest.raises(docker.errors.APIError) as refused:
        client.login(user, "wrong", registry=server.address, reauth=True)
    assert refused.value.status_code == 401
    assert "login attempt" in refused.value.explanation


def test_login_and_pull_through_a_token_server(client, daemon, token_registry, names):
    user, password = token_registry.credentials
    address = token_registry.server.address
    assert client.login(user, password, registry=address, reauth=True)["Status"] == \
        "Login Succeeded"
    with pytest.raises(docker.errors.APIError) as refused:
        client.login(user, "wrong", registry=address, reauth=True)
    assert refused.value.status_code == 401
    remote = f"{address}/lab/token"
    client.images.get("busybox").tag(remote, "1")
    names.append(f"{remote}:1")
    login = {"username": user, "password": password}
    lines = list(client.images.push(remote, tag="1", stream=True, decode=True, auth_config=login))
    assert not [line for line in lines if "error" in line], lines
    client.images.remove(f"{remote}:1")
    fresh = docker.APIClient(base_url=daemon.address, timeout=60)  # no login kept
    try:
        with pytest.raises(docker.errors.APIError) as anonymous:  # anonymous on lab/: refused
            fresh.pull(remote, tag="1")
    finally:
        fresh.close()
    assert anonymous.value.status_code == 401 and "refused anonymous" in \
        anonymous.value.explanation
    lines = list(client.api.pull(remote, tag="1", stream=True, decode=True, auth_config=login))
    assert statuses(lines)[-1] == f"Status: Downloaded newer image for {remote}:1"


def test_a_malformed_registry_auth_header_is_400(daemon):
    status, _, body = daemon.request("POST", "/v1.43/images/busybox/push?tag=latest",
                                     headers={"X-Registry-Auth": "%%%not base64"})
    assert status == 400 and "X-Registry-Auth" in body["message"]
    status, _, body = daemon.request("POST", "/v1.43/images/no-such/push?tag=1",
                                     headers={"X-Registry-Auth": auth_header("a", "b", "x")})
    assert status == 404 and "does not exist locally" in body["message"]


# --- build ---------------------------------------------------------------------------------
def test_docker_py_builds_a_dockerfile_without_run(client, daemon, names):
    names += ["lab/built:1", "lab/built:also"]
    since = int(time.time()) - 1
    dockerfile = io.BytesIO(b"FROM busybox\nENV A=1\nLABEL x=y\n")
    image, logs = client.images.build(fileobj=dockerfile, tag="lab/built:1", rm=True)
    logs = list(logs)
    text = "".join(line.get("stream", "") for line in logs)
    assert "Step 1/3 : FROM busybox\n" in text and "Step 3/3 : LABEL x=y\n" in text
    assert f"Successfully built {image.id[7:19]}\n" in text
    assert "Successfully tagged lab/built:1\n" in text
    assert {"aux": {"ID": image.id}} in logs
    assert "A=1" in image.attrs["Config"]["Env"]
    assert image.attrs["Config"]["Labels"] == {"x": "y"}
    assert "lab/built:1" in image.tags
    # Again, with build args: the cache serves every step.
    lines = list(client.api.build(fileobj=io.BytesIO(b"FROM busybox\nENV A=1\nLABEL x=y\n"),
                                  tag="lab/built:1", decode=True, buildargs={"B": "2"}))
    text = "".join(line.get("stream", "") for line in lines)
    assert text.count("---> Using cache") == 2 and "[Warning] One or more build-args [B]" in text
    # Two tags and quiet, which docker-py cannot ask for: raw HTTP.
    conn = UnixHTTPConnection(daemon.socket_path, timeout=30)
    try:
        conn.request("POST", "/v1.43/build?t=lab/built:1&t=lab/built:also&q=1",
                     body=context_tar({"Dockerfile": b"FROM busybox\nENV A=1\nLABEL x=y\n"}),
                     headers={"Content-Type": "application/x-tar"})
        response = conn.getresponse()
        quiet = [json.loads(line) for line in response.read().splitlines()]
    finally:
        conn.close()
    assert response.status == 200
    assert [line["stream"] for line in quiet if "stream" in line] == [image.id + "\n"]
    assert client.images.get("lab/built:also").id == image.id
    events = client.events(decode=True, since=since, until=int(time.time()) + 1,
                           filters={"type": "image", "event": "tag"})
    assert {"lab/built:1", "lab/built:also"} <= {e["Actor"]["Attributes"]["name"] for e in events}
    history = client.api.history("lab/built:1")
    assert history[0]["Id"] == image.id
    assert sorted(history[0]["Tags"]) == ["lab/built:1", "lab/built:also"]
    assert [h["CreatedBy"] for h in history[:2]] == ["LABEL x=y", "ENV A=1"]
    assert history[0]["Size"] == 0 and history[-1]["Size"] > 0 and history[-1]["Id"] == "<missing>"


def test_a_failing_build_step_is_a_build_error(client):
    with pytest.raises(docker.errors.BuildError) as failed:
        client.images.build(fileobj=io.BytesIO(b"FROM no-such-base-image\n"), tag="lab/x:1")
    assert "no-such-base-image" in str(failed.value)
    with pytest.raises(docker.errors.APIError) as refused:  # refused before anything runs
        client.images.build(fileobj=io.BytesIO(b"FROM busybox\nEXPOSE 80\n"), tag="lab/x:1")
    assert refused.value.status_code == 400 and "EXPOSE" in refused.value.explanation


def test_docker_py_builds_a_run_step(client, engine, names):
    names.append("lab/built-run:1")
    image, logs = client.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN echo hi > /f\n"),
                                      tag="lab/built-run:1", nocache=True)
    text = "".join(line.get("stream", "") for line in logs)
    assert "Step 2/2 : RUN echo hi > /f\n" in text and " ---> Running in " in text
    result = engine.run("lab/built-run:1", ["cat", "/f"])
    assert result.exit_code == 0 and result.output == "hi\n"


def test_a_build_context_that_climbs_out_is_refused(client, daemon, state_root):
    context = context_tar({"Dockerfile": b"FROM busybox\n", "../escape": b"gotcha"})
    with pytest.raises(docker.errors.APIError) as refused:
        list(client.api.build(fileobj=context, custom_context=True, tag="lab/escape:1"))
    assert refused.value.status_code == 400
    assert "unsafe path" in refused.value.explanation
    assert not os.path.exists(os.path.join(state_root, "escape"))
    assert not os.path.exists(os.path.join(os.path.dirname(state_root), "escape"))
    with pytest.raises(docker.errors.APIError) as outside:
        list(client.api.build(fileobj=context_tar({"Dockerfile": b"FROM busybox\n"}),
                              custom_context=True, dockerfile="../../etc/passwd"))
    assert outside.value.status_code == 400 and "outside the build context" in \
        outside.value.explanation
    assert daemon.request("GET", "/_ping")[0] == 200


def test_a_build_context_over_the_cap_is_413(daemon):
    # Announced in Content-Length: refused before any of it is read.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(10)
        raw.connect(daemon.socket_path)
        raw.sendall(b"POST /v1.43/build?t=lab/big:1 HTTP/1.1\r\nHost: d\r\n"
                    b"Content-Type: application/x-tar\r\n"
                    b"Content-Length: %d\r\n\r\n" % (CONTEXT_CAP + 1))
        assert raw.recv(4096).startswith(b"HTTP/1.1 413 ")
    # Chunked: refused once the chunks add up to more than the cap.
    big = context_tar({"Dockerfile": b"FROM busybox\n", "big": os.urandom(CONTEXT_CAP + 4096)})
    conn = UnixHTTPConnection(daemon.socket_path, timeout=30)
    try:
        conn.putrequest("POST", "/v1.43/build?t=lab/big:1")
        conn.putheader("Content-Type", "application/x-tar")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            while chunk := big.read(64 * 1024):
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon stopped reading once it had seen enough
        response = conn.getresponse()
        assert response.status == 413 and b"too large" in response.read()
    finally:
        conn.close()
    assert daemon.request("GET", "/_ping")[0] == 200


# --- history and disk usage ----------------------------------------------------------------
def test_history_and_disk_usage_of_busybox(client):
    history = client.images.get("busybox").history()
    assert history[0]["Id"] == client.images.get("busybox").id
    assert history[0]["Tags"] == ["busybox:latest"]
    assert "busybox" in history[0]["CreatedBy"] and history[0]["Size"] > 0
    usage = client.df()
    assert usage["LayersSize"] > 0
    assert "busybox:latest" in [t for i in usage["Images"] for t in i["RepoTags"]]
    with pytest.raises(docker.errors.ImageNotFound):
        client.api.history("no-such-image:1")


# --- the docker CLI ------------------------------------------------------------------------
def test_docker_cli_pull_and_unknown_tag(daemon, registry, source, names):
    store, _ = source
    remote = f"{registry.address}/lab/app"
    publish(store, "lab/app:1", f"{remote}:1")
    names.append(f"{remote}:1")
    pulled = docker_cli(daemon, "pull", f"{remote}:1")
    assert pulled.returncode == 0, pulled.stderr
    assert "Pull complete" in pulled.stdout or "Already exists" in pulled.stdout
    assert f"Status: Downloaded newer image for {remote}:1" in pulled.stdout
    missing = docker_cli(daemon, "pull", f"{remote}:nope")
    assert missing.returncode != 0
    assert "manifest unknown" in missing.stderr
    down = docker_cli(daemon, "pull", f"127.0.0.1:{free_port()}/lab/app:1")
    assert down.returncode != 0 and "cannot reach the registry" in down.stderr
    assert daemon.request("GET", "/_ping")[0] == 200


def test_docker_cli_push_to_an_anonymous_registry(daemon, registry, names):
    remote = f"{registry.address}/lab/cli-push:1"
    names.append(remote)
    assert docker_cli(daemon, "tag", "busybox", remote).returncode == 0
    pushed = docker_cli(daemon, "push", remote)
    assert pushed.returncode == 0, pushed.stderr
    assert f"The push refers to repository [{registry.address}/lab/cli-push]" in pushed.stdout
    assert "1: digest: sha256:" in pushed.stdout


def test_docker_cli_login_then_push(daemon, basic_registry, names, tmp_path):
    server, user, password = basic_registry
    config = str(tmp_path / "docker-config")
    wrong = docker_cli(daemon, "login", "-u", user, "--password-stdin", server.address,
                       config=config, input="wrong\n")
    assert wrong.returncode != 0 and "login attempt" in wrong.stderr
    login = docker_cli(daemon, "login", "-u", user, "--password-stdin", server.address,
                       config=config, input=password + "\n")
    assert login.returncode == 0, login.stderr
    assert "Login Succeeded" in login.stdout
    with open(os.path.join(config, "config.json")) as f:
        assert server.address in json.load(f)["auths"]   # kept by the client, not the daemon
    remote = f"{server.address}/lab/cli-login:1"
    names.append(remote)
    assert docker_cli(daemon, "tag", "busybox", remote, config=config).returncode == 0
    pushed = docker_cli(daemon, "push", remote, config=config)
    assert pushed.returncode == 0, pushed.stderr
    anonymous = docker_cli(daemon, "push", remote, config=str(tmp_path / "nobody"))
    assert anonymous.returncode != 0 and "needs a login" in anonymous.stderr


def test_docker_cli_build_with_the_classic_builder_and_history(daemon, names, tmp_path):
    names.append("lab/cli-built:1")
    context = tmp_path / "context"
    context.mkdir()
    (context / "hello.txt").write_text("hello\n")
    built = docker_cli(daemon, "build", "-t", "lab/cli-built:1", "-f-", str(context),
                       input='FROM busybox\nCOPY hello.txt /hello.txt\nCMD ["cat", "/hello.txt"]\n',
                       env={"DOCKER_BUILDKIT": "0"})
    assert built.returncode == 0, built.stderr
    assert "Step 2/3 : COPY hello.txt /hello.txt" in built.stdout
    assert "Successfully tagged lab/cli-built:1" in built.stdout
    history = docker_cli(daemon, "history", "lab/cli-built:1")
    assert history.returncode == 0, history.stderr
    assert "COPY hello.txt /hello.txt" in history.stdout and "<missing>" in history.stdout
    usage = docker_cli(daemon, "system", "df")
    assert usage.returncode == 0, usage.stderr
    assert usage.stdout.split()[:2] == ["TYPE", "TOTAL"]
