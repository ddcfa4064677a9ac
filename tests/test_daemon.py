"""minirtd speaks the Docker Engine API: the real docker CLI and docker-py drive it.

The daemon runs as a subprocess (``python -m minirt daemon -H unix://...``) on
the tests' state root, and is stopped by its pid at the end: its socket file
must be gone and the process dead. The compatibility tests use only real
clients; the fault tests speak raw HTTP over the socket with ``http.client``.
"""

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time

import docker  # docker-py: a real client, so a missing one is a failure, not a skip
import pytest

import minirt
from conftest import require
from daemon_fixtures import (DOCKER_CLI, UnixHTTPConnection, docker_cli, process_gone, serving,
                             socket_dir, start_daemon)



@pytest.fixture(scope="module")
def workdir():
    yield from socket_dir("minirtd-test-")


@pytest.fixture(scope="module")
def daemon(state_root, image_store, workdir):
    yield from serving(state_root, workdir)


@pytest.fixture
def client(daemon):
    client = docker.DockerClient(base_url=daemon.address, timeout=20)
    yield client
    client.close()




# --- docker-py -------------------------------------------------------------------------
def test_docker_py_negotiates_version_and_reads_daemon_facts(client, state_root):
    assert client.ping() is True
    version = client.version()
    assert version["Version"] == minirt.__version__
    assert version["ApiVersion"] == client.api.api_version == "1.43"
    assert version["Os"] == "linux" and version["KernelVersion"] == os.uname().release
    assert version["Components"][0]["Name"] == "Engine"
    info = client.info()
    assert info["DockerRootDir"] == state_root
    assert info["Images"] >= 1
    assert info["Driver"] in ("overlay2", "copy")
    assert info["CgroupDriver"] in ("cgroupfs", "none")
    assert info["CgroupVersion"] in ("1", "2", "")
    assert info["ServerVersion"] == minirt.__version__
    assert info["NCPU"] == os.cpu_count() and info["MemTotal"] > 0
    assert info["Containers"] == info["ContainersRunning"] + info["ContainersPaused"] + \
        info["ContainersStopped"]


def test_ping_headers_tell_the_client_what_it_talks_to(daemon):
    for method in ("GET", "HEAD"):
        status, response, body = daemon.request(method, "/_ping")
        assert status == 200
        assert body == (b"OK" if method == "GET" else b"")
        assert response.getheader("API-Version") == "1.43"
        assert response.getheader("Docker-Experimental") == "false"
        assert response.getheader("OSType") == "linux"


def test_docker_py_lists_and_inspects_busybox(client):
    tags = [tag for image in client.images.list() for tag in image.tags]
    assert "busybox:latest" in tags
    attrs = client.images.get("busybox").attrs
    assert attrs["Id"].startswith("sha256:") and len(attrs["Id"]) == 71
    assert attrs["RepoTags"] == ["busybox:latest"]
    assert attrs["RootFS"]["Type"] == "layers"
    assert attrs["RootFS"]["Layers"] and all(l.startswith("sha256:") for l in attrs["RootFS"]["Layers"])
    assert attrs["Config"]["Cmd"] == ["sh"]
    assert attrs["Os"] == "linux" and attrs["Architecture"]
    assert attrs["Size"] > 0 and isinstance(attrs["Created"], str)
    summary = client.api.images(name="busybox")[0]
    assert {"Id", "ParentId", "RepoTags", "RepoDigests", "Created", "Size", "Labels",
            "Containers"} <= set(summary)
    assert isinstance(summary["Created"], int)


def test_docker_py_tag_and_remove_show_up_as_events(client):
    since = int(time.time()) - 1
    image = client.images.get("busybox")
    assert image.tag("lab/daemon-test", "1") is True
    assert client.images.get("lab/daemon-test:1").id == image.id
    removed = client.api.remove_image("lab/daemon-test:1")
    assert {"Untagged": "lab/daemon-test:1"} in removed
    assert not any("Deleted" in r for r in removed)  # busybox:latest still uses every blob
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("lab/daemon-test:1")
    events = list(client.events(decode=True, since=since, until=int(time.time()) + 1))
    mine = [(e["Type"], e["Action"], e["Actor"]["Attributes"].get("name")) for e in events]
    assert ("image", "tag", "lab/daemon-test:1") in mine
    assert ("image", "untag", "lab/daemon-test:1") in mine
    assert all({"Type", "Action", "Actor", "time", "timeNano"} <= set(e) for e in events)
    only_tags = list(client.events(decode=True, since=since, until=int(time.time()) + 1,
                                   filters={"event": "tag"}))
    assert only_tags and all(e["Action"] == "tag" for e in only_tags)


def test_docker_py_unknown_image_and_container_are_not_found(client):
    assert isinstance(client.containers.list(all=True), list)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("no-such-container")
    with pytest.raises(docker.errors.NotFound):
        client.api.remove_container("no-such-container")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("no-such-image:1")


def test_an_exited_container_is_listed_inspected_and_removed(client, daemon, engine, state_root):
    result = engine.run("busybox", ["sh", "-c", "exit 3"], remove=False, name="daemon-exited")
    assert result.exit_code == 3
    container = client.containers.get("daemon-exited")
    assert container.id == result.container_id
    assert container.status == "exited"
    assert container.attrs["State"]["ExitCode"] == 3
    assert container.attrs["Config"]["Cmd"] == ["sh", "-c", "exit 3"]
    assert container.attrs["Image"] == client.images.get("busybox").id
    assert container.name in [c.name for c in client.containers.list(all=True)]
    assert container.name not in [c.name for c in client.containers.list()]
    summary = client.api.containers(all=True, filters={"name": "daemon-exited"})[0]
    assert summary["Names"] == ["/daemon-exited"] and summary["State"] == "exited"
    assert summary["Status"].startswith("Exited (3) ")
    if DOCKER_CLI:
        listed = docker_cli(daemon, "ps", "-a")
        assert listed.returncode == 0 and "daemon-exited" in listed.stdout
        assert "Exited (3)" in listed.stdout
    with pytest.raises(docker.errors.APIError) as refused:  # busybox is used by a container
        client.images.remove("busybox")
    assert refused.value.status_code == 409
    since = int(time.time()) - 1
    container.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("daemon-exited")
    events = client.events(decode=True, since=since, until=int(time.time()) + 1,
                           filters={"type": "container"})
    assert ("destroy", result.container_id) in [(e["Action"], e["Actor"]["ID"]) for e in events]


# --- the docker CLI --------------------------------------------------------------------
def test_docker_cli_version_shows_minirt_as_the_server(daemon):
    shown = docker_cli(daemon, "version", "--format", "{{json .}}")
    assert shown.returncode == 0, shown.stderr
    both = json.loads(shown.stdout)
    assert both["Client"]["Version"]
    assert both["Server"]["Version"] == minirt.__version__
    assert both["Server"]["ApiVersion"] == "1.43"
    plain = docker_cli(daemon, "version")
    assert plain.returncode == 0 and "Server: minirt" in plain.stdout


def test_docker_cli_info_prints_without_error(daemon, state_root):
    shown = docker_cli(daemon, "info")
    assert shown.returncode == 0, shown.stderr
    assert f"Docker Root Dir: {state_root}" in shown.stdout
    assert f"Server Version: {minirt.__version__}" in shown.stdout


def test_docker_cli_images_inspect_tag_rmi(daemon):
    listed = docker_cli(daemon, "images")
    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[:2] == ["busybox", "latest"] for line in listed.stdout.splitlines())
    inspected = docker_cli(daemon, "image", "inspect", "busybox")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)[0]["RepoTags"] == ["busybox:latest"]
    tagged = docker_cli(daemon, "tag", "busybox", "lab/cli-tag:2")
    assert tagged.returncode == 0, tagged.stderr
    assert "lab/cli-tag" in docker_cli(daemon, "images").stdout
    removed = docker_cli(daemon, "rmi", "lab/cli-tag:2")
    assert removed.returncode == 0, removed.stderr
    assert "Untagged: lab/cli-tag:2" in removed.stdout
    assert "lab/cli-tag" not in docker_cli(daemon, "images").stdout
    missing = docker_cli(daemon, "image", "inspect", "no-such-image")
    assert missing.returncode != 0


def test_docker_cli_ps_all(daemon):
    listed = docker_cli(daemon, "ps", "-a")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:2] == ["CONTAINER", "ID"]


def test_docker_cli_pause_is_refused_honestly(daemon):
    refused = docker_cli(daemon, "pause", "no-such-container")
    assert refused.returncode != 0
    assert "does not implement POST /containers/no-such-container/pause" in refused.stderr


# --- the request log -------------------------------------------------------------------
def test_request_log_shows_each_call_a_client_made(client, daemon):
    status, _, before = daemon.request("GET", "/minirt/requests")
    last = before[-1]["id"] if before else 0
    client.images.list()
    status, _, after = daemon.request("GET", f"/minirt/requests?since={last}")
    assert status == 200
    calls = [(e["method"], e["path"].split("?")[0], e["status"]) for e in after]
    assert ("GET", "/v1.43/images/json", 200) in calls
    assert all(e["duration_ms"] is not None for e in after if e["path"].startswith("/v1.43/images"))
    assert "minirtd: GET /v1.43/images/json" in daemon.log


# --- faults ----------------------------------------------------------------------------
def test_malformed_json_is_400_and_the_daemon_keeps_answering(daemon):
    status, _, body = daemon.request("POST", "/v1.43/commit?container=x&repo=y", body=b"{not json",
                                     headers={"Content-Type": "application/json"})
    assert status == 400 and "malformed JSON" in body["message"]
    status, _, body = daemon.request("GET", '/v1.43/containers/json?filters={"status":')
    assert status == 400 and "filter" in body["message"]
    assert daemon.request("GET", "/_ping")[0] == 200


def test_a_huge_body_is_413(daemon):
    # Announced in Content-Length: refused from the header alone, before any of it is read.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(10)
        raw.connect(daemon.socket_path)
        raw.sendall(b"POST /v1.43/containers/create HTTP/1.1\r\nHost: d\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 413 ")
    # Chunked (no length up front): refused once the chunks add up to more than the cap.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(10)
        raw.connect(daemon.socket_path)
        raw.sendall(b"POST /v1.43/commit?container=x&repo=y HTTP/1.1\r\nHost: d\r\n"
                    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (1024 * 1024, b" " * (1024 * 1024))
        try:
            for _ in range(17):
                raw.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon stopped reading once it had seen enough
        answer = raw.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413 ") and b"too large" in answer
    assert daemon.request("GET", "/_ping")[0] == 200


def test_unknown_and_unsupported_endpoints_answer_in_dockers_error_shape(daemon):
    status, response, body = daemon.request("GET", "/v1.43/no/such/thing")
    assert status == 404 and response.getheader("Content-Type") == "application/json"
    assert set(body) == {"message"}
    status, _, body = daemon.request("POST", "/v1.43/containers/x/pause")
    assert status == 501 and "does not implement" in body["message"]
    status, _, body = daemon.request("POST", "/v1.43/networks/bridge/connect")
    assert status == 501
    status, _, body = daemon.request("GET", "/v1.99/version")
    assert status == 400 and "too new" in body["message"]


def test_keep_alive_serves_several_requests_on_one_connection(daemon):
    conn = UnixHTTPConnection(daemon.socket_path)
    try:
        for path in ("/_ping", "/v1.43/version", "/v1.43/images/json", "/v1.43/nope", "/_ping"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status in (200, 404)
            assert not response.will_close
    finally:
        conn.close()


def test_hijacked_connection_carries_raw_bytes_both_ways(daemon):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(10)
        raw.connect(daemon.socket_path)
        raw.sendall(b"POST /v1.43/minirt/echo HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n"
                    b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\nearly bytes|")
        received = b""
        while b"\r\n\r\n" not in received:
            received += raw.recv(4096)
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0] == "HTTP/1.1 101 UPGRADED"
        assert "Upgrade: tcp" in lines and "Connection: Upgrade" in lines
        assert "Content-Type: application/vnd.docker.raw-stream" in lines
        raw.sendall(b"and later ones")
        raw.shutdown(socket.SHUT_WR)
        while True:
            chunk = raw.recv(4096)
            if not chunk:
                break
            rest += chunk
        assert rest == b"early bytes|and later ones"


def test_socket_is_0660(daemon):
    st = os.stat(daemon.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_a_second_daemon_on_the_same_socket_refuses(daemon, state_root, workdir):
    second = start_daemon(state_root, daemon.address, workdir, wait=False)
    second.process.wait(timeout=30)
    assert second.process.returncode == 125
    assert f"a daemon is already listening on {daemon.address}" in second.log
    assert daemon.request("GET", "/_ping")[0] == 200  # the first one is untouched


def test_stale_socket_is_replaced_and_sigterm_removes_it(state_root, image_store, workdir):
    path = os.path.join(workdir, "stale.sock")
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(path)   # bound, never listening: what a killed daemon leaves behind
    leftover.close()
    assert os.path.exists(path)
    running = start_daemon(state_root, f"unix://{path}", workdir)
    assert running.request("GET", "/_ping")[0] == 200
    running.stop()
    assert running.process.returncode == 0
    assert not os.path.exists(path)
    assert process_gone(running.process.pid)
    assert "stopped (SIGTERM)" in running.log


def test_tcp_on_all_interfaces_is_refused(state_root, workdir):
    refused = start_daemon(state_root, "tcp://0.0.0.0:1234", workdir, wait=False)
    refused.process.wait(timeout=30)
    assert refused.process.returncode == 125
    assert "refusing to listen on tcp://0.0.0.0:1234" in refused.log
    script = os.path.join(os.path.dirname(sys.executable), "minirtd")  # the console script
    if os.path.exists(script):
        also = subprocess.run([script, "-H", "tcp://10.0.0.1:2375"], capture_output=True,
                              text=True, timeout=30)
        assert also.returncode == 125 and "refusing to listen" in also.stderr


def test_tcp_on_loopback_works_and_warns(state_root, image_store, workdir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = start_daemon(state_root, f"tcp://127.0.0.1:{port}", workdir)
    try:
        client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}", timeout=20)
        assert client.version()["Version"] == minirt.__version__
        assert "WARNING" in client.info()["Warnings"][0]
        client.close()
        assert "unauthenticated" in running.log
    finally:
        running.stop()
    assert running.process.returncode == 0
    assert process_gone(running.process.pid)


# --- the server's own guarantees, in-process --------------------------------------------
class TinyApp:
    """An app that crashes on /boom and streams on /stream: what the server does with that."""

    def __init__(self):
        import io

        from minirt.daemon.server import RequestLog
        self.requests = RequestLog(io.StringIO())

    def headers(self):
        return {"Api-Version": "1.43"}

    def __call__(self, request):
        if request.path == "/boom":
            raise RuntimeError("a bug in a handler")
        if request.path == "/stream":
            with request.json_stream() as stream:
                for n in range(3):
                    stream.send({"status": "step", "n": n})
            return
        request.send(200, b"OK", "text/plain")


def test_a_crashing_handler_is_a_500_and_the_server_keeps_serving(workdir, capsys):
    from minirt.daemon.server import make_server
    path = os.path.join(workdir, "tiny.sock")
    server = make_server(f"unix://{path}", TinyApp())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        conn = UnixHTTPConnection(path)
        conn.request("GET", "/boom")
        response = conn.getresponse()
        assert response.status == 500
        assert json.loads(response.read()) == {
            "message": "minirtd internal error: RuntimeError: a bug in a handler"}
        conn.request("GET", "/stream")  # same connection: still usable
        response = conn.getresponse()
        assert response.getheader("Transfer-Encoding") == "chunked"
        lines = response.read().decode().splitlines()
        assert [json.loads(line)["n"] for line in lines] == [0, 1, 2]
        conn.request("GET", "/ok")
        assert conn.getresponse().read() == b"OK"
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
        server.remove_socket()
        thread.join()
    assert not os.path.exists(path)
    assert "RuntimeError: a bug in a handler" in capsys.readouterr().err  # the traceback, logged


def test_removing_an_image_by_id_with_several_tags_needs_force(client):
    image = client.images.get("busybox")
    image.tag("lab/second-name", "1")
    with pytest.raises(docker.errors.APIError) as refused:
        client.api.remove_image(image.short_id)
    assert refused.value.status_code == 409
    assert "referenced in multiple repositories" in refused.value.explanation
    removed = client.api.remove_image("lab/second-name:1")  # by name: just that tag
    assert removed == [{"Untagged": "lab/second-name:1"}]
    assert client.images.get("busybox").tags == ["busybox:latest"]


def test_addresses_default_to_a_private_socket_and_refuse_the_network(monkeypatch):
    from minirt.daemon.server import DaemonError, parse_address
    from minirt.errors import UsageError
    if os.geteuid() == 0:
        assert parse_address(None) == ("unix", "/run/minirt/minirt.sock")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert parse_address(None) == ("unix", "/run/user/1000/minirt.sock")
    assert parse_address("unix:///tmp/x.sock") == ("unix", "/tmp/x.sock")
    assert parse_address("tcp://127.0.0.1:2375") == ("tcp", ("127.0.0.1", 2375))
    assert parse_address("tcp://[::1]:2375") == ("tcp", ("::1", 2375))
    for exposed in ("tcp://0.0.0.0:2375", "tcp://192.168.1.5:2375", "tcp://[::]:2375"):
        with pytest.raises(DaemonError, match="refusing to listen"):
            parse_address(exposed)
    for nonsense in ("unix://relative.sock", "tcp://127.0.0.1", "ssh://host", "fd://"):
        with pytest.raises(UsageError):
            parse_address(nonsense)


def test_socket_belongs_to_the_minirt_group_when_there_is_one(state_root, image_store, workdir):
    """Members of group ``minirt`` may use the daemon, as members of ``docker`` may use
    dockerd: the socket is root:minirt 0660. The group is made for the test, then removed."""
    import grp
    require(os.geteuid() == 0 and shutil.which("groupadd") is not None,
            "needs root and groupadd to make the minirt group")
    try:
        grp.getgrnam("minirt")
        made = False
    except KeyError:
        subprocess.run(["groupadd", "--system", "minirt"], check=True)
        made = True
    try:
        address = f"unix://{workdir}/grouped.sock"
        running = start_daemon(state_root, address, workdir)
        try:
            st = os.stat(running.socket_path)
            assert st.st_gid == grp.getgrnam("minirt").gr_gid
            assert stat.S_IMODE(st.st_mode) == 0o660
        finally:
            running.stop()
    finally:
        if made:
            subprocess.run(["groupdel", "minirt"], check=True)
