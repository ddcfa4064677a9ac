"""Checks for exercise 08: a real minirtd, from the student's copy, answers docker ps.

The check starts ``python -m minirt daemon -H unix://SOCKET`` from the
student's copy (its state root: the check's private one; the socket in a
fresh directory under /tmp, since a socket's path must fit in 108 bytes) and
creates two containers through the Engine API (``POST /containers/create``:
created, never started, so no container runs and any tier will do; without
namespaces minirt creates them for proot). Then it reads ``GET
/containers/json`` raw, through ``minirt ps`` in client mode and through
docker-py when it is installed. The last step gives the student's function
the two real records and two made-up ones (a running and an exited
container), in a throwaway interpreter.

At the end of the last step (and at exit, if the check is interrupted) the
containers are removed through the API and the daemon is stopped by its pid
with SIGTERM; its socket directory is removed.
"""

import atexit
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from minirt.daemon.client import UnixHTTPConnection
from minirt.exercises import Hint, last_line

API = "/v1.43"
NAMES = ("ex08-first", "ex08-second")   # created in this order: second is the newest
COMMANDS = {"ex08-first": ["echo", "first"], "ex08-second": ["sh", "-c", "echo second; exit 3"]}
LABELS = {"exercise": "08"}


def request(ctx, method: str, path: str, body=None):
    """One request to the check's daemon: (status, parsed JSON or text)."""
    connection = UnixHTTPConnection(ctx.ex08_socket, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        try:
            return answer.status, json.loads(data) if data else None
        except ValueError:
            return answer.status, data.decode(errors="replace")
    finally:
        connection.close()


# --- the daemon and its two containers ---------------------------------------------------------

def daemon(ctx) -> dict:
    """{name: id} of the two containers, on the check's daemon (started once)."""
    if not hasattr(ctx, "ex08_ready"):
        try:
            set_up(ctx)
            ctx.ex08_ready = ""
        except Hint as hint:  # said by each step: none can go on without it
            ctx.ex08_ready = str(hint)
    if ctx.ex08_ready:
        raise Hint(ctx.ex08_ready)
    return ctx.ex08_ids


def set_up(ctx) -> None:
    built = ctx.run_minirt("init", timeout=120)
    if built.returncode != 0:
        raise Hint(f"`minirt init` (which builds busybox:latest) failed: {last_line(built.stderr)}")
    ctx.ex08_dir = tempfile.mkdtemp(prefix="ex08-", dir="/tmp")
    ctx.ex08_socket = os.path.join(ctx.ex08_dir, "minirt.sock")
    ctx.ex08_ids = {}
    atexit.register(stop, ctx)
    log_path = os.path.join(ctx.ex08_dir, "minirtd.log")
    with open(log_path, "wb") as log:
        ctx.ex08_daemon = subprocess.Popen(
            [sys.executable, "-m", "minirt", "daemon", "-H", f"unix://{ctx.ex08_socket}"],
            cwd=ctx.dir, env=ctx.env(), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        if ctx.ex08_daemon.poll() is not None:
            with open(log_path, errors="replace") as f:
                raise Hint(f"minirtd (your copy) exited at start: {last_line(f.read())}")
        try:
            if request(ctx, "GET", "/_ping")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise Hint("minirtd (your copy) did not answer /_ping within 30 s")
        time.sleep(0.05)
    for name in NAMES:
        status, answer = request(ctx, "POST", f"{API}/containers/create?name={name}",
                                 {"Image": "busybox", "Cmd": COMMANDS[name], "Labels": LABELS})
        if status != 201:
            said = answer.get("message") if isinstance(answer, dict) else answer
            raise Hint(f"the daemon could not create a container ({status}: {said}); this "
                       "machine may allow no containers at all (`minirt doctor` says why)")
        ctx.ex08_ids[name] = answer["Id"]
        time.sleep(0.01)  # distinct creation times: the order is part of the answer


def stop(ctx) -> None:
    """Remove the containers (through the API, else directly), stop the daemon by pid."""
    process = getattr(ctx, "ex08_daemon", None)
    for container_id in list(getattr(ctx, "ex08_ids", {}).values()):
        try:
            removed = request(ctx, "DELETE", f"{API}/containers/{container_id}?force=1")[0] == 204
        except OSError:
            removed = False
        if not removed:
            ctx.run_minirt("rm", "-f", container_id)
    ctx.ex08_ids = {}
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    ctx.ex08_daemon = None
    if getattr(ctx, "ex08_dir", None):
        shutil.rmtree(ctx.ex08_dir, ignore_errors=True)
        ctx.ex08_dir = None


def listed(ctx, query: str) -> list:
    """The body of ``GET /containers/json?QUERY``; a Hint unless it is a 200 with a list."""
    status, answer = request(ctx, "GET", f"{API}/containers/json{query}")
    if status != 200:
        said = answer.get("message", answer) if isinstance(answer, dict) else answer
        if "NotImplementedError" in str(said):
            raise Hint("list_containers still raises NotImplementedError (the daemon answered "
                       "500)")
        raise Hint(f"GET /containers/json{query} answered {status}: {said}")
    if not isinstance(answer, list):
        raise Hint(f"GET /containers/json{query} answered {str(answer)[:80]!r}: return a list "
                   "of dicts, one per container")
    if not all(isinstance(entry, dict) for entry in answer):
        raise Hint(f"GET /containers/json{query} answered a list holding "
                   f"{sorted({type(e).__name__ for e in answer})}: each entry is a dict")
    return answer


def ours(ctx, answer: list) -> dict:
    """{name: summary} for the check's containers in an answer (found by Id)."""
    ids = {container_id: name for name, container_id in daemon(ctx).items()}
    return {ids[entry.get("Id")]: entry for entry in answer if entry.get("Id") in ids}


# --- the steps -------------------------------------------------------------------------------

def summaries_in_dockers_shape(ctx):
    ids = daemon(ctx)
    answer = listed(ctx, "?all=1")
    found = ours(ctx, answer)
    if len(found) != 2:
        raise Hint(f"with all=1, the answer holds {len(answer)} entries, and the check's two "
                   f"containers {'are' if not found else 'is only ' + ', '.join(found)} not "
                   "among them: "
                   + ("show every container when all is 1" if len(answer) < 2 else
                      "each entry's Id is the record's id"))
    for name, entry in found.items():
        command = COMMANDS[name]
        wanted = {"Names": ["/" + name], "Image": "busybox:latest", "State": "created",
                  "Status": "Created", "Labels": LABELS}
        for key, value in wanted.items():
            if entry.get(key) != value:
                raise Hint(f"{name}'s {key} is {entry.get(key)!r}, docker's clients expect "
                           f"{value!r}")
        if entry.get("Command") not in (shlex.join(command), " ".join(command)):
            raise Hint(f"{name}'s Command is {entry.get('Command')!r}: one string, the argv "
                       f"{command} joined (shlex.join)")
        if not str(entry.get("ImageID", "")).startswith("sha256:"):
            raise Hint(f"{name}'s ImageID is {entry.get('ImageID')!r}: the record's image_id")
        created = entry.get("Created")
        if not isinstance(created, int) or isinstance(created, bool) or \
                abs(created - time.time()) > 600:
            raise Hint(f"{name}'s Created is {created!r}: Unix seconds as an integer "
                       "(int(record['created']))")
        if not isinstance(entry.get("Ports"), list):
            raise Hint(f"{name}'s Ports is {entry.get('Ports')!r}: a list ([] will do)")
    by_id = {container_id: name for name, container_id in ids.items()}
    names = [by_id[entry["Id"]] for entry in answer if entry.get("Id") in by_id]
    if names != ["ex08-second", "ex08-first"]:
        raise Hint(f"the containers come as {names}: newest first (sort by created, reversed)")
    return (f"{len(answer)} entries; {', '.join(NAMES[::-1])} newest first, Id, Names, Image, "
            f"Command, Created, State and Status as docker's; {ids['ex08-first'][:12]} and "
            f"{ids['ex08-second'][:12]}")


def all_zero_hides_stopped(ctx):
    daemon(ctx)
    for query in ("", "?all=0"):
        shown = ours(ctx, listed(ctx, query))
        if shown:
            raise Hint(f"GET /containers/json{query or ' (no all)'} shows {', '.join(shown)}, "
                       "which are created but not running: without all=1, show running "
                       "containers only (record['running'])")
    if len(ours(ctx, listed(ctx, "?all=true"))) != 2:
        raise Hint("GET /containers/json?all=true leaves the check's containers out: "
                   "docker's clients may send true as well as 1")
    return "no `all` and all=0 show neither; all=1 and all=true show both"


def clients_read_it(ctx):
    daemon(ctx)
    done = ctx.run_minirt("-H", f"unix://{ctx.ex08_socket}", "ps", "-a")
    table = done.stdout.decode(errors="replace")
    if done.returncode != 0 or not all(name in table for name in NAMES):
        raise Hint(f"`minirt -H unix://... ps -a` (the CLI as a client of your daemon) "
                   f"{'failed: ' + last_line(done.stderr) if done.returncode else 'printed:'}"
                   f"{'' if done.returncode else chr(10) + table}")
    try:
        import docker
    except ImportError:
        return "`minirt ps -a` lists both (docker-py is not installed here: not tried)"
    client = docker.DockerClient(base_url=f"unix://{ctx.ex08_socket}", version="1.43",
                                 timeout=30)
    try:
        every = {c.name: c.status for c in client.containers.list(all=True)}
        running = [c.name for c in client.containers.list()]
        sparse = {c.attrs.get("Names", ["?"])[0]: c.status
                  for c in client.containers.list(all=True, sparse=True)}
    except docker.errors.APIError as e:
        raise Hint(f"docker-py's containers.list() failed: {e.explanation or e}") from None
    finally:
        client.close()
    if any(every.get(name) != "created" for name in NAMES):
        raise Hint(f"docker-py's containers.list(all=True) found {every}: both check containers "
                   "should be there, created")
    if any(name in running for name in NAMES):
        raise Hint(f"docker-py's containers.list() (running ones only) returned "
                   f"{', '.join(running)}: the check's containers were never started")
    if any(sparse.get("/" + name) != "created" for name in NAMES):
        raise Hint(f"docker-py's containers.list(all=True, sparse=True), which reads your "
                   f"summaries as they are, found {sparse}: Names ['/NAME'], State 'created'")
    return "`minirt ps -a` and docker-py's containers.list(all=True) list both, created"


# Runs in the student's folder: the two real records, and a running and an exited variant.
MADE_UP = {"ex08-running": "1" * 64, "ex08-exited": "2" * 64, "ex08-died": "3" * 64}
PROBE = r"""
import json, time
from minirt.engine import Engine
import list_containers as student

def rfc3339(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".000000000Z"

now = time.time()
real = [r for r in Engine().containers() if r["name"] in ("ex08-first", "ex08-second")]
base = dict(real[0])
running = dict(base, id="1" * 64, name="ex08-running", created=now - 300, running=True,
               state={"status": "running", "pid": 4321, "started_at": rfc3339(now - 180)})
exited = dict(base, id="2" * 64, name="ex08-exited", created=now - 600, running=False,
              state={"status": "exited", "exit_code": 3, "started_at": rfc3339(now - 590),
                     "finished_at": rfc3339(now - 120)})
died = dict(base, id="3" * 64, name="ex08-died", created=now - 900, running=False,
            state={"status": "running", "pid": 4322, "started_at": rfc3339(now - 800)})
records = real + [running, exited, died]
answers = {}
for query in ({"all": ["1"]}, {}, {"all": ["0"]}):
    try:
        answer = student.list_containers([dict(r) for r in records], query)
        answers[json.dumps(query)] = [[e.get("Id"), e.get("State"), e.get("Status")]
                                      for e in answer]
    except Exception as e:
        answers[json.dumps(query)] = f"{type(e).__name__}: {e}"
print(json.dumps(answers))
"""


def running_and_exited(ctx):
    try:
        ids = daemon(ctx)
        done = ctx.python("-c", PROBE)
        if done.returncode != 0:
            raise Hint(f"list_containers.py could not be tried: {last_line(done.stderr)}")
        answers = json.loads(last_line(done.stdout))
        every = answers[json.dumps({"all": ["1"]})]
        if isinstance(every, str):
            if every.startswith("NotImplementedError"):
                raise Hint("list_containers still raises NotImplementedError")
            raise Hint(f"list_containers(records, {{'all': ['1']}}) raised {every}")
        by_id = {container_id: (state, status) for container_id, state, status in every}
        for name, state, status, prefix in (
                ("ex08-running", "running", "Up 3 minutes", "Up "),
                ("ex08-exited", "exited", "Exited (3) 2 minutes ago", "Exited (3)"),
                ("ex08-died", "exited", "Exited (-1) 13 minutes ago", "Exited (-1)")):
            got = by_id.get(MADE_UP[name])
            if got is None:
                raise Hint(f"given the record of {name} ({state}), the answer to all=1 has no "
                           "entry with its Id")
            if got[0] != state or not str(got[1]).startswith(prefix):
                raise Hint(f"{name}: State {got[0]!r}, Status {got[1]!r}; docker says "
                           f"{state!r} and {status!r}"
                           + (" (its state says running, but record['running'] is False: it "
                              "died unseen, exit code unknown: -1)" if name == "ex08-died"
                              else ""))
        for query in ("{}", json.dumps({"all": ["0"]})):
            shown = answers[query]
            if isinstance(shown, str):
                raise Hint(f"list_containers(records, {query}) raised {shown}")
            by_id = {container_id: name for name, container_id in {**MADE_UP, **ids}.items()}
            names = [by_id.get(container_id, container_id) for container_id, _, _ in shown]
            if names != ["ex08-running"]:
                raise Hint(f"list_containers(records, {query}) shows {names}: only the running "
                           "one, ex08-running")
        return ("running: 'Up 3 minutes'; exited: 'Exited (3) 2 minutes ago'; died unseen: "
                "'Exited (-1)'")
    finally:
        stop(ctx)


STEPS = [
    ("GET /containers/json?all=1 answers in docker's shape, newest first",
     summaries_in_dockers_shape),
    ("without all=1, containers that are not running are left out", all_zero_hides_stopped),
    ("clients read your answer: minirt ps -a, and docker-py", clients_read_it),
    ("running and exited containers: State and Status as docker words them", running_and_exited),
]
