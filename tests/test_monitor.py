"""The monitor: samples agree with the cgroup files and with psutil."""

import signal
import subprocess
import time

import psutil

from conftest import container_init_pid, minirt_cli, minirt_popen
from minirt.lab.monitor import Sampler, stats_row, watch


def read_int(path):
    with open(path) as f:
        return int(f.read().split()[0])


def test_container_samples_match_the_cgroup_and_psutil(engine, state_root):
    cli = minirt_popen("run", "--rm", "--name", "busy", "-m", "64m", "busybox", "sh", "-c",
                       "while :; do :; done", state_root=state_root)
    try:
        init = container_init_pid(engine)
        sampler = Sampler.for_container(engine, "busy")
        sampler.sample()
        time.sleep(1.0)
        sample = sampler.sample()
        dirs = sampler.cgroup.dirs
        if sampler.cgroup.version == 1:
            memory = read_int(f"{dirs['memory']}/memory.usage_in_bytes")
            pids = read_int(f"{dirs['pids']}/pids.current")
        else:
            memory = read_int(f"{dirs['unified']}/memory.current")
            pids = read_int(f"{dirs['unified']}/pids.current")
        assert abs(sample.memory_bytes - memory) < 1024 * 1024
        assert sample.pids == pids == 1
        assert sample.memory_limit_bytes == 64 * 1024 ** 2
        assert 80 <= sample.cpu_percent <= 110, sample.cpu_percent
        rss = psutil.Process(init).memory_info().rss
        assert abs(sample.rss_bytes - rss) < 256 * 1024
        assert sample.uss_bytes is not None and sample.uss_bytes <= sample.rss_bytes
        assert sample.processes == 1 and sample.threads == 1
        row = stats_row(sample)
        assert row["memory_limit_bytes"] == 64 * 1024 ** 2 and row["pids"] == 1
    finally:
        cli.send_signal(signal.SIGTERM)
        cli.communicate(timeout=10)


def test_process_tree_sampler_counts_every_descendant():
    tree = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        time.sleep(0.3)
        sample = Sampler("tree", pid=tree.pid).sample()
        assert sample.processes == 3
        expected = sum(p.memory_info().rss for p in [psutil.Process(tree.pid)] +
                       psutil.Process(tree.pid).children(recursive=True))
        assert abs(sample.rss_bytes - expected) < 512 * 1024
        assert sample.memory_bytes is None, "no cgroup view for a plain process tree"
    finally:
        for child in psutil.Process(tree.pid).children(recursive=True):
            child.kill()
        tree.kill()
        tree.wait()


def test_watch_is_a_time_series_that_stops_when_the_target_ends():
    short = subprocess.Popen(["sleep", "0.6"])
    samples = watch([Sampler("short", pid=short.pid)], interval=0.1, duration=10)
    short.wait()
    assert 3 <= len(samples) <= 12
    assert [s.t for s in samples] == sorted(s.t for s in samples)
    assert samples[-1].processes == 0


def test_stats_command_shows_dockers_columns(engine, state_root):
    cli = minirt_popen("run", "--rm", "--name", "idle", "-m", "32m", "busybox", "sleep", "30",
                       state_root=state_root)
    try:
        container_init_pid(engine)
        result = minirt_cli("stats", "--no-stream", state_root=state_root)
        header, *rows = result.stdout.decode().splitlines()
        assert header.split("   ")[:3] == ["CONTAINER ID", "NAME", "CPU %"]
        assert "MEM USAGE / LIMIT" in header and "PIDS" in header
        [row] = [r for r in rows if " idle " in r]
        assert "/ 32MiB" in row
        assert row.split()[-1] == "1"
        missing = minirt_cli("stats", "--no-stream", "nope", state_root=state_root)
        assert missing.returncode != 0 and b"no such container" in missing.stderr
    finally:
        cli.send_signal(signal.SIGTERM)
        cli.communicate(timeout=10)
