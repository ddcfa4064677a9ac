"""Notebook 6's exercises: the reference solutions pass their checks, wrong answers fail.

Each check runs real containers on the test state root (root tier) and removes
every container and image it made; the ``engine`` fixture asserts nothing is left.
"""

import json
import os
import sys

from minirt.lab.checks import lifecycle as checks

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "notebooks", "solutions"))
import lifecycle as solution  # noqa: E402


def no_check_images(engine):
    return [i.name for i in engine.images.images() if i.name.startswith("nb06-check-")]


def test_changes_by_kind_solution_passes_on_a_real_diff(engine, capsys):
    assert checks.check_changes_by_kind(solution.changes_by_kind, engine)
    assert "a real container's diff" in capsys.readouterr().out


def test_wrong_changes_by_kind_fail(engine):
    by_letter = lambda d: {k: [p for kind, p in d if kind == k] for k in "ACD"}  # noqa: E731
    assert not checks.check_changes_by_kind(by_letter, engine)
    swapped = lambda d: solution.changes_by_kind([("C" if k == "A" else "A" if k == "C" else k, p)  # noqa: E731
                                                  for k, p in d])
    assert not checks.check_changes_by_kind(swapped, engine)
    only_seen = lambda d: {{"A": "added", "C": "changed", "D": "deleted"}[k]: [p]  # noqa: E731
                           for k, p in d}
    assert not checks.check_changes_by_kind(only_seen, engine)
    assert not checks.check_changes_by_kind(lambda d: None, engine)


def test_unfinished_changes_by_kind_fails(engine, capsys):
    def changes_by_kind(diff_list):
        raise NotImplementedError
    assert not checks.check_changes_by_kind(changes_by_kind, engine)
    assert "not written yet" in capsys.readouterr().out


def test_commit_and_run_solution_passes(engine, capsys):
    assert checks.check_commit_and_run(solution.commit_and_run, engine)
    out = capsys.readouterr().out
    assert "prints the container's token" in out and "busybox itself is unchanged" in out
    assert no_check_images(engine) == []


def test_wrong_commit_and_run_fail(engine):
    def no_cmd(engine, container, image, path):       # CMD stays the container's command
        engine.commit(container, image)
        return engine.run(image)

    def base_image(engine, container, image, path):   # no commit: busybox has no such file
        return engine.run("busybox", ["cat", path])

    def kept(engine, container, image, path):         # right, but keeps its container: fine
        engine.commit(container, image, changes=["CMD " + json.dumps(["cat", path])])
        return engine.run(image, remove=False)

    def result_not_returned(engine, container, image, path):
        solution.commit_and_run(engine, container, image, path)

    assert not checks.check_commit_and_run(no_cmd, engine)
    assert not checks.check_commit_and_run(base_image, engine)
    assert not checks.check_commit_and_run(result_not_returned, engine)
    assert checks.check_commit_and_run(kept, engine)  # and the check removes what it kept
    assert no_check_images(engine) == []
