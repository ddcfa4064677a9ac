"""``minirt network create|ls|rm|inspect``: user-defined networks, as ``docker network``.

A network is two things that must agree: its record (``ipam``: name, subnet,
leases) and its bridge in the kernel (``bridge``). ``create`` writes the
record, then makes the bridge, and takes the record back if the kernel
refuses; ``remove`` refuses while a container holds an address, then deletes
both. The default network ``bridge`` and the two pseudo-networks ``none`` and
``host`` are predefined, as in Docker, and cannot be removed.
"""

import json

from ..errors import NetworkError
from . import ipam
from .sandbox import DEFAULT_NETWORK

PREDEFINED = (DEFAULT_NETWORK, "host", "none")


def describe(parser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    create = verbs.add_parser("create", help="create a network (a bridge and a subnet)")
    create.add_argument("--subnet", help="e.g. 10.10.0.0/24 (default: a free /24 of "
                        f"{ipam.DEFAULT_POOL})")
    create.add_argument("--enable-nat", action="store_true",
                        help="let its containers reach beyond this host (IP forwarding and "
                        "masquerading; off by default: the lab stays on this machine)")
    create.add_argument("name")
    verbs.add_parser("ls", help="list networks")
    rm = verbs.add_parser("rm", help="remove networks (none may have containers on it)")
    rm.add_argument("names", nargs="+", metavar="NETWORK")
    inspect = verbs.add_parser("inspect", help="a network's subnet, bridge and containers")
    inspect.add_argument("names", nargs="+", metavar="NETWORK")


def create_network(root: str, name: str, subnet: str | None = None,
                   nat: bool = False) -> ipam.Network:
    """Record the network, bring its bridge up and (``nat``) open its way out; nothing is
    left if any step fails."""
    from . import bridge
    if name in PREDEFINED:
        raise NetworkError(f"network with name {name} already exists (it is predefined)")
    network = ipam.create_network(root, name, subnet, nat=nat)
    try:
        bridge.ensure_bridge(network)
        if nat:
            from . import nat as outbound
            outbound.enable(network)
    except BaseException:
        ipam.remove_network(root, name)
        bridge.remove_bridge(network)
        raise
    return network


def remove_network(root: str, name: str) -> None:
    """Delete a network's record and its bridge; refused while containers use it."""
    from . import bridge
    if name in PREDEFINED:
        raise NetworkError(f"{name} is a pre-defined network and cannot be removed")
    network = ipam.load_network(root, name)
    ipam.remove_network(root, name)  # refuses when it has leases
    if network.nat:
        from . import nat
        nat.disable(network)
    bridge.remove_bridge(network)


def network_view(root: str, network: ipam.Network) -> dict:
    """What ``inspect`` shows: the record plus each member container's name."""
    import os
    members = {}
    for cid, address in sorted(network.leases.items(), key=lambda kv: kv[1]):
        name = cid[:12]
        try:
            with open(os.path.join(root, "containers", cid, "config.json")) as f:
                name = json.load(f).get("name", name)
        except (OSError, ValueError):
            pass
        members[cid] = {"Name": name, "IPv4Address": f"{address}/{network.prefixlen}"}
    return {"Name": network.name, "Driver": "bridge", "Subnet": network.subnet,
            "Gateway": network.gateway, "Bridge": network.bridge, "OutboundNAT": network.nat,
            "Containers": members}


def run(args) -> int:
    from ..cli import print_table
    from ..paths import state_root
    root = state_root()
    if args.verb == "create":
        print(create_network(root, args.name, args.subnet, nat=args.enable_nat).name)
    elif args.verb == "rm":
        for name in args.names:
            remove_network(root, name)
            print(name)
    elif args.verb == "inspect":
        views = [network_view(root, ipam.load_network(root, name)) for name in args.names]
        print(json.dumps(views, indent=4))
    else:
        rows = [("NAME", "DRIVER", "SUBNET", "GATEWAY", "BRIDGE", "CONTAINERS")]
        known = {n.name: n for n in ipam.list_networks(root)}
        if DEFAULT_NETWORK not in known:  # made on first use; listed before, as docker0
            rows.append((DEFAULT_NETWORK, "bridge", "(on first use)", "", "", "0"))
        for network in known.values():
            rows.append((network.name, "bridge", network.subnet, network.gateway,
                         network.bridge, str(len(network.leases))))
        rows += [("host", "host", "", "", "", ""), ("none", "null", "", "", "", "")]
        print_table(rows)
    return 0
