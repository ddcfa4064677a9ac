"""``minirt registry start [--port N] | stop | status``: the lab's local registry.

The registry's directory is ``<state root>/registry`` (see ``server`` for its
layout). It listens on 127.0.0.1 only and has no authentication: push to it as
``127.0.0.1:5000/NAME:TAG``.
"""

import os


def describe(parser) -> None:
    parser.add_argument("what", choices=["start", "stop", "status"],
                        help="start it (if it is not running), stop it, or show where it runs")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (start only; "
                        "default 5000)")


def registry_dir() -> str:
    from ..paths import state_root
    return os.path.join(state_root(), "registry")


def run(args) -> int:
    from . import server
    directory = registry_dir()
    if args.what == "start":
        running = server.start(directory, port=args.port)
        print(f"registry running at {running.address} (pid {running.pid}), "
              f"storage {running.storage}")
        return 0
    if args.what == "stop":
        print("registry stopped" if server.stop(directory) else "registry not running")
        return 0
    running = server.status(directory)
    if running is None:
        print("registry not running")
        return 1
    print(f"registry running at {running.address} (pid {running.pid}), storage {running.storage}")
    return 0

