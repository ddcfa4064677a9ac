"""`minirt bench compare`: a real (short) run writes every figure and the CSV."""

import csv

import matplotlib

from conftest import require
from minirt.lab import compare, vm

matplotlib.use("Agg")


def has_vm() -> bool:
    try:
        vm.find_qemu()
        vm.find_kernel()
        return True
    except Exception:
        return False


def test_a_short_comparison_writes_figures_and_a_csv(engine, tmp_path):
    require(has_vm(), "needs qemu-system-x86_64 and a kernel (make setup installs both)")
    rows = compare.run_all(engine, str(tmp_path), containers=5, start_runs=3,
                           cpu_iterations=20_000, progress=lambda *_: None)
    for name in ("start_time.png", "memory_density.png", "cpu.png", "limits.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    kinds = {(r["experiment"], r["subject"]): r["kind"] for r in table}
    assert kinds[("density", "container")] == "extrapolated"
    assert kinds[("density", "vm")] == "extrapolated"
    assert all(r["kind"] == "published" for r in table if r["experiment"] == "published")
    vm_rows = [r for r in table if r["subject"] == "vm"]
    assert vm_rows and all(r["label"].startswith("QEMU") for r in vm_rows)
    memory = [float(r["value"]) for r in table
              if r["experiment"] == "memory" and r["metric"] == "cgroup memory"]
    assert len(memory) == 5 and all(0 < m < 8 * 1024 ** 2 for m in memory)


def test_limit_series_show_each_limit_holding(engine):
    limits = compare.limits_at_work(engine, seconds=2.0)
    assert limits["memory_exit"] == 137
    assert max(s.memory_bytes for s in limits["memory"]) <= 64 * 1024 ** 2
    assert max(s.memory_bytes for s in limits["memory"]) > 32 * 1024 ** 2, "it climbed"
    pids = [s.pids for s in limits["pids"]]
    assert max(pids) <= 32 and max(pids) >= 24, f"held at the limit, and reaching it: {pids}"
    steady = [s.cpu_percent for s in limits["cpu"] if s.cpu_percent is not None][1:]
    assert steady and all(35 <= p <= 65 for p in steady), steady
