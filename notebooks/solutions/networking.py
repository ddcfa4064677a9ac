"""Reference solutions for notebook 9 (Networking).

Kept out of the learner's notebook; ``tests/test_exercises_networking.py``
shows that they pass ``minirt.lab.checks.networking`` and that the notebook's
unfinished starters and wrong answers do not.
"""

import ipaddress
import os

from minirt.network.etcfiles import LOCALHOST_LINES


def parse_publish(value):
    """``"127.0.0.1:8080:80"`` -> ``("127.0.0.1", 8080, 80)``; no IP: 127.0.0.1, no host port: 0."""
    spec, _, protocol = value.partition("/")
    if protocol not in ("", "tcp"):
        raise ValueError(f"only tcp can be published, not {protocol!r}")
    parts = spec.split(":")
    if len(parts) > 3:
        raise ValueError(f"too many ':' in {value!r}")
    container_port = parts[-1]
    host_port = parts[-2] if len(parts) >= 2 else ""
    host_ip = parts[-3] if len(parts) == 3 else ""
    return (host_ip or "127.0.0.1", port(host_port) if host_port else 0, port(container_port))


def port(text):
    """A port number from 1 to 65535, or ValueError."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{text!r} is not a port (1-65535)")
    return int(text)


def next_address(network):
    """The lowest host address of the subnet that is neither gateway nor leased; None if full."""
    taken = {network["gateway"], *network["leases"].values()}
    for address in ipaddress.ip_network(network["subnet"]).hosts():
        if str(address) not in taken:
            return str(address)
    return None


def hosts_file(me, members):
    """localhost, then ``me``'s own line, then one line per other member: ADDRESS HOSTNAME NAME."""
    def line(member):
        names = dict.fromkeys([member["hostname"], member["name"]])   # once each, in order
        return f"{member['address']}\t{' '.join(names)}"
    own = next(m for m in members if m["name"] == me)
    lines = list(LOCALHOST_LINES) + [line(own)]
    lines += [line(m) for m in members if m["name"] != me]
    return "\n".join(lines) + "\n"


def bridge_of(ifname, sys_class_net="/sys/class/net"):
    """The bridge ``ifname`` is plugged into (the target of its ``master`` link), or None."""
    master = os.path.join(sys_class_net, ifname, "master")
    if not os.path.islink(master):
        return None
    return os.path.basename(os.readlink(master))
