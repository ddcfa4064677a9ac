"""Network devices, the standard-library way: bring an interface up with ioctl(2).

A new network namespace holds one device, ``lo``, and it starts down; even
``ping 127.0.0.1`` fails until it is up. SIOCGIFFLAGS / SIOCSIFFLAGS are the
calls ``ip link set lo up`` makes under the hood (man 7 netdevice).
Bridges and veth pairs (the networking issue) use netlink through pyroute2.
"""

import fcntl
import os
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def set_up(interface: str = "lo") -> None:
    """Set the IFF_UP flag on ``interface`` in this process's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh", interface.encode(), 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", interface.encode(), flags | IFF_UP))


def interfaces() -> list[str]:
    """Names of the network interfaces this process can see."""
    return sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else \
        sorted(name for _, name in socket.if_nameindex())
