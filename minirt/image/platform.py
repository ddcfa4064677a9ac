"""Platforms: which of an image index's manifests this machine can run.

One image name can stand for several builds (linux/amd64, linux/arm64, ...):
an image index (OCI) or manifest list (Docker) lists a manifest per platform,
each with ``{"os", "architecture", "variant"}``, and a client picks its own.
Spec: image-spec image-index.md (platform), and GOOS/GOARCH names for values.
"""

import os

# uname -m -> the architecture names images use (Go's GOARCH)
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
                 "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def oci_architecture() -> str:
    """This machine's architecture as images name it: ``amd64`` on x86_64."""
    machine = os.uname().machine
    return ARCHITECTURES.get(machine, machine)


def matches(platform: dict | None) -> bool:
    """Can this machine run an image built for ``platform``?"""
    platform = platform or {}
    return platform.get("os") == "linux" and platform.get("architecture") == oci_architecture()


def describe(entries: list[dict]) -> str:
    """The platforms an index offers, e.g. ``linux/arm64, linux/s390x``."""
    names = []
    for entry in entries:
        p = entry.get("platform") or {}
        names.append("/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant"))
                              if x) or "unknown")
    return ", ".join(names) or "none"


def choose(index: dict, available=lambda entry: True) -> dict | None:
    """The index entry for this machine (among those ``available``), or None."""
    for entry in index.get("manifests") or []:
        if matches(entry.get("platform")) and available(entry):
            return entry
    return None
