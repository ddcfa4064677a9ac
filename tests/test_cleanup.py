"""Nothing is left behind: after normal exits, errors, Ctrl-C, and a killed command.

The ``engine`` fixture itself asserts after each test that no container
directory, cgroup directory, mount or process of the test run remains.
"""

import os
import signal
import time

import pytest

from conftest import assert_nothing_left, container_init_pid, dead, minirt_popen
from minirt.errors import CommandNotFound


def test_200_run_exit_cycles_leave_nothing_behind(engine):
    before = len(os.listdir("/proc/self/fd"))
    for i in range(200):
        result = engine.run("busybox", ["sh", "-c", f"exit {i % 3}"], memory="32m",
                            pids_limit=16)
        assert result.exit_code == i % 3
    assert_nothing_left(engine)
    assert len(os.listdir("/proc/self/fd")) == before, "no file descriptor leaked"


def test_failed_starts_leave_nothing_behind(engine):
    for _ in range(20):
        with pytest.raises(CommandNotFound):
            engine.run("busybox", ["no-such-command"], memory="32m")
    assert_nothing_left(engine)


def wait_for_exit(process, timeout=10.0) -> int:
    process.communicate(timeout=timeout)
    return process.returncode


def test_ctrl_c_stops_the_container_and_cleans_up(engine, state_root):
    cli = minirt_popen("run", "--rm", "busybox", "sleep", "30", state_root=state_root)
    container_init_pid(engine)
    started = time.monotonic()
    cli.send_signal(signal.SIGINT)
    code = wait_for_exit(cli)
    assert time.monotonic() - started < 5
    assert code == 128 + signal.SIGKILL  # sleep, as PID 1, ignores SIGINT: minirt kills it


def test_a_command_that_handles_sigint_gets_it(engine, state_root):
    cli = minirt_popen("run", "--rm", "busybox", "sh", "-c",
                       "trap 'echo got-int; exit 42' INT; while :; do sleep 0.1; done",
                       state_root=state_root)
    container_init_pid(engine)
    time.sleep(0.3)  # let the shell install its trap
    cli.send_signal(signal.SIGINT)
    out, _ = cli.communicate(timeout=10)
    assert cli.returncode == 42 and b"got-int" in out


def test_sigkill_of_the_command_is_reported_and_cleaned_up(engine, state_root):
    cli = minirt_popen("run", "--rm", "busybox", "sleep", "30", state_root=state_root)
    os.kill(container_init_pid(engine), signal.SIGKILL)
    assert wait_for_exit(cli) == 137


def test_children_of_the_command_die_with_it(engine, state_root):
    cli = minirt_popen("run", "--rm", "busybox", "sh", "-c",
                       "sleep 100 & sleep 100 & sleep 100", state_root=state_root)
    init = container_init_pid(engine)
    time.sleep(0.2)
    os.kill(init, signal.SIGKILL)  # the pid namespace's init dies: the kernel kills the rest
    assert wait_for_exit(cli) == 137




def test_a_killed_minirt_run_is_cleaned_up_later(engine, state_root):
    """SIGKILL of `minirt run` itself: the container dies with it (PDEATHSIG), and the
    next `minirt ps` removes the cgroup and directory it could not."""
    from conftest import minirt_cli, processes_in_cgroups
    for flags in (["--rm"], []):
        cli = minirt_popen("run", *flags, "--name", "orphan", "busybox", "sleep", "30",
                           state_root=state_root)
        init = container_init_pid(engine)
        cli.kill()
        cli.wait()
        deadline = time.monotonic() + 5
        while (processes_in_cgroups() or not dead(init)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not processes_in_cgroups() and dead(init), "the container died with its runtime"
        assert engine.cgroups.leftovers(), "its cgroup is still there, for now"
        listing = minirt_cli("ps", "-a", state_root=state_root).stdout.decode()
        assert not engine.cgroups.leftovers()
        if flags:
            assert "orphan" not in listing and not os.listdir(engine.containers_dir)
        else:
            assert "orphan" in listing
            assert minirt_cli("rm", "orphan", state_root=state_root).returncode == 0


def test_rm_refuses_a_running_container_unless_forced(engine, state_root):
    from conftest import minirt_cli
    cli = minirt_popen("run", "--name", "busy", "busybox", "sleep", "30", state_root=state_root)
    container_init_pid(engine)
    refused = minirt_cli("rm", "busy", state_root=state_root)
    assert refused.returncode != 0 and b"is running" in refused.stderr
    assert minirt_cli("rm", "-f", "busy", state_root=state_root).returncode == 0
    assert cli.wait(timeout=10) == 137
