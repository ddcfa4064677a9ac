"""/etc/hosts, /etc/resolv.conf, /etc/hostname: how a container learns names.

An image's /etc is the same for every container made from it, but these three
files must say something about *this* container: its hostname, its address,
which DNS servers to ask. Docker therefore writes them per container, in the
container's own directory on the host, and bind-mounts each over the image's
file (``mount`` inside a container lists all three). minirt does the same.

On a user-defined network Docker also lets containers find each other by name
(its embedded DNS server at 127.0.0.11). minirt uses the older mechanism Docker
had before that, ``--link``'s: every member's /etc/hosts lists the other
members, and is rewritten when one joins or leaves. The default ``bridge``
network gets no such entries, exactly as in Docker, where containers on it
reach each other only by address.

The files are rewritten *in place* (same inode): a bind mount pins the inode it
was made from, so replacing the file with rename(2) would leave the container
looking at the old one. See hosts(5), resolv.conf(5), hostname(5).
"""

import os

HOSTS = "hosts"
RESOLV_CONF = "resolv.conf"
HOSTNAME = "hostname"
FILES = (HOSTS, RESOLV_CONF, HOSTNAME)   # each lands on /etc/<name> in the container

# What Docker puts first in every container's /etc/hosts.
LOCALHOST_LINES = (
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
    "fe00::0\tip6-localnet",
    "ff00::0\tip6-mcastprefix",
    "ff02::1\tip6-allnodes",
    "ff02::2\tip6-allrouters",
)


def hosts_text(own: tuple[str, list[str]] | None, peers=()) -> str:
    """The container's /etc/hosts: localhost, then ``own`` (address, names), then
    one line per peer (address, names) on its network."""
    lines = list(LOCALHOST_LINES)
    if own is not None:
        lines.append(_hosts_line(*own))
    lines.extend(_hosts_line(address, names) for address, names in peers)
    return "\n".join(lines) + "\n"


def _hosts_line(address: str, names) -> str:
    unique = list(dict.fromkeys(n for n in names if n))  # in order, without repeats
    return f"{address}\t{' '.join(unique)}"


def resolv_conf_text(dns=(), host_file: str = "/etc/resolv.conf") -> str:
    """The container's /etc/resolv.conf.

    ``--dns`` servers when given; otherwise the host's, minus loopback ones: a
    nameserver at 127.0.0.53 (systemd-resolved) means the *host's* loopback,
    and inside the container 127.0.0.53 is the container's own ``lo``, where
    nothing answers. Docker filters them for the same reason.
    """
    servers, other = list(dns), []
    if not servers:
        try:
            with open(host_file) as f:
                for line in f:
                    words = line.split()
                    if words[:1] == ["nameserver"] and len(words) > 1:
                        if not _is_loopback(words[1]):
                            servers.append(words[1])
                    elif words[:1] in (["search"], ["options"]):
                        other.append(line.strip())
        except OSError:
            pass
    lines = [f"nameserver {server}" for server in servers] + other
    if not servers:
        lines.insert(0, "# no nameserver: the host has none reachable from a container "
                        "(give --dns to set one)")
    return "\n".join(lines) + "\n"


def _is_loopback(address: str) -> bool:
    """127.0.0.0/8 or ::1 (a string test: ipaddress would cost every start ~1 ms)."""
    return address.startswith("127.") or address.split("%")[0] in ("::1", "0:0:0:0:0:0:0:1")


def write_in_place(path: str, text: str) -> None:
    """Replace the contents of ``path`` but keep its inode (see the module's docstring).

    The new text is written over the old from offset 0, then the file is cut
    to its length, so a reader never finds it empty.
    """
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def write_all(container_dir: str, hostname: str, hosts: str, resolv_conf: str) -> None:
    """Write the three files into the container's directory (before it starts)."""
    for name, text in ((HOSTNAME, hostname + "\n"), (HOSTS, hosts), (RESOLV_CONF, resolv_conf)):
        write_in_place(os.path.join(container_dir, name), text)


def present(container_dir: str) -> list[str]:
    """Which of the three files this container has (the init bind-mounts those)."""
    return [name for name in FILES if os.path.exists(os.path.join(container_dir, name))]
