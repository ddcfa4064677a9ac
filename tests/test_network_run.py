"""Containers on networks, for real: ``--network bridge|none|host|NAME``, ``-p``, ``--ip``.

Every test runs busybox containers and looks from inside (``ip``, ``nc``,
/etc/hosts) and from outside (the host's links, its TCP ports, the leases on
disk). The ``engine`` fixture fails a test that leaves a veth, a lease, a
cgroup, a mount or a process behind. Traffic goes only to 127.0.0.1 and to
addresses on bridges these tests made.
"""

import ipaddress
import json
import os
import signal
import socket
import time
import urllib.request

import pytest

from conftest import (container_init_pid, host_links, minirt_cli, minirt_popen, new_veths,
                      wait_for)
from minirt.errors import NetworkError, UsageError
from minirt.network import bridge, commands, ipam, sandbox
from minirt.runtime.stdio import Capture

pytestmark = pytest.mark.usefixtures("root_tier")


@pytest.fixture
def lab(engine):
    """A user-defined network ``lab`` (its bridge is removed afterwards)."""
    name = f"lab{os.getpid() % 1000}"
    network = commands.create_network(engine.root, name)
    yield network
    for container in engine.containers():
        engine.remove_container(container["id"], force=True)
    commands.remove_network(engine.root, name)
    assert network.bridge not in host_links("mrtbr-")


def run_ok(engine, command, **options) -> str:
    result = engine.run("busybox", ["sh", "-c", command], **options)
    assert result.exit_code == 0, result.errors
    return result.output


def detached(engine, command, **options) -> str:
    container_id = engine.create("busybox", ["sh", "-c", command], **options)
    engine.start(container_id)
    return container_id




def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def proxies_of(root: str) -> list[int]:
    """Live minirt-proxy processes of this state root's containers (their log is open
    under it; zombies, which PID 1 here reaps slowly, do not count)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            if "(minirt-proxy)" not in stat or stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(root) for fd in fds):
                found.append(int(pid))
        except OSError:
            pass
    return found


def net_fds_of_this_process() -> list[str]:
    """Open files of ours that are network namespaces (a held namespace not let go)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("net:["):
            found.append(target)
    return found


# --- the default bridge ---------------------------------------------------------------

def test_default_bridge_gives_an_address_a_route_and_etc_files(engine):
    out = run_ok(engine, "ls /sys/class/net; echo --; ip -4 -o addr show eth0; echo --; "
                 "ip route; echo --; cat /etc/hosts; echo --; hostname; cat /etc/hostname; "
                 "echo --; mount | grep ' /etc/'", name="web1", network="bridge")
    links, addr, routes, hosts, names, etc_mounts = out.split("--\n")
    assert links.split() == ["eth0", "lo"]
    network = ipam.load_network(engine.root, "bridge")
    address = ipaddress.IPv4Interface(addr.split()[3])
    assert address.network == network.ip_network and str(address.ip) != network.gateway
    assert f"default via {network.gateway} dev eth0" in routes
    assert f"{address.ip}\t" in hosts and "localhost" in hosts
    hostname = names.split()[0]
    assert names.split() == [hostname, hostname]
    assert {line.split()[2] for line in etc_mounts.splitlines()} == \
        {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}
    # The host side: the bridge carries the gateway; the container's veth is gone again.
    assert network.bridge in host_links("mrtbr-")
    assert not new_veths()


def test_the_host_reaches_a_container_on_the_bridge_and_counters_move(engine):
    container_id = detached(engine, "echo from-the-container | nc -l -p 7000",
                            network="bridge")
    try:
        address = wait_for(lambda: engine.inspect(container_id)["NetworkSettings"]["IPAddress"],
                           what="the container's address")
        veth = bridge.host_ifname(container_id)
        before = _tx_bytes(veth)

        def fetch():
            with socket.create_connection((address, 7000), timeout=2) as s:
                return s.makefile("rb").read()
        got = wait_for(lambda: _try(fetch), what="nc to listen")
        assert got == b"from-the-container\n"
        assert _tx_bytes(veth) > before  # the host end sent what the container received
    finally:
        engine.remove_container(container_id, force=True)


def _tx_bytes(ifname: str) -> int:
    with open(f"/sys/class/net/{ifname}/statistics/tx_bytes") as f:
        return int(f.read())


def _try(action):
    try:
        return action()
    except OSError:
        return None


def test_network_none_and_host(engine):
    assert run_ok(engine, "ls /sys/class/net", network="none").split() == ["lo"]
    out = run_ok(engine, "ls /sys/class/net; echo --; hostname", network="host")
    links, hostname = out.split("--\n")
    assert sorted(links.split()) == sorted(os.listdir("/sys/class/net"))
    assert hostname.strip() == socket.gethostname()
    container = engine.create_spec("busybox", ["true"], network="host")
    assert "net" not in container.namespaces


# --- user-defined networks: names, --ip, hosts kept current ----------------------------

def test_two_containers_on_one_network_talk_by_name(engine, lab):
    server = detached(engine, "echo hello-from-server | nc -l -p 5000", name="server",
                      network=lab.name)
    wait_for(lambda: engine.inspect(server)["NetworkSettings"]["IPAddress"], what="server up")
    out = run_ok(engine, "for i in $(seq 50); do nc server 5000 && exit 0; sleep 0.1; done; "
                 "exit 1", network=lab.name)
    assert out == "hello-from-server\n"
    assert engine.wait(server, timeout=10) == 0  # it served once and exited


def test_a_running_members_hosts_file_is_updated_in_place(engine, lab):
    first = detached(engine, "sleep 60", name="first", network=lab.name)
    wait_for(lambda: engine.inspect(first)["NetworkSettings"]["IPAddress"], what="first up")
    second = detached(engine, "sleep 60", name="second", network=lab.name)
    second_ip = wait_for(lambda: engine.inspect(second)["NetworkSettings"]["IPAddress"],
                         what="second up")
    hosts = _exec_output(engine, first, ["cat", "/etc/hosts"])
    assert f"{second_ip}\t" in hosts and "second" in hosts
    engine.remove_container(second, force=True)
    assert "second" not in _exec_output(engine, first, ["cat", "/etc/hosts"])
    # On the default bridge there are no names for the others, as in Docker.
    lone = run_ok(engine, "cat /etc/hosts", network="bridge")
    assert "first" not in lone


def _exec_output(engine, ref, command) -> str:
    stdio = Capture()
    assert engine.exec(ref, command, stdio=stdio) == 0
    return stdio.output.decode()


def test_ip_chooses_the_address_and_clashes_are_refused(engine, lab):
    wanted = str(list(lab.ip_network.hosts())[9])
    holder = detached(engine, "sleep 60", network=lab.name, ip=wanted)
    assert wait_for(lambda: engine.inspect(holder)["NetworkSettings"]["IPAddress"]) == wanted
    with pytest.raises(NetworkError, match=f"address {wanted} is already in use by container"):
        engine.run("busybox", ["true"], network=lab.name, ip=wanted)
    with pytest.raises(NetworkError, match="not in network"):
        engine.run("busybox", ["true"], network=lab.name, ip="192.0.2.7")
    with pytest.raises(NetworkError, match="user-defined networks only"):
        engine.run("busybox", ["true"], network="bridge", ip=wanted)
    assert sorted(ipam.load_network(engine.root, lab.name).leases) == [holder]


def test_unknown_network_and_rootless_bridge_are_refused(engine):
    with pytest.raises(NetworkError, match="network nosuchnet not found"):
        engine.run("busybox", ["true"], network="nosuchnet")
    with pytest.raises(NetworkError, match="needs root"):
        sandbox.check_mode(engine.root, "bridge", None, [], rootless=True)
    with pytest.raises(UsageError, match="-p needs a bridge network"):
        engine.run("busybox", ["true"], network="none", publish=["8080:80"])


# --- subnets: clashes and exhaustion ------------------------------------------------------

def test_subnet_clash_is_a_clear_error_and_makes_nothing(engine, lab):
    before = host_links("mrtbr-")
    with pytest.raises(NetworkError, match=f"overlaps network {lab.name}"):
        commands.create_network(engine.root, "clash", lab.subnet)
    assert host_links("mrtbr-") == before
    assert not os.path.exists(os.path.join(engine.root, "networks", "clash.json"))
    result = minirt_cli("network", "create", "--subnet", lab.subnet, "clash2",
                        state_root=engine.root)
    assert result.returncode != 0
    assert result.stderr.decode().strip().splitlines() == [
        f"minirt: subnet {lab.subnet} overlaps network {lab.name} ({lab.subnet})"]


def test_an_exhausted_subnet_refuses_the_next_container_and_leaves_nothing(engine):
    commands.create_network(engine.root, "tiny", "10.231.0.0/30")  # one address: .2
    try:
        holder = detached(engine, "sleep 60", network="tiny")
        wait_for(lambda: engine.inspect(holder)["NetworkSettings"]["IPAddress"])
        containers_before = set(os.listdir(engine.containers_dir))
        with pytest.raises(NetworkError, match="subnet 10.231.0.0/30 of network tiny is exhausted"):
            engine.run("busybox", ["true"], network="tiny")
        assert set(os.listdir(engine.containers_dir)) == containers_before
        assert list(ipam.load_network(engine.root, "tiny").leases) == [holder]
        with pytest.raises(NetworkError, match="has active endpoints"):
            commands.remove_network(engine.root, "tiny")
        engine.remove_container(holder, force=True)
    finally:
        for container in engine.containers():
            engine.remove_container(container["id"], force=True)
        commands.remove_network(engine.root, "tiny")


# --- published ports ----------------------------------------------------------------------

def test_a_published_port_serves_http_and_closes_after_rm(engine):
    container_id = detached(engine, "echo served-by-busybox > /www && httpd -f -p 80 -h /",
                            network="bridge", publish=["127.0.0.1::80"])
    try:
        ports = wait_for(lambda: engine.inspect(container_id)["NetworkSettings"]["Ports"],
                         what="the port mapping")
        binding = ports["80/tcp"][0]
        assert binding["HostIp"] == "127.0.0.1"
        port = int(binding["HostPort"])
        url = f"http://127.0.0.1:{port}/www"
        body = wait_for(lambda: _try(lambda: urllib.request.urlopen(url, timeout=2).read()),
                        what="httpd behind the proxy")
        assert body == b"served-by-busybox\n"
        assert proxies_of(engine.root)
    finally:
        engine.remove_container(container_id, force=True)
    assert not port_open(port)
    assert not proxies_of(engine.root)
    assert bridge.host_ifname(container_id) not in host_links()


def test_a_busy_host_port_is_a_clear_error(engine):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(NetworkError, match=f"port {port} is already in use"):
            engine.run("busybox", ["true"], network="bridge", publish=[f"{port}:80"])
    assert not proxies_of(engine.root)


# --- nothing leaks -------------------------------------------------------------------------

def test_fifty_run_rm_cycles_leave_no_veth_netns_lease_or_proxy(engine):
    namespaces_before = _net_namespaces()
    deadline = time.monotonic() + 120
    for i in range(50):
        assert time.monotonic() < deadline, f"50 cycles took over 120 s (at {i})"
        result = engine.run("busybox", ["true"], network="bridge",
                            publish=["127.0.0.1::80"] if i % 5 == 0 else ())
        assert result.exit_code == 0, result.errors
    wait_for(lambda: not new_veths(), timeout=5, what="the veths to go")
    assert not ipam.load_network(engine.root, "bridge").leases
    assert not proxies_of(engine.root)
    assert not net_fds_of_this_process()
    wait_for(lambda: _net_namespaces() <= namespaces_before, what="net namespaces to go")


def _net_namespaces() -> set[str]:
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            found.add(os.readlink(f"/proc/{pid}/ns/net"))
        except OSError:
            pass
    return found


def test_a_killed_minirt_run_gives_back_its_address_and_port(engine):
    cli = minirt_popen("run", "--rm", "-p", "127.0.0.1::80", "busybox", "sleep", "60",
                       state_root=engine.root, env_extra={"MINIRT_NETWORK": "bridge"})
    try:
        container_init_pid(engine)
        record = wait_for(lambda: _record(engine), what="the network record")
        port = record["ports"][0]["host_port"]
        assert port_open(port)
    finally:
        cli.send_signal(signal.SIGKILL)
        cli.wait(timeout=10)
    wait_for(lambda: not port_open(port), what="the proxy to follow its owner")
    engine.reap_stale()
    assert not ipam.load_network(engine.root, "bridge").leases
    assert not proxies_of(engine.root)


def _record(engine):
    for entry in os.listdir(engine.containers_dir):
        record = sandbox.load_record(os.path.join(engine.containers_dir, entry))
        if record and record.get("ports"):
            return record
    return None


def test_network_cli_create_ls_inspect_rm(engine):
    cli = lambda *args: minirt_cli(*args, state_root=engine.root)  # noqa: E731
    made = cli("network", "create", "--subnet", "10.232.5.0/24", "clinet")
    assert made.returncode == 0, made.stderr
    try:
        listing = cli("network", "ls").stdout.decode()
        assert any(line.split()[:3] == ["clinet", "bridge", "10.232.5.0/24"]
                   for line in listing.splitlines())
        container_id = detached(engine, "sleep 60", name="member", network="clinet")
        wait_for(lambda: engine.inspect(container_id)["NetworkSettings"]["IPAddress"])
        view = json.loads(cli("network", "inspect", "clinet").stdout)[0]
        assert view["Subnet"] == "10.232.5.0/24"
        assert [m["Name"] for m in view["Containers"].values()] == ["member"]
        refused = cli("network", "rm", "clinet")
        assert refused.returncode != 0 and b"has active endpoints" in refused.stderr
        engine.remove_container(container_id, force=True)
        assert cli("network", "rm", "bridge").returncode != 0
    finally:
        removed = cli("network", "rm", "clinet")
    assert removed.returncode == 0, removed.stderr
    assert "clinet" not in cli("network", "ls").stdout.decode()


def test_outbound_nat_only_when_asked_and_its_rules_go_with_the_network(engine):
    """--enable-nat: the masquerade and forward rules appear, and go with ``network rm``.
    No packet is sent: only the kernel's rule tables are read."""
    from minirt.network import nat
    with open(nat.IP_FORWARD) as f:
        forwarding = f.read()
    plain = commands.create_network(engine.root, "nonat")
    try:
        assert not any(nat.present(plain)), "NAT is off unless asked for"
        outward = commands.create_network(engine.root, "withnat", nat=True)
        try:
            assert all(nat.present(outward))
            with open(nat.IP_FORWARD) as f:
                assert f.read().strip() == "1"
            assert json.loads(minirt_cli("network", "inspect", "withnat",
                                         state_root=engine.root).stdout)[0]["OutboundNAT"]
        finally:
            commands.remove_network(engine.root, "withnat")
        assert not any(nat.present(outward))
    finally:
        commands.remove_network(engine.root, "nonat")
        with open(nat.IP_FORWARD, "w") as f:  # as it was before the test
            f.write(forwarding)
