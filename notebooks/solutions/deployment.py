"""Reference solutions for notebook 1 (traditional deployment).

Kept out of the learner's notebook; ``tests/test_exercises_deployment.py``
shows that they pass ``minirt.lab.checks.deployment`` and that wrong answers
do not.
"""

import subprocess

from minirt.lab.checks.deployment import CAPABILITIES


def decode_capabilities(cap_hex: str) -> set[str]:
    """``"000001ffffffffff"`` (CapEff in /proc/PID/status) -> {"CAP_CHOWN", ...}."""
    mask = int(cap_hex, 16)
    return {name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1}


def make_disk(path: str, size_mib: int) -> None:
    """Mount a tmpfs of ``size_mib`` MiB on the existing directory ``path``."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=755", "tmpfs", path],
                   check=True)
