"""A fault-injecting proxy in front of a real registry, and a multi-layer test image.

A real registry never serves a truncated or lying blob, so to see what a client
does when the network or a registry misbehaves, ``FaultProxy`` sits between
them (on 127.0.0.1, so plain HTTP) and forwards every request to the registry,
except that for the blobs named in ``faults`` it

``truncate``  sends the right Content-Length, half of the bytes, then hangs up;
``corrupt``   sends the right number of bytes, but other ones;
``slow``      sends the bytes in 16 KiB pieces, 20 ms apart.

Everything else (manifests, auth, uploads) passes through unchanged.
"""

import http.client
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minirt.image.store import ImageStore

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate"}


class FaultProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream = upstream            # "127.0.0.1:PORT" of the real registry
        self.faults: dict[str, str] = {}    # blob digest (or "*") -> truncate|corrupt|slow
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def fault_for(self, path: str) -> str | None:
        if "/blobs/sha256:" not in path:
            return None
        digest = path.split("/blobs/", 1)[1].split("?")[0]
        return self.faults.get(digest) or self.faults.get("*")

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.forward()

    do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_GET

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        fault = self.server.fault_for(self.path) if self.command == "GET" and \
            answer.status == 200 else None
        self.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP | {"content-length"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        if fault == "truncate":
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault == "truncate":
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif fault == "corrupt":
            self.wfile.write(bytes(b ^ 0xFF for b in data[:64]) + data[64:])
        elif fault == "slow":
            for i in range(0, len(data), 16384):
                self.wfile.write(data[i:i + 16384])
                self.wfile.flush()
                time.sleep(0.02)
        else:
            self.wfile.write(data)

    def log_message(self, format, *args):
        pass


def layered_image(store: ImageStore, name: str, base: str, layer_sizes: list[int],
                  workdir: str, seed: int = 0):
    """Tag ``name``: ``base`` plus one layer per size in ``layer_sizes``, each one
    file of that many random (incompressible) bytes. Returns the image."""
    import random
    image = store.resolve(base)
    rng = random.Random(seed)
    for i, size in enumerate(layer_sizes):
        rootfs = os.path.join(workdir, f"layer-{seed}-{i}")
        os.makedirs(os.path.join(rootfs, "data"))
        with open(os.path.join(rootfs, "data", f"blob-{seed}-{i}"), "wb") as f:
            f.write(rng.randbytes(size))
        last = i == len(layer_sizes) - 1
        tag = name if last else f"{name}-part{i}"
        image = store.add_rootfs(rootfs, tag, image.run_config,
                                 f"test layer {i} ({size} bytes)", parent=image)
        if not last:
            store.untag(tag)   # only the final image keeps a name
    return image
