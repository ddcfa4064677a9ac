"""Networks: IPAM bookkeeping on a temp state root, then real bridges and veth pairs.

The kernel tests use "fake containers": a forked child that unshares its network
namespace and waits on a pipe. Everything they create is named ``mrt...`` and is
removed again; each test checks that no veth, bridge or process of its own is left.
Traffic only ever flows between namespaces these tests made (no host routes used).
"""

import ipaddress
import json
import os
import secrets
import select
import signal
import socket
import time

import pytest

from conftest import require
from minirt.errors import NetworkError
from minirt.kernel import namespaces
from minirt.network import bridge, ipam

NO_HOST = []  # an empty host for IPAM unit tests: no interface addresses to avoid


# --- IPAM -------------------------------------------------------------------------------

@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "state")


def test_networks_get_successive_free_24s_with_gateway_dot1(root):
    a = ipam.create_network(root, "a", host=NO_HOST)
    b = ipam.create_network(root, "b", host=NO_HOST)
    busy = [("eth9", ipaddress.IPv4Interface("172.30.2.5/24"))]
    c = ipam.create_network(root, "c", host=busy)
    assert (a.subnet, a.gateway) == ("172.30.0.0/24", "172.30.0.1")
    assert b.subnet == "172.30.1.0/24"
    assert c.subnet == "172.30.3.0/24"  # 172.30.2.0/24 is on a host interface
    assert a.bridge.startswith("mrtbr-") and len(a.bridge) <= 15


def test_addresses_are_leased_in_order_skipping_the_gateway(root):
    ipam.create_network(root, "lab", "10.5.0.0/24", host=NO_HOST)
    got = [ipam.allocate(root, "lab", cid) for cid in ("c1", "c2", "c3")]
    assert [str(a) for a in got] == ["10.5.0.2", "10.5.0.3", "10.5.0.4"]
    assert ipam.allocate(root, "lab", "c2") == ipaddress.IPv4Address("10.5.0.3")  # same lease again


def test_leases_survive_a_reload_from_disk(root):
    ipam.create_network(root, "lab", "10.6.0.0/24", host=NO_HOST)
    ipam.allocate(root, "lab", "c1")
    with open(os.path.join(root, "networks", "lab.json")) as f:
        on_disk = json.load(f)
    assert on_disk["leases"] == {"c1": "10.6.0.2"}
    assert ipam.load_network(root, "lab").leases == {"c1": "10.6.0.2"}
    assert ipam.allocate(root, "lab", "c2") == ipaddress.IPv4Address("10.6.0.3")
    assert [n.name for n in ipam.list_networks(root)] == ["lab"]


def test_a_full_subnet_says_it_is_exhausted(root):
    ipam.create_network(root, "tiny", "10.9.9.0/30", host=NO_HOST)
    assert str(ipam.allocate(root, "tiny", "c1")) == "10.9.9.2"  # .0 net, .1 gw, .3 broadcast
    with pytest.raises(NetworkError, match=r"^subnet 10\.9\.9\.0/30 of network tiny is exhausted: no free "
                       r"address \(remove a container or use a larger subnet\)$"):
        ipam.allocate(root, "tiny", "c2")


def test_overlapping_subnets_are_refused_with_the_culprit_named(root):
    ipam.create_network(root, "lab", "10.1.0.0/16", host=NO_HOST)
    with pytest.raises(NetworkError, match=r"^subnet 10\.1\.0\.0/24 overlaps network lab \(10\.1\.0\.0/16\)$"):
        ipam.create_network(root, "other", "10.1.0.0/24", host=NO_HOST)
    host = [("eth0", ipaddress.IPv4Interface("192.0.2.2/24"))]
    with pytest.raises(NetworkError, match=r"overlaps eth0's address 192\.0\.2\.2/24"):
        ipam.create_network(root, "other", "192.0.2.0/25", host=host)
    assert [n.name for n in ipam.list_networks(root)] == ["lab"]


def test_a_subnet_on_a_real_host_interface_is_refused(root):
    real = [(ifname, iface) for ifname, iface in ipam.host_networks() if not iface.ip.is_loopback]
    if not real:  # not a missing capability (the root test below covers the rule anyway)
        pytest.skip("this machine has no non-loopback IPv4 address to collide with")
    ifname, iface = real[0]
    with pytest.raises(NetworkError, match=f"overlaps {ifname}'s address"):
        ipam.create_network(root, "clash", str(iface.network))


def test_bad_names_and_subnets_are_refused(root):
    for name in ("", "-x", "a/b", "../up"):
        with pytest.raises(NetworkError, match="invalid network name"):
            ipam.create_network(root, name, host=NO_HOST)
    with pytest.raises(NetworkError, match="invalid subnet"):
        ipam.create_network(root, "x", "10.0.0.1/24", host=NO_HOST)  # host bits set
    with pytest.raises(NetworkError, match="too small"):
        ipam.create_network(root, "x", "10.0.0.0/31", host=NO_HOST)
    ipam.create_network(root, "x", host=NO_HOST)
    with pytest.raises(NetworkError, match="already exists"):
        ipam.create_network(root, "x", host=NO_HOST)
    with pytest.raises(NetworkError, match="network nope not found"):
        ipam.allocate(root, "nope", "c1")


def test_release_frees_the_address_and_remove_waits_for_it(root):
    ipam.create_network(root, "lab", "10.7.0.0/24", host=NO_HOST)
    ipam.allocate(root, "lab", "abcdef0123456789")
    with pytest.raises(NetworkError, match="^network lab has active endpoints: abcdef012345$"):
        ipam.remove_network(root, "lab")
    assert ipam.release(root, "lab", "abcdef0123456789") is True
    assert ipam.release(root, "lab", "abcdef0123456789") is False
    assert ipam.allocate(root, "lab", "c9") == ipaddress.IPv4Address("10.7.0.2")  # reused
    ipam.release(root, "lab", "c9")
    ipam.remove_network(root, "lab")
    assert ipam.list_networks(root) == []
    with pytest.raises(NetworkError, match="not found"):
        ipam.load_network(root, "lab")


def test_concurrent_allocations_never_share_an_address(root):
    ipam.create_network(root, "lab", "10.8.0.0/24", host=NO_HOST)
    children = []
    for i in range(8):
        pid = os.fork()
        if pid == 0:
            try:
                ipam.allocate(root, "lab", f"c{i}")
                os._exit(0)
            finally:
                os._exit(1)
        children.append(pid)
    codes = [_reap(pid, timeout=10) for pid in children]
    assert codes == [0] * 8
    leases = ipam.load_network(root, "lab").leases
    assert len(leases) == 8 and len(set(leases.values())) == 8


# --- helpers for the kernel tests -----------------------------------------------------------

def _reap(pid: int, timeout: float) -> int:
    """Wait (bounded) for child ``pid``; SIGKILL it at the deadline. Its exit code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


class FakeContainer:
    """A child in a network namespace of its own, waiting until ``stop()``."""

    _holds = set()  # every fake's write end: a later fake must not keep an earlier one alive

    def __init__(self):
        ready_r, ready_w = os.pipe()
        hold_r, self._hold_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(ready_r)
                for fd in FakeContainer._holds | {self._hold_w}:
                    os.close(fd)
                namespaces.unshare(["net"])
                os.write(ready_w, b"1")
                os.read(hold_r, 1)  # returns at EOF: when the test closes its end (or dies)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(hold_r)
        FakeContainer._holds.add(self._hold_w)
        try:
            ready, _, _ = select.select([ready_r], [], [], 10)
            ok = ready and os.read(ready_r, 1) == b"1"
        finally:
            os.close(ready_r)
        if not ok:
            self.stop()
            raise AssertionError("the fake container did not get its network namespace")

    def stop(self) -> int:
        """Let the child go; its exit code (-9 if it had to be killed)."""
        if self._hold_w is None:
            return 0
        FakeContainer._holds.discard(self._hold_w)
        os.close(self._hold_w)
        self._hold_w = None
        return _reap(self.pid, timeout=5)


def in_netns(pid: int, fn):
    """Start ``fn()`` in a child that joined ``pid``'s network namespace.

    Returns ``result(timeout)``, which waits (bounded) for its JSON-able return value."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            namespaces.enter(namespaces.open_namespaces(pid, ["net"]))
            try:
                out = {"ok": fn()}
            except BaseException as e:
                out = {"error": repr(e)}
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(write_end, data):]
        finally:
            os._exit(0)
    os.close(write_end)

    def result(timeout: float = 10.0):
        deadline, data = time.monotonic() + timeout, b""
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    break
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(read_end)
            _reap(child, timeout=max(0.1, deadline - time.monotonic()))
        assert data, f"the helper in netns of {pid} gave no answer within {timeout}s"
        out = json.loads(data)
        assert "error" not in out, out["error"]
        return out["ok"]

    return result


def _link(ifname: str):
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        return ipr.get_links(found[0])[0] if found else None


def _packets(ifname: str) -> int:
    stats = _link(ifname).get_attr("IFLA_STATS64")
    return stats["rx_packets"] + stats["tx_packets"]


@pytest.fixture
def kernel():
    require(os.geteuid() == 0, "bridges and veth pairs need root (CAP_NET_ADMIN)")
    require(namespaces.can_unshare(["net"]), "this machine refuses new network namespaces")


@pytest.fixture
def kernel_clean(kernel):
    """No ``mrt`` link that was not there before the test remains after it."""
    before = set(bridge.links("mrt"))
    yield
    assert set(bridge.links("mrt")) - before == set()


@pytest.fixture
def net(kernel_clean, tmp_path):
    """A network of its own (a free /24, a test-unique name), its bridge up; removed after."""
    root = str(tmp_path / "state")
    network = ipam.create_network(root, "t" + secrets.token_hex(4))
    yield root, network
    try:
        leases = ipam.load_network(root, network.name).leases
    except NetworkError:  # the test removed it
        leases = {}
    for cid in leases:
        bridge.detach(cid)
    bridge.remove_bridge(network)
    assert _link(network.bridge) is None


@pytest.fixture
def containers(kernel_clean):
    """Make fake containers on demand; stop each after the test (it must end by itself)."""
    made = []

    def make():
        made.append(FakeContainer())
        return made[-1]

    yield make
    codes = [c.stop() for c in made]
    assert codes == [0] * len(made), "a fake container did not end when released"


def _plug(root, network, fake) -> tuple[str, str, str]:
    """Lease an address and attach ``fake``: (container id, address, host veth)."""
    cid = secrets.token_hex(32)
    address = ipam.allocate(root, network, cid)
    host = bridge.attach(network, fake.pid, cid, address)
    return cid, str(address), host


# --- the kernel -------------------------------------------------------------------------

@pytest.mark.root
def test_a_fresh_network_namespace_has_only_lo(containers):
    fake = containers()
    assert in_netns(fake.pid, lambda: sorted(n for _, n in socket.if_nameindex()))() == ["lo"]


@pytest.mark.root
def test_ensure_bridge_is_idempotent(net):
    root, network = net
    first = bridge.ensure_bridge(network)
    assert bridge.ensure_bridge(network) == first
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        addrs = [(a.get_attr("IFA_LOCAL"), a["prefixlen"]) for a in ipr.get_addr(index=first, family=2)]
    assert addrs == [(network.gateway, 24)]
    assert _link(network.bridge).get_attr("IFLA_OPERSTATE") in ("UP", "DOWN", "UNKNOWN")
    assert _link(network.bridge)["flags"] & 1  # IFF_UP


@pytest.mark.root
def test_another_state_root_cannot_take_a_live_bridges_subnet(net, tmp_path):
    root, network = net
    bridge.ensure_bridge(network)  # now the host itself has the gateway address
    other = str(tmp_path / "other-state")
    with pytest.raises(NetworkError, match=f"^subnet {network.subnet} overlaps {network.bridge}'s "
                                           f"address {network.gateway}/24$"):
        ipam.create_network(other, "again", network.subnet)
    picked = ipam.create_network(other, "auto")
    assert not ipaddress.IPv4Network(picked.subnet).overlaps(network.ip_network)


@pytest.mark.root
def test_attached_container_has_eth0_with_its_address_and_a_default_route(net, containers):
    root, network = net
    bridge.ensure_bridge(network)
    fake = containers()
    cid, address, host = _plug(root, network, fake)
    assert host == "mrt" + cid[:8]

    def look():
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            lo = ipr.link_lookup(ifname="lo")[0]
            return {
                "links": sorted(n for _, n in socket.if_nameindex()),
                "addr": [(a.get_attr("IFA_LOCAL"), a["prefixlen"]) for a in ipr.get_addr(index=eth0, family=2)],
                "up": [bool(ipr.get_links(i)[0]["flags"] & 1) for i in (eth0, lo)],
                "gateway": [r.get_attr("RTA_GATEWAY") for r in ipr.get_routes(family=2)
                            if r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY")],
            }

    seen = in_netns(fake.pid, look)()
    assert seen == {"links": ["eth0", "lo"], "addr": [[address, 24]], "up": [True, True],
                    "gateway": [network.gateway]}


@pytest.mark.root
def test_two_containers_on_one_bridge_talk_tcp(net, containers):
    root, network = net
    bridge_index = bridge.ensure_bridge(network)
    a, b = containers(), containers()
    _, addr_a, host_a = _plug(root, network, a)
    _, addr_b, host_b = _plug(root, network, b)
    for host in (host_a, host_b):  # the host ends are ports of the bridge
        assert _link(host).get_attr("IFLA_MASTER") == bridge_index
    before = {h: _packets(h) for h in (host_a, host_b)}
    port = 5000 + secrets.randbelow(1000)

    def serve():
        with socket.create_server((addr_b, port)) as server:
            server.settimeout(10)
            conn, peer = server.accept()
            with conn:
                conn.settimeout(10)
                data = conn.recv(1024)
                conn.sendall(data.upper())
            return [peer[0], data.decode()]

    def call():
        deadline = time.monotonic() + 10
        while True:  # the server may not listen yet: retry, bounded
            try:
                with socket.create_connection((addr_b, port), timeout=2) as s:
                    s.settimeout(5)
                    s.sendall(b"hello from a")
                    return s.recv(1024).decode()
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    server = in_netns(b.pid, serve)
    client = in_netns(a.pid, call)
    assert client(timeout=15) == "HELLO FROM A"
    assert server(timeout=15) == [addr_a, "hello from a"]
    for host in (host_a, host_b):
        assert _packets(host) > before[host], f"no packets counted on {host}"


@pytest.mark.root
def test_detach_and_remove_leave_no_veth_and_no_bridge(net, containers):
    root, network = net
    bridge.ensure_bridge(network)
    fake = containers()
    cid, _, host = _plug(root, network, fake)
    assert host in bridge.links("mrt")
    assert bridge.detach(cid) is True
    assert bridge.detach(cid) is False
    assert host not in bridge.links("mrt")
    assert in_netns(fake.pid, lambda: sorted(n for _, n in socket.if_nameindex()))() == ["lo"]
    ipam.release(root, network, cid)
    ipam.remove_network(root, network.name)
    assert bridge.remove_bridge(network) is True
    assert network.bridge not in bridge.links("mrt")


@pytest.mark.root
def test_a_failed_attach_leaves_no_veth(net, containers):
    root, network = net
    bridge.ensure_bridge(network)
    fake = containers()
    cid = secrets.token_hex(32)
    with pytest.raises(NetworkError, match="cannot configure eth0 inside the container"):
        bridge.attach(network, fake.pid, cid, "10.255.255.300")  # not an address: fails inside
    assert bridge.host_ifname(cid) not in bridge.links("mrt")
    with pytest.raises(NetworkError, match="network namespace"):
        bridge.attach(network, 2 ** 22 + 7, cid, "172.30.0.9")  # no such process
    assert bridge.host_ifname(cid) not in bridge.links("mrt")


@pytest.mark.root
def test_twenty_attach_detach_cycles_leave_nothing_behind(net, containers):
    root, network = net
    bridge.ensure_bridge(network)
    fake = containers()
    started = time.monotonic()
    hosts = set()
    for _ in range(20):
        cid, address, host = _plug(root, network, fake)
        hosts.add(host)
        assert bridge.detach(cid) is True
        assert ipam.release(root, network, cid) is True
        assert time.monotonic() - started < 60, "attach/detach is far too slow"
    assert len(hosts) == 20
    assert not set(bridge.links("mrt")) & hosts
    assert ipam.load_network(root, network.name).leases == {}
    assert in_netns(fake.pid, lambda: sorted(n for _, n in socket.if_nameindex()))() == ["lo"]


@pytest.mark.root
def test_a_network_namespace_held_only_by_a_file_descriptor_can_be_attached(net, containers):
    """The engine's likely order (as CNI's): make the netns, wire it, then start the
    container inside it. The netns outlives its first process while an fd holds it."""
    root, network = net
    bridge.ensure_bridge(network)
    maker = containers()
    nsfd = os.open(f"/proc/{maker.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert maker.stop() == 0  # no process is left in it: the fd alone keeps it
        cid = secrets.token_hex(32)
        address = ipam.allocate(root, network, cid)
        bridge.attach(network, f"/proc/self/fd/{nsfd}", cid, address)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # a "container" joining the ready-made namespace
            try:
                os.close(read_end)
                namespaces.enter([("net", nsfd)])
                os.write(write_end, " ".join(sorted(n for _, n in socket.if_nameindex())).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        ready, _, _ = select.select([read_end], [], [], 10)
        seen = os.read(read_end, 1024).decode() if ready else ""
        os.close(read_end)
        assert _reap(child, timeout=5) == 0
        assert seen == "eth0 lo"
    finally:
        os.close(nsfd)  # the last reference: the kernel deletes the netns, and the veth pair with it
    deadline = time.monotonic() + 5
    while bridge.host_ifname(cid) in bridge.links("mrt") and time.monotonic() < deadline:
        time.sleep(0.05)  # netns teardown is asynchronous (a kernel workqueue)
    assert bridge.host_ifname(cid) not in bridge.links("mrt")
    assert bridge.detach(cid) is False
    ipam.release(root, network, cid)
