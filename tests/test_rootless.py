"""The rootless tier: an ordinary user runs real containers inside a user namespace.

Run as uid 65534 (nobody) for real, on this machine: the user maps itself to
root in a new user namespace, which owns the container's other namespaces.
Without a delegated cgroup there are no limits, and asking for one says so.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import require
from minirt.kernel import mounts, namespaces

NOBODY = 65534
# The checkout (and its virtualenv) may sit in a directory nobody cannot enter,
# e.g. /root. The user runs the system's Python on a copy of the minirt package,
# as a student copying minirt/ into an exercise would: the core needs nothing else.
PYTHON = os.path.realpath(sys.executable)
_student_copy = None


def student_copy() -> str:
    """The copy (made on first use, removed when the test run ends)."""
    global _student_copy
    if _student_copy is None:
        import atexit
        _student_copy = tempfile.mkdtemp(prefix="minirt-student-copy-", dir="/var/tmp")
        atexit.register(shutil.rmtree, _student_copy, True)
        shutil.copytree(os.path.dirname(mounts.__file__).rsplit(os.sep, 1)[0],
                        os.path.join(_student_copy, "minirt"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        os.chmod(_student_copy, 0o755)
    return _student_copy


def nobody_env(store: str) -> dict:
    return {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "MINIRT_ROOT": store,
            "PYTHONPATH": student_copy(), "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture(scope="module")
def nobody_root():
    require(os.geteuid() == 0, "needs root to act as another user")
    require(namespaces.can_unshare(["user"]), "the kernel refuses user namespaces here "
            "(max_user_namespaces=0, or these tests run inside a chroot)")
    store = tempfile.mkdtemp(prefix="minirt-rootless-", dir="/var/tmp")
    os.chown(store, NOBODY, NOBODY)
    try:
        result = as_nobody(store, "init")
        assert result.returncode == 0, result.stderr
        yield store
    finally:
        mounts.unmount_all_under(store)
        shutil.rmtree(store, ignore_errors=True)


def drop_to_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def as_nobody(store: str, *args, timeout=60):
    return subprocess.run([PYTHON, "-m", "minirt", *args], env=nobody_env(store), cwd="/",
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=drop_to_nobody)


def test_an_ordinary_user_runs_an_isolated_container(nobody_root):
    result = as_nobody(nobody_root, "run", "--rm", "-h", "rootless-box", "busybox", "sh", "-c",
                       "id -u; cat /proc/self/uid_map; hostname; echo $$; "
                       "ls /sys/class/net; echo changed > /etc/hostname && echo wrote")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[0] == "0", "root inside"
    assert lines[1].split() == ["0", str(NOBODY), "1"], "mapped to nobody outside"
    assert lines[2] == "rootless-box"
    assert lines[3] == "1", "the shell is PID 1 of its own pid namespace"
    assert lines[4] == "lo" and lines[5] == "wrote"
    layers = os.path.join(nobody_root, "layers")
    [layer] = os.listdir(layers)
    assert open(os.path.join(layers, layer, "etc", "hostname")).read() == "busybox\n"
    assert not os.listdir(os.path.join(nobody_root, "containers")), "--rm removed it"
    assert not mounts.mount_points_under(nobody_root)


def test_rootless_networks_none_by_default_host_on_request_bridge_refused(nobody_root):
    """Without root: lo only by default; the host's interfaces with --network host (its
    /sys borrowed: a user namespace may not mount sysfs for a network it does not own);
    a bridge refused in one line, hardening still applied."""
    default = as_nobody(nobody_root, "run", "--rm", "busybox", "sh", "-c",
                        "ls /sys/class/net; grep -E 'NoNewPrivs|CapBnd' /proc/self/status")
    assert default.returncode == 0, default.stderr
    # (No seccomp line: this copy runs on the system's Python, without pyseccomp.)
    assert default.stdout.split() == ["lo", "CapBnd:", "00000000a80425fb", "NoNewPrivs:", "1"]
    host = as_nobody(nobody_root, "run", "--rm", "--network", "host", "busybox", "ls",
                     "/sys/class/net")
    assert host.returncode == 0, host.stderr
    assert sorted(host.stdout.split()) == sorted(os.listdir("/sys/class/net"))
    bridged = as_nobody(nobody_root, "run", "--rm", "--network", "bridge", "busybox", "true")
    assert bridged.returncode == 125 and len(bridged.stderr.splitlines()) == 1
    assert "--network bridge needs root" in bridged.stderr


def test_without_a_cgroup_limits_fall_back_to_rlimits_and_say_so(nobody_root):
    grab = ["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"]
    result = as_nobody(nobody_root, "run", "--rm", "-m", "64m", "busybox", *grab)
    assert result.returncode not in (0, 137), "refused by the rlimit, not OOM-killed"
    assert "weaker than cgroups" in result.stderr
    assert as_nobody(nobody_root, "run", "--rm", "-m", "256m", "busybox", "dd", "if=/dev/zero",
                     "of=/dev/null", "bs=16M", "count=1").returncode == 0, "within the limit"
    cpus = as_nobody(nobody_root, "run", "--rm", "--cpus", "0.5", "busybox", "true")
    assert cpus.returncode == 125
    [line] = cpus.stderr.strip().splitlines()
    assert "--cpus" in line and "cannot be enforced" in line
    assert not os.listdir(os.path.join(nobody_root, "containers"))


def test_doctor_says_rootless(nobody_root):
    result = as_nobody(nobody_root, "doctor")
    assert result.returncode == 0
    assert "tier: rootless" in result.stdout


def run_as_nobody(store: str, *args, prepare=lambda: None) -> tuple[int, str, str]:
    """`minirt ARGS` as nobody, after ``prepare()`` ran as root in the same process."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(out_r)
            os.close(err_r)
            prepare()
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.chdir("/")
            os.execve(PYTHON, [PYTHON, "-m", "minirt", *args], nobody_env(store))
        finally:
            os._exit(99)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r) as out, os.fdopen(err_r) as err:
        stdout, stderr = out.read(), err.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), stdout, stderr


def no_more_user_namespaces() -> None:
    """Our own user namespace (ids 1:1) where nested ones are capped at 0: Binder's case."""
    from test_doctor import map_ids_one_to_one_in_new_user_namespace
    map_ids_one_to_one_in_new_user_namespace()
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0")


def run_without_namespaces(store: str, *args) -> tuple[int, str, str]:
    return run_as_nobody(store, *args, prepare=no_more_user_namespaces)


def test_without_namespaces_proot_runs_the_image_and_says_it_is_not_isolated(nobody_root):
    """The unprivileged tier: no namespaces, so proot emulates, and says so."""
    require(shutil.which("proot") is not None, "needs proot (make setup installs it)")
    code, out, err = run_without_namespaces(nobody_root, "run", "--rm", "busybox", "sh", "-c",
                                            "cat /etc/hostname; id -u; exit 3")
    assert code == 3, err
    assert out.split() == ["busybox", "0"], "the image's files as /, a faked root"
    assert "not isolated: proot emulation" in err
    assert not os.listdir(os.path.join(nobody_root, "containers"))


def test_without_namespaces_limits_are_rlimits_or_refused(nobody_root):
    require(shutil.which("proot") is not None, "needs proot (make setup installs it)")
    code, _, err = run_without_namespaces(nobody_root, "run", "--rm", "--cpus", "1", "busybox",
                                          "true")
    assert code == 125
    [line] = err.strip().splitlines()
    assert "cannot be enforced" in line
    code, _, err = run_without_namespaces(nobody_root, "run", "--rm", "--pids-limit", "64",
                                          "busybox", "true")
    assert code == 0 and "weaker than cgroups" in err


def test_ps_shows_a_running_rootless_container(nobody_root):
    cli = subprocess.Popen([PYTHON, "-m", "minirt", "run", "--rm", "--name", "sleeper",
                            "busybox", "sleep", "30"], env=nobody_env(nobody_root), cwd="/",
                           preexec_fn=drop_to_nobody)
    try:
        import time
        deadline = time.monotonic() + 10
        while "sleeper" not in as_nobody(nobody_root, "ps").stdout:
            assert time.monotonic() < deadline, "the container never showed up in ps"
            time.sleep(0.1)
    finally:
        cli.terminate()
        cli.wait(timeout=10)
    assert "sleeper" not in as_nobody(nobody_root, "ps", "-a").stdout


@pytest.fixture
def nobody_borrows_ids():
    """/etc/subuid and /etc/subgid lend nobody 65536 ids (restored afterwards)."""
    require(shutil.which("newuidmap") is not None, "needs uidmap (make setup installs it)")
    saved = {}
    for path in ("/etc/subuid", "/etc/subgid"):
        saved[path] = open(path).read() if os.path.exists(path) else None
        with open(path, "a") as f:
            f.write(f"{NOBODY}:{BORROWED}:65536\n")
    try:
        yield BORROWED
    finally:
        for path, text in saved.items():
            if text is None:
                os.unlink(path)
            else:
                with open(path, "w") as f:
                    f.write(text)


BORROWED = 3_000_000   # far from any id this machine uses


def test_subordinate_ids_give_a_container_many_users(nobody_root, nobody_borrows_ids):
    script = ("cat /proc/self/uid_map; mkdir /data && touch /data/f && chown -R 1000:1001 /data"
              " && stat -c %u:%g /data/f")
    result = as_nobody(nobody_root, "run", "--name", "many-users", "busybox", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.strip().splitlines()]
    assert lines[0] == ["0", str(NOBODY), "1"], "inside root is the user"
    assert lines[1] == ["1", str(BORROWED), "65536"], "1..65536 are the borrowed ids"
    assert lines[2] == ["1000:1001"]
    [container] = os.listdir(os.path.join(nobody_root, "containers"))
    upper = os.path.join(nobody_root, "containers", container, "upper", "data", "f")
    st = os.lstat(upper)
    assert (st.st_uid, st.st_gid) == (BORROWED + 999, BORROWED + 1000), "host ids: borrowed"
    doctor = as_nobody(nobody_root, "doctor")
    assert f"uids {BORROWED}+65536" in doctor.stdout
    # Files of borrowed ids: nobody cannot delete them itself; rm does it as mapped root.
    removed = as_nobody(nobody_root, "rm", "many-users")
    assert removed.returncode == 0, removed.stderr
    assert not os.listdir(os.path.join(nobody_root, "containers"))


def test_without_borrowed_ids_doctor_says_how_to_get_them(nobody_root):
    result = as_nobody(nobody_root, "doctor")
    assert "subordinate ids" in result.stdout and "/etc/subuid" in result.stdout


def test_rootless_commit_records_owners_as_the_container_saw_them(nobody_root, nobody_borrows_ids):
    import json
    import tarfile
    made = as_nobody(nobody_root, "run", "--name", "owners", "busybox", "sh", "-c",
                     "touch /by-root && mkdir /by-1000 && chown 1000:1001 /by-1000")
    assert made.returncode == 0, made.stderr
    archive = os.path.join(nobody_root, "owners.tar")
    try:
        committed = as_nobody(nobody_root, "commit", "owners", "owners:1")
        assert committed.returncode == 0, committed.stderr
        saved = as_nobody(nobody_root, "save", "-o", archive, "owners:1")
        assert saved.returncode == 0, saved.stderr
        with tarfile.open(archive) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))
            layer = tarfile.open(fileobj=tar.extractfile(manifest[0]["Layers"][-1]))
            owners = {m.name: (m.uid, m.gid) for m in layer.getmembers()}
    finally:
        as_nobody(nobody_root, "rm", "owners")
        as_nobody(nobody_root, "rmi", "owners:1")
        if os.path.exists(archive):
            os.unlink(archive)
    assert owners["by-root"] == (0, 0), "the user's own files were root's inside"
    assert owners["by-1000"] == (1000, 1001), "borrowed ids back to the ids used inside"


def test_rootless_build_copies_files_owned_by_root_inside(nobody_root):
    """A COPY without root: the files belong to the user, the layer records them as root."""
    context = os.path.join(nobody_root, "build-context")
    os.makedirs(context)
    with open(os.path.join(context, "Dockerfile"), "w") as f:
        f.write("FROM busybox\nCOPY greeting.txt /greeting.txt\n")
    with open(os.path.join(context, "greeting.txt"), "w") as f:
        f.write("hello\n")
    for path in (context, *(os.path.join(context, n) for n in os.listdir(context))):
        os.chown(path, NOBODY, NOBODY)
    built = as_nobody(nobody_root, "build", "-t", "rootless-built:1", context)
    assert built.returncode == 0, built.stderr
    listed = as_nobody(nobody_root, "run", "--rm", "rootless-built:1", "sh", "-c",
                       "cat /greeting.txt; stat -c '%u:%g' /greeting.txt")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["hello", "0:0"]


def test_exercises_as_an_ordinary_user_any_tier_ones_check_root_ones_say_so(nobody_root):
    """Binder's case: a plain user starts and checks an exercise that needs no root (06,
    manifests) with its reference solution, and is told up front that 01 needs root."""
    lab = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    exercises_copy = os.path.join(nobody_root, "exercises")
    shutil.copytree(os.path.join(lab, "exercises"), exercises_copy)
    work = os.path.join(nobody_root, "student")
    os.makedirs(work)
    for directory, _, files in os.walk(nobody_root):
        for path in [directory] + [os.path.join(directory, f) for f in files]:
            if not os.path.islink(path):
                os.chown(path, NOBODY, NOBODY)

    def exercise(*args):
        env = {**nobody_env(nobody_root), "MINIRT_EXERCISES": exercises_copy}
        return subprocess.run([PYTHON, "-m", "minirt", "exercise", *args], env=env, cwd=work,
                              capture_output=True, text=True, timeout=180,
                              preexec_fn=drop_to_nobody)

    started = exercise("start", "06-manifest-digests", os.path.join(work, "ex06"))
    assert started.returncode == 0, started.stderr
    shutil.copy(os.path.join(exercises_copy, "solutions", "06-manifest-digests.py"),
                os.path.join(work, "ex06", "image_manifest.py"))
    os.chown(os.path.join(work, "ex06", "image_manifest.py"), NOBODY, NOBODY)
    checked = exercise("check", os.path.join(work, "ex06"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "steps pass: done!" in checked.stdout
    assert exercise("start", "01-namespaces", os.path.join(work, "ex01")).returncode == 0
    refused = exercise("check", os.path.join(work, "ex01"))
    assert refused.returncode == 125
    assert refused.stderr.splitlines() == [
        "minirt: Namespaces: unshare(2) and sethostname(2) with ctypes needs root (it makes "
        "real namespaces, mounts or cgroups): run the check as root, e.g. on your own machine"]
