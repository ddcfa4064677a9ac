"""The lab as software: notebooks stored clean, the instructor check, the exercise frame."""

import json
import os
import subprocess
import sys

import nbformat

from minirt.lab.checks import run_check
from minirt.lab.instructor import default_notebooks_dir, lab_notebooks

NOTEBOOKS = default_notebooks_dir()


def test_notebooks_are_stored_without_outputs():
    paths = lab_notebooks(NOTEBOOKS)
    assert paths, "the lab has notebooks"
    for path in paths:
        notebook = json.load(open(path))
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, \
                    f"{os.path.basename(path)} has stored outputs: clear them before committing"


def test_every_notebook_opens_with_goals_and_a_time_budget():
    for path in lab_notebooks(NOTEBOOKS):
        first = "".join(json.load(open(path))["cells"][0]["source"]).lower()
        assert "goal" in first and "minutes" in first, os.path.basename(path)


def test_checks_turn_any_failure_into_a_verdict(capsys):
    def unfinished():
        raise NotImplementedError

    def body(verdict, function):
        verdict.expect(function() == 42, "returns 42", "the answer is 42")

    assert run_check("Exercise", body, unfinished) is False
    assert "not written yet" in capsys.readouterr().out
    assert run_check("Exercise", body, lambda: 1 / 0) is False
    assert "ZeroDivisionError" in capsys.readouterr().out
    assert run_check("Exercise", body, lambda: 41) is False
    assert "hint: the answer is 42" in capsys.readouterr().out
    assert run_check("Exercise", body, lambda: 42) is True
    assert "well done" in capsys.readouterr().out


def make_notebook(path, *sources):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("Goals: a test. About 1 minute.")] + \
        [nbformat.v4.new_code_cell(source) for source in sources]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, str(path))


def test_instructor_check_writes_html_and_a_summary(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    make_notebook(notebooks / "a-good.ipynb", "print(6 * 7)")
    make_notebook(notebooks / "b-broken.ipynb", "raise RuntimeError('broken on purpose')")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "minirt", "lab", "check", "--notebooks",
                             str(notebooks), "--out", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 of 2 notebooks passed" in result.stdout
    good = (out / "a-good.html").read_text()
    assert "42" in good, "the HTML copy holds the outputs"
    summary = (out / "index.html").read_text()
    assert "tier <b>" in summary and "a-good.ipynb" in summary and "broken on purpose" in summary
