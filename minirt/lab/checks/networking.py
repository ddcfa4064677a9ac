"""Checks for notebook 9 (Networking): ``-p``, IPAM, /etc/hosts, and which bridge a veth is in.

``check_parse_publish(fn)``
    ``fn("127.0.0.1:8080:80") -> ("127.0.0.1", 8080, 80)``: a ``-p`` value taken
    apart as minirt reads it (no address: 127.0.0.1; no host port: 0, any free
    one), compared with minirt's own parser (``network.proxy.parse_publish``);
    values that are not ports must raise ValueError.
``check_next_address(fn)``
    ``fn(network) -> "172.30.0.5"``: given one network's record as
    ``networks/<name>.json`` holds it, the address the next container gets.
    Each case is a real record written by minirt's IPAM on a scratch state
    root; the answer is compared with what ``ipam.allocate`` then leases.
``check_hosts_file(fn, engine=None, tier=None)``
    ``fn(me, members) -> text``: the /etc/hosts of container ``me`` on a
    user-defined network, compared with ``etcfiles.hosts_text``; as root,
    also with the files inside real containers on a real network.
``check_bridge_of(fn, engine=None, tier=None)``
    ``fn(ifname, sys_class_net) -> "mrtbr-..." or None``: which bridge an
    interface is plugged into, read from sysfs. First on a stand-in sysfs tree
    (every tier), then, as root, on a real container's veth.

Every check works in every tier for its logic; the parts that need bridges and
veths (root) say that they were skipped, and why. Those parts make a network
``nb09-check-<pid>`` and containers ``nb09-check-<pid>-*`` (busybox, ``sleep``,
bounded) and remove them afterwards, whatever the learner's code did.
"""

import ipaddress
import json
import os
import shutil
import tempfile

from .verdict import run_check

CONTAINER_SECONDS = 60   # the check's containers sleep at most this long
made_interfaces: set[str] = set()   # host interfaces the checks made (bridges, veth ends)


def check_prefix() -> str:
    return f"nb09-check-{os.getpid()}"


def note(verdict, text: str) -> None:
    """A neutral line in the verdict: something the check could not try here."""
    verdict.lines.append(f"  · {text}")


def live_part_unavailable(tier: str | None) -> str:
    """Why the real-network part of a check cannot run here ("" when it can)."""
    if tier is None:
        from ... import doctor
        tier = doctor.probe().tier
    if tier != "root":
        return (f"this machine is {tier}: bridges and veth pairs need CAP_NET_ADMIN on the "
                "host, so only root can make them")
    from ...network import sandbox
    if not sandbox.netlink_available():
        return "pyroute2 (the netlink library) is not installed"
    return ""


# --- exercise 9.1: -p, taken apart ---------------------------------------------------------

PUBLISH_CASES = ["8080:80", "127.0.0.1:8080:80", "127.0.0.1::80", "80", "0.0.0.0:8443:443",
                 "9000:9000/tcp", ":53"]
BAD_PUBLISH = ["http", "8080:70000", "8080:", "80:eighty", "1.2.3.4:x:80"]


def expected_publish(text: str) -> tuple:
    """What minirt itself makes of ``-p text``: (host_ip, host_port, container_port)."""
    from ...network.proxy import parse_publish
    mapping = parse_publish(text)
    return mapping.host_ip, mapping.host_port, mapping.container_port


def check_parse_publish(parse_publish) -> bool:
    """``parse_publish(value) -> (host_ip, host_port, container_port)``, as minirt reads -p."""
    return run_check("Exercise 9.1: take -p apart", _publish_body, parse_publish)


def _publish_body(verdict, parse_publish):
    for text in PUBLISH_CASES:
        wanted = expected_publish(text)
        got = parse_publish(text)
        call = f"parse_publish({text!r})"
        if not isinstance(got, tuple) or len(got) != 3:
            verdict.bad(f"{call} returns a tuple of three",
                        f"it returned {got!r}: return (host_ip, host_port, container_port)")
            return
        if got == wanted:
            verdict.good(f"{call} == {wanted!r}")
            continue
        ip, host_port, container_port = got
        if any(isinstance(p, str) for p in (host_port, container_port)):
            hint = f"it returned {got!r}: ports are numbers, int(...), not text"
        elif ip != wanted[0] and (not ip or text.split("/")[0].count(":") < 2 or
                                  text.startswith(":")):
            hint = (f"it returned {got!r}: with no address, minirt listens on {wanted[0]} only "
                    "(docker would take 0.0.0.0, every interface)")
        elif ip != wanted[0]:
            hint = f"it returned {got!r}: the address is the part before the first ':' of three"
        elif host_port != wanted[1] and wanted[1] == 0:
            hint = (f"it returned {got!r}: with no host port the kernel picks a free one; "
                    "say so with 0 (bind(2) to port 0 means 'any')")
        elif (host_port, container_port) == (wanted[2], wanted[1]):
            hint = f"it returned {got!r}: the host port comes first, HOSTPORT:CONTAINERPORT"
        else:
            hint = (f"it returned {got!r}: read it from the right, "
                    "[IP:][HOSTPORT:]CONTAINERPORT[/tcp]")
        verdict.bad(f"{call} == {wanted!r}", hint)
        return
    for text in BAD_PUBLISH:
        try:
            got = parse_publish(text)
        except ValueError:
            verdict.good(f"parse_publish({text!r}) raises ValueError")
            continue
        except NotImplementedError:
            raise
        except Exception as e:
            verdict.bad(f"parse_publish({text!r}) raises ValueError",
                        f"it raised {type(e).__name__}: raise ValueError(...) for a value "
                        "that is not a port")
            return
        verdict.bad(f"parse_publish({text!r}) raises ValueError",
                    f"it returned {got!r}: a port is a number from 1 to 65535, and the "
                    "container port cannot be missing")
        return


# --- exercise 9.2: the next address ---------------------------------------------------------

def ipam_cases() -> list[tuple[str, dict, str | None]]:
    """(what the case shows, the network's record as saved on disk, the address minirt leases next).

    Each record is written by minirt's IPAM on a scratch state root (no kernel
    involved), and the expected answer is what ``ipam.allocate`` then leases.
    """
    from ...errors import NetworkError
    from ...network import ipam
    cases = []
    root = tempfile.mkdtemp(prefix=f"{check_prefix()}-ipam-")
    try:
        def case(what, name, subnet, leases=(), released=(), gateway=None):
            ipam.create_network(root, name, subnet, host=[])
            for n, address in enumerate(leases):
                ipam.allocate(root, name, f"container-{n}", address)
            for n, address in enumerate(leases):
                if address in released:
                    ipam.release(root, name, f"container-{n}")
            if gateway:  # a record edited by hand: the gateway is not the first address
                path = os.path.join(ipam.networks_dir(root), f"{name}.json")
                with open(path) as f:
                    data = json.load(f)
                data["gateway"] = gateway
                with open(path, "w") as f:
                    json.dump(data, f, indent=2, sort_keys=True)
            with open(os.path.join(ipam.networks_dir(root), f"{name}.json")) as f:
                record = json.load(f)
            try:
                wanted = str(ipam.allocate(root, name, "the-next-one"))
            except NetworkError:
                wanted = None
            cases.append((what, record, wanted))

        case("a new network", "fresh", "172.30.0.0/24")
        case("three containers on it", "three", "10.9.1.0/24", ["10.9.1.2", "10.9.1.3", "10.9.1.4"])
        case("the middle one of three was removed", "hole", "10.9.2.0/24",
             ["10.9.2.2", "10.9.2.3", "10.9.2.4"], released=["10.9.2.3"])
        case("leases listed out of order, one of them .10", "order", "10.9.3.0/24",
             ["10.9.3.11", "10.9.3.2", "10.9.3.10", "10.9.3.3", "10.9.3.4", "10.9.3.5",
              "10.9.3.6", "10.9.3.7", "10.9.3.8"])
        case("a /28 that does not start at .0", "small", "10.9.4.16/28", ["10.9.4.18"])
        case("a gateway that is not the first address (a record edited by hand)", "edited",
             "10.9.5.0/24", gateway="10.9.5.254")
        case("a full /30: gateway, one container, nothing left", "full", "10.9.6.0/30",
             ["10.9.6.2"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return cases


def check_next_address(next_address) -> bool:
    """``next_address(network) -> str | None``: the address IPAM leases next."""
    return run_check("Exercise 9.2: the next address (IPAM)", _ipam_body, next_address)


def _ipam_body(verdict, next_address):
    for what, record, wanted in ipam_cases():
        got = next_address(json.loads(json.dumps(record)))  # a copy: changing it changes nothing
        shown = (f"{record['subnet']}, gateway {record['gateway']}, leases "
                 f"{sorted(record['leases'].values(), key=ipaddress.ip_address) or 'none'}")
        text = f"{what} ({shown}): {wanted or 'None (full)'}"
        if got == wanted and (got is None or isinstance(got, str)):
            verdict.good(text)
            continue
        subnet = ipaddress.ip_network(record["subnet"])
        if got is not None and not isinstance(got, str) and str(got) == wanted:
            hint = f"it returned {got!r}: return the address as text, str(address)"
        elif got is not None and str(got) in (str(subnet.network_address),
                                              str(subnet.broadcast_address)):
            hint = f"it returned {got}: the network and broadcast addresses are never leased"
        elif wanted is None:
            hint = (f"it returned {got!r}: no host address is free (hosts() leaves out the "
                    "network and broadcast addresses): return None")
        elif got == record["gateway"]:
            hint = f"it returned {got}: that is the gateway, the bridge's own address"
        elif got in record["leases"].values():
            hint = f"it returned {got}: a container already holds it (see leases)"
        else:
            hint = (f"it returned {got!r}: IPAM takes the lowest free host address of the "
                    "subnet, so a removed container's address is handed out again")
        verdict.bad(text, hint)
        return


# --- exercise 9.3: /etc/hosts for the members of a network -----------------------------------

SAMPLE_MEMBERS = [
    {"name": "web", "hostname": "3f2a9c1d7e55", "address": "172.30.5.2"},
    {"name": "db", "hostname": "db", "address": "172.30.5.3"},
    {"name": "cache", "hostname": "8b01c44e9a20", "address": "172.30.5.10"},
]


def expected_hosts(me: str, members: list[dict]) -> str:
    """The /etc/hosts minirt writes for ``me`` (``etcfiles.hosts_text``)."""
    from ...network import etcfiles
    own = next(m for m in members if m["name"] == me)
    peers = [(m["address"], [m["hostname"], m["name"]]) for m in members if m["name"] != me]
    return etcfiles.hosts_text((own["address"], [own["hostname"], own["name"]]), peers)


def hosts_entries(text: str) -> list[tuple[str, frozenset]]:
    """A hosts(5) text as (address, names) entries; comments and blank lines left out."""
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            entries.append((words[0], frozenset(words[1:])))
    return entries


def compare_hosts(got, wanted: str) -> tuple[bool, str]:
    """(same, a hint when not): localhost lines, one's own line, the others in any order."""
    if not isinstance(got, str):
        return False, f"it returned {got!r}: return the file's text, one string"
    from ...network.etcfiles import LOCALHOST_LINES
    have, want = hosts_entries(got), hosts_entries(wanted)
    local = len(LOCALHOST_LINES)
    if have[:local] != want[:local]:
        return False, "start with the localhost lines, LOCALHOST_LINES, as they are"
    if len(have) <= local or have[local][0] != want[local][0]:
        return False, (f"after localhost comes the container's own line, {want[local][0]} "
                       "first: its own name must resolve too")
    if have[local] != want[local]:
        return False, (f"its own line lists {sorted(have[local][1])}; it should list "
                       f"{sorted(want[local][1])}: the hostname and the name")
    others = have[local + 1:]
    if want[local] in others:
        return False, "the other lines are the OTHER members: its own line is already there"
    if sorted(others, key=str) != sorted(want[local + 1:], key=str):
        def shown(entries):
            return [f"{a} {' '.join(sorted(n))}" for a, n in entries]
        missing = shown(e for e in want[local + 1:] if e not in others)
        extra = shown(e for e in others if e not in want)
        found = ([f"missing {missing}"] if missing else []) + (
            [f"not expected {extra}"] if extra else [])
        return False, "one line per other member, ADDRESS HOSTNAME NAME: " + "; ".join(found)
    return True, ""


def check_hosts_file(hosts_file, engine=None, tier=None) -> bool:
    """``hosts_file(me, members) -> text``: what minirt writes into ``me``'s /etc/hosts."""
    return run_check("Exercise 9.3: /etc/hosts for a network's members", _hosts_body,
                     hosts_file, engine, tier)


def _hosts_body(verdict, hosts_file, engine, tier):
    for me in ("web", "cache"):
        members = json.loads(json.dumps(SAMPLE_MEMBERS))
        same, hint = compare_hosts(hosts_file(me, members), expected_hosts(me, SAMPLE_MEMBERS))
        if not verdict.expect(same, f"{me}'s /etc/hosts among {len(members)} members "
                              "(what minirt's etcfiles writes)", hint):
            return
    alone = [SAMPLE_MEMBERS[1]]
    same, hint = compare_hosts(hosts_file("db", json.loads(json.dumps(alone))),
                               expected_hosts("db", alone))
    if not verdict.expect(same, "a network with a single member (db, whose hostname is its name)",
                          hint):
        return
    why = live_part_unavailable(tier)
    if why:
        note(verdict, f"the part with real containers was skipped: {why}")
        return
    live = open_network(verdict, engine, 3, "the part with real containers")
    if live is None:
        return
    try:
        for container in live.members:
            real = live.exec(container["name"], ["cat", "/etc/hosts"])
            same, hint = compare_hosts(hosts_file(container["name"], live.member_list()), real)
            if not verdict.expect(same, f"{container['name']} on network {live.name}: your text "
                                  "says what its real /etc/hosts says",
                                  f"{hint}\n    its file:\n      "
                                  + real.strip().replace("\n", "\n      ")):
                return
    finally:
        live.close()


# --- exercise 9.4: which bridge is a veth plugged into? ------------------------------------

def make_fake_sysfs(root: str) -> tuple[dict, str]:
    """A stand-in for /sys with sysfs's layout: ({ifname: its bridge or None}, class/net's path).

    /sys/class/net/NAME is a symlink to ../../devices/virtual/net/NAME; a port
    of a bridge has ``master``, a symlink to ``../BRIDGE``; a bridge lists its
    ports in ``brif/``.
    """
    layout = {"eth0": None, "lo": None, "br0": None, "mrtbr-5e1f00aa": None,
              "veth0a": "br0", "mrt3f2a9c1d": "mrtbr-5e1f00aa", "mrt8b01c44e": "mrtbr-5e1f00aa",
              "vethdown": None}
    devices = os.path.join(root, "devices", "virtual", "net")
    classes = os.path.join(root, "class", "net")
    os.makedirs(devices)
    os.makedirs(classes)
    for index, (name, master) in enumerate(layout.items(), start=1):
        directory = os.path.join(devices, name)
        os.makedirs(os.path.join(directory, "statistics"))
        with open(os.path.join(directory, "ifindex"), "w") as f:
            f.write(f"{index}\n")
        if name.startswith(("br", "mrtbr")):
            os.makedirs(os.path.join(directory, "bridge"))
            os.makedirs(os.path.join(directory, "brif"))
        if master:
            os.symlink(f"../{master}", os.path.join(directory, "master"))
            os.makedirs(os.path.join(directory, "brport"))
            os.symlink(f"../../{name}/brport", os.path.join(devices, master, "brif", name))
        os.symlink(f"../../devices/virtual/net/{name}", os.path.join(classes, name))
    return layout, classes


def check_bridge_of(bridge_of, engine=None, tier=None) -> bool:
    """``bridge_of(ifname, sys_class_net) -> bridge name or None``, read from sysfs."""
    return run_check("Exercise 9.4: which bridge is it plugged into?", _bridge_body,
                     bridge_of, engine, tier)


def _bridge_body(verdict, bridge_of, engine, tier):
    fake = tempfile.mkdtemp(prefix=f"{check_prefix()}-sys-")
    try:
        layout, classes = make_fake_sysfs(fake)
        order = sorted(layout, key=lambda n: layout[n] is None)   # plugged ones first
        for name in order:
            wanted = layout[name]
            got = bridge_of(name, classes)
            text = f"stand-in sysfs: {name} -> {wanted}"
            if got == wanted:
                verdict.good(text)
                continue
            if wanted and isinstance(got, str) and got.endswith(wanted):
                hint = f"it returned {got!r}: just the bridge's name, os.path.basename(...)"
            elif wanted and got == name:
                hint = f"it returned {got!r}, the interface itself: read its master link"
            elif wanted is None:
                hint = (f"it returned {got!r}: {name} has no master link (it is in no bridge, "
                        "or it is a bridge): return None")
            else:
                hint = (f"it returned {got!r}: the bridge is the target of the symlink "
                        f"{{sys_class_net}}/{name}/master (os.readlink); use the "
                        "sys_class_net argument, not /sys/class/net")
            verdict.bad(text, hint)
            return
    finally:
        shutil.rmtree(fake, ignore_errors=True)
    why = live_part_unavailable(tier)
    if why:
        note(verdict, f"the part on real veths was skipped: {why}")
        return
    live = open_network(verdict, engine, 1, "the part on real veths")
    if live is None:
        return
    try:
        veth = live.members[0]["veth"]
        for name, wanted, what in ((veth, live.bridge, f"{live.members[0]['name']}'s veth"),
                                   (live.bridge, None, "the bridge itself"),
                                   ("lo", None, "the host's loopback")):
            got = bridge_of(name, "/sys/class/net")
            if not verdict.expect(got == wanted, f"this machine: {what} {name} -> {wanted}",
                                  f"it returned {got!r}"):
                return
    finally:
        live.close()


# --- a real network for a check ---------------------------------------------------------------

def open_network(verdict, engine, count: int, part: str):
    """A ``CheckNetwork`` with ``count`` containers, made; None (and a note saying why) when
    this machine would not make it: the check's own failure, not the learner's."""
    from ...errors import MinirtError
    try:
        return CheckNetwork(engine, count).open()
    except MinirtError as e:
        note(verdict, f"{part} could not run here: {e}")
        return None


class CheckNetwork:
    """A network ``nb09-check-<pid>`` with ``count`` sleeping busybox containers on it.

    ``open()`` makes it; ``close()`` (or leaving a ``with``) removes it,
    whatever happened meanwhile: containers first (their shims give back the
    veths and the addresses), then the network and its bridge.
    """

    def __init__(self, engine, count: int):
        if engine is None:
            from ...engine import Engine
            engine = Engine()
        self.engine, self.count = engine, count
        self.name = check_prefix()
        self.members: list[dict] = []
        self.bridge = ""

    def open(self):
        from ...network import commands
        cleanup(self.engine)   # a leftover of an interrupted check of this process
        try:
            network = commands.create_network(self.engine.root, self.name)
            self.bridge = network.bridge
            made_interfaces.add(network.bridge)
            for letter in "abcdefgh"[:self.count]:
                name = f"{self.name}-{letter}"
                container_id = self.engine.create(
                    "busybox", ["sleep", str(CONTAINER_SECONDS)], name=name, network=self.name,
                    dns=["127.0.0.1"])
                self.engine.start(container_id)
                view = self.engine.inspect(container_id)
                from ...network import bridge
                self.members.append({"name": name, "hostname": view["hostname"],
                                     "address": view["NetworkSettings"]["IPAddress"],
                                     "id": container_id,
                                     "veth": bridge.host_ifname(container_id)})
                made_interfaces.add(self.members[-1]["veth"])
        except BaseException:
            cleanup(self.engine)
            raise
        return self

    def member_list(self) -> list[dict]:
        return [{k: m[k] for k in ("name", "hostname", "address")} for m in self.members]

    def exec(self, name: str, command: list[str]) -> str:
        from ...runtime.stdio import Capture
        captured = Capture()
        self.engine.exec(name, ["timeout", "10"] + command, stdio=captured)
        return captured.output.decode(errors="replace")

    def close(self) -> None:
        cleanup(self.engine)

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()
        return False


def cleanup(engine=None) -> list[str]:
    """Remove this process's check containers and network (an interrupted check); say which."""
    from ...errors import MinirtError
    from ...network import commands, ipam
    if engine is None:
        from ...engine import Engine
        engine = Engine()
    removed = []
    prefix = check_prefix()
    for container in engine.containers():
        if container.get("name", "").startswith(prefix + "-"):
            try:
                engine.remove_container(container["id"], force=True)
                removed.append(container["name"])
            except MinirtError:
                pass
    if any(n.name == prefix for n in ipam.list_networks(engine.root)):
        try:
            commands.remove_network(engine.root, prefix)
            removed.append(f"network {prefix}")
        except MinirtError:
            pass
    return removed


__all__ = ["check_parse_publish", "check_next_address", "check_hosts_file", "check_bridge_of",
           "cleanup"]
