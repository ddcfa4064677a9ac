"""Hardening: what stands between a container and the host.

Namespaces decide what a container can *see*; these decide what it can *do*
with the one kernel it shares with the host, each as runc applies it:

    capabilities.py  root's powers, cut to Docker's default 14 (capabilities(7))
    seccomp.py       system calls the kernel refuses outright (seccomp(2))
    paths.py         /proc and /sys files masked or made read-only
    profile.py       the container's choices (--privileged, --cap-add, --user,
                     --read-only, ...) gathered into one record

``runtime/init.py`` applies them in order, the last steps before execve(2).
"""
