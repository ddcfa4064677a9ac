"""The `minirt` command line, driven as a user would: docker's flags, exit codes, stdio."""

import os
import pty

import pytest

from conftest import minirt_cli
from minirt import cli


def run(state_root, *args, **kw):
    return minirt_cli("run", "--rm", *args, state_root=state_root, **kw)


def test_exit_status_is_the_containers(engine, state_root):
    assert run(state_root, "busybox", "sh", "-c", "exit 7").returncode == 7
    assert run(state_root, "busybox", "sh", "-c", "kill -TERM $$; sleep 1").returncode in (0, 143)
    assert run(state_root, "busybox", "sh", "-c", "sleep 5 & kill -KILL $!; wait $!").returncode == 137


def test_env_workdir_hostname_flags(engine, state_root):
    result = run(state_root, "-e", "GREETING=hi", "-e", "EMPTY=", "-w", "/tmp/work", "-h", "box1",
                 "busybox", "sh", "-c", 'echo "$GREETING|$EMPTY|$(pwd)|$(hostname)|$HOSTNAME"')
    assert result.stdout.decode().strip() == "hi||/tmp/work|box1|box1"


def test_bundled_and_attached_flag_forms(engine, state_root):
    result = run(state_root, "--memory=64m", "-m64m", "--env=A=1", "busybox", "sh", "-c",
                 "echo $A")
    assert result.stdout.strip() == b"1"


def test_volume_read_write_and_read_only(engine, state_root, tmp_path):
    (tmp_path / "in.txt").write_text("from the host")
    result = run(state_root, "-v", f"{tmp_path}:/data", "busybox", "sh", "-c",
                 "cat /data/in.txt; echo from-the-container > /data/out.txt")
    assert result.stdout == b"from the host"
    assert (tmp_path / "out.txt").read_text() == "from-the-container\n"
    readonly = run(state_root, "-v", f"{tmp_path}:/data:ro", "busybox", "sh", "-c",
                   "echo x > /data/blocked.txt")
    assert readonly.returncode != 0 and b"Read-only file system" in readonly.stderr
    assert not (tmp_path / "blocked.txt").exists()


def test_stdin_only_with_dash_i(engine, state_root):
    with_i = run(state_root, "-i", "busybox", "sh", "-c", "read line; echo got:$line",
                 input=b"hello\n")
    assert with_i.stdout.strip() == b"got:hello"
    without = run(state_root, "busybox", "sh", "-c", "read line; echo got:$line", input=b"hello\n")
    assert without.stdout.strip() == b"got:"


def test_dash_t_gives_a_terminal_of_the_containers_own(engine, state_root):
    env = {**os.environ, "MINIRT_ROOT": state_root}
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(os.sys.executable, [os.sys.executable, "-m", "minirt", "run", "--rm", "-it",
                                      "busybox", "sh", "-c", "test -t 0 && tty; exit 3"], env)
    output = b""
    while True:
        try:
            data = os.read(fd, 1024)
        except OSError:
            break
        if not data:
            break
        output += data
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    assert b"/dev/pts/0" in output, output


def test_images_lists_the_default_image(image_store, state_root):
    result = minirt_cli("images", state_root=state_root)
    assert result.returncode == 0
    header, *rows = result.stdout.decode().splitlines()
    assert header.split()[:2] == ["REPOSITORY", "TAG"]
    assert any(row.split()[:2] == ["busybox", "latest"] for row in rows)


def test_help_and_version(state_root):
    assert b"--memory" in minirt_cli("run", "--help", state_root=state_root).stdout
    assert minirt_cli("version", state_root=state_root).stdout.startswith(b"minirt ")
    assert minirt_cli("run", state_root=state_root).returncode == 2  # no image: usage


@pytest.mark.parametrize("argv", [
    ["run", "busybox"],
    ["run", "--rm", "-it", "busybox", "sh"],
    ["run", "-m", "64m", "--cpus", "0.5", "--pids-limit", "32", "busybox", "ls", "-l", "/"],
    ["run", "-e", "A=1", "-e", "B=2", "-v", "/a:/b:ro", "--name", "x", "-h", "h", "busybox", "env"],
    ["run", "--memory=64m", "-w", "/tmp", "-m64m", "busybox", "sh", "-c", "echo -e x"],
    ["run", "--storage", "copy", "busybox", "--rm"],
])
def test_quick_run_parser_agrees_with_argparse(argv):
    quick = cli.parse_run_quickly(argv)
    full = cli.build_parser("run").parse_args(argv)
    assert quick is not None
    assert {k: v for k, v in vars(quick).items()} == {k: v for k, v in vars(full).items()}


@pytest.mark.parametrize("argv", [["run"], ["run", "--help"], ["run", "--bogus", "busybox"],
                                  ["run", "-m"], ["run", "--storage", "zfs", "busybox"]])
def test_quick_run_parser_leaves_the_unusual_to_argparse(argv):
    assert cli.parse_run_quickly(argv) is None
