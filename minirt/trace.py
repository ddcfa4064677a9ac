"""A step recorder: what the runtime did to start a container, and what each step cost.

The runtime's own code paths call ``trace.step(...)`` around every kernel step
(unshare, each mount, pivot_root, each cgroup file written, exec), so the record
cannot drift from what really happens. Steps taken in a child process travel
back to the parent as JSON lines over a pipe. ``NULL_TRACE`` is the default and
does nothing, so tracing costs nothing when it is off.
"""

import os
import time

from .record import Record


class Step(Record):
    """One kernel step: what, where (``detail``), when and how long, and whether it worked."""

    __slots__ = ("name", "detail", "start_ns", "duration_ns", "ok", "error", "pid")

    def __init__(self, name: str, detail: dict, start_ns: int, duration_ns: int = 0,
                 ok: bool = True, error: str = "", pid: int = 0):
        self.name = name
        self.detail = detail
        self.start_ns = start_ns          # CLOCK_MONOTONIC: comparable across processes
        self.duration_ns = duration_ns
        self.ok = ok
        self.error = error
        self.pid = pid                    # as the process saw itself (1 = container init)


class _Recording:
    """Context manager that times one step and notes an exception as a failure."""

    __slots__ = ("trace", "step")

    def __init__(self, trace, step):
        self.trace, self.step = trace, step

    def __enter__(self):
        return self.step

    def __exit__(self, kind, error, tb):
        self.step.duration_ns = time.monotonic_ns() - self.step.start_ns
        if error is not None:
            self.step.ok, self.step.error = False, str(error)
        self.trace.record(self.step)
        return False


class Trace:
    """Collects ``Step`` records in the order they finished."""

    enabled = True

    def __init__(self, sink=None):
        self.steps: list[Step] = []
        self.sink = sink  # called with each Step as it is recorded (e.g. a pipe writer)

    def step(self, name: str, **detail):
        return _Recording(self, Step(name, detail, time.monotonic_ns(), pid=os.getpid()))

    def mark(self, name: str, **detail) -> None:
        """Record an instant (no duration), e.g. the moment just before execve."""
        self.record(Step(name, detail, time.monotonic_ns(), pid=os.getpid()))

    def record(self, step: Step) -> None:
        self.steps.append(step)
        if self.sink is not None:
            self.sink(step)

    def add_dict(self, d: dict) -> None:
        """Add a step received from a child process."""
        self.steps.append(Step(**d))


class _NoRecording:
    __slots__ = ()

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NO_RECORDING = _NoRecording()


class NullTrace:
    """The do-nothing trace used when tracing is off."""

    enabled = False
    steps: list = []

    def step(self, name, **detail):
        return _NO_RECORDING

    def mark(self, name, **detail):
        pass

    def record(self, step):
        pass

    def add_dict(self, d):
        pass


NULL_TRACE = NullTrace()


def ordered(steps: list) -> list:
    """Steps in the order they started (steps from several processes interleave)."""
    return sorted(steps, key=lambda step: step.start_ns)


def format_table(steps: list) -> str:
    """A readable table: when each step started, how long it took, where, and what."""
    import re
    if not steps:
        return "(no steps recorded)"
    steps = ordered(steps)
    start = steps[0].start_ns
    lines = [f"{'START ms':>9} {'TOOK ms':>8}  {'WHERE':9} {'STEP':15} DETAIL"]
    for step in steps:
        where = "container" if step.pid == 1 else "host"
        detail = " ".join(f"{k}={v}" for k, v in step.detail.items())
        detail = re.sub(r"[0-9a-f]{64}", lambda m: m.group()[:12], detail)  # short ids
        status = "" if step.ok else f"  FAILED: {step.error}"
        lines.append(f"{(step.start_ns - start) / 1e6:9.3f} {step.duration_ns / 1e6:8.3f}  "
                     f"{where:9} {step.name:15} {detail}{status}")
    total = (steps[-1].start_ns + steps[-1].duration_ns - start) / 1e6
    lines.append(f"{len(steps)} steps, {total:.3f} ms from the first to the end of the last")
    return "\n".join(lines)


def to_json_lines(steps: list) -> str:
    """One JSON object per step, in start order (``--trace=json``)."""
    import json
    return "\n".join(json.dumps(step.to_dict()) for step in ordered(steps))
