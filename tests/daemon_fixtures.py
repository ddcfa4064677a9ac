"""Start minirtd for tests, and talk to it (docker-py, the docker CLI, raw HTTP): shared
by the test_daemon* files.

The daemon runs as a subprocess (``python -m minirt daemon -H unix://...``) on
the tests' state root; ``RunningDaemon.stop`` ends it by its pid with SIGTERM.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import docker

from conftest import CGROUP_PARENT, dead as process_gone  # noqa: F401 (re-exported)


DOCKER_CLI = shutil.which("docker")


def cli_env(daemon, config: str | None = None) -> dict:
    """The docker CLI's environment: no DOCKER_* of this machine, a config dir of its own
    (no ~/.docker contexts or credentials), beside the daemon's socket unless given."""
    if config is None:
        config = os.path.join(os.path.dirname(daemon.socket_path), "docker-config")
    os.makedirs(config, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = config
    return env


def docker_cli(daemon, *args, timeout: float = 60, input=None, config: str | None = None,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """The real docker CLI against minirtd (skips where no docker CLI is installed)."""
    import pytest
    if DOCKER_CLI is None:
        pytest.skip("no docker CLI on PATH")
    return subprocess.run([DOCKER_CLI, "-H", daemon.address, *args],
                          env={**cli_env(daemon, config), **(env or {})}, input=input,
                          capture_output=True, text=True, timeout=timeout)


def UnixHTTPConnection(path: str, timeout: float = 10):
    """http.client over a Unix socket (keep-alive included): the CLI's own."""
    from minirt.daemon.client import UnixHTTPConnection as Connection
    return Connection(path, timeout=timeout)


def socket_dir(prefix: str):
    """For a fixture: a temp dir under /tmp, not pytest's tmp_path, since a Unix
    socket's path must fit in 108 bytes; removed afterwards."""
    directory = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def serving(state_root: str, directory: str):
    """For a fixture: minirtd on ``directory``/minirt.sock; afterwards stopped, by its
    pid, cleanly (exit 0, socket file removed, process gone)."""
    running = start_daemon(state_root, f"unix://{directory}/minirt.sock", directory)
    yield running
    running.stop()
    assert running.process.returncode == 0, running.log
    assert not os.path.exists(running.socket_path), "minirtd left its socket file behind"
    assert process_gone(running.process.pid)


class RunningDaemon:
    def __init__(self, process: subprocess.Popen, address: str, socket_path: str | None,
                 log_path: str):
        self.process, self.address, self.socket_path, self.log_path = \
            process, address, socket_path, log_path

    @property
    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def request(self, method: str, path: str, body=None, headers=None):
        """One request on a fresh connection: (status, headers, parsed JSON or text)."""
        conn = UnixHTTPConnection(self.socket_path)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            kind = response.getheader("Content-Type", "")
            return response.status, response, json.loads(data) if "json" in kind and data else data
        finally:
            conn.close()

    def stop(self) -> None:
        """SIGTERM by pid, as an init system would; the socket file must go with it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"minirtd ignored SIGTERM; its log:\n{self.log}")


def start_daemon(state_root: str, address: str, directory: str, wait: bool = True,
                 env: dict | None = None) -> RunningDaemon:
    """``python -m minirt daemon -H ADDRESS`` with the test state root; waits until it answers.

    Its output goes to a file, not a pipe: a pipe nobody reads would fill and
    block the daemon's request log.
    """
    log_path = os.path.join(directory, f"minirtd-{time.monotonic_ns()}.log")
    env = {**os.environ, "MINIRT_ROOT": state_root, "MINIRT_CGROUP_PARENT": CGROUP_PARENT,
           **(env or {})}
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "minirt", "daemon", "-H", address],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    socket_path = address[len("unix://"):] if address.startswith("unix://") else None
    running = RunningDaemon(process, address, socket_path, log_path)
    if wait:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"minirtd exited with {process.returncode}:\n{running.log}")
            try:
                if docker.APIClient(base_url=address, version="1.43", timeout=2).ping():
                    return running
            except Exception:
                time.sleep(0.05)
        running.stop()
        raise AssertionError(f"minirtd did not answer within 20 s:\n{running.log}")
    return running

