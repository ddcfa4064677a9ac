"""The runtime: turning a spec into a running, isolated, limited process.

``spec`` describes a container (plain typed records); ``rootfs`` prepares and mounts
its root filesystem; ``init`` is the code that runs inside the new namespaces
and ends by exec'ing the command; ``container`` is the parent side: cgroup,
fork, wait, signals and cleanup. ``shim`` keeps a detached container (its
parent, its logs in ``jsonlog``'s format, its attach socket, its exit), and
``enter`` runs a command inside a running one (``exec``: setns).
"""
