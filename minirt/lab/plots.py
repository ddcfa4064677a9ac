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
