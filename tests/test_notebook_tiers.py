"""The whole lab, run as a student without root: rootless and unprivileged, for real.

``make test`` runs every notebook as root (the root tier) under nbmake. Here the
same suite runs again as uid 65534 (nobody), twice:

rootless      user namespaces allowed: containers run in one, mapped to root;
unprivileged  inside a user namespace whose ``max_user_namespaces`` is 0, so no
              new namespace can be made: Binder's case. Containers fall back to
              proot, and every notebook must still complete.

The checkout may sit where nobody cannot go (CI clones into root's 0700 home),
so the run happens in a private mount namespace where the checkout, virtualenv
included, is bind-mounted under /var/tmp; nobody gets a fresh home there (its
images under ``$XDG_DATA_HOME``, built by ``minirt init`` as ``make setup``
would). Cgroups are read-only to nobody, as on Binder.

The unprivileged run also measures the lab's peak memory: the resident set of
every process of the run added up, sampled every 100 ms. Binder gives 2 GB; the
lab must stay under 1.5 GB.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import pytest

from conftest import require
from minirt.kernel import mounts, namespaces

NOBODY = 65534
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PYTHON = os.path.join(CHECKOUT, ".venv", "bin", "python")
PEAK_LIMIT = 1.5e9


def run_lab_as_nobody(tier: str, work: str, timeout: float = 900) -> tuple[int, str, int]:
    """Run every notebook under nbmake as nobody in ``tier``; (status, output, peak RSS)."""
    view = os.path.join(work, "lab")      # where the checkout appears to nobody
    home = os.path.join(work, "home")
    os.makedirs(view)
    os.makedirs(home)
    os.chown(home, NOBODY, NOBODY)
    log = os.path.join(work, "output.log")
    env = {"PATH": f"{view}/.venv/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": home,
           "XDG_DATA_HOME": f"{home}/.local/share", "XDG_RUNTIME_DIR": f"{home}/run",
           "XDG_CONFIG_HOME": f"{home}/.config", "MPLCONFIGDIR": f"{home}/.mpl",
           "PYTHONPATH": view, "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8",
           "MINIRT_STRICT": os.environ.get("MINIRT_STRICT", "")}
    script = ("set -e; mkdir -p \"$XDG_RUNTIME_DIR\"; python -m minirt init >/dev/null; "
              "python -m minirt doctor | grep '^tier'; "
              "exec python -m pytest -q -p no:cacheprovider --nbmake notebooks "
              "-o addopts='' --nbmake-timeout=600")
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, 1)
            os.dup2(out, 2)
            namespaces.unshare(["mnt"])
            mounts.make_private("/")
            subprocess.run(["mount", "--bind", CHECKOUT, view], check=True)
            if tier == "unprivileged":
                from test_rootless import no_more_user_namespaces
                no_more_user_namespaces()
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.chdir(view)
            os.execve("/bin/bash", ["bash", "-c", script], env)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    peak = [0]
    done = threading.Event()
    sampler = threading.Thread(target=sample_tree_rss, args=(pid, peak, done), daemon=True)
    sampler.start()
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            break
        time.sleep(0.2)
    else:
        kill_tree(pid)
        os.waitpid(pid, 0)
        status = None
    done.set()
    sampler.join(5)
    with open(log) as f:
        output = f.read()
    code = os.waitstatus_to_exitcode(status) if status is not None else -1
    return code, output, peak[0]


def sample_tree_rss(pid: int, peak: list, done: threading.Event) -> None:
    """Every 100 ms: the resident memory of ``pid`` and all its descendants, added up."""
    while not done.is_set():
        try:
            root = psutil.Process(pid)
            total = 0
            for process in [root] + root.children(recursive=True):
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            peak[0] = max(peak[0], total)
        except psutil.Error:
            pass
        done.wait(0.1)


def kill_tree(pid: int) -> None:
    try:
        for process in psutil.Process(pid).children(recursive=True):
            process.kill()
        os.kill(pid, 9)
    except (psutil.Error, ProcessLookupError):
        pass


@pytest.fixture
def lab_work():
    require(os.geteuid() == 0, "needs root to act as another user")
    require(namespaces.can_unshare(["user"]), "the kernel refuses user namespaces here "
            "(max_user_namespaces=0, or these tests run inside a chroot)")
    require(os.path.exists(VENV_PYTHON), "needs the virtualenv that `make setup` builds")
    work = tempfile.mkdtemp(prefix="minirt-tier-", dir="/var/tmp")
    os.chmod(work, 0o755)
    yield work
    mounts.unmount_all_under(work)
    shutil.rmtree(work, ignore_errors=True)


def notebook_count() -> int:
    return len([n for n in os.listdir(os.path.join(CHECKOUT, "notebooks"))
                if n.endswith(".ipynb")])


@pytest.mark.slow
@pytest.mark.parametrize("tier", ["rootless", "unprivileged"])
def test_every_notebook_completes_as_a_student_without_root(tier, lab_work):
    code, output, peak = run_lab_as_nobody(tier, lab_work)
    assert f"tier: {tier}" in output, output[-3000:]
    assert code == 0, output[-5000:]
    assert f"{notebook_count()} passed" in output, output[-3000:]
    print(f"{tier}: peak resident memory of the whole lab run {peak / 1e6:.0f} MB")
    if tier == "unprivileged":
        assert 0 < peak < PEAK_LIMIT, f"the lab peaked at {peak / 1e6:.0f} MB (Binder: 2 GB)"
    leftovers = [p for p in psutil.process_iter(["uids", "name", "status"])
                 if p.info["uids"] and p.info["uids"].real == NOBODY
                 and p.info["status"] != psutil.STATUS_ZOMBIE   # ended, not yet reaped
                 and p.info["name"] in ("docker-registry", "qemu-system-x86_64", "proot",
                                        "minirt-shim")]
    assert not leftovers, f"processes left behind: {leftovers}"
