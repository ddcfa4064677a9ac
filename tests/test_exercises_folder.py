"""Every exercise in exercises/, both ways: started and given the reference solution, every
step passes; started and left as the starter, every step fails with its hint.

So no step passes vacuously: each one is seen failing on the unfinished code
and passing on working code, against the real runtime (the steps run the
student's copy of minirt: containers, layers, a registry, a daemon).
"""

import os
import shutil

import pytest

from conftest import require
from minirt import exercises

SOLUTIONS = os.path.join(exercises.exercises_dir(), "solutions")
CATALOGUE = exercises.catalogue()


def runnable(info: dict) -> None:
    if info["needs"] == "root":
        require(os.geteuid() == 0, f"{info['title']} needs root")
    elif info["needs"] == "rootless":
        from minirt.engine import user_namespaces_allowed
        require(os.geteuid() == 0 or user_namespaces_allowed(),
                f"{info['title']} needs root or user namespaces")


def started(tmp_path, name: str, solved: bool) -> str:
    directory = exercises.start(name, str(tmp_path / name))
    if solved:
        seam = CATALOGUE[name]["seam"]
        shutil.copy(os.path.join(SOLUTIONS, f"{name}.py"), os.path.join(directory, f"{seam}.py"))
    return directory


def test_there_are_at_least_eight_exercises_each_complete():
    assert len(CATALOGUE) >= 8
    for name, info in CATALOGUE.items():
        folder = os.path.join(exercises.exercises_dir(), name)
        for part in ("README.md", "starter.py", "check.py"):
            assert os.path.isfile(os.path.join(folder, part)), f"{name} lacks {part}"
        assert os.path.isfile(os.path.join(SOLUTIONS, f"{name}.py")), f"{name} has no solution"
        assert info["needs"] in ("root", "rootless", "any") and info["minutes"] > 0
        with open(os.path.join(folder, "README.md")) as f:
            readme = f.read().lower()
        for heading in ("goal", "time", "concept", "check"):
            assert heading in readme, f"{name}'s README says nothing of its {heading}"


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_the_reference_solution_passes_every_step(tmp_path, name):
    runnable(CATALOGUE[name])
    lines = []
    results = exercises.check(started(tmp_path, name, solved=True), out=lines.append)
    failed = [(title, why) for title, ok, why in results if not ok]
    assert results and not failed, "\n".join(lines)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_the_untouched_starter_fails_every_step_with_a_hint(tmp_path, name):
    runnable(CATALOGUE[name])
    lines = []
    results = exercises.check(started(tmp_path, name, solved=False), out=lines.append)
    passed = [title for title, ok, _ in results if ok]
    assert results and not passed, "\n".join(lines)
    for title, _, hint in results:
        assert hint and "the check itself failed" not in hint, f"{title}: {hint}"


def test_start_refuses_a_folder_that_is_not_empty(tmp_path):
    name = sorted(CATALOGUE)[0]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    with pytest.raises(exercises.ExerciseError, match="is not empty"):
        exercises.start(name, str(tmp_path / "busy"))
    assert os.listdir(tmp_path / "busy") == ["mine.txt"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".exercise-")]
