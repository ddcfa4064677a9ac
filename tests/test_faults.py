"""Faults: what a crash, a full disk, a killed container or a power cut leaves behind.

Each test injects one fault into real minirt processes (the daemon, the CLI,
shims, containers) on a state root of its own, then checks from outside:

1. the store is not corrupt: every blob under images/blobs/sha256 hashes to
   its name, and every manifest, config and layer the index names exists;
2. no half-written image is visible: ``images()`` lists only complete images,
   and no temp file shows up as one;
3. nothing leaked: no mount under the state root, no cgroup, veth, address
   lease, proxy, shim or container process;
4. ``minirt system prune -f`` removes what the fault orphaned (stale
   containers, temp files, dangling blobs and layers, the build cache), leaves
   running containers alone, and the store still verifies afterwards.

Faults: ``kill -9`` of minirtd during a pull, a build, a commit and while a
container runs under it; a full disk (a small tmpfs as the state root) during
a pull and a commit; SIGKILL of a container's PID 1; and a simulated reboot
(every process SIGKILLed, veths, bridge and cgroups gone, the state dir kept).

Registries are real (CNCF Distribution on 127.0.0.1, from registry_fixtures),
slowed down by the FaultProxy of registry_faults where a kill must land
mid-transfer. Every wait is bounded.
"""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time

import pytest

from conftest import (CGROUP_PARENT, container_init_pid, dead, minirt_cli, minirt_popen,
                      processes_in_cgroups, shims_under)
from daemon_fixtures import start_daemon
from minirt.engine import Engine
from minirt.errors import ImageError
from minirt.image import busybox
from minirt.image.store import ImageStore
from minirt.kernel import mounts
from minirt.network import bridge, ipam
from minirt.registry.push import push
from registry_faults import FaultProxy, layered_image
from registry_fixtures import registry, workdir  # noqa: F401 (fixtures)

MiB = 1 << 20
API = "/v1.43"


# --- checks ----------------------------------------------------------------------------
def verify_store(store: ImageStore) -> None:
    """(1) and (2): blobs hash to their names, the index names only complete images."""
    blobs = os.path.join(store.layout, "blobs", "sha256")
    for name in os.listdir(blobs) if os.path.isdir(blobs) else []:
        if name.startswith("."):
            continue    # a temp file: never a blob (see temp_files), never read as one
        sha = hashlib.sha256()
        with open(os.path.join(blobs, name), "rb") as f:
            while chunk := f.read(MiB):
                sha.update(chunk)
        assert sha.hexdigest() == name, f"blob {name[:12]} does not hash to its name"
    index = store._index()
    for entry in index["manifests"]:
        assert store.has_blob(entry["digest"]), f"the index names a missing manifest: {entry}"
        manifest = store.read_json(entry["digest"])
        for descriptor in [manifest["config"]] + manifest["layers"]:
            assert store.has_blob(descriptor["digest"]), \
                f"{entry['annotations']}: blob {descriptor['digest'][:19]} is missing"
    names = [image.name for image in store.images()]   # each loads: config and diff_ids agree
    assert len(names) == len(index["manifests"])
    assert not [n for n in names if n.startswith(".") or ".tmp" in n or ".pull" in n]


def temp_files(root: str) -> list[str]:
    """What an interrupted write leaves: hidden blobs, .unpack-* dirs, atomic_write temps,
    a build's staging dirs and a daemon's build contexts (relative to ``root``)."""
    from minirt import system
    engine = Engine(root, cgroup_parent=CGROUP_PARENT)
    return sorted(os.path.relpath(p, root) for p in system._temp_candidates(engine))


def image_names(store: ImageStore) -> list[str]:
    return sorted(image.name for image in store.images())


def my_veths(root: str, container_ids=()) -> list[str]:
    """Host veth ends of these containers, or plugged into one of this root's bridges
    (other test runs on this machine make veths of their own: not counted)."""
    bridges = {net.bridge for net in ipam.list_networks(root)}
    wanted = {bridge.host_ifname(cid) for cid in container_ids}
    found = []
    for name in os.listdir("/sys/class/net"):
        if not name.startswith("mrt") or name.startswith("mrtbr-"):
            continue
        try:
            master = os.path.basename(os.readlink(f"/sys/class/net/{name}/master"))
        except OSError:
            master = None
        if name in wanted or master in bridges:
            found.append(name)
    return sorted(found)


def processes_using(root: str) -> list[int]:
    """Live processes (not zombies) with their working directory or an open file under
    ``root``: shims, proxies, daemons, container processes."""
    found = []
    real = os.path.realpath(root)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid() or dead(int(pid)):
            continue
        try:
            links = [os.readlink(f"/proc/{pid}/cwd")]
            links += [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(link == real or link.startswith(real + "/") for link in links):
            found.append(int(pid))
    return found


def leases(root: str) -> dict:
    return {net.name: sorted(net.leases) for net in ipam.list_networks(root) if net.leases}


def leftovers(engine: Engine, container_ids=(), allow_mount: str | None = None) -> dict:
    """(3): everything that must be gone once the containers are; {} when clean."""
    found = {
        "mounts": [m for m in mounts.mount_points_under(engine.root) if m != allow_mount],
        "cgroups": engine.cgroups.leftovers(),
        "container processes": processes_in_cgroups(),
        "veths": my_veths(engine.root, container_ids),
        "leases": leases(engine.root),
        "shims": shims_under(engine.root),
        "processes using the state root": processes_using(engine.root),
    }
    return {k: v for k, v in found.items() if v}


def assert_nothing_leaked(engine: Engine, container_ids=(), allow_mount=None,
                          timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (found := leftovers(engine, container_ids, allow_mount)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not found, f"left behind: {found}"


def wait_until(condition, timeout: float, what: str, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def prune(root: str, *extra) -> str:
    """``minirt system prune -f``; its output. Then the store must still verify."""
    done = minirt_cli("system", "prune", "-f", *extra, state_root=root, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    verify_store(ImageStore(root))
    return done.stdout.decode()


def container_ids(engine: Engine) -> list[str]:
    return sorted(os.listdir(engine.containers_dir)) if os.path.isdir(engine.containers_dir) else []


# --- fixtures ------------------------------------------------------------------------------
def clean_up_root(engine: Engine) -> None:
    """Whatever a failed test left: its processes (by pid), cgroups, mounts, bridges."""
    for pid in set(shims_under(engine.root)) | set(processes_using(engine.root)) | \
            set(processes_in_cgroups()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while processes_in_cgroups() and time.monotonic() < deadline:
        time.sleep(0.02)
    for directory in engine.cgroups.leftovers():
        for path in sorted((os.path.join(d, n) for d, dirs, _ in os.walk(directory)
                            for n in dirs), key=len, reverse=True) + [directory]:
            try:
                os.rmdir(path)
            except OSError:
                pass
    for net in ipam.list_networks(engine.root):
        for cid in list(net.leases):
            bridge.detach(cid)
        bridge.remove_bridge(net)


@pytest.fixture
def fresh(root_tier):
    """An Engine on a state root of its own, with busybox; removed afterwards."""
    root = tempfile.mkdtemp(prefix="minirt-fault-", dir="/var/tmp")
    os.chmod(root, 0o755)
    engine = Engine(root, cgroup_parent=CGROUP_PARENT)
    busybox.ensure(engine.images)
    yield engine
    clean_up_root(engine)
    mounts.unmount_all_under(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def small_disk(root_tier):
    """A 24 MiB tmpfs as the state root: busybox in it, then a filler file leaving
    ``free(n)`` bytes. Unmounted and removed afterwards."""
    root = tempfile.mkdtemp(prefix="minirt-fault-tmpfs-", dir="/var/tmp")
    os.chmod(root, 0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=755", "tmpfs", root], check=True)
    try:
        engine = Engine(root, cgroup_parent=CGROUP_PARENT)
        busybox.ensure(engine.images)
        yield engine
    finally:
        clean_up_root(engine)
        mounts.unmount_all_under(root)
        os.rmdir(root)


def fill(root: str, leave: int) -> None:
    """Write a filler file so that only about ``leave`` bytes stay free on ``root``'s disk."""
    st = os.statvfs(root)
    free = st.f_bavail * st.f_frsize
    assert free > leave, f"only {free} bytes free on {root}"
    with open(os.path.join(root, "filler"), "wb") as f:
        left = free - leave
        while left > 0:
            f.write(b"\0" * min(left, MiB))
            left -= MiB


class Daemon:
    """minirtd on a fresh state root; killed with SIGKILL by a test, restarted, stopped."""

    def __init__(self, root: str, directory: str):
        self.root, self.directory = root, directory
        self.address = f"unix://{directory}/minirt.sock"
        self.running = None
        self.factory_dirs = []   # removed at the end even if a test fails

    def start(self):
        self.running = start_daemon(self.root, self.address, self.directory)
        return self.running

    @property
    def pid(self) -> int:
        return self.running.process.pid

    def children(self) -> list[int]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == self.pid:
                        found.append(int(pid))
            except (OSError, IndexError, ValueError):
                pass
        return found

    def kill9(self) -> None:
        """SIGKILL by pid, as the OOM killer or ``kill -9`` would; waits until it is gone."""
        os.kill(self.pid, signal.SIGKILL)
        self.running.process.wait(timeout=10)

    def stop(self) -> None:
        if self.running is not None and self.running.process.poll() is None:
            self.running.stop()

    def post(self, path: str, body: bytes = b"", content_type: str = "application/json"):
        """Send a request and return the socket without reading the answer (the daemon
        will be killed under it)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self.running.socket_path)
        sock.sendall(f"POST {API}{path} HTTP/1.1\r\nHost: d\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        return sock

    def cli(self, *args, **kw):
        return minirt_cli(*args, state_root=self.root, env={"MINIRT_HOST": self.address}, **kw)


@pytest.fixture
def daemon(fresh):
    directory = tempfile.mkdtemp(prefix="minirtd-fault-", dir="/tmp")  # a socket path < 108 bytes
    d = Daemon(fresh.root, directory)
    d.start()
    yield d
    d.stop()
    for path in [directory] + d.factory_dirs:
        shutil.rmtree(path, ignore_errors=True)


def shim_factory_of(d: Daemon) -> tuple[int, str]:
    """The daemon's shim factory: (pid, the directory of its socket)."""
    for pid in d.children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode().split("\0")
        except OSError:
            continue
        if "shim-factory" in argv:
            directory = os.path.dirname(argv[argv.index("shim-factory") + 1])
            d.factory_dirs.append(directory)
            return pid, directory
    raise AssertionError("minirtd has no shim factory")


def assert_daemon_gone(d: Daemon, factory) -> None:
    """After kill -9: the daemon and its shim factory (PR_SET_PDEATHSIG) are gone, and
    so is the factory's socket directory."""
    factory_pid, factory_dir = factory
    assert dead(d.pid)
    wait_until(lambda: dead(factory_pid), 10, "the shim factory to die with the daemon")
    wait_until(lambda: not os.path.exists(factory_dir), 5,
               f"the shim factory's directory {factory_dir} to go")


def publish(source: ImageStore, local: str, remote: str) -> None:
    source.tag(remote, source.resolve(local).manifest_digest)
    try:
        push(source, remote)
    finally:
        source.untag(remote)


# --- kill -9 of the daemon -----------------------------------------------------------------
def test_daemon_killed_during_a_pull(daemon, fresh, registry, workdir):
    """A small layer arrives whole, the large one is half-way when minirtd dies: the
    store holds the verified small blob (untagged) and a hidden temp file, no image."""
    source = ImageStore(os.path.join(workdir, "source"))
    busybox.ensure(source)
    image = layered_image(source, "lab/big:1", "busybox", [200_000, 3 * MiB], workdir,
                          seed=time.monotonic_ns())
    publish(source, "lab/big:1", f"{registry.address}/lab/big:1")
    proxy = FaultProxy(registry.address)
    try:
        small, large = image.layers[-2], image.layers[-1]
        proxy.faults[large.digest] = "slow"        # 3 MiB at 16 KiB / 20 ms: ~4 s
        remote = f"{proxy.address}/lab/big"
        factory = shim_factory_of(daemon)
        store = fresh.images
        before = image_names(store)
        with daemon.post(f"/images/create?fromImage={remote}&tag=1"):
            def half_way():
                blobs = os.path.join(store.layout, "blobs", "sha256")
                return store.has_blob(small.digest) and any(
                    n.startswith(".pull-") and os.path.getsize(os.path.join(blobs, n)) > 64 * 1024
                    for n in os.listdir(blobs))
            wait_until(half_way, 20, "the large layer to be half-way")
            daemon.kill9()
        assert_daemon_gone(daemon, factory)
    finally:
        proxy.close()

    verify_store(store)
    assert image_names(store) == before, "no half-pulled image is visible"
    assert store.has_blob(small.digest) and not store.has_blob(large.digest)
    assert [t for t in temp_files(fresh.root) if ".pull-" in t], "the partial download is left"
    assert_nothing_leaked(fresh)

    out = prune(fresh.root)
    assert "Deleted temporary files:" in out and ".pull-" in out
    assert f"deleted: {small.digest}" in out, "the dangling verified blob goes too"
    assert temp_files(fresh.root) == []
    assert not store.has_blob(small.digest)
    assert image_names(store) == before
    # The store works: the same pull, now direct and at full speed, completes.
    pulled = minirt_cli("pull", "-q", f"{registry.address}/lab/big:1", state_root=fresh.root)
    assert pulled.returncode == 0, pulled.stderr.decode()
    verify_store(store)


def test_daemon_killed_during_a_build(daemon, fresh, tmp_path):
    """minirtd dies while a RUN step's container runs: the container dies with it, and
    prune removes it, the received build context and the build cache."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "data.txt").write_text("some data\n")
    (context / "Dockerfile").write_text("FROM busybox\nCOPY data.txt /data.txt\n"
                                        "RUN sleep 60\nCMD [\"cat\", \"/data.txt\"]\n")
    body = tempfile.SpooledTemporaryFile()
    with tarfile.open(fileobj=body, mode="w") as tar:
        for name in ("Dockerfile", "data.txt"):
            tar.add(context / name, arcname=name)
    body.seek(0)
    factory = shim_factory_of(daemon)
    store = fresh.images
    with daemon.post("/build?t=built:1", body.read(), "application/x-tar"):
        init = container_init_pid(fresh, timeout=20)   # RUN sleep 60 is running
        run_container = next(c for c in fresh.containers() if c["name"].startswith("minirt-build-"))
        assert leases(fresh.root), "the RUN container has an address"
        daemon.kill9()
    assert_daemon_gone(daemon, factory)
    wait_until(lambda: dead(init) and not processes_in_cgroups(), 10,
               "the RUN container to die with the daemon (PR_SET_PDEATHSIG)")

    verify_store(store)
    assert "built:1" not in image_names(store)
    assert [t for t in temp_files(fresh.root) if t.startswith("minirt-build-context-")], \
        "the received context is left"
    # What the dead daemon could not clean up: the RUN container's cgroup, lease, record.
    listing = minirt_cli("ps", "-a", state_root=fresh.root).stdout.decode()
    assert run_container["name"] in listing and "Exited (unknown)" in listing
    assert_nothing_leaked(fresh, [run_container["id"]])

    out = prune(fresh.root)
    assert run_container["id"] in out
    assert "minirt-build-cache:" in out, "the COPY step's cache image is build cache"
    assert container_ids(fresh) == [] and temp_files(fresh.root) == []
    assert image_names(store) == ["busybox:latest"]
    assert not os.path.exists(os.path.join(fresh.root, "build-cache.json"))
    assert sorted(os.listdir(store.layers_root)) == [
        layer.diff_id.removeprefix("sha256:") for layer in store.resolve("busybox").layers]
    assert_nothing_leaked(fresh, [run_container["id"]])


def test_daemon_killed_during_a_commit(daemon, fresh):
    """minirtd dies while it packs a container's 24 MB of changes into a layer."""
    result = fresh.run("busybox", ["sh", "-c", "head -c 24000000 /dev/urandom > /big"],
                       remove=False, name="changed", network="none")
    assert result.exit_code == 0, result.errors
    store = fresh.images
    blobs = os.path.join(store.layout, "blobs", "sha256")
    factory = shim_factory_of(daemon)
    with daemon.post("/commit?container=changed&repo=committed&tag=1"):
        wait_until(lambda: any(n.startswith(".tmp-") and
                               os.path.getsize(os.path.join(blobs, n)) > 0
                               for n in os.listdir(blobs)), 20, "the commit to be writing")
        daemon.kill9()
    assert_daemon_gone(daemon, factory)

    verify_store(store)
    assert image_names(store) == ["busybox:latest"], "no half-committed image"
    assert [t for t in temp_files(fresh.root) if t.startswith("images/blobs/sha256/.tmp-")]
    assert_nothing_leaked(fresh)

    out = prune(fresh.root)
    assert result.container_id in out, "the stopped container goes"
    assert temp_files(fresh.root) == [] and container_ids(fresh) == []
    assert image_names(store) == ["busybox:latest"]


def test_daemon_killed_while_a_container_runs(daemon, fresh):
    """The container's shim is independent of the daemon: it keeps running; a restarted
    daemon lists it, and stop and rm work through it."""
    started = daemon.cli("run", "-d", "--name", "survivor", "-p", "127.0.0.1::80",
                         "busybox", "sleep", "300")
    assert started.returncode == 0, started.stderr.decode()
    cid = started.stdout.decode().strip()
    init = container_init_pid(fresh)
    shim = fresh.find_container(cid)["owner"][0]
    assert shim in shims_under(fresh.root) and leases(fresh.root)
    factory = shim_factory_of(daemon)

    daemon.kill9()
    assert_daemon_gone(daemon, factory)
    time.sleep(0.3)
    assert not dead(init) and not dead(shim), "the container outlives the daemon"

    daemon.start()
    listing = daemon.cli("ps").stdout.decode()
    assert "survivor" in listing and "Up" in listing, listing
    inspect = json.loads(daemon.cli("inspect", "survivor").stdout)
    assert inspect[0]["State"]["Running"] and inspect[0]["State"]["Pid"] == init
    ports = inspect[0]["NetworkSettings"]["Ports"]["80/tcp"]
    with socket.create_connection(("127.0.0.1", int(ports[0]["HostPort"])), timeout=5):
        pass   # its proxy still serves the published port
    assert daemon.cli("stop", "-t", "1", "survivor").returncode == 0
    assert daemon.cli("rm", "survivor").returncode == 0
    daemon.stop()
    assert_nothing_leaked(fresh, [cid])
    assert container_ids(fresh) == []
    verify_store(fresh.images)


# --- a full disk ---------------------------------------------------------------------------
def assert_explains_disk_full(message: str, root: str, doing: str) -> None:
    """One line that says the disk is full, where, during what, and what to do."""
    assert "\n" not in message and "Traceback" not in message, message
    assert "no space left on device" in message and root in message, message
    assert doing in message and "system prune" in message, message


def test_disk_full_during_a_pull(small_disk, registry, workdir):
    source = ImageStore(os.path.join(workdir, "source"))
    busybox.ensure(source)
    image = layered_image(source, "lab/huge:1", "busybox", [100_000, 6 * MiB], workdir,
                          seed=time.monotonic_ns())
    publish(source, "lab/huge:1", f"{registry.address}/lab/huge:1")
    fill(small_disk.root, 3 * MiB)
    store = small_disk.images

    remote = f"{registry.address}/lab/huge:1"
    done = minirt_cli("pull", "-q", remote, state_root=small_disk.root)
    error = done.stderr.decode().strip()
    assert done.returncode == 125 and len(error.splitlines()) == 1, error
    assert_explains_disk_full(error, small_disk.root, "pulling")
    with pytest.raises(ImageError) as raised:   # the Python API: a MinirtError, not an OSError
        small_disk.pull(remote)
    assert_explains_disk_full(str(raised.value), small_disk.root, "pulling")
    verify_store(store)
    assert image_names(store) == ["busybox:latest"]
    assert not store.has_blob(image.layers[-1].digest)
    assert temp_files(small_disk.root) == [], "the partial blob was deleted"
    assert_nothing_leaked(small_disk, allow_mount=small_disk.root)

    prune(small_disk.root)
    assert not store.has_blob(image.layers[-2].digest), "the dangling small layer goes"
    assert image_names(store) == ["busybox:latest"]
    assert temp_files(small_disk.root) == []


def test_disk_full_during_a_commit(small_disk):
    result = small_disk.run("busybox", ["sh", "-c", "head -c 5000000 /dev/urandom > /big"],
                            remove=False, name="changed", network="none")
    assert result.exit_code == 0, result.errors
    fill(small_disk.root, 2 * MiB)
    store = small_disk.images

    done = minirt_cli("commit", "changed", "committed:1", state_root=small_disk.root)
    error = done.stderr.decode().strip()
    assert done.returncode == 125 and len(error.splitlines()) == 1, error
    assert_explains_disk_full(error, small_disk.root, "committed:1")
    with pytest.raises(ImageError) as raised:
        small_disk.commit("changed", "committed:1")
    assert_explains_disk_full(str(raised.value), small_disk.root, "committed:1")
    verify_store(store)
    assert image_names(store) == ["busybox:latest"]
    assert temp_files(small_disk.root) == []
    assert_nothing_leaked(small_disk, allow_mount=small_disk.root)

    out = prune(small_disk.root)
    assert result.container_id in out
    assert container_ids(small_disk) == [] and temp_files(small_disk.root) == []


# --- SIGKILL of a container's PID 1 ---------------------------------------------------------
def test_sigkill_of_a_containers_init(fresh):
    root = fresh.root
    # Foreground, --rm: 137, and its directory is gone.
    run = minirt_popen("run", "--rm", "busybox", "sleep", "60", state_root=root)
    os.kill(container_init_pid(fresh), signal.SIGKILL)
    run.communicate(timeout=20)
    assert run.returncode == 137
    assert container_ids(fresh) == []
    assert_nothing_leaked(fresh)

    # Foreground, kept: 137 recorded.
    run = minirt_popen("run", "--name", "kept", "busybox", "sleep", "60", state_root=root)
    os.kill(container_init_pid(fresh), signal.SIGKILL)
    run.communicate(timeout=20)
    assert run.returncode == 137
    assert fresh.inspect("kept")["State"]["ExitCode"] == 137

    # Detached: its shim records 137.
    started = minirt_cli("run", "-d", "--name", "bg", "busybox", "sleep", "60", state_root=root)
    assert started.returncode == 0, started.stderr.decode()
    os.kill(container_init_pid(fresh), signal.SIGKILL)
    waited = minirt_cli("wait", "bg", state_root=root, timeout=20)
    assert waited.stdout.strip() == b"137"
    state = fresh.inspect("bg")["State"]
    assert (state["Status"], state["ExitCode"], state["Error"]) == ("exited", 137, "")
    ids = container_ids(fresh)
    assert_nothing_leaked(fresh, ids)

    out = prune(root)
    assert all(cid in out for cid in ids)
    assert container_ids(fresh) == []


# --- a power cut -------------------------------------------------------------------------------
def test_reboot(fresh):
    """SIGKILL everything (shims, proxies, the foreground runs, the containers' processes),
    remove the veths, the bridge and the cgroups as a reboot would, keep the state dir."""
    root = fresh.root
    for args in (["--name", "web", "-p", "127.0.0.1::80"], ["--name", "quiet"]):
        started = minirt_cli("run", "-d", *args, "busybox", "sleep", "300", state_root=root)
        assert started.returncode == 0, started.stderr.decode()
    foreground = [minirt_popen("run", "--name", "fg", "busybox", "sleep", "300", state_root=root),
                  minirt_popen("run", "--rm", "--name", "fgrm", "busybox", "sleep", "300",
                               state_root=root)]
    wait_until(lambda: len(fresh.containers()) == 4 and
               all(c["running"] and c["state"].get("status") == "running"
                   for c in fresh.containers()), 20, "four running containers")
    ids = container_ids(fresh)
    by_name = {c["name"]: c["id"] for c in fresh.containers()}
    proxies = [p for p in processes_using(root) if open(f"/proc/{p}/comm").read().strip()
               == "minirt-proxy"]
    assert len(proxies) == 1
    networks = ipam.list_networks(root)
    assert len(leases(root)["bridge"]) == 4

    # The power cut.
    victims = set(shims_under(root)) | set(proxies) | {p.pid for p in foreground} | \
        set(processes_in_cgroups())
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    for process in foreground:
        process.communicate(timeout=10)
    wait_until(lambda: all(dead(pid) for pid in victims) and not processes_in_cgroups(), 10,
               "every process to be gone")
    # The reboot: no veth, no bridge, no cgroup survives it.
    for cid in ids:
        bridge.detach(cid)
    for net in networks:
        bridge.remove_bridge(net)
    for directory in fresh.cgroups.leftovers():
        os.rmdir(directory)

    # After it: ps shows them exited, exit code unknown, and releases their leases.
    listing = minirt_cli("ps", "-a", state_root=root).stdout.decode()
    rows = {line.split()[-1]: line for line in listing.splitlines()[1:]}
    assert sorted(rows) == ["fg", "quiet", "web"], listing   # fgrm was --rm
    assert all("Exited (unknown)" in row for row in rows.values()), listing
    state = fresh.inspect("web")["State"]
    assert state["ExitCode"] == -1 and "exit code is unknown" in state["Error"]
    assert leases(root) == {}
    assert_nothing_leaked(fresh, ids)

    # A container started after the reboot is running while we prune: untouched.
    alive = minirt_cli("run", "-d", "--name", "alive", "busybox", "sleep", "300",
                       state_root=root)
    assert alive.returncode == 0, alive.stderr.decode()
    alive_id = alive.stdout.decode().strip()
    out = prune(root)
    assert all(by_name[name] in out for name in ("fg", "quiet", "web")), out
    assert sorted(c["name"] for c in fresh.containers()) == ["alive"]
    assert fresh.find_container("alive")["running"]
    assert alive_id not in out and "busybox:latest" in image_names(fresh.images)

    # A fresh run works: the bridge comes back, with NAT-free default networking.
    done = minirt_cli("run", "--rm", "-p", "127.0.0.1::80", "busybox", "sh", "-c",
                      "ip -4 addr show eth0 | grep -c inet", state_root=root)
    assert done.returncode == 0 and done.stdout.strip() == b"1", done.stderr.decode()
    assert minirt_cli("rm", "-f", "alive", state_root=root).returncode == 0
    assert_nothing_leaked(fresh, ids + [alive_id])
    assert container_ids(fresh) == []


# --- what prune keeps -------------------------------------------------------------------------
def test_prune_asks_first_and_keeps_what_is_in_use(fresh, tmp_path):
    """Running containers, tagged images, files a live process writes, and anything
    younger than the grace period stay; the rest goes."""
    root, store = fresh.root, fresh.images
    layered_image(store, "mine:1", "busybox", [1000], str(tmp_path))   # tagged, unused: kept
    dangling_blob = store.write_blob(b"nobody refers to this blob")
    dangling_layer = os.path.join(store.layers_root, "ab" * 32)
    os.makedirs(os.path.join(dangling_layer, "etc"))
    blobs = os.path.join(store.layout, "blobs", "sha256")
    held = open(os.path.join(blobs, ".pull-held"), "wb")              # a pull under way
    with open(os.path.join(blobs, ".pull-orphan"), "wb") as f:       # a killed pull's
        f.write(b"half a layer")
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead_writer = os.path.join(store.layout, f".tmp-{gone.pid}-index.json")
    live_writer = os.path.join(store.layout, f".tmp-{os.getpid()}-index.json")
    for path in (dead_writer, live_writer):
        with open(path, "w") as f:
            f.write("{}")
    assert minirt_cli("create", "--name", "made", "busybox", "true", state_root=root).returncode == 0
    finished = fresh.run("busybox", ["true"], remove=False, name="finished", network="none")
    up = minirt_cli("run", "-d", "--name", "up", "busybox", "sleep", "300", state_root=root)
    assert up.returncode == 0, up.stderr.decode()
    up_id = up.stdout.decode().strip()
    try:
        # Without -f it asks; anything but yes cancels.
        asked = minirt_cli("system", "prune", state_root=root, input=b"n\n")
        assert asked.returncode == 1 and b"Are you sure you want to continue? [y/N]" in asked.stdout
        assert b"cancelled" in asked.stderr
        assert sorted(c["name"] for c in fresh.containers()) == ["finished", "made", "up"]

        # Within the grace period: stopped containers go, fresh blobs and temp files stay.
        out = minirt_cli("system", "prune", state_root=root, input=b"y\n",
                         env={"MINIRT_GC_GRACE_SECONDS": "3600"}).stdout.decode()
        assert finished.container_id in out and "Total reclaimed space:" in out
        assert sorted(c["name"] for c in fresh.containers()) == ["up"]
        assert store.has_blob(dangling_blob) and os.path.isdir(dangling_layer)
        assert os.path.exists(os.path.join(blobs, ".pull-orphan")) and os.path.exists(dead_writer)

        # Past it: what nobody uses or writes goes.
        out = prune(root)
        assert f"deleted: {dangling_blob}" in out and not store.has_blob(dangling_blob)
        assert not os.path.exists(dangling_layer)
        assert not os.path.exists(os.path.join(blobs, ".pull-orphan"))
        assert not os.path.exists(dead_writer)
        assert os.path.exists(os.path.join(blobs, ".pull-held")), "a file being written stays"
        assert os.path.exists(live_writer), "its writer is alive"
        assert image_names(store) == ["busybox:latest", "mine:1"]
        up_now = fresh.find_container("up")
        assert up_now["running"] and up_now["id"] == up_id
        assert all(os.path.isdir(layer) for layer in up_now["layers"])
    finally:
        held.close()
        os.unlink(live_writer)
    assert minirt_cli("rm", "-f", "up", state_root=root).returncode == 0
    prune(root)
    assert temp_files(root) == [] and container_ids(fresh) == []
    assert_nothing_leaked(fresh, [up_id])
