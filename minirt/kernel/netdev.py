"""Network devices, the standard-library way: bring an interface up with ioctl(2).

A new network namespace holds one device, ``lo``, and it starts down; even
``ping 127.0.0.1`` fails until it is up. SIOCGIFFLAGS / SIOCSIFFLAGS are the
calls ``ip link set lo up`` makes under the hood (man 7 netdevice).
Bridges and veth pairs (the networking issue) use netlink through pyroute2.
"""

import _socket  # the C module under `socket`: all we need, and much faster to import
import fcntl
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def set_up(interface: str = "lo") -> None:
    """Set the IFF_UP flag on ``interface`` in this process's network namespace."""
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack("16sh", interface.encode(), 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", interface.encode(), flags | IFF_UP))
    finally:
        s.close()


def interfaces() -> list[str]:
    """Names of the network interfaces this process can see."""
    return sorted(name for _, name in _socket.if_nameindex())
