"""Container networking: user-defined networks, their addresses, and the kernel plumbing.

Two layers, each in its own module:

    ipam.py    the bookkeeping: which networks exist, their subnets, which
               container holds which address (JSON under ``<state root>/networks/``)
    bridge.py  the kernel side, through netlink (pyroute2): one Linux bridge per
               network, one veth pair per attached container

``ipam`` never touches the kernel's links and ``bridge`` never reads the state
directory, so each can be read (and tested) on its own.
"""
