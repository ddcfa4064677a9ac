"""Plots for the lab (matplotlib): what the measurements look like.

Every figure says what was measured and where; published figures, when shown,
are labelled as such. Functions return the matplotlib Figure, so notebooks
display it and ``minirt bench compare`` saves it as PNG.
"""

from .. import trace as tracing


def plot_trace(steps, title: str = "What a container start is made of", ax=None):
    """A timeline of a ``trace=True`` run: one bar per kernel step, host vs container."""
    import matplotlib.pyplot as plt
    steps = tracing.ordered(steps)
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 0.28 * len(steps) + 1.2))
    else:
        fig = ax.figure
    start = steps[0].start_ns
    colors = {"host": "tab:blue", "container": "tab:orange"}
    for row, step in enumerate(steps):
        where = "container" if step.pid == 1 else "host"
        left = (step.start_ns - start) / 1e6
        width = max(step.duration_ns / 1e6, 0.01)
        ax.barh(row, width, left=left, color=colors[where] if step.ok else "tab:red")
        label = step.name
        for key in ("fstype", "flags", "file", "role"):
            if step.detail.get(key):
                label += f" {str(step.detail[key]).rsplit('/', 1)[-1]}"
                break
        ax.text(left + width + 0.05, row, label, va="center", fontsize=7)
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds since the first step")
    ax.set_title(title)
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color=colors["host"], label="on the host"),
                       Patch(color=colors["container"], label="in the container (PID 1)"),
                       Patch(color="tab:red", label="failed")], loc="upper right")
    fig.tight_layout()
    return fig


def _figure(width=8, height=4.5, ncols=1):
    import matplotlib.pyplot as plt
    return plt.subplots(1, ncols, figsize=(width, height))


def plot_start_times(container_seconds: list[float], vm_result=None, published=()):
    """Start time: every container run beside the VM boot, on a log scale.

    Published start-up figures (e.g. Firecracker's) get a column of their own,
    hollow markers and their source: cited, not measured here.
    """
    fig, ax = _figure(9, 4.5)
    ms = [s * 1000 for s in container_seconds]
    ax.scatter([0] * len(ms), ms, alpha=0.6, label=f"minirt container ({len(ms)} runs)")
    labels = ["container\n(minirt run, CLI)"]
    if vm_result is not None:
        ax.scatter([1], [vm_result.ready_s * 1000], color="tab:red", marker="s",
                   label=f"VM: launch to /init ({vm_result.acceleration})")
        labels.append(f"VM\n{vm_result.acceleration}")
    published = [f for f in published if f.unit == "ms" and ("init" in f.metric or "boot" in f.metric)]
    if published:
        column = len(labels)
        for figure in published:
            ax.scatter([column], [float(figure.value)], facecolors="none", edgecolors="grey")
            ax.annotate(f"{figure.system}: {figure.metric}", (column, float(figure.value)),
                        xytext=(6, 0), textcoords="offset points", fontsize=7, va="center")
        labels.append("published\n(not measured here)")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yscale("log")
    ax.set_ylabel("milliseconds (log scale)")
    ax.set_title("Start time: same busybox root filesystem, measured here")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlim(-0.5, len(labels) - 0.5 + (1.2 if published else 0))
    fig.tight_layout()
    return fig


def plot_memory_density(idle_rows: list[dict], vm_result, budget_bytes: int):
    """Memory per instance (measured) and how many fit in a budget (extrapolated)."""
    fig, (left, right) = _figure(11, 4.5, ncols=2)
    mib = 1024 ** 2
    container = sum(r["cgroup_bytes"] for r in idle_rows) / len(idle_rows) / mib
    runtime = sum(r["runtime_uss_bytes"] or r["runtime_rss_bytes"] for r in idle_rows) / len(idle_rows) / mib
    names, values = ["container\n(cgroup)", "minirt run\nprocess (USS)"], [container, runtime]
    colors = ["tab:blue", "tab:cyan"]
    if vm_result is not None:
        names.append(f"VM: qemu peak RSS\n{vm_result.acceleration}")
        values.append(vm_result.peak_rss_bytes / mib)
        colors.append("tab:red")
    left.bar(names, values, color=colors)
    left.set_ylabel("MiB per instance (measured)")
    left.set_title(f"Memory per idle instance ({len(idle_rows)} containers measured)")
    for i, v in enumerate(values):
        left.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    per_container = (container + runtime) * mib
    fits = {"containers": budget_bytes // per_container}
    if vm_result is not None:
        fits["VMs"] = budget_bytes // vm_result.peak_rss_bytes
    right.bar(list(fits), list(fits.values()), color=["tab:blue", "tab:red"][:len(fits)],
              hatch="//", alpha=0.7)
    right.set_yscale("log")
    right.set_ylabel("instances (log scale)")
    right.set_title(f"Extrapolated: how many fit in {budget_bytes // mib} MiB")
    for i, v in enumerate(fits.values()):
        right.text(i, v, f"{int(v)}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    return fig


def plot_cpu(rows):
    """The same CPU-bound loop on the host, in a container and in the VM."""
    fig, ax = _figure()
    cpu = [r for r in rows if r.experiment == "cpu"]
    names = [f"{r.subject}" + (f"\n{r.label}" if r.label else "") for r in cpu]
    colors = {"host": "tab:green", "container": "tab:blue", "vm": "tab:red"}
    ax.bar(names, [r.value for r in cpu], color=[colors.get(r.subject, "grey") for r in cpu])
    for i, r in enumerate(cpu):
        ax.text(i, r.value, f"{r.value:.2f} s", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("seconds for the same shell loop (each on its own clock)")
    ax.set_title("CPU: a container runs at host speed; a VM without KVM does not")
    fig.tight_layout()
    return fig


def plot_limits(limits: dict):
    """Memory climbing to -m and the OOM kill; CPU held at --cpus; pids flat at --pids-limit."""
    fig, axes = _figure(13, 4, ncols=3)
    memory, cpu, pids = limits["memory"], limits["cpu"], limits["pids"]
    mib = 1024 ** 2
    axes[0].plot([s.t for s in memory], [(s.memory_bytes or 0) / mib for s in memory])
    axes[0].axhline(64, color="tab:red", linestyle="--", label="-m 64m")
    axes[0].set_title(f"growing 1 MB a round under -m 64m (exit {limits['memory_exit']})")
    axes[0].set_ylabel("MiB (cgroup memory)")
    axes[1].plot([s.t for s in cpu if s.cpu_percent is not None],
                 [s.cpu_percent for s in cpu if s.cpu_percent is not None])
    axes[1].axhline(50, color="tab:red", linestyle="--", label="--cpus 0.5")
    axes[1].set_ylim(0, 110)
    axes[1].set_title("busy loop under --cpus 0.5")
    axes[1].set_ylabel("CPU % (100 = one CPU)")
    axes[2].plot([s.t for s in pids], [s.pids or 0 for s in pids])
    axes[2].axhline(32, color="tab:red", linestyle="--", label="--pids-limit 32")
    axes[2].set_ylim(0, 40)
    axes[2].set_title("fork bomb under --pids-limit 32")
    axes[2].set_ylabel("processes in the cgroup")
    for ax in axes:
        ax.set_xlabel("seconds")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
