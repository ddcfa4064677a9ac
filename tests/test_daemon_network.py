"""minirtd speaks networking: ``docker network``, ``--network``, ``-p``, ``docker port``.

The daemon runs as a subprocess on the tests' state root; the real docker CLI
(skipped where it is not installed), docker-py and minirt's own client drive
it. The ``engine`` fixture fails a test that leaves a container, veth, lease,
cgroup, mount or process behind; the module's ``networks`` fixture removes the
networks it made (the default ``bridge`` network's bridge included) and checks
that no bridge or veth of this state root is left on the host. Traffic goes
only to 127.0.0.1 and between containers on bridges these tests made.
"""

import ipaddress
import os
import socket
import subprocess
import time
import urllib.request

import docker
import pytest

from conftest import host_links, minirt_cli, require, wait_for
from daemon_fixtures import docker_cli, serving, socket_dir
from minirt.engine import Engine
from minirt.errors import NetworkError, UsageError
from minirt.network import bridge, commands, ipam

LAB = f"dlab{os.getpid() % 10000}"     # the network the CLI tests make
PYLAB = f"pylab{os.getpid() % 10000}"  # docker-py's


@pytest.fixture(scope="module")
def workdir():
    yield from socket_dir("minirtd-net-")


@pytest.fixture(scope="module")
def daemon(state_root, image_store, workdir):
    require(os.geteuid() == 0, "networking needs root: bridges and veths need CAP_NET_ADMIN")
    yield from serving(state_root, workdir)


@pytest.fixture(scope="module")
def networks(daemon, state_root):
    """Afterwards: every network of this state root removed, bridges and all, and no
    ``mrtbr-``/``mrt`` interface of it left on the host."""
    yield
    ours = set()
    for network in ipam.list_networks(state_root):
        ours.add(network.bridge)
        if network.leases:
            continue  # the engine fixture has failed that test already
        if network.name in commands.PREDEFINED:  # bridge: made on first use, as docker0
            ipam.remove_network(state_root, network.name)
            bridge.remove_bridge(network)
        else:
            commands.remove_network(state_root, network.name)
    ours |= {ipam.bridge_name(name, state_root) for name in (LAB, PYLAB, "bridge")}
    assert not ours & host_links("mrtbr-"), "a bridge of the tests' networks is left"


@pytest.fixture
def client(daemon, networks, engine):
    client = docker.DockerClient(base_url=daemon.address, timeout=30)
    yield client
    client.close()




def daemon_root(client) -> str:
    return client.api.info()["DockerRootDir"]


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"{done.args}: {done.stderr}"
    return done.stdout




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_get(port: int, path: str) -> str | None:
    """GET http://127.0.0.1:PORT/PATH from the host (never through an HTTP proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return answer.read().decode()
    except OSError:
        return None


# --- the predefined networks, and the API's errors --------------------------------------
def test_networks_list_has_bridge_host_and_none_as_docker_shows_them(daemon, client):
    status, _, listed = daemon.request("GET", "/v1.43/networks")
    assert status == 200
    drivers = {n["Name"]: n["Driver"] for n in listed}
    assert {"bridge": "bridge", "host": "host", "none": "null"}.items() <= drivers.items()
    assert all(len(n["Id"]) == 64 for n in listed)
    status, _, none = daemon.request("GET", "/v1.43/networks/none")
    assert status == 200 and none["Containers"] == {} and none["IPAM"]["Config"] == []
    by_id = daemon.request("GET", f"/v1.43/networks/{none['Id'][:12]}")[2]
    assert by_id["Name"] == "none"
    for predefined in ("bridge", "host", "none"):
        status, _, body = daemon.request("DELETE", f"/v1.43/networks/{predefined}")
        assert status == 403 and "pre-defined network" in body["message"]
    status, _, body = daemon.request("DELETE", "/v1.43/networks/no-such-net")
    assert (status, body) == (404, {"message": "network no-such-net not found"})
    status, _, body = daemon.request("POST", "/v1.43/networks/create",
                                     b'{"Name": "host"}', {"Content-Type": "application/json"})
    assert status == 409 and "already exists" in body["message"]
    status, _, body = daemon.request("POST", "/v1.43/networks/create",
                                     b'{"Name": "x", "Driver": "overlay"}',
                                     {"Content-Type": "application/json"})
    assert status == 400 and "only the bridge driver" in body["message"]
    status, _, body = daemon.request("POST", "/v1.43/networks/n/connect", b"{}",
                                     {"Content-Type": "application/json"})
    assert status == 501


def test_create_answers_400_for_what_minirt_cannot_do_and_warns_for_what_it_ignores(
        daemon, client):
    def create(host: dict, **extra):
        import json
        body = json.dumps({"Image": "busybox", "Cmd": ["true"], "HostConfig": host, **extra})
        return daemon.request("POST", "/v1.43/containers/create", body.encode(),
                              {"Content-Type": "application/json"})

    status, _, body = create({"PortBindings": {"53/udp": [{"HostPort": "5353"}]}})
    assert status == 400 and "only tcp" in body["message"]
    status, _, body = create({"PortBindings": {"80/tcp": [{"HostPort": "99999"}]}})
    assert status == 400 and "outside 1-65535" in body["message"]
    status, _, body = create({"NetworkMode": "container:web"})
    assert status == 400 and "another container's network" in body["message"]
    # Not 404: the docker CLI would take it for a missing image and try to pull one.
    status, _, body = create({"NetworkMode": "no-such-net"})
    assert (status, body) == (400, {"message": "network no-such-net not found"})
    status, _, body = create({"NetworkMode": "none", "PortBindings": {"80/tcp": [{}]}})
    assert status == 400 and "-p needs a bridge network" in body["message"]
    status, _, body = create({"PublishAllPorts": True, "ExtraHosts": ["a:10.0.0.1"],
                              "NetworkMode": "none"})
    assert status == 201, body
    try:
        warnings = "\n".join(body["Warnings"])
        assert "PublishAllPorts is ignored" in warnings and "ExtraHosts is ignored" in warnings
        assert "no networking yet" not in warnings
    finally:
        client.api.remove_container(body["Id"], force=True)


# --- the docker CLI -----------------------------------------------------------------------
def test_docker_cli_network_create_run_inspect_and_rm(daemon, client):
    created = ok(docker_cli(daemon, "network", "create", LAB)).strip()
    assert len(created) == 64
    assert LAB in ok(docker_cli(daemon, "network", "ls"))
    subnet = ipaddress.ip_network(ok(docker_cli(
        daemon, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", LAB)
    ).strip())
    # Inside: eth0 has an address of the network's subnet.
    shown = ok(docker_cli(daemon, "run", "--rm", "--network", LAB, "busybox",
                          "ip", "-4", "-o", "addr", "show", "eth0"))
    address = ipaddress.ip_interface(shown.split()[3])
    assert address.ip in subnet and address.network == subnet
    # Two containers on it reach each other by name: srv answers one connection with its
    # hostname (nc -e: the connection becomes cat's stdout), the client prints what came.
    server = ok(docker_cli(daemon, "run", "-d", "--name", "srv", "--network", LAB, "busybox",
                           "nc", "-l", "-p", "5000", "-e", "cat", "/etc/hostname")).strip()
    try:
        members = wait_for(lambda: ok(docker_cli(
            daemon, "network", "inspect", "-f",
            "{{range .Containers}}{{.Name}} {{end}}", LAB)).split(), what="srv on the network")
        assert members == ["srv"]
        refused = docker_cli(daemon, "network", "rm", LAB)
        assert refused.returncode != 0 and "has active endpoints" in refused.stderr
        answer = wait_for(lambda: docker_cli(  # until srv listens
            daemon, "run", "--rm", "--network", LAB, "busybox", "nc", "-w", "5", "srv", "5000"
        ).stdout, timeout=20, what="an answer from srv, by name")
        assert answer == server[:12] + "\n"
        code = ok(docker_cli(daemon, "wait", "srv", timeout=20)).strip()
        assert code == "0"
    finally:
        docker_cli(daemon, "rm", "-f", server)
    assert ok(docker_cli(daemon, "network", "rm", LAB)).strip() == LAB
    assert ipam.bridge_name(LAB, daemon_root(client)) not in host_links("mrtbr-")
    assert LAB not in ok(docker_cli(daemon, "network", "ls"))
    # A network that does not exist: said so, and no pull of the image (the CLI pulls on a 404).
    missing = docker_cli(daemon, "run", "--rm", "--network", "no-such-net", "busybox", "true")
    assert missing.returncode == 125 and "network no-such-net not found" in missing.stderr
    assert "Unable to find image" not in missing.stderr


def test_docker_cli_publishes_a_port_on_127_0_0_1(daemon, client):
    port = free_port()
    web = ok(docker_cli(daemon, "run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80",
                        "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")).strip()
    veth = bridge.host_ifname(web)
    try:
        assert wait_for(lambda: http_get(port, "/hostname"), what="httpd through the proxy") \
            == web[:12] + "\n"
        assert veth in host_links()
        assert ok(docker_cli(daemon, "port", "web")).strip() == f"80/tcp -> 127.0.0.1:{port}"
        assert ok(docker_cli(daemon, "port", "web", "80")).strip() == f"127.0.0.1:{port}"
        listed = ok(docker_cli(daemon, "ps", "--format", "{{.Ports}} {{.Networks}}"))
        assert listed.strip() == f"127.0.0.1:{port}->80/tcp bridge"
        bindings = ok(docker_cli(daemon, "inspect", "-f",
                                 "{{json .HostConfig.PortBindings}} {{.HostConfig.NetworkMode}}",
                                 "web")).strip()
        assert bindings == f'{{"80/tcp":[{{"HostIp":"127.0.0.1","HostPort":"{port}"}}]}} bridge'
        address = ok(docker_cli(daemon, "inspect", "-f",
                                "{{.NetworkSettings.Networks.bridge.IPAddress}}", "web")).strip()
        assert ipaddress.ip_address(address).is_private
    finally:
        ok(docker_cli(daemon, "rm", "-f", "web"))
    assert not port_open(port)
    assert veth not in host_links()


# --- docker-py ----------------------------------------------------------------------------
def test_docker_py_networks_ip_ports_and_dns(daemon, client):
    since = time.time()
    network = client.networks.create(PYLAB, ipam=docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet="10.231.7.0/24")]))
    try:
        assert network.attrs["IPAM"]["Config"] == [{"Subnet": "10.231.7.0/24",
                                                    "Gateway": "10.231.7.1"}]
        assert ipam.load_network(daemon_root(client), PYLAB).bridge in host_links("mrtbr-")
        port = free_port()
        config = client.api.create_networking_config(
            {PYLAB: client.api.create_endpoint_config(ipv4_address="10.231.7.42")})
        created = client.api.create_container(
            "busybox", ["httpd", "-f", "-p", "8000", "-h", "/etc"], name="pyweb",
            host_config=client.api.create_host_config(
                network_mode=PYLAB, port_bindings={8000: ("127.0.0.1", port)},
                dns=["10.231.7.53"]),
            networking_config=config)
        container = client.containers.get(created["Id"])
        try:
            container.start()
            assert wait_for(lambda: http_get(port, "/resolv.conf"), what="httpd") == \
                "nameserver 10.231.7.53\n"
            container.reload()
            settings = container.attrs["NetworkSettings"]
            assert settings["Networks"][PYLAB]["IPAddress"] == "10.231.7.42"
            assert settings["Networks"][PYLAB]["NetworkID"] == network.id
            assert settings["Ports"] == {"8000/tcp": [{"HostIp": "127.0.0.1",
                                                       "HostPort": str(port)}]}
            assert container.ports == settings["Ports"]
            summary = client.api.containers(filters={"network": PYLAB})
            assert [c["Ports"] for c in summary] == [
                [{"IP": "127.0.0.1", "PrivatePort": 8000, "PublicPort": port, "Type": "tcp"}]]
            network.reload()
            assert network.attrs["Containers"][container.id]["IPv4Address"] == "10.231.7.42/24"
            with pytest.raises(docker.errors.APIError) as refused:
                network.remove()
            assert refused.value.status_code == 403
        finally:
            container.remove(force=True)
        assert not port_open(port)
        network.reload()
        assert network.attrs["Containers"] == {}
    finally:
        network.remove()
    with pytest.raises(docker.errors.NotFound):
        client.networks.get(PYLAB)
    events = [(e["Type"], e["Action"], e["Actor"]["Attributes"].get("name"))
              for e in client.events(decode=True, since=since, until=time.time() + 1,
                                     filters={"type": "network"})]
    assert events == [("network", "create", PYLAB), ("network", "destroy", PYLAB)]


def test_docker_py_none_and_host_modes_and_prune(daemon, client):
    isolated = client.containers.run("busybox", ["ip", "-o", "link"], network_mode="none",
                                     remove=True).decode()
    assert [line.split(":")[1].strip() for line in isolated.splitlines()] == ["lo"]
    hostname = client.containers.run("busybox", ["hostname"], network_mode="host",
                                     remove=True).decode().strip()
    assert hostname == socket.gethostname()
    client.networks.create(PYLAB)
    pruned = client.networks.prune()
    assert PYLAB in (pruned["NetworksDeleted"] or [])
    assert "bridge" in [n.name for n in client.networks.list()]


# --- minirt's own client ------------------------------------------------------------------
def test_minirt_client_forwards_network_ip_publish_and_dns(daemon, client, state_root):
    from minirt.daemon.client import RemoteEngine
    remote = RemoteEngine(daemon.address)
    with pytest.raises(UsageError, match="invalid port mapping"):
        remote.create("busybox", ["true"], publish=["80:http"])  # refused before any request
    with pytest.raises(NetworkError, match="only tcp"):
        remote.create("busybox", ["true"], publish=["53:53/udp"])
    commands.create_network(state_root, PYLAB, "10.231.8.0/24")
    try:
        container_id = remote.create("busybox", ["true"], network=PYLAB, ip="10.231.8.9",
                                     publish=["127.0.0.1::80"], dns=["10.231.8.53"])
        try:
            found = remote.inspect(container_id)
            assert found["HostConfig"]["NetworkMode"] == PYLAB
            assert found["HostConfig"]["PortBindings"] == {
                "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
            assert found["HostConfig"]["Dns"] == ["10.231.8.53"]
            assert Engine(state_root).find_container(container_id)["ip"] == "10.231.8.9"
        finally:
            remote.remove_container(container_id, force=True)
        with pytest.raises(NetworkError, match="network no-such-net not found"):
            remote.call("GET", "/networks/no-such-net")
        # The minirt CLI through the daemon: `minirt -H ... run --network NAME --ip --dns`.
        done = minirt_cli("run", "--rm", "--network", PYLAB, "--ip", "10.231.8.7", "--dns",
                          "10.231.8.53", "busybox", "sh", "-c",
                          "ip -4 -o addr show eth0; cat /etc/resolv.conf",
                          state_root=state_root, env={"MINIRT_HOST": daemon.address})
        assert done.returncode == 0, done.stderr
        lines = done.stdout.decode().splitlines()
        assert lines[0].split()[3] == "10.231.8.7/24" and lines[1] == "nameserver 10.231.8.53"
    finally:
        commands.remove_network(state_root, PYLAB)
