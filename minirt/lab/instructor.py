"""``minirt lab check``: run every notebook headless before class, keep the evidence.

An instructor preparing a course server wants one answer: does the whole lab
run here, and at which tier? This executes each notebook top to bottom in a
fresh kernel (nbclient, as nbmake does in CI), writes an HTML copy of each
*with* its outputs, and a one-page ``index.html`` summary: the machine's tier,
pass or fail per notebook, and how long each took.
nbclient: https://nbclient.readthedocs.io; nbconvert: https://nbconvert.readthedocs.io
"""

import html
import os
import time

from ..record import Record


class NotebookRun(Record):
    __slots__ = ("notebook", "passed", "seconds", "error", "html")

    def __init__(self, notebook: str, passed: bool, seconds: float, error: str, html: str):
        self.notebook, self.passed, self.seconds = notebook, passed, seconds
        self.error, self.html = error, html


def default_notebooks_dir() -> str:
    """The lab's notebooks: next to the minirt package in a checkout, else ./notebooks."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidate = os.path.join(here, "notebooks")
    return candidate if os.path.isdir(candidate) else os.path.abspath("notebooks")


def lab_notebooks(directory: str) -> list[str]:
    """The lab's notebooks in order (solutions and checkpoints excluded)."""
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if name.endswith(".ipynb"))


def run_notebook(path: str, out_dir: str, timeout: int = 600) -> NotebookRun:
    """Execute one notebook in a fresh kernel; write its HTML copy, even when it fails."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(path)}})
    started, error = time.monotonic(), ""
    try:
        client.execute()
    except CellExecutionError as e:
        error = str(e).strip().splitlines()[-1] if str(e).strip() else "a cell failed"
    except Exception as e:  # a kernel that died or timed out: report it, check the rest
        error = f"{type(e).__name__}: {e}"
    seconds = time.monotonic() - started
    body, _ = HTMLExporter().from_notebook_node(notebook)
    name = os.path.splitext(os.path.basename(path))[0] + ".html"
    with open(os.path.join(out_dir, name), "w") as f:
        f.write(body)
    return NotebookRun(os.path.basename(path), not error, seconds, error, name)


def check_lab(notebooks_dir: str, out_dir: str, progress=print) -> list[NotebookRun]:
    """Run every notebook; write each as HTML and ``index.html`` with the summary."""
    from .. import doctor
    os.makedirs(out_dir, exist_ok=True)
    tier = doctor.probe().tier
    runs = []
    for path in lab_notebooks(notebooks_dir):
        progress(f"running {os.path.basename(path)} ...")
        run = run_notebook(path, out_dir)
        progress(f"  {'passed' if run.passed else 'FAILED'} in {run.seconds:.1f} s"
                 + (f": {run.error}" if run.error else ""))
        runs.append(run)
    write_summary(os.path.join(out_dir, "index.html"), tier, runs)
    return runs


def write_summary(path: str, tier: str, runs: list[NotebookRun]) -> None:
    rows = "".join(
        f"<tr><td><a href='{html.escape(r.html)}'>{html.escape(r.notebook)}</a></td>"
        f"<td>{'✅ passed' if r.passed else '❌ failed'}</td><td>{r.seconds:.1f} s</td>"
        f"<td>{html.escape(r.error)}</td></tr>" for r in runs)
    passed = sum(r.passed for r in runs)
    with open(path, "w") as f:
        f.write(f"""<!doctype html><meta charset="utf-8"><title>minirt lab check</title>
<h1>minirt lab check</h1>
<p>Machine: {html.escape(os.uname().nodename)}, kernel {html.escape(os.uname().release)},
tier <b>{html.escape(tier)}</b>. {passed} of {len(runs)} notebooks passed in
{sum(r.seconds for r in runs):.0f} s, on {time.strftime('%Y-%m-%d %H:%M %Z')}.</p>
<table border="1" cellpadding="4"><tr><th>notebook</th><th>result</th><th>time</th><th>error</th></tr>
{rows}</table>""")
