"""Bridges and veth pairs: how a container in its own network namespace reaches the others.

A fresh network namespace holds only ``lo``: no cable, no route out. Docker's
default ``bridge`` network wires it up with two kinds of virtual device:

* A **bridge** (bridge(8), ``ip link add NAME type bridge``) is a virtual
  Ethernet switch inside the kernel. Interfaces *enslaved* to it (their
  IFLA_MASTER is the bridge) become its ports: a frame arriving on one port
  leaves through the port whose MAC address it is for. Given an IP address of
  its own, the bridge is also the host's interface on that network, and so
  the containers' gateway (docker0 is 172.17.0.1).

* A **veth pair** (veth(4), ``ip link add A type veth peer name B``) is a
  virtual cable: two interfaces, and whatever is sent into one comes out of
  the other. Each end can live in a different network namespace
  (``ip link set B netns PID``, ip-link(8)), and that is the whole trick: one
  end stays on the host, plugged into the bridge; the other is moved into the
  container, renamed ``eth0`` and given the container's address. Deleting
  either end deletes both.

So one container's packet to another goes: its eth0 -> the veth's host end ->
the bridge -> the other veth's host end -> the other container's eth0.

Everything here speaks netlink (rtnetlink(7)), the socket API ``ip`` itself
uses, through pyroute2; nothing shells out. A netlink socket talks to the
network namespace it was *created* in, so the container side is configured
from a child process that first joins the container's namespace with
setns(2); the host side is configured from here.

This module does not read or write the state directory: which address a
container gets is ``ipam``'s business.
"""

import errno
import hashlib
import os

from ..errors import NetworkError
from ..kernel import namespaces

# A veth's host end is "mrt" + 8 hex of the container id, so ``ip link`` on the
# host shows which container each belongs to (IFNAMSIZ allows 15 characters).
HOST_PREFIX = "mrt"
# The container end is created under a temporary name, then renamed eth0 inside.
PEER_PREFIX = "mrp"
CONTAINER_IFNAME = "eth0"


def _ipr():
    from .netlink import route_socket
    return route_socket()


def host_ifname(container_id: str) -> str:
    """The name of the veth's host end for ``container_id``: ``mrt`` + 8 hex."""
    return HOST_PREFIX + _short(container_id)


def _short(container_id: str) -> str:
    cid = container_id.lower()
    if len(cid) >= 8 and all(c in "0123456789abcdef" for c in cid[:8]):
        return cid[:8]
    return hashlib.sha256(container_id.encode()).hexdigest()[:8]


def _index(ipr, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _netlink_error(what: str, error: Exception) -> NetworkError:
    code = getattr(error, "code", None)
    detail = os.strerror(code) if isinstance(code, int) and code > 0 else str(error)
    return NetworkError(f"{what}: {detail}")


# --- the bridge ----------------------------------------------------------------------

def ensure_bridge(network) -> int:
    """Make ``network``'s bridge exist, carry the gateway address and be up; its ifindex.

    Idempotent: each step checks first, so a second call (or a second minirt
    racing this one) changes nothing.
    """
    gateway, prefix = network.gateway, network.prefixlen
    with _ipr() as ipr:
        try:
            index = _index(ipr, network.bridge)
            if index is None:
                try:
                    ipr.link("add", ifname=network.bridge, kind="bridge")
                except Exception as e:
                    if getattr(e, "code", None) != errno.EEXIST:
                        raise
                index = _index(ipr, network.bridge)
            link = ipr.get_links(index)[0]
            if link.get_attr("IFLA_LINKINFO") is None or \
                    link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") != "bridge":
                raise NetworkError(f"interface {network.bridge} exists and is not a bridge")
            have = {a.get_attr("IFA_LOCAL") for a in ipr.get_addr(index=index, family=2)}
            if gateway not in have:
                try:
                    ipr.addr("add", index=index, address=gateway, prefixlen=prefix)
                except Exception as e:
                    if getattr(e, "code", None) != errno.EEXIST:
                        raise
            ipr.link("set", index=index, state="up")
            return index
        except NetworkError:
            raise
        except Exception as e:
            raise _netlink_error(f"cannot set up bridge {network.bridge} for network {network.name}", e)


def remove_bridge(network) -> bool:
    """Delete ``network``'s bridge (its ports are released, not deleted). False if absent."""
    return _delete_link(network.bridge, "bridge")


# --- veth pairs ----------------------------------------------------------------------

def attach(network, netns, container_id: str, address, ifname: str = CONTAINER_IFNAME) -> str:
    """Plug a container into ``network``: a veth pair, ``ifname`` (eth0) = ``address``;
    returns the host end's name.

    ``netns`` is the pid of any process in the container's network namespace
    (its PID 1 as the host sees it), or the path of a network namespace file
    (``/proc/PID/ns/net``, ``/run/netns/NAME``, ``/proc/self/fd/N`` for an
    open one). The bridge must exist (``ensure_bridge``). On any failure the
    pair is deleted again, so nothing half-made is left on the host.
    """
    host, peer = host_ifname(container_id), PEER_PREFIX + _short(container_id)
    path = f"/proc/{netns}/ns/net" if isinstance(netns, int) else str(netns)
    try:
        nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetworkError(f"cannot open the container's network namespace {path}: {e.strerror}") from None
    try:
        with _ipr() as ipr:
            bridge = _index(ipr, network.bridge)
            if bridge is None:
                raise NetworkError(f"bridge {network.bridge} of network {network.name} does not exist")
            try:
                # 1. The cable: both ends are born on the host...
                ipr.link("add", ifname=host, kind="veth", peer=peer)
            except Exception as e:
                raise _netlink_error(f"cannot create veth pair {host}/{peer}", e)
            try:
                # 2. ...one end plugged into the switch and switched on...
                ipr.link("set", index=_index(ipr, host), master=bridge, state="up")
                # 3. ...the other carried into the container's namespace, where the
                #    host can no longer see it (IFLA_NET_NS_FD, as `ip link set netns`).
                ipr.link("set", index=_index(ipr, peer), net_ns_fd=nsfd)
                # 4. Inside: rename, address, up, default route (a child that setns'd).
                _configure_inside(nsfd, peer, ifname, address, network.prefixlen, network.gateway)
            except BaseException as e:
                try:
                    ipr.link("del", ifname=host)  # deleting one end deletes the pair
                except Exception:
                    pass
                if isinstance(e, NetworkError):
                    raise
                if isinstance(e, Exception):
                    raise _netlink_error(f"cannot attach container {container_id[:12]} "
                                         f"to network {network.name}", e)
                raise
    finally:
        os.close(nsfd)
    return host


def _configure_inside(nsfd: int, peer: str, ifname: str, address, prefixlen: int,
                      gateway: str) -> None:
    """In a child that joined the namespace ``nsfd``: ``peer`` becomes ``ifname`` with
    ``address/prefixlen``, it and lo go up, the default route goes via ``gateway``.

    A child, not this process, because setns(2) would move this whole thread
    (and every socket it opens afterwards) into the container's network; the
    child can simply exit when it is done.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            namespaces.enter([("net", nsfd)])
            with _ipr() as ipr:
                index = _index(ipr, peer)
                ipr.link("set", index=index, ifname=ifname)  # renaming needs it down: it is
                ipr.addr("add", index=index, address=str(address), prefixlen=prefixlen)
                ipr.link("set", index=index, state="up")
                ipr.link("set", index=_index(ipr, "lo"), state="up")
                ipr.route("add", dst="0.0.0.0/0", gateway=gateway)
            os._exit(0)
        except BaseException as e:
            try:
                code = getattr(e, "code", None)
                detail = os.strerror(code) if isinstance(code, int) and code > 0 else repr(e)
                os.write(write_end, detail.encode()[:4000])
            finally:
                os._exit(1)
    os.close(write_end)
    try:
        message = b""
        while chunk := os.read(read_end, 4096):  # ends when the child exits (EOF)
            message += chunk
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise NetworkError(f"cannot configure {ifname} inside the container: "
                           f"{message.decode(errors='replace') or 'the helper process died'}")


def detach(container_id: str) -> bool:
    """Delete ``container_id``'s veth pair, from the host end. False when there was none.

    When the container's network namespace dies first (its last process
    exited), the kernel already deleted the pair: nothing to do, no error.
    """
    return _delete_link(host_ifname(container_id), "veth")


def _delete_link(ifname: str, kind: str) -> bool:
    """``ip link del IFNAME``; False when it does not exist (or vanished meanwhile)."""
    with _ipr() as ipr:
        index = _index(ipr, ifname)
        if index is None:
            return False
        try:
            ipr.link("del", index=index)
        except Exception as e:
            if getattr(e, "code", None) == errno.ENODEV:
                return False
            raise _netlink_error(f"cannot remove {kind} {ifname}", e)
        return True


def links(prefix: str = HOST_PREFIX) -> list[str]:
    """Names of the host's interfaces that start with ``prefix`` (leak checks, ``doctor``)."""
    with _ipr() as ipr:
        names = (link.get_attr("IFLA_IFNAME") for link in ipr.get_links())
        return sorted(n for n in names if n and n.startswith(prefix))
