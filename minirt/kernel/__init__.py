"""Thin, typed wrappers over the Linux kernel features a container is made of.

Each module owns one feature: ``syscalls`` (the raw calls through libc),
``namespaces``, ``mounts``, ``devices`` (a minimal /dev), ``netdev`` (bringing
up loopback) and ``cgroups`` (resource limits, v1 and v2 behind one API).
Nothing here knows about images or containers.
"""
