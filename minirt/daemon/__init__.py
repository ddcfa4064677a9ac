"""minirtd: minirt's daemon, speaking the Docker Engine API on a Unix socket.

Docker concept: client and server. The ``docker`` command does nothing by
itself; it sends HTTP requests to dockerd over ``/var/run/docker.sock``, and
dockerd does the work. minirtd is that server for minirt: the real docker CLI
and docker-py talk to it (``docker -H unix:///run/minirt/minirt.sock images``),
and it does the work with the same ``Engine`` the ``minirt`` command uses.

* ``server.py``: the socket and HTTP/1.1 (keep-alive, chunked streams,
  hijacked connections), the request log, start and clean shutdown;
* ``api.py``: the routing table, versions, errors, and the system endpoints
  (``/_ping``, ``/version``, ``/info``, images list/inspect/delete/tag, ``/events``);
* ``containers.py``: create, start, attach, wait, logs, stop, kill, restart, ...;
* ``images.py``: pull and push (streamed JSON progress), ``/auth``, ``/build``;
* ``exec.py``, ``stats.py``, ``archive.py``: ``docker exec``, ``stats``, ``cp``;
* ``events.py``: the event bus behind ``GET /events``;
* ``client.py``: the other side: how the ``minirt`` command talks to a daemon
  (``-H`` / ``MINIRT_HOST``) instead of running containers itself.

Shims are forked by a *shim factory* the daemon starts once
(``engine.serve_shim_factory``), so ``docker run`` does not pay for a new
Python interpreter per container.

Reference: Docker Engine API v1.43,
https://docs.docker.com/reference/api/engine/version/v1.43/

This module holds only the command line glue (``minirt daemon`` and
``minirtd`` share it); nothing heavy is imported until the daemon starts.
"""


def arguments(parser) -> None:
    """``minirt daemon``'s and ``minirtd``'s flags (dockerd's names)."""
    parser.add_argument("-H", "--host", metavar="ADDRESS", default=None,
                        help="where to listen: unix:///path (default /run/minirt/minirt.sock as "
                        "root, $XDG_RUNTIME_DIR/minirt.sock otherwise) or tcp://127.0.0.1:PORT")
    parser.add_argument("--data-root", metavar="DIR", default=None,
                        help="minirt's state directory (default: $MINIRT_ROOT, /var/lib/minirt "
                        "as root)")


def command(args) -> int:
    """Run the daemon in the foreground until SIGTERM or Ctrl-C."""
    from .server import serve
    return serve(args.host, args.data_root)
