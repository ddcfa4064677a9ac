"""Notebook 2's exercise checks: the reference solutions pass, wrong answers fail.

A wrong UTS answer (sethostname without unshare) would rename the machine, so
every call of that check here runs in a forked child that the test itself has
already put into a UTS namespace of its own: the host is never touched, even if
the check's own protection were broken.
"""

import importlib.util
import os
import socket
from pathlib import Path

import pytest

from minirt.kernel import namespaces
from minirt.lab.checks import namespaces as checks

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "solutions" / "namespaces.py"


def load_solutions():
    spec = importlib.util.spec_from_file_location("namespaces_solutions", SOLUTIONS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


solutions = load_solutions()


def needs_root():
    if os.geteuid() != 0:
        (pytest.fail if os.environ.get("MINIRT_STRICT") == "1" else pytest.skip)("needs root")


def check_in_own_uts_namespace(fn) -> bool:
    """``check_enter_uts_namespace(fn)`` run from a child in a test-made UTS namespace."""
    return checks.in_child(lambda: checks.check_enter_uts_namespace(fn), unshare=["uts"])


@pytest.fixture
def host_hostname():
    before = socket.gethostname()
    yield before
    assert socket.gethostname() == before, "the host's hostname must never change"


def test_uts_solution_passes_the_check(host_hostname):
    needs_root()
    assert check_in_own_uts_namespace(solutions.enter_uts_namespace_and_set_hostname)


def test_uts_check_runs_safely_in_the_notebook_process_too(host_hostname):
    needs_root()
    # The check's own scratch namespace keeps the host safe: this is how a learner calls it.
    assert checks.check_enter_uts_namespace(solutions.enter_uts_namespace_and_set_hostname)


def test_sethostname_without_unshare_fails_the_check(host_hostname):
    needs_root()

    def renames_the_machine(name):
        socket.sethostname(name)

    assert not check_in_own_uts_namespace(renames_the_machine)


def test_unshare_without_sethostname_fails_the_check(host_hostname):
    needs_root()
    assert not check_in_own_uts_namespace(lambda name: namespaces.unshare(["uts"]))


def test_unfinished_exercise_fails_without_raising(host_hostname, capsys):
    def unfinished(name):
        raise NotImplementedError

    assert not checks.check_enter_uts_namespace(unfinished)
    assert "not written yet" in capsys.readouterr().out or os.geteuid() != 0


def test_pid_solution_passes_the_check():
    needs_root()
    assert checks.check_is_in_new_pid_namespace(solutions.is_in_new_pid_namespace)


def test_pid_check_that_always_says_yes_fails(capsys):
    assert not checks.check_is_in_new_pid_namespace(lambda: True)
    assert "on the host it answered True" in capsys.readouterr().out


def test_pid_check_that_always_says_no_fails():
    needs_root()
    assert not checks.check_is_in_new_pid_namespace(lambda: False)


def test_being_pid_1_is_not_the_same_as_a_new_pid_namespace(capsys):
    needs_root()
    assert not checks.check_is_in_new_pid_namespace(lambda: os.getpid() == 1)
    assert "PID 2" in capsys.readouterr().out


def test_a_crashing_answer_becomes_a_verdict(capsys):
    assert not checks.check_is_in_new_pid_namespace(lambda: 1 / 0)
    assert "ZeroDivisionError" in capsys.readouterr().out
