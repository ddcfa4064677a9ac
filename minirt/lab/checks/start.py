"""Checks for notebook 0 (Start here)."""

import os

from .verdict import run_check


def check_run_uname_in_container(function) -> bool:
    """The learner's function runs ``uname -r`` in a container and returns the result."""

    def body(verdict, function):
        result = function()
        if not verdict.expect(hasattr(result, "exit_code") and hasattr(result, "container_id"),
                              "returns what minirt.run returns",
                              "return the result of minirt.run(...), not its output"):
            return
        verdict.expect(result.exit_code == 0, "the command succeeded (exit code 0)",
                       f"it exited with {result.exit_code}: {result.errors.strip()[:120]}")
        inside = result.output.strip()
        verdict.expect(inside == os.uname().release,
                       f"the kernel inside is the host's: {os.uname().release}",
                       f"the output was {inside!r}: run exactly `uname -r` in the container")

    return run_check("Exercise 0.1: which kernel does a container run?", body, function)
