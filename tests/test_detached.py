"""Detached containers: docker's create/start/stop/kill/wait/logs/exec, kept by a shim.

Each test drives real containers through the CLI (as a user would) or the
Engine (as the notebooks and the daemon do) and checks from outside: the
container's PID 1 in /proc, its namespaces and cgroup, its json-file log. The
``engine`` fixture asserts nothing is left behind; ``detached`` also asserts
that every shim has exited.
"""

import json
import os
import re
import signal
import time

import pytest

from conftest import container_init_pid, dead, minirt_cli, shims_under
from minirt.errors import CommandNotFound, ContainerError
from minirt.runtime import shim
from minirt.runtime.stdio import Capture

RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")




@pytest.fixture
def detached(engine):
    yield engine
    deadline = time.monotonic() + 5
    while shims_under(engine.root) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not shims_under(engine.root), "a shim outlived its container"


def cli(state_root, *args, **kw):
    return minirt_cli(*args, state_root=state_root, **kw)


def run_d(state_root, *args) -> str:
    result = cli(state_root, "run", "-d", *args)
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.decode().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", container_id), result.stdout
    return container_id


def status_of(state_root, name: str) -> str:
    """The STATUS column of ``minirt ps -a`` for container ``name``."""
    out = cli(state_root, "ps", "-a").stdout.decode().splitlines()
    header, rows = out[0], out[1:]
    start, end = header.index("STATUS"), header.index("PORTS")
    for row in rows:
        if row.split()[-1] == name:
            return row[start:end].strip()
    raise AssertionError(f"{name} not in ps -a: {out}")




def ns_pid_chain(pid: int) -> list[str]:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1:] for line in f if line.startswith("NSpid:"))


def test_run_d_container_outlives_the_cli(detached, state_root):
    container_id = run_d(state_root, "--name", "bg", "busybox", "sleep", "1000")
    # The CLI has exited; the container's PID 1 lives on, in a pid namespace of its own.
    init = container_init_pid(detached)
    assert ns_pid_chain(init)[-1] == "1"
    assert os.readlink(f"/proc/{init}/ns/pid") != os.readlink("/proc/self/ns/pid")
    state = detached.inspect("bg")["State"]
    assert state["Status"] == "running" and state["Running"] and state["Pid"] == init
    assert RFC3339_NANO.match(state["StartedAt"])
    assert status_of(state_root, "bg").startswith("Up")
    # Its shim is its parent's parent (the helper between them reaps inside), not the CLI.
    owner = detached.find_container(container_id)["owner"][0]
    with open(f"/proc/{owner}/comm") as f:
        assert f.read().strip() == "minirt-shim"
    assert cli(state_root, "rm", "-f", "bg").returncode == 0


def test_ps_shows_created_up_and_exited(detached, state_root):
    assert cli(state_root, "create", "--name", "made", "busybox", "sh", "-c", "exit 4").returncode == 0
    assert status_of(state_root, "made") == "Created"
    assert detached.inspect("made")["State"]["Status"] == "created"
    assert cli(state_root, "start", "made").returncode == 0
    assert cli(state_root, "wait", "made").stdout.strip() == b"4"
    assert re.fullmatch(r"Exited \(4\) .* ago", status_of(state_root, "made"))
    state = detached.inspect("made")["State"]
    assert (state["Status"], state["ExitCode"], state["Running"]) == ("exited", 4, False)
    assert RFC3339_NANO.match(state["FinishedAt"]) and state["FinishedAt"] >= state["StartedAt"]
    assert cli(state_root, "rm", "made").returncode == 0


def test_logs_keep_each_line_with_its_stream_and_time(detached, state_root):
    run_d(state_root, "--name", "talker", "busybox", "sh", "-c",
          "echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2; echo -n partial")
    assert cli(state_root, "wait", "talker").stdout.strip() == b"0"
    records = list(detached.logs("talker"))
    assert sorted(records) == sorted([("stdout", b"out-1\n"), ("stderr", b"err-1\n"),
                                      ("stdout", b"out-2\n"), ("stderr", b"err-2\n"),
                                      ("stdout", b"partial")])
    container = detached.find_container("talker")
    with open(detached.log_path(container)) as f:
        lines = [json.loads(line) for line in f]
    assert {tuple(sorted(record)) for record in lines} == {("log", "stream", "time")}
    assert all(RFC3339_NANO.match(record["time"]) for record in lines)
    # The CLI: stdout lines to stdout, stderr lines to stderr; --tail; -t.
    shown = cli(state_root, "logs", "talker")
    assert shown.stdout == b"out-1\nout-2\npartial" and shown.stderr == b"err-1\nerr-2\n"
    last_two = cli(state_root, "logs", "--tail", "2", "talker")
    assert last_two.stdout + last_two.stderr in (b"err-2\npartial", b"partialerr-2\n")
    stamped = cli(state_root, "logs", "-t", "talker").stdout.decode().splitlines()
    assert all(RFC3339_NANO.match(line.split(" ", 1)[0]) for line in stamped)
    assert cli(state_root, "rm", "talker").returncode == 0


def test_logs_follow_until_the_container_exits(detached, state_root):
    run_d(state_root, "--name", "ticker", "busybox", "sh", "-c",
          "for i in 1 2 3 4; do echo tick-$i; sleep 0.3; done")
    started = time.monotonic()
    followed = cli(state_root, "logs", "-f", "ticker", timeout=30)
    assert followed.returncode == 0
    assert followed.stdout == b"tick-1\ntick-2\ntick-3\ntick-4\n"
    assert 0.5 < time.monotonic() - started < 10, "it followed the container, then stopped"
    assert cli(state_root, "rm", "ticker").returncode == 0


def test_stop_kills_after_the_grace_period_when_term_is_ignored(detached, state_root):
    run_d(state_root, "--name", "stubborn", "busybox", "sh", "-c", 'trap "" TERM; sleep 1000')
    container_init_pid(detached)
    started = time.monotonic()
    assert cli(state_root, "stop", "-t", "2", "stubborn").returncode == 0
    took = time.monotonic() - started
    assert 2 <= took < 6, took
    assert detached.wait("stubborn") == 128 + signal.SIGKILL
    assert cli(state_root, "rm", "stubborn").returncode == 0


def test_stop_is_quick_when_the_command_exits_on_term(detached, state_root):
    # PID 1 of a pid namespace gets SIGTERM only if it handles it (the kernel drops it
    # otherwise): this shell handles it by exiting with the conventional 128+15.
    run_d(state_root, "--name", "polite", "busybox", "sh", "-c",
          'trap "exit 143" TERM; sleep 1000 & wait')
    container_init_pid(detached)
    time.sleep(0.2)  # let the shell install its trap
    started = time.monotonic()
    assert cli(state_root, "stop", "polite").returncode == 0  # the default grace: 10 s
    assert time.monotonic() - started < 3
    assert detached.wait("polite") == 143
    assert detached.inspect("polite")["State"]["ExitCode"] == 143
    assert cli(state_root, "rm", "polite").returncode == 0


def test_kill_sends_the_signal_asked_for(detached, state_root):
    run_d(state_root, "--name", "target", "busybox", "sh", "-c",
          'trap "echo got-usr1; exit 7" USR1; sleep 1000 & wait')
    container_init_pid(detached)
    time.sleep(0.2)
    assert cli(state_root, "kill", "-s", "USR1", "target").returncode == 0
    assert cli(state_root, "wait", "target").stdout.strip() == b"7"
    assert cli(state_root, "logs", "target").stdout == b"got-usr1\n"
    refused = cli(state_root, "kill", "target")
    assert refused.returncode != 0 and b"is not running" in refused.stderr
    assert cli(state_root, "start", "target").returncode == 0
    container_init_pid(detached)
    assert cli(state_root, "kill", "target").returncode == 0  # SIGKILL by default
    assert cli(state_root, "wait", "target").stdout.strip() == b"137"
    assert cli(state_root, "rm", "target").returncode == 0


def test_wait_returns_the_exit_code(detached, state_root):
    run_d(state_root, "--name", "three", "busybox", "sh", "-c", "sleep 0.3; exit 3")
    waited = cli(state_root, "wait", "three")
    assert waited.returncode == 0 and waited.stdout == b"3\n"
    assert detached.wait("three") == 3  # again, from the state on disk
    assert cli(state_root, "rm", "three").returncode == 0


def test_restart_gives_a_new_pid_1(detached, state_root):
    run_d(state_root, "--name", "again", "busybox", "sh", "-c", "echo up; sleep 1000")
    first = container_init_pid(detached)
    assert cli(state_root, "restart", "-t", "1", "again").returncode == 0
    second = detached.inspect("again")["State"]["Pid"]
    assert second and second != first
    assert container_init_pid(detached) == second and ns_pid_chain(second)[-1] == "1"
    assert cli(state_root, "logs", "again").stdout == b"up\nup\n", "one log across both runs"
    assert cli(state_root, "rm", "-f", "again").returncode == 0


def test_exec_runs_inside_the_containers_namespaces(detached, state_root):
    run_d(state_root, "--name", "host7", "-h", "box7", "busybox", "sh", "-c",
          "echo from-the-container > /tmp/marker; sleep 1000")
    container_init_pid(detached)
    assert cli(state_root, "exec", "host7", "hostname").stdout == b"box7\n"
    processes = cli(state_root, "exec", "host7", "ps").stdout.decode().splitlines()
    assert any(line.split()[0] == "1" and "sleep 1000" in line for line in processes[1:]), processes
    assert len(processes) <= 5, "only the container's processes are visible"
    assert cli(state_root, "exec", "host7", "cat", "/tmp/marker").stdout == b"from-the-container\n"
    assert cli(state_root, "exec", "host7", "sh", "-c", "exit 4").returncode == 4
    env_dir = cli(state_root, "exec", "-e", "A=1", "-w", "/tmp", "host7", "sh", "-c",
                  'echo "$A $(pwd) $HOSTNAME"')
    assert env_dir.stdout == b"1 /tmp box7\n"
    missing = cli(state_root, "exec", "host7", "no-such-command")
    assert missing.returncode == 127 and b"not found" in missing.stderr
    # The Python API: capture the output through a runtime.stdio object.
    captured = Capture()
    assert detached.exec("host7", ["sh", "-c", "echo hi; echo oops >&2; exit 2"],
                         stdio=captured) == 2
    assert (captured.output, captured.errors) == (b"hi\n", b"oops\n")
    with pytest.raises(CommandNotFound):
        detached.exec("host7", ["nope"], stdio=Capture())
    assert cli(state_root, "rm", "-f", "host7").returncode == 0


def test_an_execd_process_is_in_the_containers_cgroup_and_namespaces(detached, state_root):
    container_id = run_d(state_root, "--name", "grouped", "busybox", "sleep", "1000")
    init = container_init_pid(detached)
    assert detached.exec("grouped", ["sleep", "4242"], detach=True) == 0
    deadline, found = time.monotonic() + 5, None
    while found is None and time.monotonic() < deadline:
        for pid in detached.cgroups.cgroup(container_id).procs():
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == b"sleep\x004242\x00":
                    found = pid
        time.sleep(0.02)
    assert found, "the exec'd sleep is in the container's cgroup"
    with open(f"/proc/{found}/cgroup") as f:
        assert container_id in f.read()
    for name in ("pid", "mnt", "uts", "ipc", "net", "cgroup"):
        assert os.readlink(f"/proc/{found}/ns/{name}") == os.readlink(f"/proc/{init}/ns/{name}")
    assert int(ns_pid_chain(found)[-1]) > 1
    top = cli(state_root, "top", "grouped").stdout.decode()
    assert "sleep 4242" in top and "sleep 1000" in top and top.startswith("UID")
    assert cli(state_root, "rm", "-f", "grouped").returncode == 0


def test_an_attach_client_gets_framed_output_from_the_start(detached):
    container_id = detached.create("busybox", ["sh", "-c", "echo out; echo err >&2; exit 5"])
    with shim.connect(detached.attach_socket_path(container_id), timeout=10) as sock:
        detached.start(container_id)  # after the client connected: docker run's order
        raw = b""
        while data := sock.recv(65536):
            raw += data
    # Docker's stream header: [stream, 0, 0, 0, big-endian length] then the bytes.
    frames, at = [], 0
    while at < len(raw):
        assert raw[at + 1:at + 4] == b"\0\0\0"
        size = int.from_bytes(raw[at + 4:at + 8], "big")
        frames.append((raw[at], raw[at + 8:at + 8 + size]))
        at += 8 + size
    assert sorted(frames) == [(1, b"out\n"), (2, b"err\n")]
    assert detached.wait(container_id) == 5
    detached.remove_container(container_id)


def test_a_tty_attach_is_a_raw_terminal_with_stdin(detached):
    container_id = detached.create("busybox", ["sh"], tty=True, stdin_open=True)
    with detached.attach(container_id) as sock:
        sock.settimeout(10)
        detached.start(container_id)
        sock.sendall(b"tty; exit 6\n")
        raw = b""
        while data := sock.recv(65536):
            raw += data
    assert b"/dev/pts/0" in raw, raw
    assert detached.wait(container_id) == 6
    detached.remove_container(container_id)


def test_a_killed_shim_is_reported_honestly_and_cleaned_up(detached, state_root):
    container_id = run_d(state_root, "--name", "orphaned", "busybox", "sleep", "1000")
    init = container_init_pid(detached)
    shim_pid = detached.find_container(container_id)["owner"][0]
    os.kill(shim_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not dead(init) and time.monotonic() < deadline:
        time.sleep(0.02)  # PR_SET_PDEATHSIG: the container goes down with its shim
    assert dead(init)
    assert status_of(state_root, "orphaned").startswith("Exited (unknown)")
    state = detached.inspect("orphaned")["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == -1
    assert "shim was killed" in state["Error"] and "unknown" in state["Error"]
    assert detached.wait("orphaned") == -1
    assert not detached.cgroups.leftovers(), "ps removed its cgroup"
    assert cli(state_root, "rm", "orphaned").returncode == 0


def test_rm_f_removes_a_running_detached_container(detached, state_root):
    run_d(state_root, "--name", "doomed", "busybox", "sleep", "1000")
    container_init_pid(detached)
    refused = cli(state_root, "rm", "doomed")
    assert refused.returncode != 0 and b"is running" in refused.stderr
    started = time.monotonic()
    assert cli(state_root, "rm", "-f", "doomed").returncode == 0
    assert time.monotonic() - started < 5
    assert not os.listdir(detached.containers_dir)


def test_run_d_rm_removes_the_container_when_it_exits(detached, state_root):
    container_id = run_d(state_root, "--rm", "busybox", "sh", "-c", "exit 0")
    deadline = time.monotonic() + 10
    while os.path.exists(os.path.join(detached.containers_dir, container_id)) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.listdir(detached.containers_dir)


def test_a_failed_start_reports_the_error_and_leaves_it_created(detached, state_root):
    failed = cli(state_root, "run", "-d", "--name", "broken", "busybox", "no-such-command")
    assert failed.returncode == 127 and b"not found" in failed.stderr
    assert status_of(state_root, "broken") == "Created"
    assert detached.inspect("broken")["State"]["ExitCode"] == 127
    with pytest.raises(ContainerError):
        detached.kill("broken")
    assert cli(state_root, "rm", "broken").returncode == 0
    gone = cli(state_root, "run", "-d", "--rm", "busybox", "no-such-command")
    assert gone.returncode == 127 and not os.listdir(detached.containers_dir)
