"""The Docker Engine API, as far as minirtd serves it: routes, handlers, Docker's JSON.

Docker concept: the Engine API is the contract between every Docker client
(the CLI, docker-py, Compose, IDEs) and the daemon. A client asks ``/_ping``,
learns the daemon's API version from its ``API-Version`` header, and from then
on prefixes its paths with it (``/v1.43/images/json``); the daemon answers in
the JSON shapes of that version. Errors are always ``{"message": "..."}`` with
the HTTP status saying what kind: 400 bad request, 403 forbidden (removing a
network still in use), 404 no such thing, 409 conflict, 500 the daemon failed,
501 not implemented.

How to add an endpoint: write ``handler(request, **params)`` and decorate it
with ``@route(METHOD, PATH_REGEX)``; named groups of the regex arrive as
keyword arguments, percent-decoded. The handler returns what to send:

* a dict or list: 200 with it as JSON;
* ``None``: 204 No Content;
* ``Reply(status, value)`` for another status, a text body or extra headers;
* or it answers by itself through ``request.json_stream()`` (chunked JSON
  lines: ``POST /images/create``'s progress) or ``request.hijack()`` (the raw
  connection: attach, exec), and its return value is ignored.

A ``MinirtError`` it raises becomes Docker's error shape with the status from
``ERROR_STATUS``; ``HTTPError(status, message)`` picks the status itself; any
other exception is a 500 and the daemon keeps serving. Handlers reach the
one ``Engine`` as ``request.daemon.engine`` and publish events on
``request.daemon.events``.

Reference: Docker Engine API v1.43,
https://docs.docker.com/reference/api/engine/version/v1.43/ (ImageSummary,
ImageInspect, ContainerSummary, ContainerInspectResponse, SystemInfo,
SystemVersion, EventMessage).
"""

import json
import os
import platform
import re
import shlex
import threading
import time
from urllib.parse import unquote

from .. import __version__
from ..errors import (AuthError, ContainerError, ContainerNotFound, ImageNotFound,
                      MinirtError, NetworkError, UsageError)
from .events import EventBus, matches
from .server import HTTPError

API_VERSION = "1.43"       # what we advertise; the docker CLI negotiates down to it
MIN_API_VERSION = "1.24"   # as dockerd: older clients are told to upgrade

# Which MinirtError means which status (the first class that matches wins).
ERROR_STATUS = (
    (ImageNotFound, 404),
    (ContainerNotFound, 404),
    (UsageError, 400),
    (AuthError, 401),        # a registry refused the login
    (ContainerError, 409),   # the container is in the wrong state for this: a conflict
    (NetworkError, 400),     # unless its words say which kind (NETWORK_STATUS)
    (MinirtError, 500),
)

# A NetworkError covers several of dockerd's answers; its message says which one.
NETWORK_STATUS = (
    ("not found", 404),              # "network lab not found"
    ("already exists", 409),         # "network with name lab already exists"
    ("has active endpoints", 403),   # containers are still on it
    ("pre-defined network", 403),    # bridge, host, none cannot be removed
)


def status_for(error: MinirtError) -> int:
    if isinstance(error, NetworkError):
        return next((status for words, status in NETWORK_STATUS if words in str(error)), 400)
    return next(status for kind, status in ERROR_STATUS if isinstance(error, kind))


class Reply:
    """A handler's answer when a plain 200-with-JSON is not it."""

    def __init__(self, status: int = 200, value=None, body: bytes | None = None,
                 content_type: str = "application/json", headers: dict | None = None):
        self.status, self.value, self.body = status, value, body
        self.content_type, self.headers = content_type, headers


class Route:
    __slots__ = ("method", "pattern", "handler", "raw_body")

    def __init__(self, method, pattern, handler, raw_body):
        self.method, self.pattern, self.handler, self.raw_body = method, pattern, handler, raw_body


ROUTES: list[Route] = []


def route(method: str, path: str, raw_body: bool = False):
    """Register a handler for ``METHOD`` (or ``"GET|HEAD"``) and a path regex.

    ``raw_body``: the handler streams a large body itself (``request.body_stream``,
    e.g. a tar upload), so the 16 MiB cap on JSON bodies does not apply.
    """
    def register(handler):
        for one in method.split("|"):
            ROUTES.append(Route(one, re.compile(path + r"\Z"), handler, raw_body))
        return handler
    return register


# Docker Engine API endpoints minirtd knows but does not serve (yet): 501, not 404.
NOT_IMPLEMENTED = [(re.compile(m + r"\Z"), re.compile(p + r"\Z"), what) for m, p, what in [
    ("POST", r"/containers/[^/]+/(pause|unpause)", "pause or unpause a container"),
    ("GET", r"/containers/[^/]+/attach/ws", "attach over a websocket"),
    ("GET", r"/containers/[^/]+/(changes|export)", "a container's changes or filesystem"),
    ("POST", r"/containers/[^/]+/(rename|update)", "change a container's settings"),
    ("POST", r"/images/load", "load images from a tar"),
    ("GET", r"/images/(.+/)?get", "export images as a tar"),
    ("GET", r"/images/search", "search Docker Hub"),
    ("POST", r"/images/prune", "remove unused images"),
    ("POST", r"/build/(prune|cancel)", "prune or cancel builds"),
    ("GET", r"/distribution/.+/json", "ask a registry about an image"),
    ("POST", r"/session", "a BuildKit session"),
    ("POST", r"/networks/[^/]+/(connect|disconnect)",
     "connect a container to a second network (a minirt container is on one)"),
    ("[A-Z]+", r"/(volumes|swarm|services|nodes|tasks|secrets|configs|plugins)(/.*)?",
     "volumes, swarm and plugins"),
]]


class Daemon:
    """minirtd's state: the one Engine, the event bus, the request log. Called per request."""

    api_version = API_VERSION

    def __init__(self, engine, log):
        self.engine = engine
        self.events = EventBus()
        self.requests = log
        self.lock = threading.RLock()   # one change to the store or a container at a time
        self.warnings: list[str] = []   # shown by `docker info`
        self.started = time.time()
        self.address = None

    def headers(self) -> dict:
        """Sent with every response, as dockerd does."""
        return {"Api-Version": API_VERSION, "Docker-Experimental": "false", "Ostype": "linux"}

    def __call__(self, request) -> None:
        request.daemon = self
        path = unquote(request.raw_path)
        versioned = re.match(r"/v(\d+)\.(\d+)(/.*)\Z", path)
        if versioned:
            if len(versioned[1]) > 9 or len(versioned[2]) > 9:  # int() refuses 4300+ digits
                raise HTTPError(400, "client version is not an API version: more than 9 digits")
            request.api_version = f"{int(versioned[1])}.{int(versioned[2])}"
            wanted = (int(versioned[1]), int(versioned[2]))
            if wanted > version_tuple(API_VERSION):
                raise HTTPError(400, f"client version {request.api_version} is too new. Maximum "
                                f"supported API version is {API_VERSION}")
            if wanted < version_tuple(MIN_API_VERSION):
                raise HTTPError(400, f"client version {request.api_version} is too old. Minimum "
                                f"supported API version is {MIN_API_VERSION}, please upgrade "
                                "your client to a newer version")
            path = versioned[3]
        request.path = path.rstrip("/") or "/"
        found, params = None, {}
        for candidate in ROUTES:
            if candidate.method == request.method:
                matched = candidate.pattern.match(request.path)
                if matched:
                    found, params = candidate, matched.groupdict()
                    break
        if found is None or not found.raw_body:
            request.check_body_size()
        if found is None:
            for methods, pattern, what in NOT_IMPLEMENTED:
                if methods.match(request.method) and pattern.match(request.path):
                    raise HTTPError(501, f"minirtd does not implement {request.method} "
                                    f"{request.path} ({what}) yet: it serves part of the Docker "
                                    f"Engine API {API_VERSION}")
            raise HTTPError(404, f"page not found: {request.method} {request.path} is not an "
                            "endpoint of the Docker Engine API (nor a minirt extension)")
        if found.raw_body:
            request.max_body = None
        try:
            result = found.handler(request, **params)
        except MinirtError as e:
            raise HTTPError(status_for(e), str(e)) from e
        if request.responded:
            return
        if isinstance(result, Reply):
            if result.body is not None:
                request.send(result.status, result.body, result.content_type, result.headers)
            elif result.value is None:
                request.send(result.status, b"", None, result.headers)
            else:
                request.send_json(result.status, result.value, result.headers)
        elif result is None:
            request.send(204, b"", None)
        else:
            request.send_json(200, result)


def version_tuple(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


# --- small helpers ---------------------------------------------------------------------
def iso_time(seconds: float | None) -> str:
    """RFC 3339 with nanoseconds, UTC, as Go prints times; the zero time for None."""
    if not seconds:
        return "0001-01-01T00:00:00Z"
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + \
        f".{int(round((seconds - whole) * 1e9)):09d}Z"


def unix_time(text: str | None) -> int:
    """An image config's ``created`` (RFC 3339) as Unix seconds; 0 when absent or odd."""
    return int(seconds_of(text) or 0)


def seconds_of(value) -> float | None:
    """A time as Unix seconds: numbers as they are, RFC 3339 text parsed; None for
    nothing, Go's zero time or something unreadable."""
    if isinstance(value, (int, float)):
        return float(value) or None
    if not value or value.startswith("0001-"):
        return None
    from datetime import datetime
    cleaned = re.sub(r"(\.\d{1,6})\d*", r"\1", value.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(cleaned).timestamp()
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """Docker's (go-units) HumanDuration: "3 minutes", "About an hour", "2 days"."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def parse_filters(request) -> dict[str, list[str]]:
    """Docker's ``filters`` parameter: ``{"key": ["v", ...]}`` (or the older ``{"key": {"v": true}}``)."""
    text = request.arg("filters")
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: [[[[... nested too deeply
        raise HTTPError(400, f"invalid filter: {text!r} is not JSON") from None
    if not isinstance(raw, dict):
        raise HTTPError(400, f"invalid filter: {text!r} is not a JSON object")
    parsed = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            parsed[key] = [str(v) for v, on in value.items() if on]
        elif isinstance(value, list):
            parsed[key] = [str(v) for v in value]
        elif isinstance(value, str):
            parsed[key] = [value]
        else:
            raise HTTPError(400, f"invalid filter {key!r}: give a list of strings")
    return parsed


def parse_timestamp(text: str | None, name: str) -> int | None:
    """``since``/``until``: Unix seconds, optionally with a fraction (``1700000000.000000001``)."""
    if text in (None, ""):
        return None
    match = re.fullmatch(r"(\d+)(?:\.(\d{1,9}))?", text.strip())
    if not match:
        raise HTTPError(400, f"invalid {name} {text!r}: give Unix seconds, e.g. 1700000000.5")
    return int(match[1]) * 1_000_000_000 + int((match[2] or "0").ljust(9, "0"))


def storage_driver() -> str:
    """The root filesystem minirt gives containers here: an overlay (docker's overlay2) or a copy."""
    from ..runtime import rootfs
    storage = os.environ.get("MINIRT_STORAGE") or ("overlay" if rootfs.overlay_supported()
                                                   else "copy")
    return "overlay2" if storage == "overlay" else storage


# --- system ----------------------------------------------------------------------------
@route("GET|HEAD", r"/_ping")
def ping(request):
    """The first thing a client asks: is there a daemon, and which API version does it speak."""
    return Reply(200, body=b"OK", content_type="text/plain; charset=utf-8", headers={
        "Builder-Version": "1",  # the classic builder (POST /build), not BuildKit
        "Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"})


def _architecture() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@route("GET", r"/version")
def version(request):
    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
               "Arch": _architecture(), "KernelVersion": os.uname().release,
               "GitCommit": "", "GoVersion": f"python{platform.python_version()}",
               "BuildTime": "", "Experimental": "false"}
    return {"Platform": {"Name": f"minirt {__version__}"},
            "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
            "Version": __version__, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "", "GoVersion": details["GoVersion"], "Os": "linux",
            "Arch": _architecture(), "KernelVersion": os.uname().release, "BuildTime": ""}


def _os_release() -> tuple[str, str]:
    fields = {}
    try:
        with open("/etc/os-release") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                fields[key] = value.strip('"')
    except OSError:
        pass
    return fields.get("PRETTY_NAME", "Linux"), fields.get("VERSION_ID", "")


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


@route("GET", r"/info")
def info(request):
    """``docker info``: what this daemon holds and what machine it runs on."""
    import hashlib
    import socket
    daemon = request.daemon
    engine = daemon.engine
    with daemon.lock:
        engine.reap_stale()
        containers = engine.containers()
    running = sum(1 for c in containers if c["running"])
    try:
        cgroup_version = engine.cgroups.version
    except (MinirtError, OSError):
        cgroup_version = 0
    pretty, version_id = _os_release()
    name = socket.gethostname()
    digest = hashlib.sha256(f"{name}:{engine.root}".encode()).hexdigest().upper()
    security = ["name=cgroupns"] + (["name=rootless"] if os.geteuid() != 0 else [])
    limits_work = cgroup_version in (1, 2)
    return {
        "ID": ":".join(digest[i:i + 4] for i in range(0, 48, 4)),
        "Containers": len(containers), "ContainersRunning": running,
        "ContainersPaused": 0, "ContainersStopped": len(containers) - running,
        "Images": len(_image_groups(engine.images, include_cache=False)),
        "Driver": storage_driver(),
        "DriverStatus": [["Layers", os.path.join(engine.root, "layers")]],
        "DockerRootDir": engine.root,
        "Plugins": {"Volume": [], "Network": ["bridge", "host", "null"], "Authorization": None,
                    "Log": []},
        "MemoryLimit": limits_work, "SwapLimit": False, "KernelMemory": False,
        "KernelMemoryTCP": False, "CpuCfsPeriod": limits_work, "CpuCfsQuota": limits_work,
        "CPUShares": False, "CPUSet": False, "PidsLimit": limits_work, "OomKillDisable": False,
        "IPv4Forwarding": False, "BridgeNfIptables": False, "BridgeNfIp6tables": False,
        "Debug": False, "NFd": len(os.listdir("/proc/self/fd")),
        "NGoroutines": threading.active_count(), "SystemTime": iso_time(time.time()),
        "LoggingDriver": "none", "CgroupDriver": "cgroupfs" if cgroup_version else "none",
        # The host's hierarchy, as dockerd reports it, even when this daemon uses
        # none (rootless without a delegated subtree: CgroupDriver "none").
        "CgroupVersion": str(cgroup_version) if cgroup_version else (
            "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"),
        "NEventsListener": daemon.events.listeners,
        "KernelVersion": os.uname().release, "OperatingSystem": pretty, "OSVersion": version_id,
        "OSType": "linux", "Architecture": os.uname().machine,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": [],
                           "AllowNondistributableArtifactsHostnames": [],
                           "InsecureRegistryCIDRs": ["127.0.0.0/8"],
                           "IndexConfigs": {"docker.io": {"Name": "docker.io", "Mirrors": [],
                                                          "Secure": True, "Official": True}},
                           "Mirrors": []},
        "NCPU": os.cpu_count() or 1, "MemTotal": _mem_total(), "GenericResources": None,
        "HttpProxy": "", "HttpsProxy": "", "NoProxy": "", "Name": name, "Labels": [],
        "ExperimentalBuild": False, "ServerVersion": __version__,
        "Runtimes": {"minirt": {"path": "minirt"}}, "DefaultRuntime": "minirt",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                  "ControlAvailable": False, "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": False, "Isolation": "", "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""}, "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""}, "SecurityOptions": security,
        "Warnings": list(daemon.warnings),
    }


# --- images ----------------------------------------------------------------------------
def _image_groups(store, include_cache: bool) -> dict:
    """Image ID -> (one Image, [every tag naming it]); docker lists an image once, with all its tags."""
    from ..image.build import CACHE_REPOSITORY
    groups = {}
    for image in store.images():
        if not include_cache and image.name.startswith(CACHE_REPOSITORY + ":"):
            continue
        groups.setdefault(image.id, (image, []))[1].append(image)
    return groups


def _repo_digests(tagged) -> list[str]:
    """``name@manifest-digest`` per repository: the manifest's bytes are stored as they are."""
    found = []
    for image in tagged:
        entry = f"{image.name.rpartition(':')[0]}@{image.manifest_digest}"
        if entry not in found:
            found.append(entry)
    return found


def _image_size(image) -> int:
    """The bytes of the image's (compressed) layer blobs, as ``minirt images`` shows them."""
    return sum(layer.size for layer in image.layers)


def _users(containers, image_id: str) -> int:
    return sum(1 for c in containers if c.get("image_id") == image_id)


@route("GET", r"/images/json")
def images_list(request):
    """``docker images``: one entry per image ID, with every tag that names it."""
    engine = request.daemon.engine
    filters = parse_filters(request)
    groups = _image_groups(engine.images, include_cache=request.flag("all"))
    containers = engine.containers()
    wanted = filters.get("reference") or ([request.arg("filter")] if request.arg("filter") else [])
    listed = []
    for image_id, (image, tagged) in groups.items():
        tags = [t.name for t in tagged]
        if "dangling" in filters and filters["dangling"] != ["false"]:
            continue  # minirt keeps no untagged images: nothing is dangling
        if wanted and not any(_reference_matches(pattern, tag) for pattern in wanted
                              for tag in tags):
            continue
        labels = image.run_config.get("Labels") or {}
        if not _labels_match(labels, filters.get("label", [])):
            continue
        summary = {"Id": image_id, "ParentId": "", "RepoTags": tags,
                   "RepoDigests": _repo_digests(tagged),
                   "Created": unix_time(image.config.get("created")),
                   "Size": _image_size(image), "SharedSize": -1, "Labels": labels,
                   "Containers": _users(containers, image_id)}
        if request.api_version is None or version_tuple(request.api_version) < (1, 44):
            summary["VirtualSize"] = summary["Size"]  # removed in API 1.44
        listed.append(summary)
    return sorted(listed, key=lambda s: s["Created"], reverse=True)


def _reference_matches(pattern: str, tag: str) -> bool:
    """docker's ``reference`` filter: a glob on ``repo:tag``, or on the repository alone."""
    import fnmatch
    repository = tag.rpartition(":")[0]
    return fnmatch.fnmatchcase(tag, pattern) or fnmatch.fnmatchcase(repository, pattern)


def _labels_match(labels: dict, wanted: list[str]) -> bool:
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _resolve_image(engine, name: str):
    """``ImageStore.resolve``, failing in docker's words: clients look for "No such image"
    (docker-py turns only that 404 into ``ImageNotFound``, and pulls on it)."""
    try:
        return engine.images.resolve(name)
    except ImageNotFound:
        raise ImageNotFound(f"No such image: {name}") from None


def _find_image(engine, name: str):
    """The image ``name`` names, and every tag of that image ID."""
    image = _resolve_image(engine, name)
    tagged = [i for i in engine.images.images() if i.id == image.id]
    return image, tagged or [image]


def _container_config(run_config: dict, **overrides) -> dict:
    """Docker's container Config shape, filled from an image's (OCI) run config."""
    config = {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
              "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
              "StdinOnce": False, "Env": None, "Cmd": None, "Image": "", "Volumes": None,
              "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None}
    config.update(run_config)
    config.update(overrides)
    return config


@route("GET", r"/images/(?P<name>.+)/json")
def image_inspect(request, name):
    """``docker image inspect``: config, layers (RootFS) and where they are unpacked."""
    engine = request.daemon.engine
    image, tagged = _find_image(engine, name)
    size = _image_size(image)
    layer_dirs = [engine.images.layer_dir(layer.diff_id) for layer in reversed(image.layers)]
    found = {
        "Id": image.id, "RepoTags": [t.name for t in tagged], "RepoDigests": _repo_digests(tagged),
        "Parent": "", "Comment": image.config.get("comment", ""),
        "Created": image.config.get("created") or "1970-01-01T00:00:00Z",
        "DockerVersion": "", "Author": image.config.get("author", ""),
        "Config": _container_config(image.run_config),
        "Architecture": image.config.get("architecture", ""), "Os": image.config.get("os", ""),
        "Size": size,
        "GraphDriver": {"Name": storage_driver(), "Data": {"LowerDir": ":".join(layer_dirs)}},
        "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in image.layers]},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }
    if image.config.get("variant"):
        found["Variant"] = image.config["variant"]
    if request.api_version is None or version_tuple(request.api_version) < (1, 44):
        found["VirtualSize"] = size
        found["Container"] = ""
        found["ContainerConfig"] = _container_config({})
    return found


@route("POST", r"/images/(?P<name>.+)/tag")
def image_tag(request, name):
    """``docker tag SOURCE REPO[:TAG]``: one more name for the same manifest."""
    from ..image import reference
    repo, tag = request.arg("repo"), request.arg("tag") or "latest"
    if not repo:
        raise HTTPError(400, "repository name (repo) is required: POST /images/NAME/tag?repo=R&tag=T")
    target = reference.parse(f"{repo}:{tag}").familiar
    daemon = request.daemon
    with daemon.lock:
        image = _resolve_image(daemon.engine, name)
        daemon.engine.images.tag(target, image.manifest_digest)
    daemon.events.publish("image", "tag", image.id, {"name": target})
    return Reply(201)


@route("DELETE", r"/images/(?P<name>.+)")
def image_delete(request, name):
    """``docker rmi``: untag; delete what no image and no container uses any more."""
    daemon = request.daemon
    engine = daemon.engine
    force = request.flag("force")
    with daemon.lock:
        image, tagged = _find_image(engine, name)
        # By ID, every tag goes (docker asks for force when there are several);
        # by name, only that one.
        hexid = name.removeprefix("sha256:")
        by_id = bool(hexid) and image.id.removeprefix("sha256:").startswith(hexid) and \
            not any(name in (t.name, t.name.rpartition(":")[0]) for t in tagged)
        untag = tagged if by_id else [image]
        if by_id and len(tagged) > 1 and not force:
            raise HTTPError(409, f"conflict: unable to delete {image.id[7:19]} (must be forced) - "
                            f"image is referenced in multiple repositories: "
                            f"{', '.join(t.name for t in tagged)}")
        users = [c["name"] for c in engine.containers() if c.get("image_id") == image.id]
        last_name = len(untag) == len(tagged)
        if users and last_name and not force:
            raise HTTPError(409, f"conflict: unable to remove image {image.name}: it is used by "
                            f"container(s) {', '.join(users)} (remove them first, or force)")
        answer, removed = [], []
        for one in untag:
            removed += engine.remove_image(one.name, force=True)
            answer.append({"Untagged": one.name})
    for one in untag:
        daemon.events.publish("image", "untag", image.id, {"name": one.name})
    if image.id in removed:
        daemon.events.publish("image", "delete", image.id, {"name": image.name})
    answer += [{"Deleted": digest} for digest in
               sorted(removed, key=lambda d: d != image.id)]  # the image ID first, as docker
    return answer


# --- containers ------------------------------------------------------------------------
def _state_time(engine, container: dict) -> float | None:
    """When the container's state last changed (state.json's mtime): start or exit time."""
    try:
        return os.stat(os.path.join(engine.containers_dir, container["id"], "state.json")).st_mtime
    except OSError:
        return None


def _container_state(engine, c: dict) -> tuple[str, str, int]:
    """docker's State ("running", "exited", "created"), Status text, exit code."""
    state = c.get("state") or {}
    status = state.get("status", "created")
    changed = (seconds_of(state.get("started_at")) if c.get("running") else
               seconds_of(state.get("finished_at"))) or _state_time(engine, c)
    age = human_duration(time.time() - changed) if changed else ""
    code = state.get("exit_code")
    code = -1 if code is None else code  # unknown: its minirt run was killed (Engine.inspect's -1)
    if c.get("running"):
        return "running", f"Up {age}".strip(), 0
    if status in ("exited", "running", "stopped", "dead"):
        return "exited", f"Exited ({code}) {age} ago" if age else f"Exited ({code})", code
    return status, status.capitalize(), 0


def _mounts(c: dict) -> list[dict]:
    return [{"Type": "bind", "Source": v["source"], "Destination": v["target"],
             "Mode": "ro" if v.get("readonly") else "", "RW": not v.get("readonly"),
             "Propagation": "rprivate"} for v in c.get("volumes") or []]


def network_record(engine, c: dict) -> dict | None:
    """A running container's network as its sandbox recorded it (address, ports), or None."""
    if not c.get("running"):
        return None
    from ..network import sandbox
    return sandbox.load_record(os.path.join(engine.containers_dir, c["id"]))


def _port_summaries(record: dict | None) -> list[dict]:
    """docker ps's PORTS: each published port, as the proxy bound it (host port 0 resolved)."""
    return [{"IP": p["host_ip"], "PrivatePort": p["container_port"],
             "PublicPort": p["host_port"], "Type": p["protocol"]}
            for p in (record or {}).get("ports") or []]


def _container_summary(engine, c: dict) -> dict:
    state, status, _ = _container_state(engine, c)
    mode = c.get("network") or "none"
    record = network_record(engine, c)
    return {"Id": c["id"], "Names": ["/" + c["name"]], "Image": c.get("image", ""),
            "ImageID": c.get("image_id", ""), "Command": shlex.join(c.get("command") or []),
            "Created": int(c.get("created", 0)), "Ports": _port_summaries(record),
            "Labels": c.get("labels") or {}, "State": state, "Status": status,
            "HostConfig": {"NetworkMode": mode},
            "NetworkSettings": {"Networks": {mode: networks.endpoint_settings(mode, record)}},
            "Mounts": _mounts(c)}


def _container_matches(engine, c: dict, filters: dict) -> bool:
    state, _, code = _container_state(engine, c)
    for key, values in filters.items():
        if not values:
            continue
        if key == "id" and not any(c["id"].startswith(v) for v in values):
            return False
        if key == "name" and not any(re.search(v.lstrip("/"), c["name"]) for v in values):
            return False
        if key == "status" and state not in values:
            return False
        if key == "exited" and (state != "exited" or str(code) not in values):
            return False
        if key == "ancestor" and not any(
                v in (c.get("image"), c.get("image_id")) or
                (len(v) >= 4 and c.get("image_id", "").removeprefix("sha256:").startswith(
                    v.removeprefix("sha256:"))) or
                c.get("image", "").rpartition(":")[0] == v for v in values):
            return False
        if key == "label" and not _labels_match(c.get("labels") or {}, values):
            return False
        if key == "network" and not {c.get("network") or "none",
                                     networks.network_id(c.get("network") or "none")} & set(values):
            return False
    return True


@route("GET", r"/containers/json")
def containers_list(request):
    """``docker ps [-a]``: running containers, or all of them, newest first."""
    daemon = request.daemon
    engine = daemon.engine
    filters = parse_filters(request)
    show_all = request.flag("all")
    limit = request.int_arg("limit", -1)
    with daemon.lock:
        engine.reap_stale()
        everything = engine.containers()
    from .. import seams  # a seam (exercises/08-engine-api): a student's answer, when wired
    student = seams.replaceable("list_containers", None)
    if student is not None:
        return student(everything, request.query)
    everything.sort(key=lambda c: c.get("created", 0), reverse=True)
    if limit and limit > 0:
        show_all = True
    chosen = [c for c in everything if (show_all or c["running"] or "status" in filters)
              and _container_matches(engine, c, filters)]
    if limit and limit > 0:
        chosen = chosen[:limit]
    return [_container_summary(engine, c) for c in chosen]


def _find_container(engine, ref: str) -> dict:
    """``Engine.find_container`` (docker's "/name" accepted), in docker's words when missing."""
    try:
        return engine.find_container(ref.lstrip("/"))
    except ContainerNotFound as e:
        if "matches" in str(e):
            raise
        raise ContainerNotFound(f"No such container: {ref}") from None


@route("DELETE", r"/containers/(?P<ref>[^/]+)")
def container_delete(request, ref):
    """``docker rm [-f]``: a running container is refused (409) unless forced."""
    daemon = request.daemon
    with daemon.lock:
        c = _find_container(daemon.engine, ref)
        daemon.engine.remove_container(c["id"], force=request.flag("force"))
    daemon.events.publish("container", "destroy", c["id"],
                          {"name": c["name"], "image": c.get("image", "")})
    return None


@route("POST", r"/commit")
def commit(request):
    """``docker commit``: a container's changes become a new layer of a new image."""
    config = request.json(default={})  # read first: a malformed body is a 400 whatever else
    if not isinstance(config, dict):
        raise HTTPError(400, "the request body must be a JSON object (a container Config)")
    ref, repo = request.arg("container"), request.arg("repo")
    if not ref:
        raise HTTPError(400, "which container? give container=NAME")
    if not repo:
        raise HTTPError(400, "minirt keeps no untagged images: give repo=NAME (and tag=TAG)")
    changes = list(request.query.get("changes", []))
    for key, keyword in (("Cmd", "CMD"), ("Entrypoint", "ENTRYPOINT")):
        if isinstance(config.get(key), list):
            changes.append(f"{keyword} {json.dumps(config[key])}")
    changes += [f"ENV {e}" for e in config.get("Env") or [] if isinstance(e, str) and "=" in e]
    changes += [f"LABEL {k}={v}" for k, v in (config.get("Labels") or {}).items()]
    if config.get("WorkingDir"):
        changes.append(f"WORKDIR {config['WorkingDir']}")
    if config.get("User"):
        changes.append(f"USER {config['User']}")
    daemon = request.daemon
    with daemon.lock:
        c = _find_container(daemon.engine, ref)
        image = daemon.engine.commit(c["id"], f"{repo}:{request.arg('tag') or 'latest'}",
                                     changes, request.arg("comment") or "")
    daemon.events.publish("container", "commit", c["id"],
                          {"name": c["name"], "image": c.get("image", ""),
                           "comment": request.arg("comment") or ""})
    return Reply(201, {"Id": image.id})


# --- events ----------------------------------------------------------------------------
@route("GET", r"/events")
def events(request):
    """``docker events``: replay since ``since``, then stream until ``until`` (or forever)."""
    since = parse_timestamp(request.arg("since"), "since")
    until = parse_timestamp(request.arg("until"), "until")
    filters = parse_filters(request)
    bus = request.daemon.events
    past, serial = bus.replay(since)
    bus.listeners += 1
    try:
        with request.json_stream() as stream:
            for event in past:
                if (until is None or event["timeNano"] <= until) and matches(event, filters):
                    stream.send(event)
            while not bus.closed and (until is None or time.time_ns() < until):
                wait = 0.5 if until is None else max(0.0, min(0.5, (until - time.time_ns()) / 1e9))
                fresh, serial = bus.wait(serial, wait)
                for event in fresh:
                    if until is not None and event["timeNano"] > until:
                        return
                    if matches(event, filters):
                        stream.send(event)
                if request.client_gone():
                    return
    finally:
        bus.listeners -= 1


# --- minirt extensions (not Docker's): for the notebooks ----------------------------------
@route("GET", r"/minirt/requests")
def requests_log(request):
    """minirt extension: the daemon's recent requests, oldest first (``?since=ID`` for newer)."""
    return request.daemon.requests.since(request.int_arg("since", 0))


@route("POST", r"/minirt/echo")
def echo(request):
    """minirt extension: hijack the connection and echo every byte back until EOF.

    The smallest example of what ``docker attach`` does with its connection
    (and the test of ``Request.hijack``).
    """
    raw = request.hijack()
    while True:
        data = raw.read()
        if not data:
            break
        raw.write(data)
    raw.close_write()


from . import images  # noqa: E402,F401  (registers pull, push, auth, build, history, df)
from . import containers  # noqa: E402,F401  (create, start, attach, wait, logs, stop, ...)
from . import archive, stats  # noqa: E402,F401  (docker cp, docker stats)
from . import networks  # noqa: E402,F401  (docker network create, ls, inspect, rm, prune)
from . import exec as exec_endpoints  # noqa: E402,F401  (docker exec; not shadowing exec())
