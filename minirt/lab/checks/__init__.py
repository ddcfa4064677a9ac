"""Checks for the notebooks' exercises: run the learner's code for real, give a verdict.

Each notebook ends with exercises: the learner writes a small function, then
calls ``check_...(their_function)``. A check runs the function against the real
kernel (in a throw-away process, container or cgroup), compares what happened
with what should have, and prints one friendly verdict: what worked, or the
first thing that did not and a hint. A check never raises: a notebook must run
top to bottom, unfinished exercises included. It returns True or False, so the
tests can show that the reference solutions (``notebooks/solutions/``) pass
and wrong answers fail.

One module per notebook: ``start``, ``deployment``, ``namespaces``, ``cgroups``,
``vms``, ``layers``, ``lifecycle``, ``registries``, ``daemon``, ``networking``; ``child`` runs
code in a throw-away process.
"""

from .verdict import Verdict, run_check

__all__ = ["Verdict", "run_check"]
