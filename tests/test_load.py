"""minirtd under load: 100 containers running at once, then replaced in a loop; nothing leaks.

A smaller version of ``bench/load``, for CI (~30 s). On a private state root
(busybox built) with its own minirtd, through docker-py:

* 100 idle busybox containers (``sleep 3600``, detached, default network: as
  root the ``bridge`` network) are started by 4 clients at once; each is seen
  running (one process in its cgroup, 100 in all), and with a bridge each holds
  its own address (100 distinct ones, leased in ``bridge.json``, inside its
  subnet, each on a veth plugged into the network's bridge). Then all are
  removed, and nothing is left: no container, shim, process, cgroup, veth,
  lease or mount.
* For 10 s, 4 clients replace containers (``rm -f`` one, start a new one)
  among 40 running; every request must succeed, every container created be
  removed, and again nothing may be left.

The default network's bridge, which this private root's first container makes
(its name is in ``<root>/networks/bridge.json``), is deleted at the end.
"""

import json
import os
import shutil
import tempfile
import threading
import time

import docker
import pytest

from conftest import CGROUP_PARENT, assert_nothing_left, require, shims_under, tier
from daemon_fixtures import start_daemon
from minirt.engine import Engine
from minirt.image import busybox
from minirt.kernel import mounts
from minirt.network import sandbox

pytestmark = [pytest.mark.root, pytest.mark.slow]

COUNT = 100              # containers running at once
CLIENTS = 4              # docker-py clients (threads)
REPLACE_POOL = 40        # containers kept running during the replace loop
REPLACE_SECONDS = 10
TIMEOUT = 120            # seconds: per request, and for any phase's threads to finish
COMMAND = ["sleep", "3600"]


@pytest.fixture(scope="module")
def load_daemon():
    """minirtd on a private state root of its own; afterwards stopped cleanly, and its
    default network's bridge deleted."""
    require(tier() == "root", f"needs the root tier (this machine is {tier()}); "
            "run the tests as root")
    directory = tempfile.mkdtemp(prefix="minirtd-test-load-", dir="/tmp")
    root = os.path.join(directory, "state")
    os.makedirs(root)
    os.chmod(root, 0o755)
    engine = Engine(root, cgroup_parent=CGROUP_PARENT)
    busybox.ensure(engine.images)
    running = start_daemon(root, f"unix://{directory}/minirt.sock", directory)
    try:
        yield running, engine
    finally:
        try:   # what a failed test left: shims outlive the daemon, so remove them first
            client = docker.APIClient(base_url=running.address, version="1.43", timeout=TIMEOUT)
            for c in client.containers(all=True):
                client.remove_container(c["Id"], force=True)
            client.close()
        finally:
            running.stop()
            delete_bridge(bridge_name(root))
            mounts.unmount_all_under(root)
            shutil.rmtree(directory, ignore_errors=True)
    assert running.process.returncode == 0, running.log


def bridge_name(root: str) -> str | None:
    """The default network's bridge of state root ``root`` (made with its first container)."""
    try:
        with open(os.path.join(root, "networks", "bridge.json")) as f:
            return json.load(f)["bridge"]
    except (OSError, ValueError, KeyError):
        return None


def delete_bridge(name: str | None) -> None:
    if not name:
        return
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=name):
            ipr.link("del", index=index)


def bridged() -> bool:
    return sandbox.default_mode() != "none"


class Clients:
    """Containers started and removed by docker-py clients on threads, every id counted."""

    def __init__(self, address: str):
        self.address = address
        self.lock = threading.Lock()
        self.created: set[str] = set()
        self.removed: set[str] = set()
        self.errors: list[str] = []
        self.start_seconds: list[float] = []

    def start(self, client) -> str | None:
        began = time.perf_counter()
        try:
            container = client.containers.run("busybox", COMMAND, detach=True)
        except Exception as e:   # an API error or a dropped connection: both count
            self._error(f"run: {type(e).__name__}: {e}")
            return None
        with self.lock:
            self.created.add(container.id)
            self.start_seconds.append(time.perf_counter() - began)
        return container.id

    def remove(self, client, container_id: str) -> bool:
        try:
            client.api.remove_container(container_id, force=True)
        except Exception as e:
            self._error(f"rm -f {container_id[:12]}: {type(e).__name__}: {e}")
            return False
        with self.lock:
            self.removed.add(container_id)
        return True

    def _error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)

    def on_threads(self, work, count: int = CLIENTS) -> None:
        """``work(client, i)`` on ``count`` threads, each with a client of its own."""
        def run(i: int) -> None:
            client = docker.DockerClient(base_url=self.address, timeout=TIMEOUT)
            try:
                work(client, i)
            except Exception as e:
                self._error(f"client {i}: {type(e).__name__}: {e}")
            finally:
                client.close()

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + TIMEOUT + REPLACE_SECONDS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "a client hung"

    def fill(self, count: int) -> list[list[str]]:
        """``count`` containers started at once by the clients: each client's ids."""
        owned: list[list[str]] = [[] for _ in range(CLIENTS)]

        def work(client, i: int) -> None:
            for _ in range(count // CLIENTS + (1 if i < count % CLIENTS else 0)):
                container_id = self.start(client)
                if container_id is None:
                    return
                owned[i].append(container_id)

        self.on_threads(work)
        return owned

    def remove_all(self) -> None:
        """Every container the daemon knows of (and every one we made), removed."""
        client = docker.DockerClient(base_url=self.address, timeout=TIMEOUT)
        try:
            listed = {c.id for c in client.containers.list(all=True)}
        finally:
            client.close()
        with self.lock:
            queue = sorted(listed | (self.created - self.removed))

        def work(client, i: int) -> None:
            for container_id in queue[i::CLIENTS]:
                self.remove(client, container_id)

        self.on_threads(work)


def assert_all_gone(running, engine: Engine, clients: Clients) -> None:
    """Every container created was removed, and nothing of any of them is left."""
    client = docker.DockerClient(base_url=running.address, timeout=TIMEOUT)
    try:
        assert client.containers.list(all=True) == []
    finally:
        client.close()
    assert clients.created == clients.removed, \
        f"created but not removed: {sorted(clients.created - clients.removed)[:5]}"
    from minirt.network.bridge import host_ifname
    bridge = bridge_name(engine.root)
    deadline = time.monotonic() + 10
    while True:   # a shim may take a moment to exit after its container's removal
        links = set(os.listdir("/sys/class/net"))
        ours = sorted(host_ifname(cid) for cid in clients.created if host_ifname(cid) in links)
        plugged = sorted(os.listdir(f"/sys/class/net/{bridge}/brif")) \
            if bridge and os.path.isdir(f"/sys/class/net/{bridge}/brif") else []
        shims = shims_under(engine.root)
        if not (ours or plugged or shims) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not ours, f"veths of removed containers left: {ours[:5]}"
    assert not plugged, f"still plugged into {bridge}: {plugged[:5]}"
    assert not shims, f"shims left: {shims[:5]}"
    assert_nothing_left(engine, timeout=10)   # dirs, cgroups, mounts, processes, veths, leases


def test_a_hundred_containers_run_at_once_then_all_are_removed_leaving_nothing(load_daemon):
    running, engine = load_daemon
    clients = Clients(running.address)
    began = time.monotonic()
    owned = clients.fill(COUNT)
    seconds = time.monotonic() - began
    try:
        assert not clients.errors, clients.errors[:5]
        ids = [cid for mine in owned for cid in mine]
        assert len(ids) == COUNT == len(set(ids))

        # Each one runs: one process in its cgroup (its `sleep`), and the daemon says so.
        per_container = {cid: engine.cgroups.cgroup(cid).procs() for cid in ids}
        assert not [cid[:12] for cid, pids in per_container.items() if len(pids) != 1], \
            "containers without exactly one process in their cgroup"
        assert sum(len(pids) for pids in per_container.values()) == COUNT
        for pids in list(per_container.values())[:10]:
            with open(f"/proc/{pids[0]}/comm") as f:
                assert f.read().strip() == "sleep"
        client = docker.DockerClient(base_url=running.address, timeout=TIMEOUT)
        try:
            listed = client.containers.list()
            assert {c.id for c in listed} == set(ids)
            addresses = {c.id: c.attrs["NetworkSettings"]["IPAddress"] for c in listed} \
                if bridged() else {}
        finally:
            client.close()
        if bridged():   # 100 distinct addresses, leased, in the subnet, each on a veth
            import ipaddress
            with open(os.path.join(engine.root, "networks", "bridge.json")) as f:
                network = json.load(f)
            assert len(set(addresses.values())) == COUNT and all(addresses.values()), addresses
            assert network["leases"] == addresses
            subnet = ipaddress.IPv4Network(network["subnet"])
            assert all(ipaddress.IPv4Address(a) in subnet for a in addresses.values())
            assert len(os.listdir(f"/sys/class/net/{network['bridge']}/brif")) == COUNT
        print(f"\n{COUNT} containers started by {CLIENTS} clients in {seconds:.1f} s "
              f"(median {sorted(clients.start_seconds)[COUNT // 2] * 1e3:.0f} ms, "
              f"max {max(clients.start_seconds) * 1e3:.0f} ms each)")
    finally:
        began = time.monotonic()
        clients.remove_all()
        print(f"removed in {time.monotonic() - began:.1f} s")
    assert not clients.errors, clients.errors[:5]
    assert_all_gone(running, engine, clients)


def test_replacing_containers_in_a_loop_answers_every_request_and_leaves_nothing(load_daemon):
    running, engine = load_daemon
    clients = Clients(running.address)
    try:
        owned = clients.fill(REPLACE_POOL)
        assert not clients.errors, clients.errors[:5]
        replaced = [0] * CLIENTS
        deadline = time.monotonic() + REPLACE_SECONDS

        def work(client, i: int) -> None:
            mine = owned[i]
            while mine and time.monotonic() < deadline:
                if not clients.remove(client, mine.pop(0)):
                    return
                container_id = clients.start(client)
                if container_id is None:
                    return
                mine.append(container_id)
                replaced[i] += 1

        began = time.monotonic()
        clients.on_threads(work)
        seconds = time.monotonic() - began
        assert not clients.errors, clients.errors[:5]
        ids = {cid for mine in owned for cid in mine}
        assert len(ids) == REPLACE_POOL
        assert all(engine.cgroups.cgroup(cid).procs() for cid in ids), "a replacement is not running"
        assert sum(replaced) >= CLIENTS, "every client replaced at least one container"
        print(f"\n{sum(replaced)} containers replaced in {seconds:.1f} s by {CLIENTS} clients "
              f"among {REPLACE_POOL} running ({sum(replaced) / seconds:.1f}/s)")
    finally:
        clients.remove_all()
    assert not clients.errors, clients.errors[:5]
    assert_all_gone(running, engine, clients)
