"""IPAM, IP address management: which subnet each network owns, which address each container holds.

Docker gives every network a subnet (``docker network create --subnet``, or one
it picks from a private pool), keeps the first host address for the bridge
(the gateway, ``.1``) and hands the next free one to each container that joins.
minirt does the same, and keeps the leases on disk so that a restarted daemon
(or the next ``minirt`` command) knows which addresses are taken.

Layout under the state root::

    networks/
        .lock          flock(2)ed around every change (create, allocate, release, remove)
        <name>.json    one network: {"name", "subnet", "gateway", "bridge",
                                     "leases": {container_id: address}}

Every file is replaced with ``atomic_write`` (rename(2)), so a reader sees the
old network or the new one, never half of it. One lock guards the whole
directory: creating a network must look at all the others (no two subnets may
overlap), and changes are rare enough that finer locks would buy nothing.

Why refuse overlaps? The kernel routes by the longest matching prefix; two
bridges with overlapping subnets, or a bridge overlapping the host's own
network, would make some addresses unreachable (or worse, send a container's
traffic for the LAN into another bridge).
"""

import hashlib
import ipaddress
import json
import os
import re

from ..errors import NetworkError
from ..paths import FileLock, atomic_write
from ..record import Record

# Where ``create_network`` looks for a free subnet when none is given: 256 /24s of
# RFC 1918 space, away from docker's own default 172.17.0.0/16.
DEFAULT_POOL = ipaddress.IPv4Network("172.30.0.0/16")
DEFAULT_PREFIX = 24

# Docker's rule for network names (and container names).
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


class Network(Record):
    """One network: its subnet, the bridge's (gateway's) address, and who holds which address."""

    __slots__ = ("name", "subnet", "gateway", "bridge", "leases", "nat")

    def __init__(self, name: str, subnet: str, gateway: str, bridge: str,
                 leases: dict | None = None, nat: bool = False):
        self.name = name
        self.subnet = subnet        # "172.30.0.0/24"
        self.gateway = gateway      # "172.30.0.1", the bridge's own address
        self.bridge = bridge        # the Linux bridge's interface name (<= 15 chars)
        self.leases = dict(leases or {})  # container id -> "172.30.0.2"
        self.nat = nat              # --enable-nat: masquerade traffic leaving for the outside

    @property
    def ip_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def prefixlen(self) -> int:
        return self.ip_network.prefixlen

    @classmethod
    def from_dict(cls, data: dict) -> "Network":
        return cls(data["name"], data["subnet"], data["gateway"], data["bridge"],
                   data.get("leases"), bool(data.get("nat")))


def bridge_name(name: str, root: str = "") -> str:
    """The bridge interface for network ``name`` of the state root ``root``:
    ``mrtbr-`` + 8 hex of a hash of both.

    Interface names are at most 15 bytes (IFNAMSIZ - 1), too short for most
    network names, so the name is hashed (docker names its own bridges
    ``br-`` + 12 hex of the network id for the same reason). The state root
    is part of the hash so that two minirt installations (a test run's and
    yours) never share a bridge, even for networks of the same name.
    """
    key = f"{os.path.realpath(root)}\0{name}" if root else name
    return "mrtbr-" + hashlib.sha256(key.encode()).hexdigest()[:8]


# --- the directory and its lock ------------------------------------------------------

def networks_dir(root: str) -> str:
    return os.path.join(root, "networks")


def locked(root: str) -> FileLock:
    """Serialize changes to the networks' files between processes (not re-entrant:
    the functions below take it themselves)."""
    directory = networks_dir(root)
    return FileLock(os.path.join(directory, ".lock"),
                    lambda: os.makedirs(directory, exist_ok=True))


def _path(root: str, name: str) -> str:
    if not _NAME.match(name or ""):
        raise NetworkError(f"invalid network name {name!r}: use letters, digits, '_', '.' and '-'")
    return os.path.join(networks_dir(root), f"{name}.json")


def _save(root: str, network: Network) -> None:
    data = json.dumps(network.to_dict(), indent=2, sort_keys=True).encode() + b"\n"
    atomic_write(_path(root, network.name), data)


def load_network(root: str, name: str) -> Network:
    """The network called ``name``, as last saved."""
    try:
        with open(_path(root, name), "rb") as f:
            return Network.from_dict(json.load(f))
    except FileNotFoundError:
        raise NetworkError(f"network {name} not found") from None


def list_networks(root: str) -> list[Network]:
    """Every network under ``root``, by name."""
    try:
        names = sorted(n[:-5] for n in os.listdir(networks_dir(root))
                       if n.endswith(".json") and not n.startswith("."))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        try:
            found.append(load_network(root, name))
        except NetworkError:  # removed meanwhile
            pass
    return found


def _name_of(network) -> str:
    return network.name if isinstance(network, Network) else network


# --- networks --------------------------------------------------------------------------

def host_networks() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """Every IPv4 address on this network namespace's interfaces: ``[("eth0", 192.0.2.2/24)]``.

    Read through netlink (RTM_GETADDR, what ``ip -4 addr`` prints).
    """
    from .netlink import route_socket
    found = []
    with route_socket() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for addr in ipr.get_addr(family=2):  # AF_INET
            address = addr.get_attr("IFA_LOCAL") or addr.get_attr("IFA_ADDRESS")
            found.append((names.get(addr["index"], f"if{addr['index']}"),
                          ipaddress.IPv4Interface(f"{address}/{addr['prefixlen']}")))
    return found


def _conflict(subnet: ipaddress.IPv4Network, networks: list[Network], host) -> str | None:
    """Why ``subnet`` cannot be used, or None when it is free."""
    for other in networks:
        if subnet.overlaps(other.ip_network):
            return f"network {other.name} ({other.subnet})"
    own_bridges = {other.bridge for other in networks}
    for ifname, interface in host:
        # A network's own bridge carries its gateway (already checked above);
        # 127.0.0.0/8 lives on lo and is never a network's subnet anyway.
        if ifname in own_bridges or interface.ip.is_loopback:
            continue
        if subnet.overlaps(interface.network):
            return f"{ifname}'s address {interface}"
    return None


def create_network(root: str, name: str, subnet: str | None = None, bridge: str | None = None,
                   host=None, nat: bool = False) -> Network:
    """Record a new network; pick a free /24 from ``DEFAULT_POOL`` when ``subnet`` is None.

    The subnet may overlap no other minirt network and no address already on a
    host interface. ``host`` lists the host's addresses as ``host_networks()``
    returns them (read from the kernel when None). The bridge itself is made by
    ``bridge.ensure_bridge``, not here.
    """
    path = _path(root, name)
    if subnet is not None:
        try:
            wanted = ipaddress.IPv4Network(subnet, strict=True)
        except ValueError as e:
            raise NetworkError(f"invalid subnet {subnet!r}: {e}") from None
        if wanted.prefixlen > 30:
            raise NetworkError(f"subnet {wanted} is too small: a network needs a /30 or larger "
                               "(network, gateway, one container, broadcast)")
    if host is None:
        host = host_networks()
    with locked(root):
        if os.path.exists(path):
            raise NetworkError(f"network with name {name} already exists")
        networks = list_networks(root)
        if subnet is not None:
            why = _conflict(wanted, networks, host)
            if why:
                raise NetworkError(f"subnet {wanted} overlaps {why}")
        else:
            for wanted in DEFAULT_POOL.subnets(new_prefix=DEFAULT_PREFIX):
                if _conflict(wanted, networks, host) is None:
                    break
            else:
                raise NetworkError(f"no free /{DEFAULT_PREFIX} left in {DEFAULT_POOL}: "
                                   "remove a network or give --subnet")
        gateway = next(wanted.hosts())
        network = Network(name, str(wanted), str(gateway), bridge or bridge_name(name, root),
                          nat=nat)
        _save(root, network)
        return network


def remove_network(root: str, name: str) -> None:
    """Forget network ``name``; refused while a container still holds an address in it."""
    with locked(root):
        network = load_network(root, name)
        if network.leases:
            ids = ", ".join(sorted(cid[:12] for cid in network.leases))
            raise NetworkError(f"network {name} has active endpoints: {ids}")
        os.unlink(_path(root, name))


# --- addresses -------------------------------------------------------------------------

def allocate(root: str, network, container_id: str, wanted: str | None = None
             ) -> ipaddress.IPv4Address:
    """Lease an address of ``network`` to ``container_id`` and save the lease before
    returning it: ``wanted`` (``--ip``) if given, else the lowest free one (the same
    one again if it already holds a lease).

    The network address, the gateway and the broadcast address are never leased.
    """
    with locked(root):
        net = load_network(root, _name_of(network))
        held = net.leases.get(container_id)
        if held is not None and wanted in (None, held):
            return ipaddress.IPv4Address(held)
        taken = {ipaddress.IPv4Address(a) for cid, a in net.leases.items() if cid != container_id}
        taken.add(ipaddress.IPv4Address(net.gateway))
        if wanted is not None:
            address = _check_wanted(net, wanted, taken)
        else:
            for address in net.ip_network.hosts():  # hosts() skips network and broadcast
                if address not in taken:
                    break
            else:
                raise NetworkError(f"subnet {net.subnet} of network {net.name} is exhausted: "
                                   "no free address (remove a container or use a larger subnet)")
        net.leases[container_id] = str(address)
        _save(root, net)
        return address


def _check_wanted(net: Network, wanted: str, taken: set) -> ipaddress.IPv4Address:
    """``--ip ADDRESS``: valid, inside the subnet, not reserved, not someone else's."""
    try:
        address = ipaddress.IPv4Address(wanted)
    except ValueError:
        raise NetworkError(f"invalid IPv4 address {wanted!r}") from None
    if address not in net.ip_network:
        raise NetworkError(f"address {address} is not in network {net.name}'s subnet {net.subnet}")
    if address in (net.ip_network.network_address, net.ip_network.broadcast_address):
        raise NetworkError(f"address {address} is the subnet's network or broadcast address")
    if address in taken:
        owner = next((cid for cid, a in net.leases.items() if a == str(address)), None)
        who = f"container {owner[:12]}" if owner else "the gateway (the bridge)"
        raise NetworkError(f"address {address} is already in use by {who}")
    return address


def release(root: str, network, container_id: str) -> bool:
    """Give back ``container_id``'s address in ``network``. False when it held none."""
    with locked(root):
        net = load_network(root, _name_of(network))
        if net.leases.pop(container_id, None) is None:
            return False
        _save(root, net)
        return True


def ensure_network(root: str, name: str) -> Network:
    """``name`` as saved, created (first free subnet) if it does not exist yet: how the
    default ``bridge`` network appears on first use, as docker0 does."""
    try:
        return load_network(root, name)
    except NetworkError:
        pass
    try:
        return create_network(root, name)
    except NetworkError:
        return load_network(root, name)  # another minirt created it meanwhile


def leases_of(root: str, container_id: str) -> list[tuple[str, str]]:
    """``[(network, address)]`` leased to ``container_id``."""
    return [(net.name, net.leases[container_id]) for net in list_networks(root)
            if container_id in net.leases]


def release_departed(root: str, alive) -> list[tuple[str, str]]:
    """Release every lease whose container is not in ``alive`` (ids of containers
    that still exist): what a killed minirt could not give back. Returns
    ``[(network, container_id)]`` released."""
    alive, released = set(alive), []
    with locked(root):
        for net in list_networks(root):
            gone = [cid for cid in net.leases if cid not in alive]
            for cid in gone:
                del net.leases[cid]
                released.append((net.name, cid))
            if gone:
                _save(root, net)
    return released
