"""``docker run`` against minirtd: the container endpoints, driven by real clients.

The daemon runs as a subprocess on the tests' state root with the tests' cgroup
parent; docker-py and the real docker CLI talk to it over its Unix socket. The
``engine`` fixture checks after each test that nothing is left on that state
root: no container directory, cgroup, mount or process, and here also no shim.
Faults speak raw HTTP; the daemon must keep serving after each.
"""

import fcntl
import json
import os
import pty
import select
import signal
import socket
import struct
import termios
import threading
import time

import docker
import pytest

from conftest import CGROUP_PARENT, shims_under
from daemon_fixtures import DOCKER_CLI, cli_env, docker_cli, serving, socket_dir, start_daemon
from minirt.engine import Engine

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def workdir():
    yield from socket_dir("minirtd-ctr-")


@pytest.fixture(scope="module")
def daemon(state_root, image_store, workdir):
    yield from serving(state_root, workdir)


@pytest.fixture
def client(daemon, engine):
    """docker-py on minirtd; after the test, nothing of it is left (``engine``), no shim either."""
    client = docker.DockerClient(base_url=daemon.address, timeout=30)
    yield client
    client.close()
    deadline = time.monotonic() + 5
    while shims_under(engine.root) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not shims_under(engine.root), "a shim outlived its container"








def cgroup_file(engine, container_id: str, v1: tuple[str, str], v2: str) -> str:
    """A limit as the kernel holds it, in the container's cgroup (v1: controller, file)."""
    cgroup = engine.cgroups.cgroup(container_id)
    if engine.cgroups.version == 1:
        path = os.path.join(cgroup.dirs[v1[0]], v1[1])
    else:
        path = os.path.join(cgroup.path, v2)
    with open(path) as f:
        return f.read().strip()


def container_events(client, since: float, container_id: str) -> list[dict]:
    return list(client.events(decode=True, since=since, until=time.time() + 1,
                              filters={"container": container_id}))


def raw_request(daemon, request: bytes) -> socket.socket:
    """Send a request by hand; returns the socket after the response header (hijack tests)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.connect(daemon.socket_path)
    sock.sendall(request)
    header = b""
    while b"\r\n\r\n" not in header:
        data = sock.recv(1)
        assert data, f"the daemon closed the connection: {header!r}"
        header += data
    assert header.startswith(b"HTTP/1.1 101 "), header
    return sock


def read_frames(data: bytes) -> list[tuple[int, bytes]]:
    frames, at = [], 0
    while at < len(data):
        assert data[at + 1:at + 4] == b"\0\0\0", data
        size = int.from_bytes(data[at + 4:at + 8], "big")
        frames.append((data[at], data[at + 8:at + 8 + size]))
        at += 8 + size
    return frames


# --- docker-py -------------------------------------------------------------------------
def test_docker_py_run_returns_the_output(client):
    assert client.containers.run("busybox", "echo hi", remove=True) == b"hi\n"
    with pytest.raises(docker.errors.ContainerError) as failed:
        client.containers.run("busybox", ["sh", "-c", "echo oops >&2; exit 3"], remove=True)
    assert failed.value.exit_status == 3 and b"oops" in failed.value.stderr
    assert client.containers.list(all=True) == []


def test_docker_py_detached_run_gets_its_limits_env_hostname_and_workdir(client, engine):
    since = time.time()
    container = client.containers.run(
        "busybox", ["sh", "-c", "hostname; echo A=$A; pwd; echo up; sleep 1000"], detach=True,
        mem_limit="64m", nano_cpus=500_000_000, pids_limit=32, environment={"A": "1"},
        working_dir="/tmp", hostname="box", labels={"lab": "containers"}, name="py-detached")
    try:
        lines = []
        for chunk in container.logs(stream=True):
            lines += chunk.decode().splitlines()
            if "up" in lines:
                break
        assert lines[:4] == ["box", "A=1", "/tmp", "up"]
        # The limits are the kernel's, in the container's cgroup, not just in our records.
        assert int(cgroup_file(engine, container.id, ("memory", "memory.limit_in_bytes"),
                               "memory.max")) == 64 * MiB
        assert cgroup_file(engine, container.id, ("pids", "pids.max"), "pids.max") == "32"
        quota = cgroup_file(engine, container.id, ("cpu", "cpu.cfs_quota_us"), "cpu.max")
        assert quota.split()[0] == "50000"
        container.reload()
        attrs = container.attrs
        assert attrs["Name"] == "/py-detached" and attrs["State"]["Running"]
        assert attrs["State"]["Status"] == "running" and attrs["State"]["Pid"] > 0
        assert attrs["HostConfig"]["Memory"] == 64 * MiB
        assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
        assert attrs["HostConfig"]["PidsLimit"] == 32
        assert attrs["Config"]["Hostname"] == "box" and "A=1" in attrs["Config"]["Env"]
        assert attrs["Config"]["WorkingDir"] == "/tmp"
        assert attrs["Config"]["Labels"] == {"lab": "containers"}
        assert [c.id for c in client.containers.list(filters={"label": "lab=containers"})] == \
            [container.id]
        assert any("sleep 1000" in row[-1] for row in container.top()["Processes"])
        container.stop(timeout=1)  # sleep as PID 1 ignores SIGTERM: SIGKILL after 1 s
        assert container.wait()["StatusCode"] in (137, 143)
        container.reload()
        assert container.status == "exited" and container.attrs["State"]["ExitCode"] in (137, 143)
        image = container.commit(repository="lab/daemon-commit", tag="1")
        assert client.images.get("lab/daemon-commit:1").id == image.id
        client.images.remove("lab/daemon-commit:1")
    finally:
        container.remove(force=True)
    events = container_events(client, since, container.id)
    actions = [e["Action"] for e in events]
    for action in ("create", "start", "kill", "die", "stop", "destroy"):
        assert action in actions, actions
    assert actions.index("die") < actions.index("stop") < actions.index("destroy")
    die = next(e for e in events if e["Action"] == "die")
    assert die["Actor"]["Attributes"]["exitCode"] in ("137", "143")
    assert die["Actor"]["Attributes"]["name"] == "py-detached"


def test_attach_and_wait_before_start_see_everything_even_with_auto_remove(client):
    container = client.containers.create("busybox", ["sh", "-c", "echo out; echo err >&2; exit 4"],
                                         auto_remove=True)
    # docker run's order: attach, wait, and only then start.
    output = client.api.attach(container.id, stream=True, demux=True)
    waited = {}
    waiter = threading.Thread(target=lambda: waited.update(
        client.api.wait(container.id, condition="removed", timeout=30)))
    waiter.start()
    time.sleep(0.2)  # the wait request is in place (its header came back)
    container.start()
    out = err = b""
    for stdout, stderr in output:
        out += stdout or b""
        err += stderr or b""
    waiter.join(30)
    assert (out, err) == (b"out\n", b"err\n")
    assert waited == {"StatusCode": 4, "Error": None}
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(container.id)


def test_stdin_goes_through_attach_and_a_half_close_ends_it(client, daemon):
    container = client.containers.create("busybox", ["sh", "-c", "cat; echo done"],
                                         stdin_open=True)
    try:
        sock = raw_request(daemon, (
            f"POST /v1.43/containers/{container.id}/attach?stream=1&stdin=1&stdout=1&stderr=1 "
            "HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n").encode())
        with sock:
            sock.sendall(b"sent before start\n")  # kept until the container has a stdin
            container.start()
            sock.sendall(b"and after\n")
            sock.shutdown(socket.SHUT_WR)  # EOF on the container's stdin: cat ends
            raw = b""
            while data := sock.recv(65536):
                raw += data
        assert b"".join(d for n, d in read_frames(raw) if n == 1) == \
            b"sent before start\nand after\ndone\n"
        assert container.wait(timeout=10)["StatusCode"] == 0
    finally:
        container.remove(force=True)


def test_logs_tail_timestamps_and_streams(client):
    container = client.containers.run(
        "busybox", ["sh", "-c", "echo 1; echo 2; echo e >&2; sleep 0.5; echo 3"], detach=True)
    try:
        assert container.wait(timeout=10)["StatusCode"] == 0
        assert sorted(container.logs().splitlines()) == [b"1", b"2", b"3", b"e"]  # two pipes
        assert container.logs(stderr=False) == b"1\n2\n3\n"
        assert container.logs(stdout=False) == b"e\n"
        assert container.logs(tail=1) == b"3\n"  # as docker: the last records, then the streams
        stamped = container.logs(stderr=False, timestamps=True).decode().splitlines()
        assert [line.split(" ", 1)[1] for line in stamped] == ["1", "2", "3"]
        assert stamped[0][:4].isdigit() and stamped[0].split(" ")[0].endswith("Z")
        assert container.logs(since=int(time.time()) + 60) == b""
        # attach with logs=1 and no stream: the history only, even of an exited container
        replayed = client.api.attach(container.id, stdout=True, stderr=False, logs=True)
        assert replayed == b"1\n2\n3\n"
    finally:
        container.remove()


def test_kill_restart_and_not_modified(client):
    since = time.time()
    container = client.containers.run(
        "busybox", ["sh", "-c", "trap 'exit 7' TERM; while true; do sleep 0.1; done"],
        detach=True)
    try:
        first = client.api.inspect_container(container.id)["State"]["Pid"]
        container.restart(timeout=5)
        second = client.api.inspect_container(container.id)["State"]["Pid"]
        assert second and second != first
        container.kill(signal="TERM")
        assert container.wait(timeout=10)["StatusCode"] == 7
        stopped = client.api._post(client.api._url("/containers/{0}/stop", container.id))
        assert stopped.status_code == 304  # not running: nothing to do
        with pytest.raises(docker.errors.APIError) as refused:
            container.kill()
        assert refused.value.status_code == 409
    finally:
        container.remove(force=True)
    actions = [e["Action"] for e in container_events(client, since, container.id)]
    assert "restart" in actions and actions.count("start") == 2 and actions.count("die") == 2


def test_prune_removes_what_is_not_running(client):
    stopped = [client.containers.run("busybox", "true", detach=True, labels={"prune": "me"})
               for _ in range(2)]
    running = client.containers.run("busybox", ["sleep", "1000"], detach=True)
    try:
        for c in stopped:
            c.wait(timeout=10)
        pruned = client.containers.prune(filters={"label": "prune=me"})
        assert sorted(pruned["ContainersDeleted"]) == sorted(c.id for c in stopped)
        assert [c.id for c in client.containers.list(all=True)] == [running.id]
    finally:
        running.remove(force=True)


# --- the docker CLI --------------------------------------------------------------------
def test_docker_cli_run_prints_the_output_and_exits_with_the_code(daemon, client):
    done = docker_cli(daemon, "run", "--rm", "busybox", "echo", "hi")
    assert (done.returncode, done.stdout) == (0, "hi\n"), done.stderr
    failed = docker_cli(daemon, "run", "--rm", "busybox", "sh", "-c", "exit 3")
    assert failed.returncode == 3, failed.stderr
    piped = docker_cli(daemon, "run", "-i", "--rm", "busybox", "sh", "-c", "read a; echo got $a",
                       input="x\n")
    assert (piped.returncode, piped.stdout) == (0, "got x\n"), piped.stderr
    missing = docker_cli(daemon, "run", "--rm", "busybox", "no-such-command")
    assert missing.returncode == 127 and "not found" in missing.stderr
    hardened = docker_cli(daemon, "run", "--rm", "--network", "none", "--user", "65534",
                          "--cap-drop", "ALL", "--read-only", "--ulimit", "nofile=100:200",
                          "busybox", "sh", "-c",
                          "id -u; grep CapBnd /proc/self/status; ulimit -n; touch /x")
    assert hardened.stdout.split()[:4] == ["65534", "CapBnd:", "0000000000000000", "100"]
    assert "Read-only file system" in hardened.stderr and hardened.returncode == 1


def test_docker_cli_detached_lifecycle(daemon, client):
    started = docker_cli(daemon, "run", "-d", "--name", "web", "busybox", "sh", "-c",
                         "echo up; sleep 1000")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    try:
        listed = docker_cli(daemon, "ps")
        row = next(line for line in listed.stdout.splitlines() if line.endswith(" web"))
        assert " Up " in row and container_id[:12] in row
        deadline = time.monotonic() + 10
        while "up" not in (logs := docker_cli(daemon, "logs", "web")).stdout and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert logs.stdout == "up\n"
        inspected = docker_cli(daemon, "inspect", "-f", "{{.State.Status}} {{.Name}}", "web")
        assert inspected.stdout.strip() == "running /web"
        assert docker_cli(daemon, "stop", "-t", "1", "web").returncode == 0
        row = next(line for line in docker_cli(daemon, "ps", "-a").stdout.splitlines()
                   if line.endswith(" web"))
        assert "Exited (137)" in row or "Exited (143)" in row
        committed = docker_cli(daemon, "commit", "web", "lab/cli-commit:1")
        assert committed.returncode == 0 and committed.stdout.startswith("sha256:")
        assert docker_cli(daemon, "rm", "web").returncode == 0
        removed = docker_cli(daemon, "rmi", "lab/cli-commit:1")
        assert removed.returncode == 0 and "Untagged: lab/cli-commit:1" in removed.stdout
    finally:
        docker_cli(daemon, "rm", "-f", container_id)
    assert "web" not in docker_cli(daemon, "ps", "-a").stdout


def test_docker_cli_run_it_is_a_real_terminal(daemon, client):
    if DOCKER_CLI is None:
        pytest.skip("no docker CLI on PATH")
    pid, master = pty.fork()
    if pid == 0:  # the docker CLI, on a terminal of 30 rows and 100 columns
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
            os.execve(DOCKER_CLI, [DOCKER_CLI, "-H", daemon.address, "run", "-it", "--rm",
                                   "busybox", "sh"], cli_env(daemon))
        finally:
            os._exit(127)
    since = time.time()
    output, sent = b"", False
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.2)[0]:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the CLI has exited and closed the terminal
                break
            if not data:
                break
            output += data
            if not sent and b"# " in output:  # the shell's prompt: it reads its terminal now
                os.write(master, b"echo hello-pty; stty size; exit 3\n")
                sent = True
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(master)
    assert b"hello-pty\r\n" in output, output
    assert b"30 100" in output, output  # the CLI sent its size (POST .../resize)
    assert os.waitstatus_to_exitcode(status) == 3
    resized = list(client.events(decode=True, since=since, until=time.time() + 1,
                                 filters={"event": "resize"}))
    assert resized and resized[-1]["Actor"]["Attributes"]["height"] == "30"
    assert resized[-1]["Actor"]["Attributes"]["width"] == "100"


def test_wait_conditions(client):
    container = client.containers.create("busybox", ["sh", "-c", "exit 5"])
    try:
        assert container.wait(timeout=5) == {"StatusCode": 0, "Error": None}  # created: not running
        container.start()
        assert container.wait(timeout=10)["StatusCode"] == 5
        # next-exit on an exited container: the exit of its next run, not the last one.
        waited = {}
        waiter = threading.Thread(target=lambda: waited.update(
            client.api.wait(container.id, condition="next-exit", timeout=30)))
        waiter.start()
        time.sleep(0.5)
        assert not waited
        container.start()
        waiter.join(30)
        assert waited["StatusCode"] == 5
    finally:
        container.remove(force=True)


# --- faults ----------------------------------------------------------------------------
def test_unknown_containers_are_404_everywhere(daemon, client):
    for method, path in [("POST", "start"), ("POST", "stop"), ("POST", "kill"),
                         ("POST", "restart"), ("POST", "wait"), ("POST", "attach?stream=1"),
                         ("GET", "logs?stdout=1"), ("GET", "json"), ("GET", "top"),
                         ("POST", "resize?h=10&w=10")]:
        status, response, body = daemon.request(method, f"/v1.43/containers/no-such/{path}")
        assert status == 404, (method, path, body)
        assert response.getheader("Content-Type") == "application/json"
        assert body == {"message": "No such container: no-such"}
    assert daemon.request("GET", "/_ping")[0] == 200


def test_create_refuses_bad_bodies_and_names(daemon, client):
    def create(body, query=""):
        return daemon.request("POST", f"/v1.43/containers/create{query}",
                              body=json.dumps(body).encode(),
                              headers={"Content-Type": "application/json"})

    status, _, body = create({"Image": "no-such-image:1"})
    assert (status, body["message"]) == (404, "No such image: no-such-image:1")
    for bad in ({"Image": "busybox", "HostConfig": {"Memory": "lots"}},
                {"Image": "busybox", "Cmd": 5},
                {"Image": "busybox", "Env": "A=1"},
                {"Image": "busybox", "HostConfig": {"PidsLimit": True}},
                {"Image": "busybox", "HostConfig": {"Memory": 1024}},
                {"Cmd": ["true"]},
                ["busybox"]):
        status, _, body = create(bad)
        assert status == 400 and set(body) == {"message"}, (bad, body)
        assert daemon.request("GET", "/_ping")[0] == 200
    assert create({"Image": "busybox"}, "?name=bad/name")[0] == 400
    status, _, body = create({"Image": "busybox", "Cmd": ["true"]}, "?name=taken")
    assert status == 201 and body["Warnings"] == []
    try:
        status, _, clash = create({"Image": "busybox"}, "?name=taken")
        assert status == 409 and "already in use" in clash["message"]
    finally:
        assert daemon.request("DELETE", f"/v1.43/containers/{body['Id']}")[0] == 204
    status, _, body = daemon.request("POST", "/v1.43/containers/no-such/wait?condition=later")
    assert status == 400
    assert daemon.request("GET", "/_ping")[0] == 200


# --- the daemon's restart --------------------------------------------------------------
def test_containers_survive_a_killed_daemon(state_root, image_store, workdir, client):
    address = f"unix://{workdir}/restart.sock"
    first = start_daemon(state_root, address, workdir)
    try:
        before = docker.DockerClient(base_url=address, timeout=30)
        running = before.containers.run("busybox", ["sleep", "1000"], detach=True, name="survivor")
        ends_later = before.containers.run("busybox", ["sleep", "1000"], detach=True,
                                           name="ends-later")
        exited = before.containers.run("busybox", ["sh", "-c", "exit 3"], detach=True,
                                       name="exited-3")
        assert exited.wait(timeout=10)["StatusCode"] == 3
        before.close()
    finally:
        os.kill(first.process.pid, signal.SIGKILL)  # no clean shutdown: nothing saved at exit
        first.process.wait()
    second = start_daemon(state_root, address, workdir)  # the stale socket is replaced
    try:
        after = docker.DockerClient(base_url=address, timeout=30)
        since = time.time()
        assert sorted(c.name for c in after.containers.list()) == ["ends-later", "survivor"]
        # It ends on its own (signalled by the engine, not through this daemon): the new
        # daemon adopted it at start-up, so its die event is not lost.
        Engine(state_root, cgroup_parent=CGROUP_PARENT).kill("ends-later", "KILL")
        assert after.containers.get("ends-later").wait(timeout=10)["StatusCode"] == 137
        died = container_events(after, since, ends_later.id)
        assert "die" in [e["Action"] for e in died]
        after.containers.get("ends-later").remove()
        survivor = after.containers.get("survivor")
        assert survivor.status == "running" and survivor.id == running.id
        gone = after.containers.get("exited-3")
        assert gone.status == "exited" and gone.attrs["State"]["ExitCode"] == 3
        survivor.stop(timeout=1)
        assert survivor.wait(timeout=10)["StatusCode"] in (137, 143)
        events = container_events(after, since, survivor.id)
        assert ("die", "stop") == tuple(e["Action"] for e in events if e["Action"] in ("die", "stop"))
        survivor.remove()
        gone.remove()
        after.close()
    finally:
        second.stop()
    assert second.process.returncode == 0, second.log
