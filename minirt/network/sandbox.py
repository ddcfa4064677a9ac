"""A container's network sandbox: its network namespace, wired up before the container starts.

Docker's networking library (libnetwork) calls a container's share of the
network its *sandbox*: a network namespace plus the endpoints plugged into it.
``--network`` picks one of four shapes:

    bridge   (the default) the network called ``bridge``: an address, a default
             route through the bridge, no names for the other containers
    NAME     a network made with ``minirt network create NAME``: the same, and
             its containers find each other by name
    none     a network namespace of its own with nothing but ``lo``
    host     no network namespace: the host's interfaces, ports and all

For a bridge network, before the container's first process exists:

    1. lease an address for it                   ipam.allocate
    2. make sure the network's bridge is up      bridge.ensure_bridge
    3. create an empty network namespace         namespaces.create_held (an fd holds it)
    4. plug a veth pair into it: eth0, address,
       default route via the bridge              bridge.attach
    5. publish ports: bind them, start a proxy   proxy.bind_ports, proxy.start_proxy
    6. write /etc/hosts, resolv.conf, hostname;
       on a named network, tell the members      etcfiles

The container's helper process then *joins* that namespace with setns(2)
instead of unsharing a new one (``runtime/container.py``). When the container
ends, ``teardown`` takes it all back, in reverse: the proxy stops, the veth
goes, the lease is released (as Docker releases a stopped container's
address), the other members forget its name. What was made is recorded in
``network.json`` in the container's directory, so that the same teardown
works for a container whose minirt was killed (``Engine.reap_stale``).
"""

import os

from ..errors import NetworkError, UsageError
from ..trace import NULL_TRACE
from . import etcfiles
# ipam (and json) are imported where used: ``--network none`` never needs them,
# and every millisecond of import is a millisecond of each container's start.

DEFAULT_NETWORK = "bridge"
MODES = ("bridge", "none", "host")   # plus the name of any network
RECORD = "network.json"


# --- which network, checked before anything is made ------------------------------------

def default_mode() -> str:
    """``bridge`` for root, as Docker; ``none`` without root (``MINIRT_NETWORK`` overrides).

    Creating bridges and veths needs CAP_NET_ADMIN on the host, which a
    rootless container does not have. (Rootless Docker runs slirp4netns or
    pasta, a user-space network stack, for that; minirt teaches the kernel's.)
    A copy of minirt without pyroute2 (the netlink library) defaults to
    ``none`` as well.
    """
    chosen = os.environ.get("MINIRT_NETWORK")
    if chosen:
        return chosen
    return DEFAULT_NETWORK if os.geteuid() == 0 and netlink_available() else "none"


def netlink_available() -> bool:
    """Is pyroute2 importable? (Looked up, not imported: that costs ~90 ms.)"""
    import importlib.util
    return importlib.util.find_spec("pyroute2") is not None


def is_bridged(mode: str) -> bool:
    """Does ``mode`` put the container on a bridge (an address, a veth)?"""
    return mode not in ("none", "host")


def check_mode(root: str, mode: str, ip: str | None, ports, rootless: bool) -> None:
    """Refuse, with a reason, what ``--network``, ``--ip`` and ``-p`` cannot do together."""
    if is_bridged(mode):
        if rootless:
            raise NetworkError(f"--network {mode} needs root: bridges and veth pairs need "
                               "CAP_NET_ADMIN on the host; without root use --network none "
                               "(lo only) or --network host")
        if not netlink_available():
            raise NetworkError(f"--network {mode} needs pyroute2, the netlink library minirt "
                               "drives bridges and veths with: pip install pyroute2 (or use "
                               "--network none or host)")
        if mode != DEFAULT_NETWORK:
            from . import ipam
            ipam.load_network(root, mode)  # "network NAME not found"
        elif ip:
            raise NetworkError("--ip works on user-defined networks only (as in Docker): "
                               "`minirt network create NAME`, then --network NAME --ip ...")
    elif ip:
        raise UsageError(f"--ip needs a bridge network, not --network {mode}")
    if ports and not is_bridged(mode):
        why = ("the container has no address to forward to" if mode == "none" else
               "the container already uses the host's ports")
        raise UsageError(f"-p needs a bridge network: with --network {mode} {why}")


# --- the sandbox -----------------------------------------------------------------------

class NetworkSandbox:
    """Makes and unmakes one container's network (see the module's docstring)."""

    def __init__(self, root: str, spec, container_dir: str, trace=NULL_TRACE):
        self.root, self.spec, self.container_dir, self.trace = root, spec, container_dir, trace
        self.mode = spec.network or "none"

    def create(self) -> int | None:
        """Build the sandbox; an fd of the network namespace the container must join,
        or None when it makes its own (``none``) or has none (``host``).

        On failure everything made so far is taken back before the error rises.
        """
        if not is_bridged(self.mode):
            self._write_etc_files(None, [])
            return None
        record = {"network": self.mode, "container_id": self.spec.id}
        try:
            return self._connect(record)
        except BaseException:
            self._save(record)  # what got made, so teardown finds it
            self.teardown()
            raise

    def _connect(self, record: dict) -> int:
        from ..kernel import namespaces
        from . import bridge, ipam
        spec, trace = self.spec, self.trace
        network = ipam.ensure_network(self.root, DEFAULT_NETWORK) if self.mode == DEFAULT_NETWORK \
            else ipam.load_network(self.root, self.mode)
        with trace.step("lease address", network=network.name, subnet=network.subnet,
                        wanted=spec.ip or "any"):
            address = str(ipam.allocate(self.root, network, spec.id, spec.ip or None))
        record.update(address=address, prefixlen=network.prefixlen, gateway=network.gateway,
                      bridge=network.bridge, names=[spec.hostname, spec.name])
        with trace.step("bridge up", bridge=network.bridge, gateway=network.gateway):
            bridge.ensure_bridge(network)
        if network.nat:  # after a reboot the rules are gone with the bridge: again
            from . import nat
            with trace.step("outbound NAT", subnet=network.subnet):
                nat.enable(network)
        with trace.step("unshare", flags="CLONE_NEWNET", held_by="fd"):
            try:
                nsfd = namespaces.create_held("net")
            except OSError as e:
                raise NetworkError(f"cannot create a network namespace: {e.strerror}") from None
        try:
            self._plug_in(record, network, nsfd, address)
            self._save(record)
            self._write_etc_files(address, [])
            if network.name != DEFAULT_NETWORK:  # the members learn each other's names
                refresh_hosts(self.root, network.name)
        except BaseException:
            os.close(nsfd)  # the namespace goes with it, and with it the veth's inner end
            raise
        return nsfd

    def _plug_in(self, record: dict, network, nsfd: int, address: str) -> None:
        """Steps 4 and 5: the veth pair into the namespace ``nsfd``, then the ports."""
        from . import bridge
        spec, trace = self.spec, self.trace
        host_end = bridge.host_ifname(spec.id)
        with trace.step("veth pair", host=host_end, container="eth0", address=address,
                        bridge=network.bridge):
            bridge.attach(network, f"/proc/self/fd/{nsfd}", spec.id, address)
        record["veth"] = host_end
        if spec.ports:
            from . import proxy
            mappings = [proxy.PortMapping(**p) for p in spec.ports]
            with trace.step("publish ports", ports=", ".join(map(str, mappings))):
                listeners = proxy.bind_ports(mappings)
                record["ports"] = [m.to_dict() for m in mappings]  # host port 0 now resolved
                record["proxy"] = proxy.start_proxy(
                    listeners, mappings, address, os.getpid(),
                    os.path.join(self.container_dir, "proxy.log"))

    def _write_etc_files(self, address: str | None, peers) -> None:
        spec = self.spec
        if self.mode == "host":
            try:
                with open("/etc/hosts") as f:
                    hosts = f.read()
            except OSError:
                hosts = etcfiles.hosts_text(None)
        else:
            own = (address, [spec.hostname, spec.name]) if address else None
            hosts = etcfiles.hosts_text(own, peers)
        os.makedirs(self.container_dir, exist_ok=True)
        etcfiles.write_all(self.container_dir, spec.hostname,
                           hosts, etcfiles.resolv_conf_text(spec.dns or ()))

    def _save(self, record: dict) -> None:
        import json
        from ..paths import atomic_write
        atomic_write(os.path.join(self.container_dir, RECORD),
                     json.dumps(record, indent=1).encode(), durable=False)

    def teardown(self) -> None:
        """Take back what ``create`` made (as recorded): safe to call twice."""
        teardown(self.root, self.container_dir)


def load_record(container_dir: str) -> dict | None:
    """The container's ``network.json``: its network, address, veth, ports, proxy."""
    import json
    try:
        with open(os.path.join(container_dir, RECORD)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def inspect_settings(container_dir: str, mode: str) -> dict:
    """``docker inspect``'s NetworkSettings: the address and ports while it runs."""
    record = load_record(container_dir) or {}
    address = record.get("address", "")
    ports = {}
    for p in record.get("ports", []):
        ports.setdefault(f"{p['container_port']}/{p['protocol']}", []).append(
            {"HostIp": p["host_ip"], "HostPort": str(p["host_port"])})
    endpoint = {"IPAddress": address, "IPPrefixLen": record.get("prefixlen", 0),
                "Gateway": record.get("gateway", ""), "NetworkID": record.get("network", "")}
    return {"Bridge": record.get("bridge", ""), "SandboxKey": "", "Ports": ports,
            **endpoint, "Networks": {mode: endpoint}}


def teardown(root: str, container_dir: str) -> None:
    """Undo a container's network from its record; a no-op without one.

    Each step tolerates "already gone": when the container's last process
    exited, the kernel destroyed its namespace and with it both veth ends.
    """
    record = load_record(container_dir)
    if record is None:
        return
    from . import bridge, ipam
    if record.get("proxy"):
        from . import proxy
        proxy.stop_proxy(record["proxy"])
    if record.get("veth"):
        bridge.detach(record["container_id"])
    if record.get("address"):
        try:
            ipam.release(root, record["network"], record["container_id"])
        except NetworkError:
            pass  # the network is gone: so is the lease
        if record["network"] != DEFAULT_NETWORK:
            refresh_hosts(root, record["network"])
    try:
        os.unlink(os.path.join(container_dir, RECORD))
    except FileNotFoundError:
        pass


def refresh_hosts(root: str, network_name: str) -> None:
    """Rewrite the /etc/hosts of every member of a user-defined network: its own
    line, then one per other member (``ADDRESS NAME HOSTNAME``).

    Under the networks' lock, so two members joining at once cannot each
    write a list that misses the other.
    """
    from . import ipam
    containers = os.path.join(root, "containers")
    with ipam.locked(root):
        try:
            network = ipam.load_network(root, network_name)
        except NetworkError:
            return
        names = {cid: _names(os.path.join(containers, cid)) for cid in network.leases}
        for cid, address in network.leases.items():
            path = os.path.join(containers, cid, etcfiles.HOSTS)
            if not os.path.exists(path):
                continue  # not started this far yet: it writes its own
            peers = [(a, names[other]) for other, a in sorted(network.leases.items(),
                                                              key=lambda kv: kv[1])
                     if other != cid and names[other]]
            etcfiles.write_in_place(path, etcfiles.hosts_text((address, names[cid]), peers))


def _names(container_dir: str) -> list[str]:
    """[hostname, name] of a container, as its sandbox recorded them."""
    record = load_record(container_dir) or {}
    return [n for n in record.get("names", []) if n]
