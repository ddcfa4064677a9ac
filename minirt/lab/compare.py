"""Containers beside a VM, measured in one run: ``minirt bench compare``.

Four experiments, each run for real on this machine:

* **start time**: ``minirt run --rm busybox true`` N times (the CLI, wall clock)
  against booting the same busybox root filesystem as a QEMU VM;
* **memory and density**: N idle containers started at once, each measured
  through its cgroup, plus what minirt itself keeps per container (the waiting
  ``minirt run`` process); against the qemu process of an idle VM. How many fit
  in a memory budget is extrapolated from those per-instance figures, and says so;
* **CPU**: the same CPU-bound shell loop on the host, in a container and in
  the VM, each timed on its own clock (``/proc/uptime``);
* **limits at work**: memory climbing to ``-m`` until the OOM kill, CPU held at
  ``--cpus``, a fork bomb flat at ``--pids-limit``: time series from the monitor.

Every VM figure carries its acceleration label ("QEMU TCG (no KVM)" here);
published figures are kept apart and marked as published.
"""

import csv
import os
import signal
import subprocess
import sys
import time

from ..record import Record
from . import monitor

CPU_LOOP = "i=0; while [ $i -lt {n} ]; do i=$((i+1)); done"
UPTIME = "cut -d' ' -f1 /proc/uptime"


class Measurement(Record):
    """One number for the CSV: what, of whom, how much, and whether measured here."""

    __slots__ = ("experiment", "subject", "metric", "value", "unit", "kind", "label")

    def __init__(self, experiment: str, subject: str, metric: str, value: float, unit: str,
                 kind: str = "measured", label: str = ""):
        self.experiment, self.subject, self.metric = experiment, subject, metric
        self.value, self.unit = value, unit
        self.kind = kind      # "measured", "extrapolated" or "published"
        self.label = label    # e.g. the VM's acceleration


def minirt_command(engine, *args) -> tuple[list[str], dict]:
    """argv and environment to run the minirt CLI against ``engine``'s state."""
    env = {**os.environ, "MINIRT_ROOT": engine.root, "MINIRT_CGROUP_PARENT": engine.cgroup_parent,
           "MINIRT_HOST": ""}  # direct: the runtime itself, even if a daemon is up
    return [sys.executable, "-m", "minirt", *args], env


# --- start time -----------------------------------------------------------------

def container_start_times(engine, runs: int) -> list[float]:
    """Seconds for ``minirt run --rm busybox true``, CLI start to exit, ``runs`` times."""
    argv, env = minirt_command(engine, "run", "--rm", "busybox", "true")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=60)
        times.append(time.perf_counter() - started)
    return times


# --- memory and density ------------------------------------------------------------

def idle_containers(engine, count: int, timeout: float = 120.0) -> list[dict]:
    """Start ``count`` idle containers at once; measure each; stop them all.

    Returns per container: its cgroup's memory, and the RSS/USS of the
    ``minirt run`` process that waits for it (minirt's own overhead).
    """
    argv, env = minirt_command(engine, "run", "--rm", "busybox", "sleep", "600")
    clis = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for _ in range(count)]
    try:
        deadline = time.monotonic() + timeout
        running = []
        while time.monotonic() < deadline:
            running = [c for c in engine.containers() if c["running"]]
            if len(running) >= count:
                break
            if any(cli.poll() is not None for cli in clis):
                failed = next(cli for cli in clis if cli.poll() is not None)
                raise RuntimeError(f"a container failed to start: {failed.stderr.read().decode()}")
            time.sleep(0.1)
        time.sleep(0.5)  # let them settle into sleep
        rows = []
        for config, cli in zip(sorted(running, key=lambda c: c["id"]), clis):
            sample = monitor.Sampler("c", cgroup=engine.cgroups.cgroup(config["id"])).sample()
            parent = monitor.Sampler("cli", pid=cli.pid).sample()
            rows.append({"cgroup_bytes": sample.memory_bytes, "rss_bytes": sample.rss_bytes,
                         "uss_bytes": sample.uss_bytes, "runtime_rss_bytes": parent.rss_bytes,
                         "runtime_uss_bytes": parent.uss_bytes})
        return rows
    finally:
        for cli in clis:
            if cli.poll() is None:
                cli.send_signal(signal.SIGTERM)
        for cli in clis:
            try:
                cli.wait(timeout=15)
            except subprocess.TimeoutExpired:
                cli.kill()
                cli.wait()


def density(per_instance_bytes: float, budget_bytes: int) -> int:
    """How many instances of this size fit in the budget (an extrapolation)."""
    return int(budget_bytes // per_instance_bytes) if per_instance_bytes else 0


# --- CPU ---------------------------------------------------------------------------

def timed_script(loop: str) -> str:
    """A shell script that prints the seconds ``loop`` took, on its own clock."""
    return f"s=$({UPTIME}); {loop}; e=$({UPTIME}); echo $s $e"


def seconds_from(output: str) -> float:
    start, end = output.split()[-2:]
    return float(end) - float(start)


def cpu_on_host(loop: str, busybox: str) -> float:
    result = subprocess.run([busybox, "sh", "-c", timed_script(loop)], capture_output=True,
                            text=True, check=True, timeout=600)
    return seconds_from(result.stdout)


def cpu_in_container(engine, loop: str) -> float:
    result = engine.run("busybox", ["sh", "-c", timed_script(loop)])
    if result.exit_code != 0:
        raise RuntimeError(f"the CPU workload failed in the container: {result.errors}")
    return seconds_from(result.output)


# --- limits at work ----------------------------------------------------------------

def limit_series(engine, flags: list[str], command: str, seconds: float,
                 interval: float = 0.05) -> tuple[list, int]:
    """Run a container with ``flags`` and sample it until it ends or ``seconds`` pass."""
    argv, env = minirt_command(engine, "run", "--rm", *flags, "busybox", "sh", "-c", command)
    cli = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not [c for c in engine.containers() if c["running"]]:
            if cli.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the container did not start")
            time.sleep(0.01)
        [config] = [c for c in engine.containers() if c["running"]]
        sampler = monitor.Sampler(config["name"], cgroup=engine.cgroups.cgroup(config["id"]))
        samples = []
        end = time.monotonic() + seconds
        while cli.poll() is None and time.monotonic() < end:
            sample = sampler.sample()
            if sample.processes and sample.memory_bytes is not None:  # not yet gone
                samples.append(sample)
            time.sleep(interval)
    finally:
        if cli.poll() is None:
            cli.send_signal(signal.SIGTERM)
        cli.wait(timeout=15)
    return samples, cli.returncode


# A shell variable that grows by 1 MB per round: memory climbs steadily to the limit.
GROW_MEMORY = 'x=; while :; do x="$x$(head -c 1000000 /dev/zero | tr "\\0" a)"; done'
FORK_BOMB = "bomb() { bomb | bomb & }; bomb; sleep 60"


def limits_at_work(engine, seconds: float = 3.0) -> dict:
    memory, memory_exit = limit_series(engine, ["-m", "64m"], GROW_MEMORY, 20, interval=0.02)
    # CPU % is averaged over a few CFS periods (100 ms): shorter samples alias.
    cpu, _ = limit_series(engine, ["--cpus", "0.5"], "while :; do :; done", seconds, interval=0.3)
    pids, _ = limit_series(engine, ["--pids-limit", "32"], FORK_BOMB, seconds, interval=0.05)
    return {"memory": memory, "memory_exit": memory_exit, "cpu": cpu, "pids": pids}


# --- everything ----------------------------------------------------------------------

def run_all(engine, out_dir: str, containers: int = 50, start_runs: int = 20,
            cpu_iterations: int = 300_000, budget_bytes: int = 2 * 1024 ** 3,
            boot_vm: bool = True, progress=print) -> list[Measurement]:
    """Run the four experiments, write PNG figures and ``results.csv`` to ``out_dir``."""
    import matplotlib
    matplotlib.use("Agg")
    from ..image.busybox import find_static_busybox
    from . import plots, vm
    os.makedirs(out_dir, exist_ok=True)
    rows: list[Measurement] = []
    loop = CPU_LOOP.format(n=cpu_iterations)

    progress(f"start time: {start_runs} containers ...")
    starts = container_start_times(engine, start_runs)
    rows += [Measurement("start", "container", "start-to-exit", s, "s") for s in starts]

    vm_result = None
    if boot_vm:
        progress("booting the VM (idle, then the CPU workload) ...")
        idle_vm = vm.boot("true")
        vm_result = vm.boot(timed_script(loop))
        label = idle_vm.acceleration
        rows += [Measurement("start", "vm", "launch-to-ready", idle_vm.ready_s, "s", label=label),
                 Measurement("memory", "vm", "qemu peak RSS", idle_vm.peak_rss_bytes, "bytes",
                             label=label),
                 Measurement("cpu", "vm", "loop seconds (guest clock)", vm_result.workload_s, "s",
                             label=label),
                 Measurement("density", "vm", f"fit in {budget_bytes >> 20} MiB",
                             density(idle_vm.peak_rss_bytes, budget_bytes), "instances",
                             "extrapolated", label)]
    for figure in vm.published_baselines():
        rows.append(Measurement("published", figure.system, figure.metric, figure.value,
                                figure.unit, "published", figure.source))

    progress(f"memory: {containers} idle containers ...")
    idle = idle_containers(engine, containers)
    for row in idle:
        rows += [Measurement("memory", "container", "cgroup memory", row["cgroup_bytes"], "bytes"),
                 Measurement("memory", "container", "minirt run process USS",
                             row["runtime_uss_bytes"] or row["runtime_rss_bytes"], "bytes")]
    per_container = sum(r["cgroup_bytes"] + (r["runtime_uss_bytes"] or r["runtime_rss_bytes"])
                        for r in idle) / len(idle)
    rows.append(Measurement("density", "container", f"fit in {budget_bytes >> 20} MiB",
                            density(per_container, budget_bytes), "instances", "extrapolated"))

    progress("CPU: the same loop on the host, in a container, in the VM ...")
    busybox = find_static_busybox()
    rows += [Measurement("cpu", "host", "loop seconds", cpu_on_host(loop, busybox), "s"),
             Measurement("cpu", "container", "loop seconds", cpu_in_container(engine, loop), "s")]

    progress("limits at work: -m 64m, --cpus 0.5, --pids-limit 32 ...")
    limits = limits_at_work(engine)

    write_csv(os.path.join(out_dir, "results.csv"), rows)
    figures = {
        "start_time.png": plots.plot_start_times(starts, vm_result and idle_vm,
                                                 vm.published_baselines()),
        "memory_density.png": plots.plot_memory_density(idle, idle_vm if vm_result else None,
                                                        budget_bytes),
        "cpu.png": plots.plot_cpu(rows),
        "limits.png": plots.plot_limits(limits),
    }
    for name, figure in figures.items():
        figure.savefig(os.path.join(out_dir, name), dpi=100)
    progress(f"wrote {', '.join(figures)} and results.csv to {out_dir}")
    return rows


def write_csv(path: str, rows: list[Measurement]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(Measurement.__slots__)
        for row in rows:
            writer.writerow([getattr(row, name) for name in Measurement.__slots__])
