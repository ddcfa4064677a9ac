"""Reference solutions for notebook 8 (Client and daemon)."""

import http.client
import json
import re
import socket
import struct

STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client, connected to a Unix socket instead of host:port."""

    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def api_call(sock, method, path, body=None):
    """One request to the daemon: the parsed JSON answer (None when there is no body)."""
    conn = UnixHTTPConnection(sock)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"} if body is not None else {})
        answer = conn.getresponse()
        data = answer.read()
        if not 200 <= answer.status < 300:
            message = json.loads(data).get("message") if data.startswith(b"{") else data
            raise RuntimeError(f"{method} {path}: {answer.status} {message}")
        return json.loads(data) if data else None
    finally:
        conn.close()


def api_get(sock, path):
    """GET ``path`` from the daemon listening on the Unix socket ``sock``: parsed JSON."""
    return api_call(sock, "GET", path)


def demux(reads):
    """Docker's multiplexed stream, as it arrived in ``reads``: [(stream, text), ...]."""
    buffer, pairs = b"", []
    for data in reads:
        buffer += data
        while len(buffer) >= 8:
            stream, size = struct.unpack(">BxxxL", buffer[:8])
            if len(buffer) < 8 + size:
                break                       # the rest of this frame is in a later read
            payload, buffer = buffer[8:8 + size], buffer[8 + size:]
            if payload:
                pairs.append((STREAMS[stream], payload.decode()))
    return pairs


def run_calls(log):
    """The container endpoints a request log shows, in order: [(method, endpoint), ...]."""
    calls = []
    for entry in log:
        path = entry["path"].split("?", 1)[0]
        path = re.sub(r"^/v\d+\.\d+/", "/", path)
        if not path.startswith("/containers/"):
            continue
        parts = path.split("/")
        if parts[2] not in ("create", "json", "prune"):
            parts[2] = "{id}"                # an id or a name
        calls.append((entry["method"], "/".join(parts)))
    return calls


def run_by_hand(sock, name, command):
    """docker run --rm, by hand: create, start, wait, remove; return the exit code."""
    created = api_call(sock, "POST", f"/containers/create?name={name}",
                       {"Image": "busybox", "Cmd": command})
    container = created["Id"]
    try:
        api_call(sock, "POST", f"/containers/{container}/start")
        return api_call(sock, "POST", f"/containers/{container}/wait")["StatusCode"]
    finally:
        api_call(sock, "DELETE", f"/containers/{container}?force=1")
