"""Notebook 0's exercise: the reference solution passes its check, wrong answers fail."""

import os
import sys

import minirt
from minirt.lab.checks.start import check_run_uname_in_container

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "notebooks", "solutions"))
import start as solution  # noqa: E402


def test_reference_solution_passes(engine, monkeypatch):
    monkeypatch.setenv("MINIRT_ROOT", engine.root)
    monkeypatch.setenv("MINIRT_CGROUP_PARENT", engine.cgroup_parent)
    assert check_run_uname_in_container(solution.run_uname_in_container)


def test_wrong_answers_fail(engine, monkeypatch):
    monkeypatch.setenv("MINIRT_ROOT", engine.root)
    monkeypatch.setenv("MINIRT_CGROUP_PARENT", engine.cgroup_parent)
    assert not check_run_uname_in_container(lambda: minirt.run("busybox", ["uname", "-a"]))
    assert not check_run_uname_in_container(lambda: os.uname().release)
    assert not check_run_uname_in_container(lambda: minirt.run("busybox", ["false"]))
