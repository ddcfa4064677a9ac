"""`--trace`: the record of every kernel step comes from the code paths themselves."""

import json

from conftest import minirt_cli


def names_in_order(result):
    return [(s.name, s.detail) for s in sorted(result.trace, key=lambda s: s.start_ns)]


def index_of(steps, name, **detail):
    for i, (step_name, step_detail) in enumerate(steps):
        if step_name == name and all(str(v) in str(step_detail.get(k, "")) for k, v in detail.items()):
            return i
    raise AssertionError(f"no step {name} {detail} in {[s[0] for s in steps]}")


def test_trace_names_each_step_in_the_order_it_happened(engine):
    result = engine.run("busybox", ["true"], memory="64m", pids_limit=32, trace=True)
    steps = names_in_order(result)
    v1 = engine.cgroups.version == 1  # v1: a tree per controller; v2: one tree, memory.max
    order = [
        index_of(steps, "cgroup mkdir", path="memory" if v1 else engine.cgroup_parent),
        index_of(steps, "cgroup write", file="memory.limit_in_bytes" if v1 else "memory.max",
                 value=str(64 * 1024 ** 2)),
        index_of(steps, "cgroup write", file="pids.max", value="32"),
        index_of(steps, "unshare", flags="CLONE_NEWPID"),
        index_of(steps, "fork", role="PID 1"),
        index_of(steps, "cgroup join"),
        index_of(steps, "unshare", flags="CLONE_NEWCGROUP"),
        index_of(steps, "mount", flags="MS_REC|MS_PRIVATE"),
        index_of(steps, "mount", fstype="overlay"),
        index_of(steps, "mount", fstype="proc"),
        index_of(steps, "mount", fstype="devpts"),
        index_of(steps, "pivot_root"),
        index_of(steps, "umount", flags="MNT_DETACH"),
        index_of(steps, "sethostname"),
        index_of(steps, "close fds"),
        index_of(steps, "execve", path="/bin/true"),
        index_of(steps, "cgroup rmdir"),
    ]
    assert order == sorted(order), f"out of order: {[steps[i][0] for i in order]}"
    unshare = [flag for name, detail in steps if name == "unshare"
               for flag in detail["flags"].split("|")]
    assert set(unshare) == {"CLONE_NEWNS", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWNET",
                            "CLONE_NEWPID", "CLONE_NEWCGROUP"}
    container_steps = [s for s in result.trace if s.name in ("cgroup join", "pivot_root", "execve")]
    assert all(s.pid == 1 for s in container_steps), "recorded inside, by PID 1"
    assert all(s.ok for s in result.trace)


def test_trace_follows_what_the_run_asked_for(engine, tmp_path):
    plain = names_in_order(engine.run("busybox", ["true"], trace=True))
    assert not [s for s in plain if s[0] == "cgroup write"], "no limits, no limit files"
    with_volume = names_in_order(engine.run("busybox", ["true"], trace=True, storage="copy",
                                            volumes=[f"{tmp_path}:/data:ro"]))
    index_of(with_volume, "copy image layers")
    index_of(with_volume, "mount", source=str(tmp_path), flags="MS_RDONLY")
    assert not [s for s in with_volume if s[1].get("fstype") == "overlay"]


def test_no_trace_records_nothing(engine):
    assert engine.run("busybox", ["true"]).trace == []


def test_cli_trace_table_and_json_go_to_stderr(engine, state_root):
    table = minirt_cli("run", "--rm", "--trace", "busybox", "echo", "out", state_root=state_root)
    assert table.stdout == b"out\n"
    assert b"pivot_root" in table.stderr and b"START ms" in table.stderr
    lines = minirt_cli("run", "--rm", "--trace=json", "busybox", "true",
                       state_root=state_root).stderr.decode().splitlines()
    steps = [json.loads(line) for line in lines]
    assert {"name", "detail", "start_ns", "duration_ns", "ok", "pid"} <= set(steps[0])
    assert [s["start_ns"] for s in steps] == sorted(s["start_ns"] for s in steps)


def test_a_failed_start_shows_the_step_that_failed(engine, state_root):
    result = minirt_cli("run", "--rm", "--trace", "busybox", "no-such-command",
                        state_root=state_root)
    assert result.returncode == 127
    failed = [line for line in result.stderr.decode().splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "find command" in failed[0]


def test_trace_timeline_plot_has_a_bar_per_step(engine, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from minirt.lab.plots import plot_trace
    result = engine.run("busybox", ["true"], memory="64m", trace=True)
    figure = plot_trace(result.trace)
    bars = [p for p in figure.axes[0].patches]
    assert len(bars) == len(result.trace)
    figure.savefig(tmp_path / "trace.png")
    assert (tmp_path / "trace.png").stat().st_size > 1000
