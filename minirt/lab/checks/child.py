"""Running a learner's code in a forked child, so nothing it does reaches the notebook.

``in_child(action, unshare=(...))`` forks, optionally moves the child into new
namespaces, runs ``action()`` there and sends its answer back through a pipe as
JSON; the child always ends with ``os._exit``. A child that hangs is killed at
the timeout. Every check that touches the kernel uses it.
"""

import json
import os
import select
import signal
import sys
import time

from ...kernel import namespaces, syscalls


def _child_error(e: BaseException) -> list:
    return ["error", type(e).__name__, str(e)]


def in_child(action, unshare=(), timeout: float = 20.0):
    """Run ``action()`` in a forked child after ``unshare(unshare)``; return its answer.

    The answer travels back as JSON. With ``"pid"`` among the namespaces the
    child forks once more, so that ``action`` runs as PID 1 of the new pid
    namespace (unshare(2) moves only the *next* child there).
    An exception in the child comes back as the same kind of error here
    (``NotImplementedError`` stays itself, so the verdict says "not written yet").
    """
    for stream in (sys.stdout, sys.stderr):  # no buffered text printed twice
        try:
            stream.flush()
        except Exception:
            pass
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: whatever happens, it ends here with os._exit
        answer = ["error", "RuntimeError", "the child ended without an answer"]
        try:
            os.close(read_fd)
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
            if unshare:
                namespaces.unshare(list(unshare))
            if "pid" in unshare:
                inner = os.fork()
                if inner:  # the middle process: wait for PID 1, answer nothing itself
                    os.close(write_fd)
                    os.waitpid(inner, 0)
                    os._exit(0)
                syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
            answer = ["ok", action()]
        except BaseException as e:
            answer = _child_error(e)
        finally:
            try:
                data = json.dumps(answer, default=str).encode()
            except Exception as e:
                data = json.dumps(_child_error(e)).encode()
            try:
                os.write(write_fd, data)
            finally:
                os._exit(0)
    os.close(write_fd)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_fd], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)  # our own child, by pid
                raise TimeoutError(f"no answer within {timeout:.0f} s (is your function stuck?)")
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    if not chunks:
        raise RuntimeError("the child process ended without an answer")
    kind, *rest = json.loads(b"".join(chunks))
    if kind == "ok":
        return rest[0]
    name, message = rest
    if name == "NotImplementedError":
        raise NotImplementedError(message)
    raise ChildError(f"{name}: {message}")


class ChildError(Exception):
    """An exception raised by the learner's code in the child process."""


