"""The `minirt` command as a client of minirtd: MINIRT_HOST, -H, and the default socket.

A daemon runs as a subprocess on the tests' state root with the tests' cgroup
parent; the CLI is run as a user would, with ``MINIRT_HOST`` (or ``-H``) naming
its socket. The daemon's request log (``GET /minirt/requests``) shows that the
work went through the Engine API, not through the CLI's own Engine; the
``engine`` fixture checks that nothing is left behind on the state root.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import require, minirt_cli
from daemon_fixtures import serving, socket_dir
from minirt import __version__

NOBODY = 65534


@pytest.fixture(scope="module")
def workdir():
    yield from socket_dir("minirt-cli-remote-")


@pytest.fixture(scope="module")
def daemon(state_root, image_store, workdir):
    yield from serving(state_root, workdir)


def remote(daemon, state_root, *args, **kw):
    """``minirt ARGS`` with MINIRT_HOST naming the test daemon."""
    env = {"MINIRT_HOST": daemon.address, **kw.pop("env", {})}
    return minirt_cli(*args, state_root=state_root, env=env, **kw)


def requests_since(daemon, last: int) -> list[dict]:
    status, _, entries = daemon.request("GET", f"/minirt/requests?since={last}")
    assert status == 200
    return entries


def last_request_id(daemon) -> int:
    entries = requests_since(daemon, 0)
    return entries[-1]["id"] if entries else 0


def paths(entries: list[dict]) -> list[str]:
    """``POST /v1.43/containers/ID/attach?...`` -> ``POST attach`` (create: ``POST create``)."""
    named = []
    for entry in entries:
        path = entry["path"].split("?")[0]
        named.append(f"{entry['method']} {path.rstrip('/').rsplit('/', 1)[-1]}")
    return named


# --- run ---------------------------------------------------------------------------------
def test_run_goes_through_the_api_as_create_attach_wait_start(daemon, engine, state_root):
    before = last_request_id(daemon)
    result = remote(daemon, state_root, "run", "--rm", "busybox", "echo", "hi")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"hi\n", b"")
    entries = [e for e in requests_since(daemon, before) if "/containers/" in e["path"]]
    made = paths(entries)
    assert made[:4] == ["POST create", "POST attach", "POST wait", "POST start"], made
    assert all(e["agent"].startswith("minirt-cli/") for e in entries)
    assert b"hi" not in result.stderr


def test_run_exits_with_the_containers_status_and_keeps_stderr_apart(daemon, engine,
                                                                      state_root):
    result = remote(daemon, state_root, "run", "--rm", "busybox", "sh", "-c",
                    "echo out; echo err >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == b"out\n"
    assert result.stderr == b"err\n"


def test_run_passes_stdin_with_dash_i_and_the_flags_as_dockers_create_body(daemon, engine,
                                                                          state_root):
    result = remote(daemon, state_root, "run", "--rm", "-i", "-e", "GREETING=hi", "-w", "/tmp",
                    "-h", "box1", "busybox", "sh", "-c",
                    'read line; echo "$GREETING|$(pwd)|$(hostname)|got:$line"', input=b"x\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hi|/tmp|box1|got:x\n"


def test_a_missing_command_exits_127_as_in_direct_mode(daemon, engine, state_root):
    through = remote(daemon, state_root, "run", "--rm", "busybox", "no-such-command")
    direct = minirt_cli("run", "--rm", "busybox", "no-such-command", state_root=state_root)
    assert through.returncode == direct.returncode == 127
    assert through.stderr == direct.stderr


# --- detached containers -----------------------------------------------------------------
def test_detached_container_lifecycle_through_the_daemon(daemon, engine, state_root):
    before = last_request_id(daemon)
    started = remote(daemon, state_root, "run", "-d", "--name", "remote-web", "-m", "64m",
                     "--pids-limit", "32", "busybox", "sh", "-c",
                     "echo started; echo oops >&2; trap 'exit 0' TERM; "
                     "while true; do sleep 0.1; done")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.decode().strip()
    assert len(container_id) == 64
    try:
        listed = remote(daemon, state_root, "ps")
        assert listed.returncode == 0
        row = next(line for line in listed.stdout.decode().splitlines()
                   if line.startswith(container_id[:12]))
        assert row.split()[-1] == "remote-web" and " Up " in row

        deadline = time.monotonic() + 5
        while True:
            logs = remote(daemon, state_root, "logs", "remote-web")
            if logs.stdout == b"started\n" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (logs.returncode, logs.stdout, logs.stderr) == (0, b"started\n", b"oops\n")

        execed = remote(daemon, state_root, "exec", "remote-web", "sh", "-c",
                        "echo in-$(hostname); echo e >&2; exit 4")
        assert execed.returncode == 4
        assert (execed.stdout, execed.stderr) == (f"in-{container_id[:12]}\n".encode(), b"e\n")

        inspected = engine.inspect(container_id)
        assert inspected["limits"]["memory"] == 64 * 1024 * 1024
        assert inspected["limits"]["pids"] == 32

        stopped = remote(daemon, state_root, "stop", "-t", "5", "remote-web")
        assert (stopped.returncode, stopped.stdout) == (0, b"remote-web\n")
        assert b"Exited (0)" in remote(daemon, state_root, "ps", "-a").stdout
        assert remote(daemon, state_root, "wait", "remote-web").stdout == b"0\n"
    finally:
        removed = remote(daemon, state_root, "rm", "-f", "remote-web")
    assert removed.returncode == 0, removed.stderr
    assert container_id[:12].encode() not in remote(daemon, state_root, "ps", "-a").stdout
    made = paths(requests_since(daemon, before))
    for step in ("POST create", "POST start", "GET json", "GET logs", "POST exec",
                 "POST stop", "DELETE remote-web"):
        assert step in made, (step, made)


def test_create_start_attach_and_commit_through_the_daemon(daemon, engine, image_store,
                                                           state_root):
    created = remote(daemon, state_root, "create", "--name", "remote-maker", "busybox", "sh",
                     "-c", "echo made > /made.txt; echo done; exit 6")
    assert created.returncode == 0, created.stderr
    try:
        attached = remote(daemon, state_root, "start", "-a", "remote-maker")
        assert (attached.returncode, attached.stdout) == (6, b"done\n"), attached.stderr
        committed = remote(daemon, state_root, "commit", "remote-maker", "remote/made:1")
        assert committed.returncode == 0, committed.stderr
        assert committed.stdout.decode().strip() == image_store.resolve("remote/made:1").id
    finally:
        remote(daemon, state_root, "rm", "-f", "remote-maker")
    try:
        check = remote(daemon, state_root, "run", "--rm", "remote/made:1", "cat", "/made.txt")
        assert (check.returncode, check.stdout) == (0, b"made\n"), check.stderr
    finally:
        assert remote(daemon, state_root, "rmi", "remote/made:1").returncode == 0


# --- images and version ------------------------------------------------------------------
def test_images_and_version_show_the_servers(daemon, image_store, state_root):
    images = remote(daemon, state_root, "images")
    assert images.returncode == 0, images.stderr
    header, *rows = images.stdout.decode().splitlines()
    assert header.split()[:2] == ["REPOSITORY", "TAG"]
    assert any(row.split()[:2] == ["busybox", "latest"] for row in rows)
    version = remote(daemon, state_root, "version")
    assert version.returncode == 0, version.stderr
    text = version.stdout.decode()
    assert text.startswith(f"Client: minirt {__version__}\n")
    assert f"Server: minirt {__version__} ({daemon.address})" in text
    assert "API version:  1.43 (minimum version 1.24)" in text


def test_tag_inspect_and_rmi_through_the_daemon(daemon, image_store, state_root):
    assert remote(daemon, state_root, "tag", "busybox", "remote/copy:1").returncode == 0
    assert image_store.resolve("remote/copy:1").id == image_store.resolve("busybox").id
    inspected = remote(daemon, state_root, "inspect", "remote/copy:1")
    assert inspected.returncode == 0 and b'"RepoTags"' in inspected.stdout
    removed = remote(daemon, state_root, "rmi", "remote/copy:1")
    assert (removed.returncode, removed.stdout) == (0, b"Untagged: remote/copy:1\n")
    assert "remote/copy:1" not in [i.name for i in image_store.images()]


def test_push_and_pull_print_the_daemons_progress(daemon, image_store, state_root):
    from registry_fixtures import running_registry
    directory = tempfile.mkdtemp(prefix="minirt-cli-remote-registry-")
    registry = running_registry(directory)
    server = next(registry)
    name = f"{server.address}/lab/remote:1"
    try:
        assert remote(daemon, state_root, "tag", "busybox", name).returncode == 0
        pushed = remote(daemon, state_root, "push", name)
        assert pushed.returncode == 0, pushed.stderr
        lines = pushed.stdout.decode().splitlines()
        assert lines[0] == f"The push refers to repository [{server.address}/lab/remote]"
        assert lines[-1].startswith("1: digest: sha256:")
        assert remote(daemon, state_root, "rmi", name).returncode == 0
        pulled = remote(daemon, state_root, "pull", name)
        assert pulled.returncode == 0, pulled.stderr
        assert pulled.stdout.decode().splitlines()[-1] == \
            f"Status: Downloaded newer image for {name}"
        assert remote(daemon, state_root, "pull", "-q", name).stdout == f"{name}\n".encode()
        missing = remote(daemon, state_root, "pull", f"{server.address}/lab/remote:nope")
        assert missing.returncode == 125 and missing.stderr.count(b"\n") == 1
        assert b"manifest unknown" in missing.stderr
    finally:
        remote(daemon, state_root, "rmi", name)
        registry.close()
        shutil.rmtree(directory, ignore_errors=True)


# --- errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["rm", "no-such-box"], ["logs", "no-such-box"],
                                  ["stop", "no-such-box"]])
def test_an_unknown_container_fails_as_in_direct_mode(daemon, state_root, argv):
    through = remote(daemon, state_root, *argv)
    direct = minirt_cli(*argv, state_root=state_root)
    assert through.returncode == direct.returncode == 125
    assert through.stderr == direct.stderr == b"minirt: no such container: no-such-box\n"


def test_a_daemon_that_is_down_is_one_clear_line(workdir, state_root):
    address = f"unix://{workdir}/nobody-listens.sock"
    result = minirt_cli("ps", state_root=state_root, env={"MINIRT_HOST": address})
    assert result.returncode == 125
    assert result.stdout == b""
    assert result.stderr.decode() == (f"minirt: cannot connect to the minirt daemon at "
                                      f"{address}: is `minirt daemon` running?\n")


def test_commands_the_daemon_does_not_serve_are_refused_not_run_directly(daemon, state_root):
    result = remote(daemon, state_root, "diff", "anything")
    assert result.returncode == 125
    assert result.stderr.decode() == (f"minirt diff is not available through the daemon at "
                                      f"{daemon.address}: run it without MINIRT_HOST (or with "
                                      "-H direct)\n")


# --- choosing the daemon -----------------------------------------------------------------
def test_dash_H_before_the_command_works_as_MINIRT_HOST(daemon, engine, state_root):
    before = last_request_id(daemon)
    for option in (["-H", daemon.address], [f"--host={daemon.address}"]):
        result = minirt_cli(*option, "run", "--rm", "busybox", "echo", "via-H",
                            state_root=state_root)
        assert (result.returncode, result.stdout) == (0, b"via-H\n"), result.stderr
    assert paths(requests_since(daemon, before)).count("POST create") == 2
    # -H wins over MINIRT_HOST, and -H direct means no daemon at all
    direct = minirt_cli("-H", "direct", "version", state_root=state_root,
                        env={"MINIRT_HOST": daemon.address})
    assert direct.stdout == f"minirt {__version__}\n".encode()


def test_empty_MINIRT_HOST_is_direct_mode(daemon, engine, state_root):
    before = last_request_id(daemon)
    result = minirt_cli("run", "--rm", "busybox", "echo", "direct", state_root=state_root,
                        env={"MINIRT_HOST": ""})
    assert (result.returncode, result.stdout) == (0, b"direct\n")
    assert requests_since(daemon, before) == []


def test_help_says_how_to_force_direct_mode(state_root):
    text = " ".join(minirt_cli("--help", state_root=state_root).stdout.decode().split())
    assert "MINIRT_HOST" in text and "-H direct" in text


def test_the_default_socket_is_used_only_when_a_daemon_answers_there(daemon, workdir,
                                                                    state_root):
    """As an ordinary user the default socket is $XDG_RUNTIME_DIR/minirt.sock: with no
    MINIRT_HOST and no -H, a daemon answering there gets the commands; a socket file
    nobody listens on (a killed daemon's) means direct mode; no file, direct mode."""
    import socket
    import stat
    require(os.stat("/").st_mode & stat.S_IXOTH,
            "other users cannot enter / here (e.g. a chroot whose root directory is 0700)")
    require(os.geteuid() == 0, "needs root to act as another user")
    runtime = tempfile.mkdtemp(prefix="minirt-xdg-", dir="/tmp")
    copy = tempfile.mkdtemp(prefix="minirt-cli-copy-", dir="/var/tmp")
    try:
        # nobody may not enter the checkout: a copy of the package, as test_rootless does
        shutil.copytree(os.path.dirname(os.path.dirname(os.path.abspath(__import__(
            "minirt").__file__))) + "/minirt", os.path.join(copy, "minirt"),
            ignore=shutil.ignore_patterns("__pycache__"))
        for directory in (runtime, copy):
            os.chmod(directory, 0o755)
        os.chown(runtime, NOBODY, NOBODY)

        def as_nobody(*args):
            env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "PYTHONPATH": copy,
                   "PYTHONDONTWRITEBYTECODE": "1", "XDG_RUNTIME_DIR": runtime,
                   "MINIRT_ROOT": os.path.join(runtime, "state")}

            def drop():
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            return subprocess.run([os.path.realpath(sys.executable), "-m", "minirt", *args],
                                  env=env, cwd="/", capture_output=True, timeout=60,
                                  preexec_fn=drop)

        direct = f"minirt {__version__}\n".encode()
        assert as_nobody("version").stdout == direct          # no socket file
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(os.path.join(runtime, "minirt.sock"))       # bound, never listening
        stale.close()
        os.chmod(os.path.join(runtime, "minirt.sock"), 0o666)
        assert as_nobody("version").stdout == direct          # nobody answers: direct
        os.unlink(os.path.join(runtime, "minirt.sock"))
        os.symlink(daemon.socket_path, os.path.join(runtime, "minirt.sock"))
        os.chmod(workdir, 0o711)  # this test's daemon, open to nobody for this test only
        os.chmod(daemon.socket_path, 0o666)
        try:
            before = last_request_id(daemon)
            answered = as_nobody("version")
        finally:
            os.chmod(daemon.socket_path, 0o660)
            os.chmod(workdir, 0o700)
        assert answered.returncode == 0, answered.stderr
        assert f"Server: minirt {__version__} (unix://{runtime}/minirt.sock)".encode() in \
            answered.stdout
        assert paths(requests_since(daemon, before)) == ["GET version"]
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
        shutil.rmtree(copy, ignore_errors=True)
