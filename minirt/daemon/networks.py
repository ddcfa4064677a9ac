"""minirtd's network endpoints: what ``docker network create|ls|inspect|rm`` are made of.

Docker concept: a *network* is a named switch with a subnet. ``docker network
create lab`` asks the daemon for one (``POST /networks/create``); dockerd's
bridge driver makes a Linux bridge for it and its IPAM picks a free subnet.
``docker run --network lab`` then gives each container an address on it
(``HostConfig.NetworkMode``), and the containers of a user-defined network find
each other by name. Three networks are *predefined* and cannot be removed:
``bridge`` (the default one, docker0), ``host`` (no network namespace: the
host's interfaces) and ``none`` (a namespace with only ``lo``).

Here the same requests go to ``minirt/network``: ``commands.create_network``
writes the record (``ipam``, JSON under ``<root>/networks``) and brings the
bridge up (``bridge.ensure_bridge``); ``commands.remove_network`` refuses while
a container holds an address, then deletes both. A network's members are its
leases: a container holds an address from its start to its exit, as docker's
endpoints do, so a stopped container is no member.

dockerd gives each network a random 64-hex ID; minirt's networks are files
named after the network, so the ID here is the sha256 of the name: the same
on every call, and the docker CLI (which shows 12 hex of it) is content.

Endpoints (Docker Engine API v1.43): ``GET /networks``, ``GET /networks/{id}``,
``POST /networks/create``, ``DELETE /networks/{id}``, ``POST /networks/prune``.
Events: network create, destroy.

Reference: https://docs.docker.com/reference/api/engine/version/v1.43/
(NetworkList, NetworkInspect, NetworkCreate, NetworkDelete, NetworkPrune).
"""

import hashlib
import json
import os

from ..errors import NetworkError
from ..network import commands, ipam
from ..network.sandbox import DEFAULT_NETWORK
from .api import Reply, _labels_match, iso_time, parse_filters, route
from .server import HTTPError

PREDEFINED = {DEFAULT_NETWORK: "bridge", "host": "host", "none": "null"}  # name -> Driver
BRIDGE_NAME = "com.docker.network.bridge.name"           # the Options docker shows
MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"


def network_id(name: str) -> str:
    """A network's ID: 64 hex, as docker's, here the sha256 of its name."""
    return hashlib.sha256(name.encode()).hexdigest()


# --- docker's shapes -------------------------------------------------------------------
def _member_names(root: str, container_id: str) -> str:
    try:
        with open(os.path.join(root, "containers", container_id, "config.json")) as f:
            return json.load(f).get("name") or container_id[:12]
    except (OSError, ValueError):
        return container_id[:12]


def network_resource(root: str, name: str, network: ipam.Network | None) -> dict:
    """Docker's NetworkResource for ``name``: a saved network, or a predefined one
    (``network`` None: ``host``, ``none``, or ``bridge`` before its first use)."""
    driver = PREDEFINED.get(name, "bridge")
    config, members, options, created = [], {}, {}, None
    if driver == "bridge":
        bridge = network.bridge if network else ipam.bridge_name(name, root)
        options = {BRIDGE_NAME: bridge}
        if name == DEFAULT_NETWORK:
            options["com.docker.network.bridge.default_bridge"] = "true"
        if network and getattr(network, "nat", False):
            options[MASQUERADE] = "true"
    if network is not None:
        config = [{"Subnet": network.subnet, "Gateway": network.gateway}]
        for cid, address in sorted(network.leases.items(), key=lambda kv: kv[1]):
            members[cid] = {"Name": _member_names(root, cid), "EndpointID": network_id(cid),
                            "MacAddress": "", "IPv4Address": f"{address}/{network.prefixlen}",
                            "IPv6Address": ""}
        try:
            created = os.stat(os.path.join(ipam.networks_dir(root), f"{name}.json")).st_mtime
        except OSError:
            pass
    return {"Name": name, "Id": network_id(name), "Created": iso_time(created),
            "Scope": "local", "Driver": driver, "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None if driver != "bridge" else {},
                     "Config": config},
            "Internal": False, "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": members,
            "Options": options, "Labels": {}}


def endpoint_settings(name: str, record: dict | None) -> dict:
    """Docker's EndpointSettings: a container's place on network ``name`` (its address
    while it runs, from its sandbox's record; empty otherwise, as docker shows it)."""
    record = record or {}
    running = bool(record.get("address"))
    return {"IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "",
            "NetworkID": network_id(name),
            "EndpointID": network_id(record.get("container_id", "")) if running else "",
            "Gateway": record.get("gateway", ""), "IPAddress": record.get("address", ""),
            "IPPrefixLen": record.get("prefixlen", 0), "IPv6Gateway": "",
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DriverOpts": None,
            "DNSNames": None}


# --- finding one -----------------------------------------------------------------------
def everything(root: str) -> list[tuple[str, ipam.Network | None]]:
    """Every network docker would list: the saved ones, then the predefined ones
    not saved (``bridge`` before its first use, ``host``, ``none``)."""
    saved = {n.name: n for n in ipam.list_networks(root)}
    listed = list(saved.items())
    listed += [(name, None) for name in PREDEFINED if name not in saved]
    return sorted(listed, key=lambda item: item[0])


def find(root: str, ref: str) -> tuple[str, ipam.Network | None]:
    """A network by name, ID or unique ID prefix (as docker takes them); 404 otherwise."""
    known = everything(root)
    for matches in ([item for item in known if item[0] == ref],
                    [item for item in known if network_id(item[0]) == ref],
                    [item for item in known if ref and network_id(item[0]).startswith(ref)]):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise HTTPError(400, f"network {ref} is ambiguous ({len(matches)} matches)")
    raise HTTPError(404, f"network {ref} not found")


# --- the endpoints ---------------------------------------------------------------------
def _matches(name: str, resource: dict, filters: dict) -> bool:
    """Docker's network filters: name (substring), id (prefix), driver, type, label."""
    for key, values in filters.items():
        if not values:
            continue
        if key == "name" and not any(v in name for v in values):
            return False
        if key == "id" and not any(resource["Id"].startswith(v) for v in values):
            return False
        if key == "driver" and resource["Driver"] not in values:
            return False
        if key == "type" and ("builtin" if name in PREDEFINED else "custom") not in values:
            return False
        if key == "label" and not _labels_match(resource["Labels"], values):
            return False
        if key == "dangling" and (values[0] in ("true", "1")) == bool(resource["Containers"]):
            return False
    return True


@route("GET", r"/networks")
def networks_list(request):
    """``docker network ls``: the saved networks and the predefined ones."""
    root = request.daemon.engine.root
    filters = parse_filters(request)
    found = []
    for name, network in everything(root):
        resource = network_resource(root, name, network)
        if _matches(name, resource, filters):
            found.append(resource)
    return found


@route("GET", r"/networks/(?P<ref>[^/]+)")
def network_inspect(request, ref):
    """``docker network inspect NETWORK``: subnet, gateway, bridge and who is on it."""
    root = request.daemon.engine.root
    return network_resource(root, *find(root, ref))


def _create_options(body: dict) -> tuple[str, str | None, bool, list[str]]:
    """Docker's NetworkCreateRequest -> (name, subnet, nat, warnings); 400 for what
    minirt cannot do."""
    name = body.get("Name")
    if not isinstance(name, str) or not name:
        raise HTTPError(400, "Name is required: which network should be created?")
    driver = body.get("Driver") or "bridge"
    if driver != "bridge":
        raise HTTPError(400, f"minirt has only the bridge driver, not {driver!r}: "
                        "a Linux bridge with a subnet")
    if body.get("EnableIPv6"):
        raise HTTPError(400, "minirt's networks are IPv4 only (EnableIPv6)")
    ipam_body = body.get("IPAM") or {}
    if not isinstance(ipam_body, dict):
        raise HTTPError(400, "invalid IPAM: give an object with a Config list")
    configs = ipam_body.get("Config") or []
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise HTTPError(400, "invalid IPAM.Config: give a list of {\"Subnet\": ...}")
    if len(configs) > 1:
        raise HTTPError(400, "minirt gives a network one subnet: give one IPAM.Config entry")
    config = configs[0] if configs else {}
    subnet = config.get("Subnet") or None
    if not subnet and (config.get("Gateway") or config.get("IPRange")):
        raise HTTPError(400, "give the Subnet with a Gateway or IPRange (--subnet)")
    if config.get("IPRange") and config["IPRange"] != subnet:
        raise HTTPError(400, "minirt leases addresses from the whole subnet: IPRange is not "
                        "supported")
    if config.get("Gateway") and subnet:
        import ipaddress
        try:
            first = str(next(ipaddress.IPv4Network(subnet).hosts()))
        except ValueError as e:
            raise HTTPError(400, f"invalid subnet {subnet!r}: {e}") from None
        if config["Gateway"] != first:
            raise HTTPError(400, f"minirt's gateway is always the subnet's first address "
                            f"({first}), not {config['Gateway']}")
    options = body.get("Options") or {}
    nat = str(options.get(MASQUERADE, "")).lower() == "true"
    warnings = []
    for key in options:
        if key != MASQUERADE:
            warnings.append(f"option {key} is ignored: minirt names the bridge itself and "
                            "takes only " + MASQUERADE)
    for key, why in (("Internal", "minirt's networks reach nothing beyond the host unless "
                      "NAT is enabled"),
                     ("Attachable", "minirt has no swarm"), ("Labels", "minirt keeps no "
                                                             "labels on networks")):
        if body.get(key):
            warnings.append(f"{key} is ignored: {why}")
    return name, subnet, nat, warnings


@route("POST", r"/networks/create")
def network_create(request):
    """``docker network create [--subnet S] NAME``: its record, then its bridge."""
    body = request.json(default=None)
    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object (docker's "
                        "NetworkCreateRequest: Name, Driver, IPAM)")
    name, subnet, nat, warnings = _create_options(body)
    daemon = request.daemon
    with daemon.lock:
        if nat:
            network = commands.create_network(daemon.engine.root, name, subnet, nat=True)
        else:
            network = commands.create_network(daemon.engine.root, name, subnet)
    daemon.events.publish("network", "create", network_id(network.name),
                          {"name": network.name, "type": "bridge"})
    return Reply(201, {"Id": network_id(network.name), "Warning": "; ".join(warnings)})


@route("DELETE", r"/networks/(?P<ref>[^/]+)")
def network_delete(request, ref):
    """``docker network rm``: refused for the predefined ones and while containers are on it."""
    daemon = request.daemon
    root = daemon.engine.root
    with daemon.lock:
        name, network = find(root, ref)
        if name in PREDEFINED:
            raise HTTPError(403, f"{name} is a pre-defined network and cannot be removed")
        if network.leases:
            raise HTTPError(403, f"error while removing network: network {name} id "
                            f"{network_id(name)} has active endpoints")
        commands.remove_network(root, name)
    daemon.events.publish("network", "destroy", network_id(name),
                          {"name": name, "type": "bridge"})
    return None


@route("POST", r"/networks/prune")
def networks_prune(request):
    """``docker network prune``: remove every user-defined network no container is on."""
    daemon = request.daemon
    root = daemon.engine.root
    filters = parse_filters(request)
    removed = []
    with daemon.lock:
        daemon.engine.reap_stale()  # a killed container's lease is no member
        for network in ipam.list_networks(root):
            if network.name in PREDEFINED or network.leases:
                continue
            if not _labels_match({}, filters.get("label", [])):
                continue
            try:
                commands.remove_network(root, network.name)
            except NetworkError:
                continue  # a container joined meanwhile
            removed.append(network.name)
    for name in removed:
        daemon.events.publish("network", "destroy", network_id(name),
                              {"name": name, "type": "bridge"})
    return {"NetworksDeleted": removed or None}
