"""cgroup limits that really hold: memory (OOM kill), pids (fork bomb), CPU quota."""

import os
import signal
import subprocess
import time

from conftest import container_init_pid, minirt_cli, minirt_popen


def running_cgroup(engine, timeout=10.0):
    """The cgroup of the one test container that is running now."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dirs = engine.cgroups.leftovers()
        if dirs:
            return engine.cgroups.cgroup(os.path.basename(dirs[0]))
        time.sleep(0.01)
    raise AssertionError("no container cgroup appeared")


def test_allocation_over_the_memory_limit_is_oom_killed(engine):
    grab_200mb = ["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"]
    free = engine.run("busybox", grab_200mb)
    assert free.exit_code == 0 and not free.oom_killed, "without a limit 200 MB is fine"
    limited = engine.run("busybox", grab_200mb, memory="64m")
    assert limited.exit_code == 137
    assert limited.oom_killed


def test_oom_is_reported_by_the_cli(engine, state_root):
    result = minirt_cli("run", "--rm", "-m", "64m", "busybox", "dd", "if=/dev/zero",
                        "of=/dev/null", "bs=200M", "count=1", state_root=state_root)
    assert result.returncode == 137
    assert b"OOMKilled" in result.stderr


def test_memory_under_the_limit_is_not_killed(engine):
    result = engine.run("busybox", ["dd", "if=/dev/zero", "of=/dev/null", "bs=16M", "count=1"],
                        memory="64m")
    assert result.exit_code == 0 and not result.oom_killed


def test_fork_bomb_stays_at_the_pids_limit_and_the_host_is_fine(engine, state_root):
    bomb = "bomb() { bomb | bomb & }; bomb; sleep 30"
    cli = minirt_popen("run", "--rm", "--pids-limit", "32", "busybox", "sh", "-c", bomb,
                       state_root=state_root)
    try:
        cgroup = running_cgroup(engine)
        peak, deadline = 0, time.monotonic() + 3
        while time.monotonic() < deadline:
            peak = max(peak, cgroup.usage()["pids"] or 0)
            time.sleep(0.02)
        usage = cgroup.usage()
        assert peak <= 32, f"{peak} processes despite --pids-limit 32"
        assert peak >= 24, f"the bomb should fill the limit (peak {peak})"
        assert usage["pids_limit_hits"] > 0, "the kernel refused forks at the limit"
        host = subprocess.run(["sh", "-c", "for i in 1 2 3 4 5; do /bin/true & done; wait; echo ok"],
                              capture_output=True, timeout=10)
        assert host.stdout.strip() == b"ok", "the host can still fork"
    finally:
        cli.send_signal(signal.SIGTERM)
        cli.communicate(timeout=15)
    assert cli.returncode == 137  # sh as PID 1 does not catch SIGTERM: minirt kills it


def cpus_used_by_busy_loop(engine, state_root, *flags, seconds: float) -> float:
    """Run ``while :; do :; done`` in a container; CPUs it used, from its cgroup's counter."""
    cli = minirt_popen("run", "--rm", *flags, "busybox", "sh", "-c", "while :; do :; done",
                       state_root=state_root)
    try:
        container_init_pid(engine)
        cgroup = running_cgroup(engine)
        time.sleep(0.5)  # let the CFS bandwidth periods settle
        cpu0, t0 = cgroup.usage()["cpu_ns"], time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = cgroup.usage()["cpu_ns"], time.monotonic()
    finally:
        cli.send_signal(signal.SIGTERM)
        cli.communicate(timeout=15)
    return (cpu1 - cpu0) / 1e9 / (t1 - t0)


def test_busy_loop_under_half_a_cpu_uses_half_a_cpu(engine, state_root):
    used = cpus_used_by_busy_loop(engine, state_root, "--cpus", "0.5", seconds=3)
    assert abs(used - 0.5) <= 0.5 * 0.15, f"used {used:.3f} CPUs under --cpus 0.5"


def test_busy_loop_without_limit_uses_a_whole_cpu(engine, state_root):
    """The control for the test above: the loop alone does use more than half a CPU."""
    assert cpus_used_by_busy_loop(engine, state_root, seconds=1.5) > 0.8
