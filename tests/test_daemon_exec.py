"""minirtd's exec, stats and archive endpoints: ``docker exec``, ``docker stats``, ``docker cp``.

Driven by real clients only (docker-py and the docker CLI) against a daemon
started as ``python -m minirt daemon`` on the tests' state root. Each test gets
a running busybox container made with the Engine on that same root (and cgroup
parent), so the ``engine`` fixture checks afterwards that nothing is left: no
container directory, cgroup, mount or process, exec'd ones included.
"""

import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import tarfile
import tempfile
import time

import docker  # a real client: a missing one is a failure, not a skip
import pytest

from conftest import wait_for
from daemon_fixtures import docker_cli, serving, socket_dir



# --- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir():
    yield from socket_dir("minirtd-exec-")


@pytest.fixture(scope="module")
def daemon(state_root, image_store, workdir):
    yield from serving(state_root, workdir)


@pytest.fixture
def client(daemon):
    client = docker.DockerClient(base_url=daemon.address, timeout=30)
    yield client
    client.close()


@pytest.fixture
def box(engine, client):
    """A running busybox container (hostname ``box``, -m 64m, --pids-limit 64), docker-py's view.

    Made with the Engine on the daemon's root; removed (forcibly) afterwards,
    before ``engine`` checks that nothing is left.
    """
    container_id = engine.create("busybox", ["sleep", "3600"], hostname="box",
                                 name=f"box{os.getpid()}{time.monotonic_ns() % 100000}",
                                 memory="64m", pids_limit=64)
    try:
        engine.start(container_id)
        yield client.containers.get(container_id)
    finally:
        engine.remove_container(container_id, force=True)




def read_frames(sock: socket.socket) -> dict[int, bytes]:
    """Docker's multiplexed stream until EOF: {1: stdout bytes, 2: stderr bytes}."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    streams = {1: b"", 2: b""}
    while data:
        kind, size = struct.unpack(">BxxxL", data[:8])
        streams[kind] += data[8:8 + size]
        data = data[8 + size:]
    return streams




# --- exec with docker-py -------------------------------------------------------------------
def test_exec_runs_in_the_containers_uts_namespace(box):
    assert box.exec_run("hostname") == (0, b"box\n")


def test_exec_exit_code_is_the_commands(box):
    assert box.exec_run("sh -c 'exit 5'").exit_code == 5


def test_exec_sees_the_containers_pid_1(box):
    code, output = box.exec_run("ps")
    assert code == 0
    rows = [line.split(None, 2) for line in output.decode().splitlines()[1:]]
    assert ["1", "root", "sleep 3600"] in rows
    assert len(rows) == 2  # sleep and ps itself: no host process is visible


def test_exec_takes_environment_and_working_directory(box):
    result = box.exec_run(["sh", "-c", "echo $A $HOSTNAME; pwd"], environment={"A": "1"},
                          workdir="/tmp")
    assert result == (0, b"1 box\n/tmp\n")


def test_exec_keeps_stdout_and_stderr_apart(box):
    code, (out, err) = box.exec_run("sh -c 'echo out; echo err >&2; exit 3'", demux=True)
    assert (code, out, err) == (3, b"out\n", b"err\n")


def test_exec_sends_only_the_streams_it_attached(box, client):
    exec_id = client.api.exec_create(box.id, "sh -c 'echo out; echo err >&2'", stdout=False)["Id"]
    assert client.api.exec_start(exec_id, demux=True) == (None, b"err\n")


def test_exec_streams_output_as_it_comes(box):
    result = box.exec_run("sh -c 'echo one; sleep 0.5; echo two'", stream=True)
    arrivals = []
    for chunk in result.output:
        arrivals.append((time.monotonic(), chunk))
    assert b"".join(c for _, c in arrivals) == b"one\ntwo\n"
    assert len(arrivals) == 2 and arrivals[1][0] - arrivals[0][0] > 0.3  # not all at the end


def test_exec_stdin_over_the_socket_and_half_close_is_eof(box, client):
    api = client.api
    exec_id = api.exec_create(box.id, ["tr", "a-z", "A-Z"], stdin=True)["Id"]
    sock = api.exec_start(exec_id, socket=True)._sock
    try:
        sock.sendall(b"hello from the socket\n")
        sock.shutdown(socket.SHUT_WR)  # tr sees EOF, ends, and the daemon closes
        streams = read_frames(sock)
    finally:
        sock.close()
    assert streams == {1: b"HELLO FROM THE SOCKET\n", 2: b""}
    found = api.exec_inspect(exec_id)
    assert found["ExitCode"] == 0 and found["Running"] is False
    assert found["ContainerID"] == box.id and found["OpenStdin"] is True
    assert found["ProcessConfig"]["entrypoint"] == "tr"


def test_tty_exec_is_a_terminal_that_can_be_resized(box, client):
    assert box.exec_run("tty", tty=True) == (0, b"/dev/pts/0\r\n")  # \r\n: the tty's onlcr
    api = client.api
    exec_id = api.exec_create(box.id, ["sh"], stdin=True, tty=True)["Id"]
    sock = api.exec_start(exec_id, socket=True, tty=True)._sock
    sock.settimeout(10)
    try:
        api.exec_resize(exec_id, height=33, width=101)
        sock.sendall(b"stty size; exit 7\n")
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    finally:
        sock.close()
    assert b"33 101" in received
    assert wait_for(lambda: api.exec_inspect(exec_id)["ExitCode"] is not None,
                    what="the exec's exit") and api.exec_inspect(exec_id)["ExitCode"] == 7


def test_detached_exec_runs_in_the_containers_cgroup_and_reports_its_end(box, client):
    api = client.api
    exec_id = api.exec_create(box.id, ["sleep", "4242"])["Id"]
    assert not api.exec_start(exec_id, detach=True)  # at once, with nothing to read
    pid = wait_for(lambda: api.exec_inspect(exec_id)["Pid"], what="the exec's pid")
    found = api.exec_inspect(exec_id)
    assert found["Running"] is True and found["ExitCode"] is None
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[:2] == [b"sleep", b"4242"]
    with open(f"/proc/{pid}/cgroup") as f:
        assert box.id in f.read()  # the container's cgroup: its limits apply to the exec too
    with open(f"/proc/{pid}/status") as f:
        nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
    assert len(nspid) == 2  # a pid in the host's namespace and one in the container's
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not api.exec_inspect(exec_id)["Running"], what="the exec to end")
    assert api.exec_inspect(exec_id)["ExitCode"] == 128 + signal.SIGKILL


def test_exec_publishes_create_start_and_die_events(box, client):
    since = time.time()
    assert box.exec_run("sh -c 'exit 3'").exit_code == 3
    events = client.events(since=since, until=time.time() + 0.5, decode=True,
                           filters={"container": box.id})
    actions = [(e["Action"], e["Actor"]["Attributes"]) for e in events]
    names = [a.split(":")[0] for a, _ in actions]
    assert names == ["exec_create", "exec_start", "exec_die"]
    assert actions[0][0] == "exec_create: sh -c exit 3"  # dockerd's words: argv joined
    assert actions[2][1]["exitCode"] == "3"
    assert len({attrs["execID"] for _, attrs in actions}) == 1


# --- exec faults ---------------------------------------------------------------------------
def test_exec_in_a_stopped_container_is_a_conflict(engine, client):
    container_id = engine.create("busybox", ["true"], name=f"stopped{os.getpid()}")
    try:
        with pytest.raises(docker.errors.APIError) as refused:
            client.api.exec_create(container_id, ["hostname"])
        assert refused.value.status_code == 409 and "is not running" in str(refused.value)
    finally:
        engine.remove_container(container_id, force=True)


def test_an_unknown_exec_id_is_404(client):
    for call in (lambda: client.api.exec_inspect("0" * 64),
                 lambda: client.api.exec_start("0" * 64),
                 lambda: client.api.exec_resize("0" * 64, height=10, width=10)):
        with pytest.raises(docker.errors.NotFound, match="No such exec instance"):
            call()


def test_a_missing_command_reports_127(box):
    code, output = box.exec_run("no-such-command")
    assert code == 127 and b"no-such-command" in output


# --- stats ---------------------------------------------------------------------------------
def test_stats_have_dockers_shape_and_the_containers_limits(box):
    stats = box.stats(stream=False)
    assert stats["id"] == box.id and stats["name"] == "/" + box.name
    memory = stats["memory_stats"]
    assert memory["limit"] == 64 * 1024 * 1024           # -m 64m, not the host's memory
    assert 0 < memory["usage"] <= memory["limit"]
    assert stats["pids_stats"] == {"current": 1, "limit": 64}
    cpu, pre = stats["cpu_stats"], stats["precpu_stats"]
    assert cpu["online_cpus"] == os.cpu_count()
    assert cpu["system_cpu_usage"] > pre["system_cpu_usage"] > 0   # two readings, 1 s apart
    assert cpu["cpu_usage"]["total_usage"] >= pre["cpu_usage"]["total_usage"] > 0
    assert stats["read"] > stats["preread"]


def test_stats_stream_one_reading_per_second(box, client):
    stream = client.api.stats(box.id, stream=True, decode=True)
    started = time.monotonic()
    readings = [next(stream), next(stream), next(stream)]
    stream.close()
    assert 1.5 < time.monotonic() - started < 5
    assert readings[1]["precpu_stats"]["system_cpu_usage"] == \
        readings[0]["cpu_stats"]["system_cpu_usage"]
    # the busy loop shows up: CPU time grows while it runs
    busy = client.api.exec_create(box.id, ["sh", "-c", "i=0; while [ $i -lt 200000 ]; do "
                                           "i=$((i+1)); done"])["Id"]
    client.api.exec_start(busy)
    after = box.stats(stream=False, one_shot=True)
    assert after["cpu_stats"]["cpu_usage"]["total_usage"] > \
        readings[2]["cpu_stats"]["cpu_usage"]["total_usage"]


# --- archive -------------------------------------------------------------------------------
def tar_of(chunks) -> dict[str, bytes | str]:
    """{name: content (files) or "dir"/"-> target"} of a tar given as chunks."""
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        found = {}
        for member in tar.getmembers():
            if member.isfile():
                found[member.name] = tar.extractfile(member).read()
            elif member.isdir():
                found[member.name] = "dir"
            elif member.issym():
                found[member.name] = "-> " + member.linkname
        return found


def test_get_archive_is_a_tar_of_the_containers_file_with_its_stat(box):
    box.exec_run(["sh", "-c", "mkdir -p /data/sub && echo a > /data/a && echo b > /data/sub/b "
                  "&& ln -s a /data/link"])
    chunks, info = box.get_archive("/data/a")
    assert tar_of(chunks) == {"a": b"a\n"}
    assert info["name"] == "a" and info["size"] == 2 and info["mode"] == 0o644
    chunks, info = box.get_archive("/data")
    assert tar_of(chunks) == {"data": "dir", "data/a": b"a\n", "data/link": "-> a",
                              "data/sub": "dir", "data/sub/b": b"b\n"}
    assert info["mode"] & (1 << 31)  # Go's os.ModeDir: what `docker cp` checks


def test_put_archive_writes_into_the_container(box):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in (("put.txt", b"from the host\n"), ("deep/er.txt", b"nested\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o640
            tar.addfile(info, io.BytesIO(content))
    assert box.put_archive("/tmp", data.getvalue()) is True
    assert box.exec_run("cat /tmp/put.txt /tmp/deep/er.txt") == (0, b"from the host\nnested\n")
    assert box.exec_run("stat -c %a /tmp/put.txt").output == b"640\n"


def test_archive_of_a_missing_path_is_404(box):
    with pytest.raises(docker.errors.NotFound, match="Could not find the file"):
        box.get_archive("/no/such/file")


def test_dotdot_above_the_root_is_refused_and_never_reads_the_host(box):
    with pytest.raises(docker.errors.APIError) as refused:
        box.get_archive("/../../etc/shadow")
    assert refused.value.status_code == 400 and "climbs above" in str(refused.value)


def test_a_symlink_inside_the_container_cannot_lead_to_the_hosts_files(box):
    secret_dir = tempfile.mkdtemp(prefix="host-only-", dir="/var/tmp")
    try:
        with open(os.path.join(secret_dir, "secret"), "w") as f:
            f.write("host secret\n")
        # Links the container made: to / and up, straight at the host path, far up.
        box.exec_run(["sh", "-c", f"ln -s / /tmp/up; ln -s {secret_dir}/secret /tmp/direct; "
                      "ln -s ../../../../../../../.. /tmp/far; echo container > /tmp/mine"])
        for path in (f"/tmp/up/..{secret_dir}/secret", "/tmp/direct/",
                     f"/tmp/far{secret_dir}/secret", f"/tmp/far/..{secret_dir}/secret"):
            with pytest.raises(docker.errors.NotFound):
                box.get_archive(path)  # resolved inside the container: no such file there
        chunks, _ = box.get_archive("/tmp/up/../../tmp/mine")  # the container's own file
        assert tar_of(chunks) == {"mine": b"container\n"}
        # Writing through a link is kept inside too.
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            info = tarfile.TarInfo("dropped")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"hi\n"))
        with pytest.raises(docker.errors.NotFound):
            box.put_archive(f"/tmp/up{secret_dir}", data.getvalue())
        assert os.listdir(secret_dir) == ["secret"]
        # /proc/1/root is a magic link: refused, not followed.
        with pytest.raises(docker.errors.APIError) as refused:
            box.get_archive("/proc/1/root/etc/hostname")
        assert refused.value.status_code == 400
    finally:
        shutil.rmtree(secret_dir)


def test_a_tar_member_may_not_escape_the_directory(box):
    for name in ("../escaped", "/abs/escaped"):
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"no\n"))
        with pytest.raises(docker.errors.APIError) as refused:
            box.put_archive("/tmp", data.getvalue())
        assert refused.value.status_code == 400
    # A member through a symlink the tar itself planted: refused too.
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        link = tarfile.TarInfo("hop")
        link.type, link.linkname = tarfile.SYMTYPE, "/"
        tar.addfile(link)
        info = tarfile.TarInfo("hop/etc/escaped")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"no\n"))
    with pytest.raises(docker.errors.APIError) as refused:
        box.put_archive("/tmp", data.getvalue())
    assert refused.value.status_code == 400
    assert box.exec_run("ls /etc/escaped").exit_code != 0


def test_archive_of_a_stopped_container_is_a_conflict(engine, client):
    container_id = engine.create("busybox", ["true"], name=f"cold{os.getpid()}")
    try:
        with pytest.raises(docker.errors.APIError) as refused:
            client.api.get_archive(container_id, "/etc/hostname")
        assert refused.value.status_code == 409 and "not running" in str(refused.value)
    finally:
        engine.remove_container(container_id, force=True)


# --- the docker CLI ------------------------------------------------------------------------
def test_docker_cli_exec(daemon, box):
    result = docker_cli(daemon, "exec", box.name, "hostname")
    assert (result.returncode, result.stdout) == (0, "box\n"), result.stderr
    result = docker_cli(daemon, "exec", "-e", "A=1", box.name, "sh", "-c", "echo $A")
    assert result.stdout == "1\n", result.stderr
    assert docker_cli(daemon, "exec", box.name, "sh", "-c", "exit 4").returncode == 4
    result = docker_cli(daemon, "exec", "-i", box.name, "wc", "-c", input="12345")
    assert result.stdout.strip() == "5", result.stderr
    started = time.monotonic()
    assert docker_cli(daemon, "exec", "-d", box.name, "sleep", "30").returncode == 0
    assert time.monotonic() - started < 10  # -d: back at once, the sleep runs on
    assert "sleep 30" in box.exec_run("ps").output.decode()


def test_docker_cli_stats_no_stream(daemon, box):
    result = docker_cli(daemon, "stats", "--no-stream", box.name)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert re.split(r"\s{2,}", header.strip()) == [
        "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O",
        "PIDS"]
    columns = re.split(r"\s{2,}", row.strip())
    assert columns[0] == box.id[:12] and columns[1] == box.name
    assert re.fullmatch(r"\d+\.\d\d%", columns[2])
    usage, limit = columns[3].split(" / ")
    assert limit == "64MiB" and re.fullmatch(r"[\d.]+(B|KiB|MiB)", usage)
    assert 0 < float(columns[4].rstrip("%")) < 100
    assert columns[-1] == "1"


def test_docker_cli_cp_round_trip(daemon, box, workdir):
    out = tempfile.mkdtemp(dir=workdir)
    result = docker_cli(daemon, "cp", f"{box.name}:/etc/hostname", out)
    assert result.returncode == 0, result.stderr
    with open(os.path.join(out, "hostname"), "rb") as f:
        assert f.read() == box.exec_run("cat /etc/hostname").output
    source = os.path.join(out, "to-the-box.txt")
    with open(source, "w") as f:
        f.write("round trip\n")
    result = docker_cli(daemon, "cp", source, f"{box.name}:/tmp/")
    assert result.returncode == 0, result.stderr
    assert box.exec_run("cat /tmp/to-the-box.txt") == (0, b"round trip\n")
    back = os.path.join(out, "back")
    os.mkdir(back)
    assert docker_cli(daemon, "cp", f"{box.name}:/tmp/to-the-box.txt", back).returncode == 0
    with open(os.path.join(back, "to-the-box.txt")) as f:
        assert f.read() == "round trip\n"


def test_the_exec_endpoints_answer_in_dockers_error_shape(daemon, box):
    status, _, body = daemon.request("POST", f"/v1.43/containers/{box.id}/exec",
                                     body=json.dumps({"Cmd": []}),
                                     headers={"Content-Type": "application/json"})
    assert status == 400 and set(body) == {"message"}
    status, _, body = daemon.request("GET", f"/v1.43/containers/{box.id}/archive")
    assert status == 400 and "path" in body["message"]


# --- the resolver itself (no container needed) -------------------------------------------
def test_the_fallback_walk_resolves_as_openat2_in_root_does(tmp_path):
    """Kernels before 5.6 have no openat2: the component walk must land on the same files."""
    from minirt.daemon import archive
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "file").write_text("inside\n")
    for name, target in (("up", "/"), ("far", "../../../../.."), ("abs", "/etc/file"),
                         ("rel", "etc/file"), ("loop", "loop"), ("chain", "up/etc")):
        os.symlink(target, root / name)
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)

    def where(fd):
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    try:
        for path, follow in (("/up/etc/file", True), ("/far/etc/file", True), ("/abs", True),
                             ("/abs", False), ("/rel", True), ("/chain/file", True),
                             ("/up/../up/../etc", True), ("/etc/", True), ("/", True)):
            walked = where(archive._walk(root_fd, archive.clean_parts(path), follow, path))
            kernel = where(archive.resolve(root_fd, path, follow))
            assert walked == kernel, path
            assert walked.startswith(str(root)), path  # never above the root
        for missing in ("/up/tmp/../../nothing", "/etc/file/x"):
            with pytest.raises(FileNotFoundError):
                archive._walk(root_fd, archive.clean_parts(missing), True, missing)
        with pytest.raises(archive.HTTPError) as looped:
            archive._walk(root_fd, ["loop"], True, "/loop")
        assert looped.value.status == 400
    finally:
        os.close(root_fd)
