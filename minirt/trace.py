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
