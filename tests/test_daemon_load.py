"""minirtd under load: 20 clients at once creating, running and removing containers.

For a bounded time (20 s), each of 20 docker-py clients loops over
``containers.run("busybox", ..., remove=True)`` (create + start + wait + logs +
delete) and checks its container's output. Every run must succeed or fail with
a clean Docker API error (a status and a message), never a dropped connection;
afterwards no container, mount, cgroup or process is left, and the daemon's
memory did not keep growing (its RSS after the run vs after a warm-up round).
"""

import shutil
import tempfile
import threading
import time

import docker
import psutil
import pytest

from conftest import assert_nothing_left
from daemon_fixtures import start_daemon

CLIENTS = 20
SECONDS = 20
RSS_GROWTH_LIMIT = 40 << 20   # bytes the daemon may grow by after its warm-up


@pytest.fixture
def daemon(state_root, engine):
    directory = tempfile.mkdtemp(prefix="minirtd-load-", dir="/tmp")
    running = start_daemon(state_root, f"unix://{directory}/minirt.sock", directory)
    yield running
    running.stop()
    shutil.rmtree(directory, ignore_errors=True)


def run_one(client, n: int) -> str:
    """One container: returns "ok" or the API error's text (a clean failure)."""
    try:
        out = client.containers.run("busybox", ["echo", f"run-{n}"], remove=True)
    except docker.errors.APIError as e:
        assert e.status_code and e.explanation, f"an API error without status or message: {e}"
        return f"{e.status_code}: {e.explanation}"
    assert out == f"run-{n}\n".encode(), out
    return "ok"


@pytest.mark.slow
def test_twenty_clients_at_once_all_succeed_or_fail_cleanly_and_nothing_leaks(daemon, engine):
    process = psutil.Process(daemon.process.pid)
    warmup = docker.DockerClient(base_url=daemon.address, timeout=120)
    for n in range(3):
        assert run_one(warmup, n) == "ok"
    warmup.close()
    rss_before = process.memory_info().rss

    results, errors = [], []
    deadline = time.monotonic() + SECONDS

    def client_loop(index: int) -> None:
        client = docker.DockerClient(base_url=daemon.address, timeout=120)
        n = 0
        try:
            while time.monotonic() < deadline:
                results.append(run_one(client, index * 10_000 + n))
                n += 1
        except Exception as e:   # a dropped connection, a wrong output: not a clean failure
            errors.append(f"client {index}: {e.__class__.__name__}: {e}")
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SECONDS + 180)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert not errors, errors[:5]
    ok = results.count("ok")
    failed = [r for r in results if r != "ok"]
    print(f"\n{len(results)} runs by {CLIENTS} clients in {SECONDS} s: {ok} ok, "
          f"{len(failed)} clean failures {failed[:3]}")
    assert ok >= CLIENTS, "every client got at least one run through"
    assert not failed, f"runs refused under load: {failed[:5]}"

    rss_after = process.memory_info().rss
    growth = rss_after - rss_before
    print(f"daemon RSS {rss_before / 2**20:.1f} MiB after warm-up, {rss_after / 2**20:.1f} MiB after")
    assert growth < RSS_GROWTH_LIMIT, f"the daemon grew by {growth / 2**20:.1f} MiB"
    check = docker.DockerClient(base_url=daemon.address, timeout=30)
    assert check.containers.list(all=True) == []
    assert check.ping()
    check.close()
    assert_nothing_left(engine, timeout=30)
