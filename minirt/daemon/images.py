"""minirtd's image endpoints that talk to registries or build: pull, push, login, build.

Docker concept: ``docker pull``, ``push``, ``login`` and ``build`` do nothing
themselves. The CLI asks the daemon, and the daemon talks to the registry or
runs the build; what the CLI prints is the daemon's *progress stream*: one JSON
object per line, over a chunked response, that the CLI turns into bars::

    {"status": "Pulling from lab/app", "id": "1"}
    {"status": "Downloading", "progressDetail": {"current": 1048576, "total": 3145728},
     "progress": "[================>        ]  1.049MB/3.146MB", "id": "9b2f1c0e7a41"}
    {"status": "Pull complete", "id": "9b2f1c0e7a41"}
    {"status": "Digest: sha256:..."}
    {"status": "Status: Downloaded newer image for 127.0.0.1:5000/lab/app:1"}

A build streams ``{"stream": "Step 1/3 : FROM busybox\\n"}`` lines instead.
The HTTP status (200) is sent with the first line, so an error that comes
later cannot change it: it arrives as one more line,
``{"error": "...", "errorDetail": {"message": "..."}}``, which is how the docker
CLI and docker-py learn that a pull failed. An error before the first line
(a bad name, no such local image, a registry nobody answers on) is an ordinary
error response with its status code, as dockerd does; a pull says its first
line only once it has the manifest, so an unknown tag is a 404 and a refused
login a 401 that clients raise as errors.

Credentials: the daemon keeps none of the client's. ``docker login`` asks
``POST /auth`` to check them and stores them on the *client's* side
(``~/.docker/config.json``); every later pull or push sends them along, in
the ``X-Registry-Auth`` header (base64url of ``{"username", "password",
"serveraddress"}``), for that one request. A request without them falls back
to the login ``minirt login`` stored for the daemon's user (as ``minirt pull`` does).

Endpoints (Docker Engine API v1.43): ``POST /images/create`` (pull),
``POST /images/{name}/push``, ``POST /auth``, ``POST /build`` (the classic
builder: the body is a tar of the build context), ``GET /images/{name}/history``
and ``GET /system/df``.
"""

import base64
import binascii
import json
import os
import re
import sys
import tempfile
import threading
import time
import traceback

from ..errors import ImageError, ImageNotFound, MinirtError, RegistryError
from ..registry.progress import LayerProgress, Progress, short
from .api import HTTPError, _find_image, _image_groups, _image_size, _users, route, unix_time

# A build context bigger than this (bytes, as sent) gets 413; MINIRT_MAX_BUILD_CONTEXT overrides.
MAX_BUILD_CONTEXT = 1 << 30
PROGRESS_INTERVAL = 0.1   # seconds: at most this often a "Downloading" line per layer
BAR_WIDTH = 50            # the width of docker's progress bar, in characters


def max_build_context() -> int:
    return int(os.environ.get("MINIRT_MAX_BUILD_CONTEXT", MAX_BUILD_CONTEXT))


# --- the progress stream -----------------------------------------------------------------
class LazyStream:
    """A JSON-lines response started by its first line (so errors before it keep their
    status code), and safe to write from several threads (pull downloads in parallel)."""

    def __init__(self, request):
        self.request = request
        self.stream = None
        self.lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self.stream is not None

    def send(self, value: dict) -> None:
        with self.lock:
            if self.stream is None:
                self.stream = self.request.json_stream()
            self.stream.send(value)

    def fail(self, message: str) -> None:
        """An error after the first line: as docker sends it, then the end of the stream."""
        self.send({"errorDetail": {"message": message}, "error": message})
        self.close()

    def close(self) -> None:
        with self.lock:
            if self.stream is None:
                self.stream = self.request.json_stream()
            self.stream.close()


def streamed(request, work) -> None:
    """Run ``work(stream)``; an error becomes a status code before the first line, and
    an ``{"error": ...}`` line after it. A client that went away just ends it."""
    stream = LazyStream(request)
    try:
        work(stream)
    except (BrokenPipeError, ConnectionResetError):
        raise
    except (HTTPError, MinirtError) as e:
        if not stream.started:
            raise
        stream.fail(e.message if isinstance(e, HTTPError) else str(e))
        return
    except Exception as e:
        if not stream.started:
            raise
        traceback.print_exc(file=sys.stderr)
        stream.fail(f"minirtd internal error: {type(e).__name__}: {e}")
        return
    stream.close()


def human_size(size: float) -> str:
    """docker's (go-units) HumanSize: decimal units, 4 significant digits: ``1.049MB``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.4g}{unit}"
        size /= 1000
    return f"{size:.4g}TB"


def progress_bar(current: int, total: int) -> str:
    """The text docker puts in ``progress``: ``[=====>      ]  1.049MB/3.146MB``."""
    if total <= 0:
        return f"{human_size(current):>8}"
    filled = min(BAR_WIDTH, int(current * BAR_WIDTH / total))
    arrow = ">" if filled < BAR_WIDTH else "="
    bar = "=" * filled + arrow + " " * max(0, BAR_WIDTH - filled - 1)
    return f"[{bar[:BAR_WIDTH]}] {human_size(current):>8}/{human_size(total)}"


class JSONProgress(Progress):
    """minirt.registry's progress calls as docker's JSON progress messages on a stream.

    Download threads call ``layer(...).update`` concurrently: the stream's lock
    keeps lines whole, and each layer sends a ``Downloading`` line at most every
    ``PROGRESS_INTERVAL`` seconds (and at its last byte), however small its chunks.
    A write that fails (the client went away) raises in the download thread,
    which stops the pull, as Ctrl-C on ``docker pull`` does.
    """

    def __init__(self, stream: LazyStream, announced: str | None = None):
        self.stream = stream
        self.announced = announced   # a line the handler already sent: not again
        self.pending = None          # "Pulling from": held until the manifest is in

    def _flush(self) -> None:
        if self.pending is not None:
            line, self.pending = self.pending, None
            self.stream.send(line)

    def message(self, text: str) -> None:
        if text == self.announced:
            return
        where, sep, what = text.partition(": ")
        if sep and what.startswith("Pulling from "):   # "TAG: Pulling from REPO"
            # Held back, as dockerd says it only once it has the manifest: an unknown
            # tag or a refused login is then still an error response with its status.
            self.pending = {"status": what, "id": where}
            return
        self._flush()
        self.stream.send({"status": text})

    def done(self, digest: str, status: str) -> None:
        self._flush()
        self.stream.send({"status": status, "id": short(digest)})

    def layer(self, digest: str, total: int, action: str) -> LayerProgress:
        self._flush()
        if action == "Downloading":
            self.stream.send({"status": "Pulling fs layer", "id": short(digest)})
        return JSONLayer(self.stream, short(digest), total, action)


class JSONLayer(LayerProgress):
    def __init__(self, stream: LazyStream, id: str, total: int, action: str):
        self.stream, self.id, self.total, self.action = stream, id, total, action
        self.current = 0
        self.last = 0.0

    def update(self, nbytes: int) -> None:
        self.current += nbytes
        now = time.monotonic()
        if now - self.last >= PROGRESS_INTERVAL or self.current >= self.total:
            self.last = now
            self.stream.send({"status": self.action,
                              "progressDetail": {"current": self.current, "total": self.total},
                              "progress": progress_bar(self.current, self.total), "id": self.id})

    def close(self, status: str) -> None:
        if status != "Failed":  # the error itself follows as the stream's last line
            self.stream.send({"status": status, "progressDetail": {}, "id": self.id})


# --- credentials from the client -------------------------------------------------------
def _auth_config_credentials(config: dict):
    """An AuthConfig (``username``/``password``, ``auth``, or ``identitytoken``) -> Credentials."""
    from ..registry.auth import Credentials
    if config.get("identitytoken"):
        # A refresh token from an earlier login: sent to the token server as the
        # password of the user "<token>", as docker's credential helpers store it.
        return Credentials("<token>", str(config["identitytoken"]))
    if config.get("username"):
        return Credentials(str(config["username"]), str(config.get("password") or ""))
    if config.get("auth"):
        try:
            user, _, password = base64.b64decode(config["auth"]).decode().partition(":")
        except (ValueError, binascii.Error):
            raise HTTPError(400, "invalid auth in the registry credentials: not base64 of "
                            "user:password") from None
        return Credentials(user, password) if user else None
    return None


def registry_credentials(request):
    """This request's registry login, from ``X-Registry-Auth`` (None when absent or empty)."""
    header = (request.headers.get("X-Registry-Auth") or "").strip()
    if not header:
        return None
    try:
        config = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise HTTPError(400, "invalid X-Registry-Auth header: it must be base64url-encoded "
                        "JSON ({\"username\", \"password\", \"serveraddress\"})") from None
    if not isinstance(config, dict):
        raise HTTPError(400, "invalid X-Registry-Auth header: not a JSON object")
    return _auth_config_credentials(config)


def _parse_reference(text: str):
    from ..image import reference
    try:
        return reference.parse(text)
    except MinirtError as e:
        raise HTTPError(400, f"invalid reference format: {e}") from None


# --- pull ---------------------------------------------------------------------------------
@route("POST", r"/images/create")
def image_create(request):
    """``docker pull NAME[:TAG]``: fetch an image from its registry, streaming progress."""
    if request.arg("fromSrc") is not None:
        raise HTTPError(501, "minirtd does not implement importing an image from a tar "
                        "(fromSrc) yet: use `minirt import FILE NAME` on this machine")
    name, tag = request.arg("fromImage") or "", request.arg("tag") or ""
    if not name:
        raise HTTPError(400, "which image? give fromImage=NAME (and tag=TAG)")
    if tag:
        name = f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"
    ref = _parse_reference(name)
    if ref.tag is None and ref.digest is None:
        ref = _parse_reference(f"{name}:latest")
    full = ref.familiar
    credentials = registry_credentials(request)
    daemon = request.daemon
    store = daemon.engine.images
    try:
        before = store.resolve(full).manifest_digest
    except MinirtError:
        before = None

    def work(stream):
        try:
            daemon.engine.pull(full, JSONProgress(stream), credentials=credentials)
        except RegistryError as e:
            # The registry's own error codes for "no such tag or repository" (distribution
            # spec): a 404, as dockerd answers, so clients raise their NotFound.
            if not stream.started and re.search(r"\((MANIFEST|NAME)_UNKNOWN\)", str(e)):
                raise HTTPError(404, str(e)) from None
            raise
        after = store.resolve(full)
        if after.manifest_digest == before:
            stream.send({"status": f"Status: Image is up to date for {full}"})
        else:
            stream.send({"status": f"Status: Downloaded newer image for {full}"})
        daemon.events.publish("image", "pull", full, {"name": full})

    streamed(request, work)


# --- push ---------------------------------------------------------------------------------
@route("POST", r"/images/(?P<name>.+)/push")
def image_push(request, name):
    """``docker push NAME[:TAG]``: send a local image's blobs and manifest to its registry.

    Without a tag, every local tag of the repository is pushed, as dockerd does.
    """
    tag = request.arg("tag") or ""
    ref = _parse_reference(f"{name}:{tag}" if tag else name)
    store = request.daemon.engine.images
    if tag or ":" in name.rpartition("/")[2]:
        names = [ref.familiar]
    else:
        names = [i.name for i in store.images()
                 if i.name.rpartition(":")[0] == ref.familiar.rpartition(":")[0]]
    if not names:
        raise ImageNotFound(f"An image does not exist locally with the tag: {name}")
    for one in names:
        try:
            store.resolve(one)
        except ImageNotFound:
            raise ImageNotFound(f"An image does not exist locally with the tag: {one}") from None
    credentials = registry_credentials(request)
    daemon = request.daemon
    # Said before the registry is contacted (as dockerd does): from here on a refused
    # login or a registry that does not answer is a line in the stream.
    announced = f"The push refers to repository [{ref.name}]"

    def work(stream):
        stream.send({"status": announced})
        for one in names:
            result = daemon.engine.push(one, JSONProgress(stream, announced),
                                        credentials=credentials)
            image = store.resolve(one)
            size = os.path.getsize(store.blob_path(image.manifest_digest))
            stream.send({"progressDetail": {}, "aux": {"Tag": one.rpartition(":")[2],
                                                       "Digest": result.digest, "Size": size}})
            daemon.events.publish("image", "push", one, {"name": one})

    streamed(request, work)


# --- login --------------------------------------------------------------------------------
def registry_host(address: str) -> str:
    """``serveraddress`` as docker sends it -> the registry's host[:port]."""
    from ..registry.client import DOCKER_HUB
    host = address.strip()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.split("/", 1)[0]
    if host in ("", "index.docker.io", "registry-1.docker.io", "docker.io"):
        return DOCKER_HUB
    return host


@route("POST", r"/auth")
def auth(request):
    """``docker login``: check the credentials against the registry's ``/v2/``.

    Nothing is stored here: the client keeps the login and sends it with each
    pull and push (``X-Registry-Auth``).
    """
    from ..errors import AuthError, RegistryError
    from ..registry.client import Registry
    config = request.json(default={})
    if not isinstance(config, dict):
        raise HTTPError(400, "the request body must be a JSON object (an AuthConfig)")
    credentials = _auth_config_credentials(config)
    if credentials is None:
        raise HTTPError(400, "no credentials given: send username and password")
    server = registry_host(str(config.get("serveraddress") or ""))
    try:
        with Registry(server, credentials=credentials) as registry:
            registry.ping()
    except AuthError as e:
        raise HTTPError(401, f"login attempt to {server} failed: {e}") from None
    except RegistryError as e:
        raise HTTPError(500, f"login to {server}: {e}") from None
    return {"Status": "Login Succeeded", "IdentityToken": ""}


# --- build --------------------------------------------------------------------------------
def _json_param(request, name: str) -> dict:
    text = request.arg(name)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise HTTPError(400, f"invalid {name}: {text!r} is not JSON") from None
    if not isinstance(value, dict):
        raise HTTPError(400, f"invalid {name}: give a JSON object")
    return value


class TarEnd:
    """A tar stream, given the end a tar should have when the sender left it off.

    ``docker build -f- DIR`` appends the Dockerfile to the context tar (moby's
    ``ReplaceFileTarWrapper``) and stops right after its bytes: no zero padding
    to the 512-byte block, no two empty end blocks. Go's tar reader takes that;
    Python's ``tarfile`` wants the blocks, so they are supplied here, once the
    body has really ended.
    """

    def __init__(self, raw):
        self.raw, self.seen, self.tail = raw, 0, None

    def read(self, n: int = -1) -> bytes:
        if self.tail is None:
            data = self.raw.read(n)
            if data or n == 0:
                self.seen += len(data)
                return data
            self.tail = b"\0" * ((-self.seen) % 512 + 1024)
        n = len(self.tail) if n is None or n < 0 else n
        data, self.tail = self.tail[:n], self.tail[n:]
        return data


def receive_context(request, directory: str) -> None:
    """Unpack the request body (a tar, maybe gzipped) into ``directory``.

    minirt's layer unpacker does it: it refuses members that are absolute or
    climb out with ``..``, never follows a symlink the tar itself made, and
    skips device files, so a hostile context cannot write outside ``directory``.
    """
    from ..image import layer
    cap = max_build_context()
    body = TarEnd(request.body_reader(cap))
    try:
        layer.unpack(body, directory, max_bytes=4 * cap)
    except ImageError as e:
        text = str(e).replace("in layer", "in the build context").replace("layer ", "")
        raise HTTPError(400, f"build context refused: {text}") from None


@route("POST", r"/build", raw_body=True)
def build(request):
    """``docker build`` (classic builder): the body is the build context as a tar.

    Query: ``t`` (repeatable), ``dockerfile`` (its path in the context),
    ``nocache``, ``q``; ``rm``/``forcerm`` are what minirt always does (a build
    container is removed after its step). ``buildargs`` are accepted and
    reported unused: minirt's Dockerfile subset has no ARG.
    """
    from ..image import build as builder
    from ..paths import remove_tree
    if request.arg("remote"):
        raise HTTPError(501, "minirtd does not build from a remote (git or URL) context: send "
                        "the context as the request body")
    if request.arg("target"):
        raise HTTPError(501, "minirtd does not build multi-stage Dockerfiles, so there is no "
                        "--target stage to stop at")
    if _json_param(request, "labels"):
        raise HTTPError(501, "minirtd does not implement build labels (labels=); use LABEL in "
                        "the Dockerfile")
    build_args = _json_param(request, "buildargs")
    tags = [t for t in request.query.get("t", []) if t]
    refs = [_parse_reference(t if ":" in t.rpartition("/")[2] else f"{t}:latest").familiar
            for t in tags]
    quiet = request.flag("q")
    daemon = request.daemon
    engine = daemon.engine
    os.makedirs(engine.root, exist_ok=True)
    context = tempfile.mkdtemp(prefix="minirt-build-context-", dir=engine.root)
    try:
        receive_context(request, context)
        dockerfile = os.path.normpath(os.path.join(context, request.arg("dockerfile") or
                                                   "Dockerfile"))
        real = os.path.realpath(dockerfile)
        if not real.startswith(os.path.realpath(context) + os.sep):
            raise HTTPError(400, f"the Dockerfile {request.arg('dockerfile')!r} is outside the "
                            "build context")
        if not os.path.isfile(real):
            raise HTTPError(400, "Cannot locate specified Dockerfile: "
                            f"{request.arg('dockerfile') or 'Dockerfile'}")

        def work(stream):
            held = []   # "Successfully built/tagged": sent after aux, as dockerd orders them

            def line(text: str) -> None:
                if held or text.startswith("Successfully built "):
                    held.append(text)
                elif not quiet:
                    stream.send({"stream": text + "\n"})

            result = builder.build(engine, context, real, refs[0] if refs else None,
                                   no_cache=request.flag("nocache"), progress=line)
            for extra in refs[1:]:
                engine.images.tag(extra, result.image.manifest_digest)
                held.append(f"Successfully tagged {engine.images.resolve(extra).name}")
            if build_args:
                stream.send({"stream": "[Warning] One or more build-args "
                             f"[{' '.join(sorted(build_args))}] were not consumed (minirt "
                             "build has no ARG)\n"})
            stream.send({"aux": {"ID": result.id}})
            if quiet:
                stream.send({"stream": result.id + "\n"})
            else:
                for text in held:
                    stream.send({"stream": text + "\n"})
            for ref in refs:
                daemon.events.publish("image", "tag", result.id, {"name": ref})

        streamed(request, work)
    finally:
        remove_tree(context)


# --- history and disk usage ---------------------------------------------------------------
@route("GET", r"/images/(?P<name>.+)/history")
def image_history(request, name):
    """``docker history``: one entry per history step of the image's config, newest first.

    Steps that made a layer get that layer's size; config-only steps
    (``empty_layer``) are 0 bytes. Only the newest has an ID (the image's):
    the earlier steps' images are not stored separately, as for a pulled image
    in docker (``<missing>``).
    """
    image, tagged = _find_image(request.daemon.engine, name)
    history = image.config.get("history") or \
        [{"created": image.config.get("created"), "created_by": ""} for _ in image.layers]
    layers = list(image.layers)
    entries = []
    for step in history:
        size = 0
        if not step.get("empty_layer") and layers:
            size = layers.pop(0).size
        entries.append({"Id": "<missing>", "Created": unix_time(step.get("created")),
                        "CreatedBy": step.get("created_by", ""), "Tags": None, "Size": size,
                        "Comment": step.get("comment", "")})
    entries.reverse()
    if entries:
        from ..image.build import CACHE_REPOSITORY, RUN_VIEW_REPOSITORY
        entries[0]["Id"] = image.id
        entries[0]["Tags"] = [t.name for t in tagged if t.name.split(":", 1)[0] not in
                              (CACHE_REPOSITORY, RUN_VIEW_REPOSITORY)]
    return entries


@route("GET", r"/system/df")
def system_df(request):
    """``docker system df``: the bytes images take, and which of them are shared.

    Sizes are those of the (compressed) layer blobs, as ``docker images`` shows
    them here; containers' writable layers are not measured (0).
    """
    engine = request.daemon.engine
    groups = _image_groups(engine.images, include_cache=False)
    containers = engine.containers()
    holders: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for image, _ in groups.values():
        for layer in {layer.digest: layer for layer in image.layers}.values():
            holders[layer.digest] = holders.get(layer.digest, 0) + 1
            sizes[layer.digest] = layer.size
    images = []
    for image_id, (image, tagged) in groups.items():
        digests = {layer.digest for layer in image.layers}
        images.append({
            "Id": image_id, "ParentId": "", "RepoTags": [t.name for t in tagged],
            "RepoDigests": [], "Created": unix_time(image.config.get("created")),
            "Size": _image_size(image), "VirtualSize": _image_size(image),
            "SharedSize": sum(sizes[d] for d in digests if holders[d] > 1),
            "Labels": image.run_config.get("Labels") or {},
            "Containers": _users(containers, image_id)})
    listed = [{"Id": c["id"], "Names": ["/" + c["name"]], "Image": c.get("image", ""),
               "ImageID": c.get("image_id", ""), "Command": " ".join(c.get("command") or []),
               "Created": int(c.get("created", 0)), "Mounts": [], "Labels": c.get("labels") or {},
               "State": "running" if c.get("running") else "exited",
               "Status": "Up" if c.get("running") else "Exited", "SizeRw": 0, "SizeRootFs": 0}
              for c in containers]
    return {"LayersSize": sum(sizes.values()), "Images": images, "Containers": listed,
            "Volumes": [], "BuildCache": []}
