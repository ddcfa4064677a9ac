"""Exercise 08: the daemon's answer to ``GET /containers/json``, what ``docker ps`` asks.

minirtd (``python -m minirt daemon``) calls your ``list_containers`` for every
``GET /containers/json`` it gets (the handler ``containers_list`` in
minirt/daemon/api.py), from any client: ``docker ps``, docker-py's
``client.containers.list()``, ``minirt -H unix://... ps``. It has already
taken the daemon's lock, finished the cleanup of containers whose owner was
killed, and read every container's record from disk; it sends what you
return as the JSON body of a 200 answer.

Each record is the container as ``Engine.containers()`` reads it (its
config.json plus state.json). The fields you need:

    id          "3f1c...": 64 hex digits
    name        "web" (no slash)
    image       "busybox:latest"          image_id   "sha256:..."
    command     ["sh", "-c", "echo hi"]   (a list: the process's argv)
    created     1700000000.25             (Unix seconds, a float)
    labels      {"key": "value"}
    running     True when its processes are alive right now
    state       {"status": "created"}, or once started
                {"status": "running", "pid": 4321, "started_at": "2024-...Z"}, or
                {"status": "exited", "exit_code": 3, "started_at": ..., "finished_at": ...}

``minirt.daemon.api`` has two helpers you may use: ``seconds_of(text)``
(an RFC 3339 time such as started_at -> Unix seconds, or None) and
``human_duration(seconds)`` (docker's words: "3 minutes", "About an hour").
"""

import shlex  # noqa: F401  (shlex.join(["sh", "-c", "echo hi"]) == "sh -c 'echo hi'")
import time  # noqa: F401

from minirt.daemon.api import human_duration, seconds_of  # noqa: F401


def list_containers(records: list[dict], query: dict[str, list[str]]) -> list[dict]:
    """The body of ``GET /containers/json``: one ContainerSummary per container to show.

    ``query`` is the request's query string, parsed: ``?all=1`` arrives as
    ``{"all": ["1"]}``. Without ``all`` (or with ``all=0``), show only the
    running containers, as ``docker ps`` does; with ``all=1`` (or ``true``),
    every one (``docker ps -a``). Newest first (by ``created``).

    Each summary is a dict in the Docker Engine API's shape (v1.43,
    ContainerSummary), at least:

        "Id":      the record's id
        "Names":   ["/" + name]                (a list; docker's names start with /)
        "Image":   the record's image          "ImageID": its image_id
        "Command": the command as one string   ("sh -c 'echo hi'")
        "Created": Unix seconds, an integer
        "State":   "running", "exited" or "created"
        "Status":  "Up 3 minutes", "Exited (3) 2 minutes ago" or "Created"
        "Ports":   []                          (published ports: minirt's own fills them)
        "Labels":  the record's labels (a dict)

    A record whose state says "running" while ``running`` is False has died
    without anyone seeing its exit: show it as exited (with its exit_code, or
    -1 when that is None). minirt's own handler also serves ``filters``,
    ``limit`` and the network fields; this one need not.
    """
    # TODO 1: read "all" from the query (its last value; "1" or "true" means yes).
    # TODO 2: keep the records to show (running ones, or all), newest first.
    # TODO 3: turn each into a summary; State and Status from "running" and "state"
    #         (seconds_of(state["started_at"]) and human_duration make "Up 3 minutes").
    raise NotImplementedError("list_containers() is not written yet: see the TODOs in "
                              "list_containers.py")
