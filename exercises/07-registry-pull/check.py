"""Checks for exercise 07: pulls the student's copy of minirt makes from a real registry.

A CNCF Distribution registry (``docker-registry``) runs on 127.0.0.1 at a free
port, started by the student's copy (``minirt registry start``) with its
storage in the check's private state root. busybox (built offline by
``minirt init``) is pushed to it, its local tag removed, and pulled back by tag
and by digest: each pull reaches the student's ``fetch_manifest``. A small
proxy in this process stands between minirt and the registry to play the
man in the middle (it changes manifests on the way); an unknown tag must give
minirt's one-line error. No container runs: any tier.

The registry is stopped by its pid (and start time, so that a reused pid is
never signalled) at the end of the last step, and at exit if the check is
interrupted; the proxy's thread too.
"""

import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minirt.exercises import Hint, last_line
from minirt.registry import server as registry_server

REPOSITORY = "lab/busybox"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def minirt(ctx, *args, what: str) -> str:
    """``minirt ARGS`` from the student's copy; its output, or a Hint that says why it failed."""
    done = ctx.run_minirt(*args, timeout=120)
    if done.returncode != 0:
        said = crash(done) or last_line(done.stderr)
        if args[0] == "pull" and ("404" in said or "unknown" in said.lower()):
            said += (" (the manifest is there: a registry answers 404 when the Accept header "
                     "names none of the formats it holds; send accept, comma-separated)")
        raise Hint(f"{what} failed: {said}")
    return done.stdout.decode(errors="replace")


def crash(done) -> str:
    """What the student's function raised when minirt stopped with a traceback, else ""."""
    stderr = done.stderr.decode(errors="replace")
    if "Traceback" not in stderr:
        return ""
    said = last_line(done.stderr)
    if said.startswith("NotImplementedError"):
        return "fetch_manifest still raises NotImplementedError"
    return (f"minirt stopped with a traceback: your fetch_manifest raised {said} (raise "
            "RegistryError, from minirt.errors, for what the registry refused: minirt prints "
            "it as one line)")


# --- the registry, busybox in it ----------------------------------------------------------

def registry(ctx) -> str:
    """``127.0.0.1:PORT`` of the check's registry, holding busybox as lab/busybox:1."""
    if not hasattr(ctx, "ex07_ready"):
        try:
            set_up(ctx)
            ctx.ex07_ready = ""
        except Hint as hint:  # said once, by each step: none can go on without it
            ctx.ex07_ready = str(hint)
    if ctx.ex07_ready:
        raise Hint(ctx.ex07_ready)
    return ctx.ex07_registry.address


def set_up(ctx) -> None:
    if shutil.which(registry_server.BINARY) is None:
        raise Hint("docker-registry (CNCF Distribution) is not installed on this machine: "
                   "`apt-get install docker-registry` (the lab's Binder image has it)")
    built = ctx.run_minirt("init", timeout=120)
    if built.returncode != 0:
        raise Hint(f"`minirt init` (which builds busybox:latest) failed: {last_line(built.stderr)}")
    ctx.ex07_digest = pulled_digest(ctx, "busybox")
    minirt(ctx, "registry", "start", "--port", str(free_port()), what="`minirt registry start`")
    with open(os.path.join(ctx.state_root, "registry", "registry.json")) as f:
        ctx.ex07_registry = registry_server.RegistryServer(**json.load(f))
    atexit.register(stop, ctx)
    name = f"{ctx.ex07_registry.address}/{REPOSITORY}:1"
    minirt(ctx, "tag", "busybox", name, what=f"`minirt tag busybox {name}`")
    minirt(ctx, "push", name, what=f"`minirt push {name}`")
    minirt(ctx, "rmi", name, what=f"`minirt rmi {name}`")


def stop(ctx) -> None:
    """Stop the proxy and the registry (by pid and start time); idempotent."""
    proxy = getattr(ctx, "ex07_proxy", None)
    if proxy is not None:
        ctx.ex07_proxy = None
        proxy.shutdown()
        proxy.server_close()
    server = getattr(ctx, "ex07_registry", None)
    if server is None:
        return
    ctx.ex07_registry = None
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if not registry_server.alive(server):
            return
        try:
            os.kill(server.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while registry_server.alive(server) and time.monotonic() < deadline:
            time.sleep(0.05)


def pulled_digest(ctx, reference: str) -> str:
    """``minirt inspect``'s ManifestDigest of an image (pushed as is: the registry's too)."""
    shown = json.loads(minirt(ctx, "inspect", reference, what=f"`minirt inspect {reference}`"))
    return shown[0]["ManifestDigest"]


# --- the man in the middle ----------------------------------------------------------------

class Tampering(BaseHTTPRequestHandler):
    """Forwards every request to the real registry; adds a byte to each manifest on the way.

    Asked by tag, it keeps the registry's Docker-Content-Digest (the digest of the real
    bytes); asked by digest, it drops that header, so that only the reference can tell.
    """

    upstream = ("127.0.0.1", 0)

    def forward(self, with_body: bool) -> None:
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")}
            connection.request(self.command, self.path, headers=headers)
            answer = connection.getresponse()
            body = answer.read()
            headers = {k: v for k, v in answer.getheaders()
                       if k.lower() not in ("content-length", "connection", "transfer-encoding")}
            if "/manifests/" in self.path and answer.status == 200:
                body = body + b"\n"  # still the same JSON, no longer the same bytes
                if "/manifests/sha256:" in self.path:
                    headers.pop("Docker-Content-Digest", None)
            self.send_response(answer.status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)
        finally:
            connection.close()

    def do_GET(self):
        self.forward(with_body=True)

    def do_HEAD(self):
        self.forward(with_body=False)

    def log_message(self, format, *args):
        pass


def proxy(ctx) -> str:
    """``127.0.0.1:PORT`` of a tampering proxy in front of the check's registry."""
    registry(ctx)
    if getattr(ctx, "ex07_proxy", None) is None:
        server = ctx.ex07_registry
        handler = type("ToThisRegistry", (Tampering,), {"upstream": (server.host, server.port)})
        ctx.ex07_proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        ctx.ex07_proxy.daemon_threads = True
        threading.Thread(target=ctx.ex07_proxy.serve_forever, daemon=True).start()
    return f"127.0.0.1:{ctx.ex07_proxy.server_address[1]}"


# --- the steps -------------------------------------------------------------------------------

PROBE = r"""
import json, sys
from minirt.registry.client import Registry
from minirt.registry.pull import ACCEPT
with Registry(sys.argv[1]) as registry:
    body, media_type, digest = registry.manifest(sys.argv[2], sys.argv[3], ACCEPT)
print(json.dumps({"type": type(body).__name__, "media_type": media_type, "digest": digest,
                  "length": len(body)}))
"""


def pull_by_tag(ctx):
    address = registry(ctx)
    name = f"{address}/{REPOSITORY}:1"
    minirt(ctx, "pull", name, what=f"`minirt pull {name}`")
    if pulled_digest(ctx, name) != ctx.ex07_digest:
        raise Hint(f"the pulled image's manifest digest is {pulled_digest(ctx, name)}, and the "
                   f"push made {ctx.ex07_digest}: return the body's sha256 as 'sha256:<hex>'")
    done = ctx.python("-c", PROBE, address, REPOSITORY, "1")
    if done.returncode != 0:
        raise Hint(f"Registry.manifest (your fetch_manifest) failed: {last_line(done.stderr)}")
    seen = json.loads(done.stdout.decode().splitlines()[-1])
    if seen["type"] != "bytes":
        raise Hint(f"fetch_manifest returned the body as {seen['type']}: return the bytes as "
                   "received (answer.read()), not text or parsed JSON")
    if seen["media_type"] != OCI_MANIFEST:
        raise Hint(f"fetch_manifest returned the media type {seen['media_type']!r}; the registry "
                   f"said Content-Type: {OCI_MANIFEST} (drop any '; charset=...')")
    return f"{name}: digest {ctx.ex07_digest[:19]}…, as pushed; media type {OCI_MANIFEST}"


def pull_by_digest(ctx):
    address = registry(ctx)
    name = f"{address}/{REPOSITORY}@{ctx.ex07_digest}"
    minirt(ctx, "pull", name, what=f"`minirt pull {name}`")
    if pulled_digest(ctx, name) != ctx.ex07_digest:
        raise Hint(f"pulled by digest, the image's manifest digest is {pulled_digest(ctx, name)}, "
                   f"not {ctx.ex07_digest}")
    return f"{REPOSITORY}@{ctx.ex07_digest[:19]}…"


def tampering_refused(ctx):
    middle = proxy(ctx)
    for how, reference, clue in (
            ("by tag", f"{middle}/{REPOSITORY}:1",
             "compare the body's sha256 with the Docker-Content-Digest header"),
            ("by digest", f"{middle}/{REPOSITORY}@{ctx.ex07_digest}",
             "when the reference is a digest, the body's sha256 must equal it (the proxy sent "
             "no Docker-Content-Digest header this time)")):
        done = ctx.run_minirt("pull", reference, timeout=120)
        if done.returncode == 0:
            raise Hint(f"pulled {how} through a proxy that changed the manifest (one byte "
                       f"added), and minirt accepted it: {clue}, and raise RegistryError when "
                       "they differ")
        if crash(done):
            raise Hint(f"pulled {how} through a proxy that changed the manifest: {crash(done)}")
        if "digest" not in last_line(done.stderr).lower():
            raise Hint(f"pulled {how} through a proxy that changed the manifest, minirt said "
                       f"{last_line(done.stderr)!r}: say that the manifest does not match its "
                       "digest")
    return "one byte added on the way: refused by tag (the header) and by digest (the reference)"


def unknown_tag(ctx):
    try:
        address = registry(ctx)
        name = f"{address}/{REPOSITORY}:no-such-tag"
        done = ctx.run_minirt("pull", name, timeout=120)
        if done.returncode == 0:
            raise Hint(f"`minirt pull {name}` succeeded, and the registry has no such tag: "
                       "check the answer's status (urllib raises HTTPError for a 404)")
        if crash(done):
            raise Hint(f"`minirt pull {name}`: {crash(done)}")
        said = last_line(done.stderr)
        if "manifest unknown" not in said.lower() and "MANIFEST_UNKNOWN" not in said:
            raise Hint(f"`minirt pull {name}` said {said!r}: give the registry's own words, "
                       "the code and message of its JSON error body (MANIFEST_UNKNOWN, "
                       "manifest unknown)")
        return said
    finally:
        stop(ctx)


STEPS = [
    ("minirt pull by tag, through your fetch_manifest", pull_by_tag),
    ("minirt pull by digest", pull_by_digest),
    ("a manifest changed on the way is refused", tampering_refused),
    ("a tag the registry does not have gives minirt's one-line error", unknown_tag),
]
