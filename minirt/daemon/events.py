"""The daemon's event bus: what ``docker events`` shows.

Docker concept: dockerd publishes one event for each thing it does (an image
tagged, untagged or deleted; a container created, started, destroyed...) and
``GET /events`` streams them as JSON lines, optionally replaying the recent
past (``since``) and stopping at a time (``until``). Like dockerd, minirtd
keeps only a short history in memory (``HISTORY`` events) and only knows about
what went through it: a ``minirt tag`` typed at the CLI is done in-process,
without the daemon, and produces no event here.

Event shape (Docker Engine API, schema ``EventMessage``, v1.41-v1.43)::

    {"Type": "image", "Action": "tag", "scope": "local",
     "Actor": {"ID": "sha256:...", "Attributes": {"name": "busybox:lab"}},
     "time": 1700000000, "timeNano": 1700000000123456789}

plus the older fields ``status``, ``id`` and ``from`` that docker still sends
for container and image events.
"""

import collections
import threading
import time

HISTORY = 256  # as dockerd: the replay buffer for ``since``


class EventBus:
    """Publish events; subscribers each get a queue of what happens after they joined."""

    def __init__(self, history: int = HISTORY):
        self._lock = threading.Condition()
        self._history = collections.deque(maxlen=history)
        self._serial = 0       # every event gets the next number: subscribers track theirs
        self._closed = False
        self.listeners = 0     # open ``GET /events`` streams (``/info``'s NEventsListener)

    def publish(self, kind: str, action: str, actor_id: str, attributes: dict | None = None) -> dict:
        """Record one event and wake every listener; returns the event."""
        now = time.time_ns()
        event = {"Type": kind, "Action": action,
                 "Actor": {"ID": actor_id, "Attributes": dict(attributes or {})},
                 "scope": "local", "time": now // 1_000_000_000, "timeNano": now}
        if kind in ("container", "image"):  # the pre-1.22 fields docker still fills in
            event["status"], event["id"] = action, actor_id
            if kind == "container" and attributes and attributes.get("image"):
                event["from"] = attributes["image"]
        with self._lock:
            self._serial += 1
            self._history.append((self._serial, event))
            self._lock.notify_all()
        return event

    def replay(self, since_ns: int | None) -> tuple[list[dict], int]:
        """Events at or after ``since_ns`` still in the history, and the serial to follow from."""
        with self._lock:
            past = [e for _, e in self._history if since_ns is not None and e["timeNano"] >= since_ns]
            return past, self._serial

    def wait(self, after: int, timeout: float) -> tuple[list[dict], int]:
        """Events published after serial ``after`` (waiting up to ``timeout`` for one)."""
        with self._lock:
            if self._serial == after and not self._closed:
                self._lock.wait(timeout)
            fresh = [e for serial, e in self._history if serial > after]
            return fresh, self._serial

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """The daemon is stopping: wake every listener so its stream can end."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()


def matches(event: dict, filters: dict[str, list[str]]) -> bool:
    """Docker's event filters: each key must match one of its values (keys are ANDed).

    Supported keys: ``type``, ``event`` (the action), ``container``, ``image``
    (an ID or a name, as the actor's ID or its ``name``/``image`` attribute),
    ``label`` (``key`` or ``key=value`` among the attributes), ``scope``.
    """
    actor = event["Actor"]
    attributes = actor.get("Attributes") or {}
    names = {actor.get("ID", ""), attributes.get("name", ""), attributes.get("image", "")}

    def named(values):
        return any(v and any(n == v or (n.startswith("sha256:") and
                                         n.removeprefix("sha256:").startswith(v.removeprefix("sha256:")))
                             or (len(v) >= 4 and n.startswith(v)) for n in names) for v in values)

    for key, values in filters.items():
        if not values:
            continue
        if key == "type" and event["Type"] not in values:
            return False
        if key == "event" and event["Action"] not in values:
            return False
        if key == "scope" and event.get("scope") not in values:
            return False
        if key in ("container", "image"):
            if event["Type"] != key and not (key == "image" and event["Type"] == "container"):
                return False
            if not named(values):
                return False
        if key == "label":
            if not any(attributes.get(v.partition("=")[0]) is not None and
                       (not v.partition("=")[1] or attributes.get(v.partition("=")[0]) == v.partition("=")[2])
                       for v in values):
                return False
    return True
