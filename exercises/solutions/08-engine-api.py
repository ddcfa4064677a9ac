"""Reference solution of exercise 08: the daemon's answer to GET /containers/json."""

import shlex
import time

from minirt.daemon.api import human_duration, seconds_of


def list_containers(records: list[dict], query: dict[str, list[str]]) -> list[dict]:
    """Docker's ContainerSummary of each container to show, newest first (see starter.py)."""
    show_all = (query.get("all") or ["0"])[-1].strip().lower() in ("1", "true", "yes", "on")
    shown = [record for record in records if show_all or record.get("running")]
    shown.sort(key=lambda record: record.get("created", 0), reverse=True)
    return [summary(record) for record in shown]


def summary(record: dict) -> dict:
    state, status = state_and_status(record)
    network = record.get("network") or "none"
    return {
        "Id": record["id"],
        "Names": ["/" + record["name"]],
        "Image": record.get("image", ""),
        "ImageID": record.get("image_id", ""),
        "Command": shlex.join(record.get("command") or []),
        "Created": int(record.get("created", 0)),
        "Ports": [],
        "Labels": record.get("labels") or {},
        "State": state,
        "Status": status,
        "HostConfig": {"NetworkMode": network},
        "NetworkSettings": {"Networks": {network: {}}},
        "Mounts": [],
    }


def state_and_status(record: dict) -> tuple[str, str]:
    """(State, Status): ("running", "Up 3 minutes"), ("exited", "Exited (3) 2 minutes ago"),
    or ("created", "Created")."""
    state = record.get("state") or {}
    if record.get("running"):
        since = seconds_of(state.get("started_at"))
        return "running", f"Up {human_duration(time.time() - since)}" if since else "Up"
    if state.get("status") in ("exited", "running", "stopped", "dead"):  # "running": it died
        code = state.get("exit_code")
        code = -1 if code is None else code
        since = seconds_of(state.get("finished_at"))
        ago = f" {human_duration(time.time() - since)} ago" if since else ""
        return "exited", f"Exited ({code}){ago}"
    return "created", "Created"
