"""Notebook 3's exercises: the reference solutions pass their checks, wrong answers fail.

The checks write into REAL cgroups (``minirt-exercise-<pid>``) and run a child
in them, so the full checks need root; each leaves no cgroup behind.
"""

import os
import sys

import pytest

from minirt.kernel.cgroups import mounted_hierarchies
from minirt.lab.checks import cgroups as checks

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "notebooks", "solutions"))
import cgroups as solution  # noqa: E402


def needs_root():
    if os.geteuid() != 0:
        (pytest.fail if os.environ.get("MINIRT_STRICT") == "1" else pytest.skip)("needs root")


def exercise_cgroups_left() -> list[str]:
    return [os.path.join(root, d) for root in set(mounted_hierarchies().values())
            if os.path.isdir(root) for d in os.listdir(root) if d.startswith("minirt-exercise-")]


@pytest.fixture(autouse=True)
def nothing_left():
    yield
    assert exercise_cgroups_left() == []


def test_memory_limit_solution_passes_and_the_kernel_kills_above_it(capsys):
    needs_root()
    assert checks.check_write_memory_limit(solution.write_memory_limit)
    out = capsys.readouterr().out
    assert "is killed" in out and "oom_kill" in out and "skipped" not in out


def write_to(name, value=lambda limit: limit):
    def write(cgroup_dir, limit_bytes, version):
        with open(os.path.join(cgroup_dir, name), "w") as f:
            f.write(str(value(limit_bytes)))
    return write


def test_wrong_memory_limits_fail():
    assert not checks.check_write_memory_limit(write_to("memory.soft_limit_in_bytes"))
    assert not checks.check_write_memory_limit(write_to("memory.limit_in_bytes"))  # v2 too
    assert not checks.check_write_memory_limit(write_to("memory.max"))             # v1 too
    in_mib = lambda d, limit, v: solution.write_memory_limit(d, limit // 2 ** 20, v)  # noqa: E731
    assert not checks.check_write_memory_limit(in_mib)
    assert not checks.check_write_memory_limit(lambda d, limit, v: None)


def test_unfinished_memory_exercise_fails(capsys):
    def unfinished(cgroup_dir, limit_bytes, version):
        raise NotImplementedError
    assert not checks.check_write_memory_limit(unfinished)
    assert "not written yet" in capsys.readouterr().out


def test_cpu_quota_solution_passes_and_holds_in_a_real_cgroup(capsys):
    needs_root()
    assert checks.check_cpu_quota(solution.cpu_quota)
    out = capsys.readouterr().out
    assert "CPUs (asked: 0.5)" in out and "skipped" not in out


def test_wrong_cpu_quotas_fail():
    assert not checks.check_cpu_quota(lambda cpus, period_us=100_000: cpus * period_us)  # float
    assert not checks.check_cpu_quota(lambda cpus, period_us=100_000: int(cpus * period_us))
    assert not checks.check_cpu_quota(lambda cpus, period_us=100_000: int(cpus * 1000))
    assert not checks.check_cpu_quota(lambda cpus, period_us=100_000: int(cpus * 100_000))
