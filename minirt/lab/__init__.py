"""The lab's helpers for the notebooks: ``monitor`` (psutil and cgroup samples),
``vm`` (the same busybox root filesystem booted as a QEMU virtual machine, the
baseline containers are compared with) and ``plots`` (matplotlib figures).

They sit on top of the core (``minirt.engine`` and below) and may use optional
packages; nothing in the core imports them.
"""
