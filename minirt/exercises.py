"""``minirt exercise list|start|check``: copy minirt, replace one piece, see if containers still work.

An exercise (``exercises/<name>/`` in the lab) is one seam (``seams.py``) to
write yourself:

    exercise.json   {"title", "seam", "functions" (default [seam]), "needs":
                     "root"|"rootless"|"any", "minutes"}
    README.md       the goal, the concept, man pages and specs, how to check
    starter.py      the seam's function, with TODOs and hints
    check.py        STEPS: [(title, step(ctx))]; a step raises Hint("...") when it fails

``start NAME DIR`` copies the minirt package into ``DIR/minirt``, the starter
to ``DIR/<seam>.py``, and wires the copy (``DIR/minirt/exercise.json``) so
that the student's function replaces minirt's. ``check [DIR]`` runs the
exercise's steps against that copy, on a private state root, and prints one
verdict per step. The checks stay in the lab's folder, not in DIR: editing
them is not a way to pass.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from .errors import MinirtError, UsageError

PACKAGE = os.path.dirname(os.path.abspath(__file__))
WIRING = "exercise.json"


class Hint(Exception):
    """A failed step, in plain words the student can act on."""


class ExerciseError(MinirtError):
    """An exercise cannot be started or checked (unknown name, DIR not empty, ...)."""


def exercises_dir() -> str:
    """The lab's ``exercises/`` folder (next to the minirt package in the lab's checkout)."""
    found = os.environ.get("MINIRT_EXERCISES") or os.path.join(os.path.dirname(PACKAGE),
                                                                "exercises")
    if not os.path.isdir(found):
        raise ExerciseError(f"no exercises folder at {found}: run from the lab's checkout "
                            "or set MINIRT_EXERCISES")
    return found


def catalogue() -> dict[str, dict]:
    """{name: exercise.json} of every exercise, in the lab's order (names sort by number)."""
    root = exercises_dir()
    found = {}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, "exercise.json")
        if os.path.isfile(path):
            with open(path) as f:
                found[name] = json.load(f)
    return found


def describe(name: str) -> dict:
    everything = catalogue()
    if name not in everything:
        raise ExerciseError(f"no exercise {name!r}: `minirt exercise list` shows them")
    return everything[name]


def start(name: str, directory: str) -> str:
    """Copy minirt and the starter into ``directory`` (new or empty), wired together."""
    info = describe(name)
    directory = os.path.abspath(directory)
    if os.path.exists(directory) and os.listdir(directory):
        raise ExerciseError(f"{directory} is not empty: give a new directory")
    source = os.path.join(exercises_dir(), name)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".exercise-", dir=parent)  # then one rename: all or nothing
    try:
        shutil.copytree(PACKAGE, os.path.join(staging, "minirt"),
                        ignore=shutil.ignore_patterns("__pycache__", WIRING))
        shutil.copy(os.path.join(source, "starter.py"), os.path.join(staging, f"{info['seam']}.py"))
        shutil.copy(os.path.join(source, "README.md"), os.path.join(staging, "README.md"))
        wiring = {"exercise": name, "seams": {function: f"../{info['seam']}.py"
                                              for function in info.get("functions", [info["seam"]])}}
        with open(os.path.join(staging, "minirt", WIRING), "w") as f:
            json.dump(wiring, f, indent=1)
        if os.path.exists(directory):
            os.rmdir(directory)
        os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def wired_exercise(directory: str) -> str:
    """Which exercise ``directory`` was started for."""
    path = os.path.join(directory, "minirt", WIRING)
    try:
        with open(path) as f:
            return json.load(f)["exercise"]
    except (OSError, ValueError, KeyError):
        raise ExerciseError(f"{directory} is not an exercise folder (no minirt/{WIRING}): "
                            "make one with `minirt exercise start NAME DIR`") from None


class Context:
    """What a check's steps get: the student's folder, and ways to run its minirt copy."""

    def __init__(self, directory: str, state_root: str):
        self.dir = directory
        self.state_root = state_root

    def env(self) -> dict:
        return {**os.environ, "PYTHONPATH": self.dir, "MINIRT_ROOT": self.state_root,
                "MINIRT_HOST": "", "MINIRT_CGROUP_PARENT": f"minirt-exercise-{os.getpid()}",
                "PYTHONDONTWRITEBYTECODE": "1"}

    def run_minirt(self, *args, input: bytes | None = None,
                   timeout: float = 60) -> subprocess.CompletedProcess:
        """``python -m minirt ARGS`` with the student's copy (its seam wired in)."""
        return self.python("-m", "minirt", *args, input=input, timeout=timeout)

    def with_busybox(self, *args, timeout: float = 60) -> subprocess.CompletedProcess:
        """``minirt ARGS`` from the student's copy, busybox:latest built first (once)."""
        if not getattr(self, "busybox_built", False):
            built = self.run_minirt("init", timeout=120)
            if built.returncode != 0:
                raise Hint("`minirt init` (which builds busybox:latest) failed: "
                           + last_line(built.stderr))
            self.busybox_built = True
        return self.run_minirt(*args, timeout=timeout)

    def python(self, *args, input: bytes | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
        """The interpreter, with the student's folder first on the path."""
        try:
            return subprocess.run([sys.executable, *args], cwd=self.dir, env=self.env(),
                                  input=input, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Hint(f"it did not finish within {timeout:.0f} s (an endless loop, or a "
                       "container that never exits?)") from None


def last_line(output: bytes | str) -> str:
    """The last non-empty line of a command's output (on stderr: minirt's one-line error)."""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(nothing on stderr)"


def require_tier(info: dict) -> None:
    """Say up front when this machine cannot check the exercise (``needs`` in exercise.json)."""
    if info["needs"] == "root" and os.geteuid() != 0:
        raise ExerciseError(f"{info['title']} needs root (it makes real namespaces, mounts or "
                            "cgroups): run the check as root, e.g. on your own machine")
    if info["needs"] == "rootless" and os.geteuid() != 0:
        from .engine import user_namespaces_allowed
        if not user_namespaces_allowed():
            raise ExerciseError(f"{info['title']} needs root or user namespaces, which this "
                                "machine does not allow (`minirt doctor` shows the tier)")


def remove_everything(state_root: str) -> None:
    """After a check: its containers (detached ones have shims), mounts and state root."""
    from .engine import Engine
    from .kernel import mounts
    engine = Engine(state_root, cgroup_parent=f"minirt-exercise-{os.getpid()}")
    for container in engine.containers():
        try:
            engine.remove_container(container["id"], force=True)
        except MinirtError:
            pass
    mounts.unmount_all_under(state_root)
    shutil.rmtree(state_root, ignore_errors=True)


def load_steps(name: str) -> list:
    import importlib.util
    path = os.path.join(exercises_dir(), name, "check.py")
    spec = importlib.util.spec_from_file_location(f"exercise_check_{name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STEPS


def check(directory: str, out=print) -> list[tuple[str, bool, str]]:
    """Run the exercise's steps against ``directory``; [(title, passed, what or hint)]."""
    directory = os.path.abspath(directory)
    name = wired_exercise(directory)
    info = describe(name)
    require_tier(info)
    results = []
    state_root = tempfile.mkdtemp(prefix="minirt-exercise-", dir="/var/tmp")
    os.chmod(state_root, 0o755)
    try:
        context = Context(directory, state_root)
        out(f"{info['title']} ({name})")
        for title, step in load_steps(name):
            try:
                what = step(context) or ""
                results.append((title, True, what))
                out(f"  ✓ {title}" + (f": {what}" if what else ""))
            except Hint as hint:
                results.append((title, False, str(hint)))
                out(f"  ✗ {title}\n      {hint}")
            except Exception as e:  # the student's code may fail in any way: say how
                results.append((title, False, f"the check itself failed: {e!r}"))
                out(f"  ✗ {title}\n      the check itself failed: {e!r}")
        passed = sum(ok for _, ok, _ in results)
        out(f"{passed}/{len(results)} steps pass" + (": done!" if passed == len(results) else ""))
    finally:
        remove_everything(state_root)
    return results


# --- the command line ----------------------------------------------------------------------

def arguments(parser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("list", help="the exercises, in order, and what each needs")
    start_parser = verbs.add_parser("start", help="copy minirt and an exercise's starter into DIR")
    start_parser.add_argument("name")
    start_parser.add_argument("dir", nargs="?", help="default: ./NAME")
    check_parser = verbs.add_parser("check", help="check the exercise in DIR (default: .)")
    check_parser.add_argument("dir", nargs="?", default=".")


def run(args) -> int:
    if args.verb == "list":
        for name, info in catalogue().items():
            print(f"{name:24} {info['title']}  (needs {info['needs']}, ~{info['minutes']} min)")
        return 0
    if args.verb == "start":
        directory = start(args.name, args.dir or args.name)
        info = describe(args.name)
        functions = ", ".join(f"{f}()" for f in info.get("functions", [info["seam"]]))
        print(f"{directory}: write {functions} in {info['seam']}.py (see README.md), "
              f"then: minirt exercise check {directory}")
        return 0
    if args.verb == "check":
        results = check(args.dir)
        return 0 if results and all(ok for _, ok, _ in results) else 1
    raise UsageError(f"unknown verb {args.verb!r}")
