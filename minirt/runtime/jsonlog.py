"""A container's output on disk, in docker's ``json-file`` log format.

``<container dir>/<id>-json.log`` holds one JSON object per line, exactly as
docker writes ``/var/lib/docker/containers/<id>/<id>-json.log``::

    {"log": "hello\\n", "stream": "stdout", "time": "2026-11-27T23:01:02.123456789Z"}

``log`` is one line of output with its newline (a line longer than 16 KiB, or
the last one without a newline, is split or written as it is), ``stream`` says
which of the container's pipes it came from (with ``-t`` everything is
``stdout``: a terminal has one output), ``time`` is when the shim read it, in
RFC 3339 with nanoseconds, UTC. The shim (``shim.py``) appends, ``docker
logs``-style readers (``read_records``) read; records are written with one
``write(2)`` each on an ``O_APPEND`` file, and a reader only takes lines that
end in a newline, so it never sees half a record.
"""

import os
import time

MAX_LINE = 16 * 1024  # docker's json-file splits longer lines into several records


def rfc3339_nano(ns: int | None = None) -> str:
    """``2026-11-27T23:01:02.123456789Z``: docker's timestamp format (always 9 digits)."""
    ns = time.time_ns() if ns is None else ns
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def parse_rfc3339(text: str) -> float | None:
    """Seconds since the epoch of a timestamp written by ``rfc3339_nano`` (None if empty)."""
    if not text or text.startswith("0001-"):
        return None
    import calendar
    whole, _, fraction = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{fraction or 0}")


class LogWriter:
    """Appends a container's output as json-file records, one line each."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.partial = {"stdout": b"", "stderr": b""}

    def write(self, stream: str, data: bytes) -> None:
        """Record ``data`` read from ``stream``; an unfinished last line waits for the rest."""
        pending = self.partial[stream] + data
        lines = pending.split(b"\n")
        self.partial[stream] = lines.pop()
        for line in lines:
            self._record(stream, line + b"\n")
        while len(self.partial[stream]) >= MAX_LINE:
            self._record(stream, self.partial[stream][:MAX_LINE])
            self.partial[stream] = self.partial[stream][MAX_LINE:]

    def flush(self) -> None:
        """Write what is left of unfinished lines (the stream has ended)."""
        for stream, rest in self.partial.items():
            if rest:
                self._record(stream, rest)
            self.partial[stream] = b""

    def _record(self, stream: str, data: bytes) -> None:
        import json  # here: `minirt run` imports this module for rfc3339_nano only
        record = {"log": data.decode(errors="replace"), "stream": stream, "time": rfc3339_nano()}
        os.write(self.fd, (json.dumps(record) + "\n").encode())

    def close(self) -> None:
        self.flush()
        os.close(self.fd)


def read_records(path: str, follow=None, tail: int | None = None, poll: float = 0.05):
    """Yield each record of the log as a dict: the last ``tail`` ones (None: all), then,
    with ``follow`` (a function that says whether the container may still write),
    new ones as they come, until it says no."""
    import json
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        *lines, rest = f.read().split(b"\n")
        lines = [line for line in lines if line.strip()]
        if tail is not None:
            lines = lines[len(lines) - tail:] if 0 < tail < len(lines) else lines if tail > 0 else []
        for line in lines:
            yield json.loads(line)
        while True:
            chunk = f.read(65536)
            if chunk:
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
                continue
            if follow is None:
                return
            if not follow():
                follow = None  # one last read: what it wrote before it stopped
                continue
            time.sleep(poll)
