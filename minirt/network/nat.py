"""Outbound NAT: how a container on a bridge could reach the world beyond the host.

A container's packets for an address outside its subnet go to its gateway,
the bridge, i.e. into the host. Two things are still missing before they can
leave through the host's own network card:

* **forwarding**: a Linux host drops packets not addressed to itself unless
  ``net.ipv4.ip_forward`` is 1 (it routes them on, as a router does);
* **masquerading** (source NAT): the outside world has no route back to
  172.30.0.0/24, so the host rewrites each outgoing packet's source address
  to its own and, through connection tracking, the replies back again
  (iptables-extensions(8), ``MASQUERADE``).

Docker sets up both for every bridge network. minirt does so only when asked
(``minirt network create --enable-nat NAME``): a lab's containers stay on the
machine by default. The rules are the ones Docker writes, made with
iptables(8) (the nftables-backed ``iptables`` Debian ships), each tagged with a
comment naming the network so that removing it finds exactly its own rules.
This module never sends a packet; the tests only look at the rules.
"""

import shutil
import subprocess

from ..errors import NetworkError

IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def rules(network) -> list[list[str]]:
    """The iptables rules (table, chain, match...) that give ``network`` outbound NAT."""
    tag = ["-m", "comment", "--comment", f"minirt network {network.name}"]
    return [
        # Leaving through any interface but the bridge itself: take the host's address.
        ["-t", "nat", "POSTROUTING", "-s", network.subnet, "!", "-o", network.bridge,
         "-j", "MASQUERADE", *tag],
        # Let the bridge's traffic be routed out, and the replies back in.
        ["-t", "filter", "FORWARD", "-i", network.bridge, "-j", "ACCEPT", *tag],
        ["-t", "filter", "FORWARD", "-o", network.bridge, "-m", "conntrack", "--ctstate",
         "RELATED,ESTABLISHED", "-j", "ACCEPT", *tag],
    ]


def _iptables(action: str, rule: list[str]) -> subprocess.CompletedProcess:
    """``iptables -t TABLE ACTION CHAIN MATCH...`` (``-C`` checks, ``-A`` appends, ``-D`` deletes)."""
    binary = shutil.which("iptables")
    if binary is None:
        raise NetworkError("--enable-nat needs iptables (apt-get install iptables)")
    table, chain, rest = rule[:2], rule[2], rule[3:]
    return subprocess.run([binary, *table, action, chain, *rest], capture_output=True, text=True)


def present(network) -> list[bool]:
    """For each of ``rules(network)``: is it in the kernel's tables now?"""
    return [_iptables("-C", rule).returncode == 0 for rule in rules(network)]


def enable(network) -> None:
    """Turn on forwarding and add the rules that are missing (idempotent)."""
    with open(IP_FORWARD) as f:
        forwarding = f.read().strip() == "1"
    if not forwarding:
        with open(IP_FORWARD, "w") as f:
            f.write("1")
    for rule, there in zip(rules(network), present(network)):
        if not there:
            done = _iptables("-A", rule)
            if done.returncode != 0:
                disable(network)
                raise NetworkError(f"cannot add the NAT rule for network {network.name}: "
                                   f"{done.stderr.strip() or done.returncode}")


def disable(network) -> None:
    """Delete ``network``'s rules (every copy). Forwarding stays on: other networks, or
    the host's own routing, may rely on it."""
    for rule in rules(network):
        for _ in range(16):  # bounded: each pass deletes one copy
            if _iptables("-D", rule).returncode != 0:
                break
