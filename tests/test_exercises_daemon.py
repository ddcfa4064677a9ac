"""Notebook 8's exercises: the reference solutions pass their checks, wrong answers fail.

A real minirtd runs on the tests' state root (busybox built); the API checks
talk to it over its Unix socket, and the by-hand check runs real containers
through it (root tier). None leaves a container or a scratch directory behind.
"""

import http.client
import json
import os
import re
import shutil
import socket
import struct
import sys
import tempfile

import pytest

from conftest import tier
from daemon_fixtures import start_daemon
from minirt.lab.checks import daemon as checks

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "notebooks", "solutions"))
import daemon as solution  # noqa: E402


@pytest.fixture(scope="module")
def daemon(state_root, image_store):
    directory = tempfile.mkdtemp(prefix="minirtd-nb08-", dir="/tmp")
    running = start_daemon(state_root, f"unix://{directory}/minirt.sock", directory)
    yield running
    running.stop()
    assert running.process.returncode == 0, running.log
    assert not os.path.exists(running.socket_path), "the socket went with the daemon"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(autouse=True)
def nothing_left(request):
    yield
    if "daemon" in request.fixturenames:
        sock = request.getfixturevalue("daemon").socket_path
        names = [c["Names"][0] for c in checks.request(sock, "GET", "/containers/json?all=1")[1]]
        assert not [n for n in names if checks.check_prefix() in n], names
    assert not [n for n in os.listdir("/tmp") if n.startswith(checks.check_prefix())]


def said(out: str, hint: str) -> bool:
    return " ".join(hint.split()) in " ".join(out.split())


# --- 8.1 --------------------------------------------------------------------------------

def test_api_get_solution_passes_against_a_real_daemon(daemon, capsys):
    assert checks.check_api_get(solution.api_get, daemon.socket_path)
    out = capsys.readouterr().out
    assert "GET /version: minirt" in out and "busybox:latest" in out and "(404) raises" in out


def test_api_get_check_starts_a_daemon_of_its_own(state_root, image_store, capsys, monkeypatch):
    monkeypatch.setenv("MINIRT_ROOT", state_root)
    assert checks.check_api_get(solution.api_get)
    assert "the check started its own minirtd" in capsys.readouterr().out


def body_text(sock, path):
    conn = solution.UnixHTTPConnection(sock)
    conn.request("GET", path)
    return conn.getresponse().read()


def response_object(sock, path):
    conn = solution.UnixHTTPConnection(sock)
    conn.request("GET", path)
    return conn.getresponse()


def no_status_check(sock, path):
    return json.loads(body_text(sock, path))


def read_until_closed(sock, path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):   # HTTP/1.1 keeps the connection open: never ends
        data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def over_tcp(sock, path):
    conn = http.client.HTTPConnection("127.0.0.1", 1, timeout=2)
    conn.request("GET", path)
    return json.loads(conn.getresponse().read())


@pytest.mark.parametrize("wrong, hint", [
    (body_text, "json.loads(body) turns it into a dict"),
    (response_object, "that is the response object"),
    (no_status_check, "raise when it is not 2xx"),
    (read_until_closed, "send the header Connection: close"),
    (over_tcp, "connect an AF_UNIX socket"),
])
def test_wrong_api_gets_fail_with_a_hint(wrong, hint, daemon, capsys):
    assert not checks.check_api_get(wrong, daemon.socket_path)
    out = capsys.readouterr().out
    assert said(out, hint), out


def test_api_get_without_a_daemon_explains(capsys):
    assert not checks.check_api_get(solution.api_get, "/tmp/nb08-nothing-here.sock")
    assert "no daemon answers" in capsys.readouterr().out


# --- 8.2 --------------------------------------------------------------------------------

def test_demux_solution_passes(capsys):
    assert checks.check_demux(solution.demux)
    out = capsys.readouterr().out
    assert "split across reads" in out and "empty frames" in out


def one_frame_per_read(reads):
    pairs = []
    for data in reads:
        stream, size = struct.unpack(">BxxxL", data[:8])
        pairs.append((solution.STREAMS[stream], data[8:8 + size].decode()))
    return pairs


def last_byte_length(reads):
    buffer, pairs = b"".join(reads), []
    while len(buffer) >= 8:
        size = buffer[7]
        if size:
            pairs.append((solution.STREAMS[buffer[0]], buffer[8:8 + size].decode()))
        buffer = buffer[8 + size:]
    return pairs


def stream_numbers(reads):
    return [(1 if s == "stdout" else 2, t) for s, t in solution.demux(reads)]


def keeps_empty(reads):
    buffer, pairs = b"".join(reads), []
    while len(buffer) >= 8:
        stream, size = struct.unpack(">BxxxL", buffer[:8])
        pairs.append((solution.STREAMS[stream], buffer[8:8 + size].decode()))
        buffer = buffer[8 + size:]
    return pairs


def per_read(reads):
    pairs = []   # each read decoded on its own: what a read leaves unfinished is lost
    for data in reads:
        pairs += solution.demux([data])
    return pairs


@pytest.mark.parametrize("wrong, hint", [
    (one_frame_per_read, "loop until the buffer has no whole frame left"),
    (last_byte_length, "big-endian"),
    (stream_numbers, "name the streams"),
    (keeps_empty, "skip a frame of length 0"),
    (per_read, "keep what is left over in a buffer"),
    (lambda reads: [(1, r) for r in reads], "name the streams"),
    (lambda reads: b"".join(reads), "return a list of (stream, text) pairs"),
])
def test_wrong_decoders_fail_with_a_hint(wrong, hint, capsys):
    assert not checks.check_demux(wrong)
    out = capsys.readouterr().out
    assert said(out, hint), out


def test_unfinished_decoder_fails(capsys):
    def demux(reads):
        raise NotImplementedError
    assert not checks.check_demux(demux)
    assert "not written yet" in capsys.readouterr().out


# --- 8.3 --------------------------------------------------------------------------------

def test_run_calls_solution_passes_on_recorded_and_live_logs(daemon, capsys):
    assert solution.run_calls(checks.DOCKER_CLI_RUN) == [
        ("POST", "/containers/create"), ("POST", "/containers/{id}/attach"),
        ("POST", "/containers/{id}/wait"), ("POST", "/containers/{id}/start")]
    before = checks._last_id(daemon.socket_path)
    solution.api_get(daemon.socket_path, "/containers/json?all=1")
    live = checks._log_since(daemon.socket_path, before)
    assert checks.check_run_calls(solution.run_calls, live)
    out = capsys.readouterr().out
    assert "docker run --rm" in out and "this notebook's own run" in out


def keeps_version(log):
    return [(e["method"], e["path"].split("?")[0]) for e in log if "/containers" in e["path"]]


def keeps_query(log):
    return [(m, p + "?x") if "?" in e["path"] else (m, p)
            for e, (m, p) in zip([e for e in log if "/containers" in e["path"]],
                                 solution.run_calls(log))]


def keeps_ids(log):
    return [(e["method"], re.sub(r"^/v\d+\.\d+", "", e["path"].split("?")[0]))
            for e in log if "/containers/" in e["path"]]


def keeps_pings(log):
    return [(e["method"], re.sub(r"^/v\d+\.\d+", "", e["path"].split("?")[0])
             .replace(checks.ID, "{id}")) for e in log]


def by_duration(log):
    return solution.run_calls(sorted(log, key=lambda e: e["duration_ms"]))


@pytest.mark.parametrize("wrong, hint", [
    (keeps_version, "drop the API version prefix"),
    (keeps_query, "drop the query string"),
    (keeps_ids, "as {id}"),
    (keeps_pings, "keep only the container endpoints"),
    (by_duration, "keep the order of the log"),
    (lambda log: [e["path"] for e in log], "each item is a pair"),
])
def test_wrong_run_calls_fail_with_a_hint(wrong, hint, capsys):
    assert not checks.check_run_calls(wrong)
    out = capsys.readouterr().out
    assert said(out, hint), out


# --- 8.4 --------------------------------------------------------------------------------

@pytest.fixture
def can_run():
    if tier() not in ("root", "rootless"):
        pytest.skip(f"runs containers: needs root or rootless (this machine is {tier()})")


def test_by_hand_solution_passes(daemon, can_run, capsys):
    assert checks.check_run_by_hand(solution.run_by_hand, daemon.socket_path)
    out = capsys.readouterr().out
    assert "exit code 7" in out and "POST /create -> POST /{id}/start -> POST /{id}/wait" in out
    assert "nothing left behind" in out


def no_start(sock, name, command):
    created = solution.api_call(sock, "POST", f"/containers/create?name={name}",
                                {"Image": "busybox", "Cmd": command})
    solution.api_call(sock, "DELETE", f"/containers/{created['Id']}")
    return 0


def whole_answer(sock, name, command):
    created = solution.api_call(sock, "POST", f"/containers/create?name={name}",
                                {"Image": "busybox", "Cmd": command})
    try:
        solution.api_call(sock, "POST", f"/containers/{created['Id']}/start")
        return solution.api_call(sock, "POST", f"/containers/{created['Id']}/wait")
    finally:
        solution.api_call(sock, "DELETE", f"/containers/{created['Id']}")


def leaves_it(sock, name, command):
    created = solution.api_call(sock, "POST", f"/containers/create?name={name}",
                                {"Image": "busybox", "Cmd": command})
    solution.api_call(sock, "POST", f"/containers/{created['Id']}/start")
    return solution.api_call(sock, "POST", f"/containers/{created['Id']}/wait")["StatusCode"]


def no_wait(sock, name, command):
    created = solution.api_call(sock, "POST", f"/containers/create?name={name}",
                                {"Image": "busybox", "Cmd": command})
    solution.api_call(sock, "POST", f"/containers/{created['Id']}/start")
    solution.api_call(sock, "DELETE", f"/containers/{created['Id']}?force=1")
    return 0


@pytest.mark.parametrize("wrong, hint", [
    (no_start, "POST /containers/{id}/start runs it"),
    (whole_answer, "return its StatusCode"),
    (leaves_it, "DELETE /containers/{id}"),
    (no_wait, "wait for it"),
    (lambda sock, name, command: 0, "first POST /containers/create"),
])
def test_wrong_runs_by_hand_fail_with_a_hint(wrong, hint, daemon, can_run, capsys):
    assert not checks.check_run_by_hand(wrong, daemon.socket_path)
    out = capsys.readouterr().out
    assert said(out, hint), out


def test_by_hand_check_explains_without_containers(daemon, capsys):
    called = []
    assert not checks.check_run_by_hand(lambda *a: called.append(a), daemon.socket_path,
                                        tier="unprivileged")
    assert not called and "needs the root or rootless tier" in capsys.readouterr().out
