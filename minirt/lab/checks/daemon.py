"""Checks for notebook 8 (Client and daemon): the Engine API by hand, over a Unix socket.

``check_api_get`` calls the learner's ``api_get(socket_path, path)`` against a
real minirtd (the notebook's, or one the check starts on a socket of its own)
and compares with what the check reads itself: ``/version``, ``/images/json``,
and a 404 that must not pass for an answer. Each call runs in a thread with a
time limit: a client that waits for the daemon to close a keep-alive
connection would otherwise hang the notebook.
``check_demux`` feeds the learner's decoder crafted stream bytes, read the way
a socket delivers them: frames split across reads (a header too), empty frames,
stderr, a frame longer than 255 bytes, UTF-8 split across reads.
``check_run_calls`` gives made-up request logs (the docker CLI's ``run --rm``,
docker-py's, with pings and image requests mixed in), then the notebook's live
one when given, and compares with the endpoints the check names itself.
``check_run_by_hand`` asks the learner's function to create, start and wait
for a container through the API, twice (exit codes 0 and 7), and reads the
daemon's request log to see which calls it made.

Containers the checks make are named ``nb08-check-<pid>-*`` and removed
afterwards (through the daemon), whatever the learner's code did; a daemon the
check starts itself is stopped by its pid, its socket directory removed.
"""

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

from .verdict import run_check

CALL_TIMEOUT = 10      # seconds the learner's function may take for one call


def check_prefix() -> str:
    return f"nb08-check-{os.getpid()}"


def note(verdict, text: str) -> None:
    verdict.lines.append(f"  · {text}")


# --- talking to a daemon ------------------------------------------------------------------

def UnixHTTPConnection(path: str, timeout: float = 10):
    """http.client over a Unix socket for the check's own requests (the CLI's client)."""
    from ...daemon.client import UnixHTTPConnection as Connection
    return Connection(path, timeout=timeout)


def request(sock: str, method: str, path: str, body=None):
    """One request: (status, parsed JSON or bytes)."""
    conn = UnixHTTPConnection(sock)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers=headers)
        answer = conn.getresponse()
        data = answer.read()
        if "json" in answer.getheader("Content-Type", "") and data:
            return answer.status, json.loads(data)
        return answer.status, data
    finally:
        conn.close()


def alive(sock) -> bool:
    try:
        return bool(sock) and request(sock, "GET", "/_ping")[0] == 200
    except OSError:
        return False


class OwnDaemon:
    """A minirtd the check starts when the notebook gave none (state: the default root)."""

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix=f"{check_prefix()}-", dir="/tmp")
        self.sock = os.path.join(self.directory, "minirt.sock")
        self.log = open(os.path.join(self.directory, "minirtd.log"), "w")
        env = {**os.environ, "MINIRT_CGROUP_PARENT": os.environ.get(
            "MINIRT_CGROUP_PARENT", "minirt")}
        self.process = subprocess.Popen([sys.executable, "-m", "minirt", "daemon", "-H",
                                         f"unix://{self.sock}"], stdout=self.log,
                                        stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        while not alive(self.sock):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the check's own minirtd did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _with_daemon(verdict, sock, body):
    """Run ``body(sock)`` on the given daemon, or on one the check starts and stops."""
    if sock is not None:
        if not alive(sock):
            verdict.bad(f"no daemon answers on {sock}",
                        "run the cell of part 1 that starts minirtd first (or pass sock=None "
                        "and the check starts its own)")
            return
        return body(sock)
    own = OwnDaemon()
    note(verdict, f"the check started its own minirtd on {own.sock}")
    try:
        return body(own.sock)
    finally:
        own.stop()


class TooSlow(Exception):
    pass


def call_with_timeout(function, *args, timeout: float = CALL_TIMEOUT):
    """The learner's function in a thread: its answer, its exception, or TooSlow."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args)
        except BaseException as e:  # handed back to the caller's thread
            outcome["error"] = e

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TooSlow(f"it did not return within {timeout:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


# --- exercise 8.1: GET over the Unix socket -----------------------------------------------

def check_api_get(api_get, sock=None) -> bool:
    """``api_get(socket_path, path) -> parsed JSON``; raises on a status that is not 2xx.

    ``sock``: the notebook's daemon socket; None starts a daemon for the check.
    """
    return run_check("Exercise 8.1: GET over a Unix socket", _api_get_body, api_get, sock)


def _api_get_body(verdict, api_get, sock):
    _with_daemon(verdict, sock, lambda s: _api_get_on(verdict, api_get, s))


def _api_get_on(verdict, api_get, sock):
    try:
        got = call_with_timeout(api_get, sock, "/version")
    except TooSlow as e:
        verdict.bad(f"GET /version: {e}",
                    "HTTP/1.1 keeps the connection open after the answer, so reading until the "
                    "daemon closes it waits forever: read Content-Length bytes (http.client "
                    "does), or send the header Connection: close")
        return
    except (ConnectionRefusedError, FileNotFoundError) as e:
        verdict.bad(f"GET /version: cannot connect: {e}",
                    "connect an AF_UNIX socket to the socket file's path (not a TCP address)")
        return
    _, wanted = request(sock, "GET", "/version")
    if isinstance(got, (bytes, str)):
        verdict.bad("GET /version returns parsed JSON (a dict)",
                    "the body is JSON text: json.loads(body) turns it into a dict")
        return
    if hasattr(got, "status") or hasattr(got, "read"):
        verdict.bad("GET /version returns parsed JSON (a dict)",
                    "that is the response object: read its body, then json.loads(...) it")
        return
    if not verdict.expect(got == wanted, f"GET /version: minirt {wanted.get('Version')}, API "
                          f"{wanted.get('ApiVersion')}",
                          f"it returned {str(got)[:100]}"):
        return
    got = call_with_timeout(api_get, sock, "/images/json")
    tags = [t for image in got or [] if isinstance(image, dict)
            for t in image.get("RepoTags") or []] if isinstance(got, list) else None
    _, wanted = request(sock, "GET", "/images/json")
    wanted_tags = [t for image in wanted for t in image.get("RepoTags") or []]
    if not verdict.expect(isinstance(got, list) and sorted(tags) == sorted(wanted_tags),
                          f"GET /images/json: a list of {len(wanted)} image(s) "
                          f"({', '.join(wanted_tags[:3]) or 'none'})",
                          f"it returned {str(got)[:100]}: the path goes into the request "
                          "line as it is, query string included"):
        return
    status, wanted = request(sock, "GET", "/containers/json?all=1")
    if status == 200:   # (a daemon that cannot see cgroups here may fail this one itself)
        got = call_with_timeout(api_get, sock, "/containers/json?all=1")
        if not verdict.expect(isinstance(got, list), f"GET /containers/json?all=1: a list "
                              f"({len(wanted)} container(s) now)",
                              f"it returned {str(got)[:100]}"):
            return
    missing = f"/containers/{check_prefix()}-no-such/json"
    try:
        got = call_with_timeout(api_get, sock, missing)
    except TooSlow:
        raise
    except Exception as e:
        verdict.good(f"GET {missing} (404) raises: {type(e).__name__}: {str(e)[:120]}")
        return
    verdict.bad(f"GET {missing} (404) raises an exception",
                f"it returned {str(got)[:80]}: a caller cannot tell that from an answer. "
                "Look at the status (response.status) and raise when it is not 2xx, with "
                "the daemon's message")


# --- exercise 8.2: the multiplexed stream ---------------------------------------------------

def frame(stream: int, data: bytes) -> bytes:
    """One frame of docker's stream: stream number, three zero bytes, big-endian length."""
    return struct.pack(">BxxxL", stream, len(data)) + data


def split(data: bytes, sizes) -> list[bytes]:
    """``data`` cut into reads of the given sizes (the rest in the last one)."""
    reads, at = [], 0
    for size in sizes:
        reads.append(data[at:at + size])
        at += size
    reads.append(data[at:])
    return [r for r in reads if r]


LONG = ("0123456789abcdef" * 20 + "\n")   # 321 bytes: the length needs two bytes

# (what the case shows, the reads, the pairs wanted)
DEMUX_CASES = [
    ("one stdout frame in one read", [frame(1, b"hi\n")], [("stdout", "hi\n")]),
    ("stdout then stderr", [frame(1, b"out\n") + frame(2, b"err\n")],
     [("stdout", "out\n"), ("stderr", "err\n")]),
    ("a frame longer than 255 bytes (its length takes two bytes)",
     [frame(1, LONG.encode())], [("stdout", LONG)]),
    ("frames split across reads, a header too",
     split(frame(1, b"hello\n") + frame(2, b"oops\n") + frame(1, b"bye\n"), [3, 9, 1, 7, 5]),
     [("stdout", "hello\n"), ("stderr", "oops\n"), ("stdout", "bye\n")]),
    ("empty frames carry nothing",
     [frame(1, b"") + frame(1, b"a\n") + frame(2, b""), frame(2, b"b\n")],
     [("stdout", "a\n"), ("stderr", "b\n")]),
    ("a UTF-8 character split across reads",
     split(frame(1, "容器\n".encode()), [10]), [("stdout", "容器\n")]),
    ("one byte per read", split(frame(2, b"slow\n"), [1] * 13), [("stderr", "slow\n")]),
    ("no reads at all", [], []),
]


RAISED = object()   # the learner's decoder raised on this case


def _case_hint(case: str) -> str:
    if "255" in case:
        return ("the length is the 4 bytes 4..7 of the header, big-endian: "
                "struct.unpack('>I', header[4:8]) or int.from_bytes(header[4:8], 'big')")
    if "split" in case or "per read" in case:
        return ("a read can end anywhere, even inside a header or a character: keep what is "
                "left over in a buffer, and take a frame (and decode it) only once its "
                "8 + length bytes are all there")
    if "empty" in case:
        return "a frame of length 0 has a header and nothing after it: skip it"
    return ""


def _demux_hint(case: str, reads, got, wanted) -> str:
    if got is RAISED:
        return _case_hint(case)
    if not isinstance(got, list) or any(not (isinstance(p, (tuple, list)) and len(p) == 2)
                                        for p in got):
        return f"return a list of (stream, text) pairs; it returned {str(got)[:80]}"
    streams = [p[0] for p in got]
    if any(isinstance(s, int) for s in streams):
        return 'name the streams: byte 0 of the header is 1 for "stdout", 2 for "stderr"'
    texts = [p[1] for p in got]
    if any(isinstance(t, bytes) for t in texts):
        return "decode each frame's bytes to text: data.decode()"
    joined = "".join(t for t in texts if isinstance(t, str))
    if "empty" in case and len(got) > len(wanted) and joined == "".join(t for _, t in wanted):
        return "skip a frame of length 0: it carries no text"
    if "255" in case or "split" in case or "per read" in case:
        return _case_hint(case)
    if len(got) == 1 and len(wanted) > 1:
        return "a read may hold several frames: loop until the buffer has no whole frame left"
    return f"wanted {wanted}, got {got}"


def check_demux(demux) -> bool:
    """``demux(reads) -> [(stream, text), ...]``: ``reads`` are the bytes as ``recv`` gave them."""
    return run_check("Exercise 8.2: stdout and stderr on one socket", _demux_body, demux)


def _demux_body(verdict, demux):
    for case, reads, wanted in DEMUX_CASES:
        try:
            got = demux(list(reads))
        except NotImplementedError:
            raise
        except Exception as e:
            verdict.bad(f"{case}: your code raised {type(e).__name__}: {e}",
                        _case_hint(case) or f"the reads were {reads}")
            return
        if isinstance(got, tuple) or hasattr(got, "__next__"):
            got = list(got)   # a tuple or a generator is fine
        if isinstance(got, list):
            got = [tuple(p) if isinstance(p, list) else p for p in got]
        if not verdict.expect(got == wanted, f"{case}: {len(wanted)} pair(s)",
                              _demux_hint(case, reads, got, wanted)):
            return


# --- exercise 8.3: which calls did docker run make? ---------------------------------------

def endpoint(entry: dict):
    """The check's own reading of one log entry: (method, endpoint) or None (not /containers)."""
    path = entry["path"].split("?", 1)[0]
    path = re.sub(r"^/v\d+\.\d+(?=/)", "", path)
    if not path.startswith("/containers/"):
        return None
    parts = path.split("/")
    if len(parts) >= 3 and parts[2] not in ("create", "json", "prune"):
        parts[2] = "{id}"
    return entry["method"], "/".join(parts)


def _entries(*rows, start_id: int = 1, agent: str = "") -> list[dict]:
    """A made-up log, or one recorded from a real client: (method, path, status, ms, start ms)."""
    made = []
    for n, (method, path, status, ms, at) in enumerate(rows, start_id):
        made.append({"id": n, "time": 1.7e9 + at / 1000, "method": method, "path": path,
                     "status": status, "duration_ms": ms, "agent": agent,
                     "stream": status == 101 or path.split("?")[0].endswith("/wait")})
    return made


ID = "902a08b25a36d0a554f82971724d3a148bef92ffff7f5bddc2beb2412ec38e0b"
# Recorded from minirtd: `docker run --rm --name web busybox echo hi` (docker CLI 28.2.2) ...
DOCKER_CLI_RUN = _entries(
    ("HEAD", "/_ping", 200, 0.4, 0.0),
    ("POST", "/v1.43/containers/create?name=web", 201, 25.8, 1.6),
    ("POST", f"/v1.43/containers/{ID}/attach?stderr=1&stdout=1&stream=1", 101, 14.1, 29.3),
    ("POST", f"/v1.43/containers/{ID}/wait?condition=removed", 200, 12.7, 30.2),
    ("POST", f"/v1.43/containers/{ID}/start", 204, 9.7, 31.4), agent="Docker-Client/28.2.2")
# ... and docker-py 7.2's `containers.run("busybox", ["echo", "hi"], name="py", remove=True)`
DOCKER_PY_RUN = _entries(
    ("GET", "/version", 200, 0.2, 0.0),
    ("POST", "/v1.43/containers/create?name=py", 201, 22.8, 1.1),
    ("GET", f"/v1.43/containers/{ID}/json", 200, 0.5, 24.6),
    ("POST", f"/v1.43/containers/{ID}/start", 204, 6.4, 25.7),
    ("GET", f"/v1.43/containers/{ID}/logs?stderr=0&stdout=1&timestamps=0&follow=1&tail=all",
     200, 52.0, 33.0),
    ("GET", f"/v1.43/containers/{ID}/json", 200, 1.5, 86.0),
    ("POST", f"/v1.43/containers/{ID}/wait", 200, 0.2, 88.1),
    ("DELETE", f"/v1.43/containers/{ID}?v=False&link=False&force=False", 204, 0.9, 89.0),
    start_id=10, agent="docker-sdk-python/7.2.0")
NOISY = _entries(
    ("GET", "/v1.43/images/json", 200, 3.0, 0),
    ("GET", "/v1.43/containers/json?all=1", 200, 2.0, 5),
    ("POST", "/containers/create", 201, 20.0, 10),
    ("POST", "/containers/box/start", 204, 8.0, 35),
    ("HEAD", "/_ping", 200, 0.1, 45),
    ("POST", "/containers/box/wait", 200, 30.0, 46),
    ("GET", "/containers/box/logs?stdout=1", 200, 1.0, 80),
    ("DELETE", "/containers/box?force=1", 204, 2.0, 85), start_id=40)

RUN_CASES = [
    ("docker run --rm (the docker CLI)", DOCKER_CLI_RUN),
    ("docker-py's containers.run(..., remove=True)", DOCKER_PY_RUN),
    ("a log with pings, images and containers by name, no /v1.NN", NOISY),
]


def _expected(log):
    return [e for e in (endpoint(entry) for entry in log) if e is not None]


def _run_calls_hint(got, wanted) -> str:
    if not isinstance(got, list):
        return f"return a list of (method, endpoint) pairs, not {type(got).__name__}"
    if any(not (isinstance(p, (tuple, list)) and len(p) == 2) for p in got):
        return f"each item is a pair (method, endpoint): got {str(got[:2])[:80]}"
    paths = [p[1] for p in got]
    if any(isinstance(p, str) and re.match(r"/v\d+\.\d+/", p) for p in paths):
        return "drop the API version prefix (/v1.43): the endpoint is the same in every version"
    if any(isinstance(p, str) and "?" in p for p in paths):
        return "drop the query string (?name=..., ?condition=...): it is not part of the endpoint"
    if any(isinstance(p, str) and not p.startswith("/containers") for p in paths):
        return "keep only the container endpoints (paths under /containers/): not /_ping, " \
               "/version or /images"
    if any(isinstance(p, str) and ID in p for p in paths) or \
            any(isinstance(p, str) and "/box" in p for p in paths):
        return "write the container's id or name as {id}: /containers/{id}/start"
    if sorted(map(tuple, got)) == sorted(wanted) and list(map(tuple, got)) != wanted:
        return "keep the order of the log (by id): the order the requests arrived in"
    if [tuple(p) for p in got] == [w for w in wanted if w[1] != "/containers/json"]:
        return "keep /containers/json (docker ps, inspect): it is a container endpoint too"
    return f"wanted {wanted}, got {got}"


def check_run_calls(run_calls, live_log=None) -> bool:
    """``run_calls(log) -> [(method, endpoint), ...]``, endpoints like ``/containers/{id}/start``.

    ``live_log``: the entries the notebook read after its own ``docker run`` (tried last).
    """
    return run_check("Exercise 8.3: what is docker run made of?", _run_calls_body,
                     run_calls, live_log)


def _run_calls_body(verdict, run_calls, live_log):
    cases = list(RUN_CASES)
    if live_log:
        cases.append(("the request log of this notebook's own run (part 3)", list(live_log)))
    for text, log in cases:
        wanted = _expected(log)
        got = run_calls([dict(e) for e in log])
        if isinstance(got, tuple):
            got = list(got)
        ok = isinstance(got, list) and [tuple(p) if isinstance(p, list) else p
                                        for p in got] == wanted
        if not verdict.expect(ok, f"{text}: " + ", ".join(
                f"{m} {p.removeprefix('/containers')}" for m, p in wanted[:4]) +
                (", ..." if len(wanted) > 4 else ""), _run_calls_hint(got, wanted)):
            return


# --- exercise 8.4: create, start, wait by hand ---------------------------------------------

def check_run_by_hand(run_by_hand, sock=None, tier=None) -> bool:
    """``run_by_hand(socket_path, name, command) -> exit code`` of a busybox container
    named ``name``, created, started and waited for through the API, then removed."""
    return run_check("Exercise 8.4: docker run by hand", _by_hand_body, run_by_hand, sock, tier)


def _by_hand_body(verdict, run_by_hand, sock, tier):
    if tier is None:
        from ... import doctor
        tier = doctor.probe().tier
    if tier not in ("root", "rootless"):
        verdict.bad(f"this check runs containers, which needs the root or rootless tier; this "
                    f"machine is {tier}",
                    "your function was not called: read it against the cells of part 4, or "
                    "try it on a machine where `minirt doctor` says root or rootless")
        return
    _with_daemon(verdict, sock, lambda s: _by_hand_on(verdict, run_by_hand, s))


def _log_since(sock, after: int) -> list[dict]:
    return request(sock, "GET", f"/minirt/requests?since={after}")[1]


def _last_id(sock) -> int:
    entries = request(sock, "GET", "/minirt/requests")[1]
    return entries[-1]["id"] if entries else 0


def _remove(sock, name) -> bool:
    """Remove the check's container through the daemon; True when there was one."""
    try:
        return request(sock, "DELETE", f"/containers/{name}?force=1")[0] == 204
    except OSError:
        return False


def _by_hand_on(verdict, run_by_hand, sock):
    for code, command in ((0, ["true"]), (7, ["sh", "-c", "echo by hand; exit 7"])):
        name = f"{check_prefix()}-{code}"
        _remove(sock, name)
        before = _last_id(sock)
        try:
            got = call_with_timeout(run_by_hand, sock, name, command, timeout=30)
        except TooSlow as e:
            verdict.bad(f"{' '.join(command)!r}: {e}",
                        "POST /containers/{id}/wait answers when the container exits: start "
                        "it first (POST /containers/{id}/start), or wait waits forever")
            _remove(sock, name)
            return
        calls = [endpoint(e) for e in _log_since(sock, before)]
        calls = [c for c in calls if c is not None]
        left = _remove(sock, name)
        shown = " -> ".join(f"{m} {p.removeprefix('/containers')}" for m, p in calls) or \
            "no container request"
        if ("POST", "/containers/create") not in calls:
            verdict.bad(f"{' '.join(command)!r}: the daemon saw {shown}",
                        "first POST /containers/create?name=NAME with the JSON body "
                        '{"Image": "busybox", "Cmd": [...]}')
            return
        if ("POST", "/containers/{id}/start") not in calls:
            verdict.bad(f"{' '.join(command)!r}: the daemon saw {shown}",
                        "create only makes the container: POST /containers/{id}/start runs it")
            return
        if got != code:
            hint = ("POST /containers/{id}/wait blocks until the container exits and answers "
                    '{"StatusCode": N}: return N')
            if isinstance(got, dict):
                hint = f"it returned the whole answer {got}: return its StatusCode"
            elif ("POST", "/containers/{id}/wait") not in calls:
                hint = "wait for it: " + hint
            verdict.bad(f"{' '.join(command)!r} exits with {code}", f"it returned {got!r}; "
                        + hint)
            return
        verdict.good(f"{' '.join(command)!r}: exit code {code}; the daemon saw {shown}")
        if not verdict.expect(not left, "nothing left behind",
                              "remove the container when it has exited: DELETE "
                              "/containers/{id} (docker run --rm does)"):
            return


def cleanup(sock=None) -> list[str]:
    """Remove what an interrupted check of this process left: containers, scratch dirs."""
    removed = []
    if sock and alive(sock):
        status, listed = request(sock, "GET", "/containers/json?all=1")
        for c in listed if status == 200 else []:
            name = c["Names"][0].lstrip("/")
            if name.startswith(check_prefix()) and _remove(sock, c["Id"]):
                removed.append(name)
    else:
        try:
            from ...engine import Engine
            engine = Engine()
            for c in engine.containers():
                if c.get("name", "").startswith(check_prefix()):
                    engine.remove_container(c["id"], force=True)
                    removed.append(c["name"])
        except Exception:
            pass
    for name in os.listdir("/tmp"):
        if name.startswith(f"{check_prefix()}-"):
            shutil.rmtree(os.path.join("/tmp", name), ignore_errors=True)
            removed.append(os.path.join("/tmp", name))
    return removed


__all__ = ["check_api_get", "check_demux", "check_run_calls", "check_run_by_hand", "cleanup",
           "frame", "UnixHTTPConnection"]
