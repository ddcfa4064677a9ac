"""``docker pull``: fetch an image's manifest, config and layers into the local store.

The steps, each visible in the code below:

1. parse the name: ``busybox`` = ``docker.io/library/busybox:latest`` (reference.py);
2. ``GET /v2/`` to say hello and log in if the registry asks (client.py, auth.py);
3. ``GET`` the manifest by tag or digest, accepting an index too; an index
   (several platforms) is followed to this machine's manifest (platform.py);
4. fetch the config and every layer not already in the store, a few at a time,
   each into a hidden temp file that becomes a blob only once its sha256 and
   size match the manifest: a lying or truncated blob is never stored;
5. only then write the manifest and the tag: until that moment the image does
   not exist, so an error or Ctrl-C leaves the store's images as they were.
   Blobs already verified stay (content-addressed, untagged) and the next pull
   reuses them: an interrupted pull resumes where it was.

Layers are unpacked when a container first needs them (ImageStore.ensure_unpacked,
which checks each diff_id), not here.
"""

import hashlib
import json
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from ..errors import ImageError, RegistryError
from ..image import platform, reference
from ..image.archive import CONFIG_TYPES, INDEX_TYPES, LAYER_TYPES, MANIFEST_TYPES
from ..image.store import BlobWriter, Image, ImageStore, disk_full
from ..record import Record
from . import auth, sources
from .client import Registry
from .progress import Progress, short

# What we can read, best first: the registry picks one it has.
ACCEPT = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
]
MAX_CONFIG_BYTES = 8 << 20
CHUNK = 1 << 20
PARALLEL_DOWNLOADS = 3        # as dockerd's max-concurrent-downloads


class PullResult(Record):
    """What a pull did: the image, and how many bytes came over the wire vs were reused."""

    __slots__ = ("image", "reference", "digest", "fetched_bytes", "reused_bytes",
                 "fetched_layers", "reused_layers")

    def __init__(self, image: Image, reference: str, digest: str):
        self.image = image
        self.reference = reference      # the full reference pulled
        self.digest = digest            # the manifest's digest (docker's "Digest:")
        self.fetched_bytes = 0
        self.reused_bytes = 0
        self.fetched_layers: list[str] = []
        self.reused_layers: list[str] = []


class Cancelled(Exception):
    """A download thread stops because the pull was interrupted."""


def pull(store: ImageStore, name: str, progress: Progress | None = None,
         parallel: int = PARALLEL_DOWNLOADS,
         credentials: auth.Credentials | None = None) -> PullResult:
    """Pull ``name`` (``NAME[:TAG|@DIGEST]``) into ``store``; return what happened.

    ``credentials``: the login for this pull only (the daemon gets them from its
    client); None uses the one ``minirt login`` stored, if any.
    """
    ref = reference.parse(name)
    with disk_full(store, f"pulling {ref.familiar}"):
        return _pull(store, ref, progress or Progress(), parallel, credentials)


def _pull(store: ImageStore, ref, progress: Progress, parallel: int,
          credentials: auth.Credentials | None) -> PullResult:
    store.ensure_layout()
    with Registry(ref.registry, [auth.scope(ref.repository, "pull")], credentials) as registry:
        registry.ping()
        progress.message(f"{ref.digest or ref.tag}: Pulling from {ref.repository}")
        data, media_type, digest = registry.manifest(ref.repository, ref.digest or ref.tag, ACCEPT)
        data, media_type, digest = platform_manifest(registry, ref, data, media_type, digest)
        manifest = parse_manifest(data, media_type, f"{ref.familiar}")
        config_bytes = fetch_config(registry, ref.repository, manifest["config"])
        layers = manifest["layers"]
        check_config(config_bytes, len(layers), ref.familiar)

        result = PullResult(None, str(ref), digest)
        missing = []
        for layer in layers:
            if store.has_blob(layer["digest"]):
                progress.done(layer["digest"], "Already exists")
                result.reused_bytes += layer["size"]
                result.reused_layers.append(layer["digest"])
            elif layer["digest"] not in (m["digest"] for m in missing):
                missing.append(layer)
        fetch_layers(store, registry, ref.repository, missing, progress, parallel)
        result.fetched_bytes = sum(layer["size"] for layer in missing)
        result.fetched_layers = [layer["digest"] for layer in missing]

    # Every blob is in and checked: now the image appears, in one step.
    store.write_blob(config_bytes)
    if store.write_blob(data) != digest:
        raise ImageError("internal error: the manifest's digest changed on the way to disk")
    store.tag(ref.familiar, digest, media_type)
    sources.remember(store, [manifest["config"]["digest"]] + [l["digest"] for l in layers],
                     ref.name)
    result.image = store.resolve(ref.familiar)
    progress.message(f"Digest: {digest}")
    return result


def platform_manifest(registry: Registry, ref, data: bytes, media_type: str, digest: str,
                      depth: int = 0):
    """Follow an index (manifest list) to the manifest for this machine's platform."""
    document = _json(data, f"the manifest of {ref.familiar}")
    media_type = media_type if media_type in MANIFEST_TYPES | INDEX_TYPES else \
        document.get("mediaType") or media_type
    if media_type not in INDEX_TYPES and "manifests" not in document:
        return data, media_type, digest
    if depth > 1:
        raise ImageError(f"{ref.familiar}: an index inside an index inside an index: refused")
    entry = platform.choose(document)
    if entry is None:
        raise ImageError(f"{ref.familiar} has no image for linux/{platform.oci_architecture()}, "
                         f"the platform of this machine (it offers: "
                         f"{platform.describe(document.get('manifests') or [])})")
    data, media_type, child = registry.manifest(ref.repository, entry["digest"], ACCEPT)
    return platform_manifest(registry, ref, data, media_type, child, depth + 1)


def parse_manifest(data: bytes, media_type: str, where: str) -> dict:
    """The manifest, checked for what a pull relies on."""
    manifest = _json(data, f"the manifest of {where}")
    if manifest.get("schemaVersion") == 1:
        raise ImageError(f"{where} has a schema 1 manifest (Docker before 2016): not supported")
    if media_type not in MANIFEST_TYPES:
        raise ImageError(f"{where}: unexpected manifest media type {media_type!r}")
    config = manifest.get("config")
    if not isinstance(config, dict) or config.get("mediaType", "") not in CONFIG_TYPES:
        raise ImageError(f"{where} is not a container image (config type "
                         f"{(config or {}).get('mediaType')!r}; a Helm chart or other artifact?)")
    for layer in manifest.get("layers") or []:
        if layer.get("mediaType") not in LAYER_TYPES:
            raise ImageError(f"{where}: layer {short(str(layer.get('digest')))} has media type "
                             f"{layer.get('mediaType')!r}; minirt reads tar and tar+gzip layers")
        if not isinstance(layer.get("size"), int) or layer["size"] < 0:
            raise ImageError(f"{where}: layer {short(str(layer.get('digest')))} has no valid size")
    manifest.setdefault("layers", [])
    return manifest


def fetch_config(registry: Registry, repository: str, descriptor: dict) -> bytes:
    if descriptor.get("size", 0) > MAX_CONFIG_BYTES:
        raise ImageError(f"the image config is {descriptor['size']} bytes: refused")
    from .client import read_capped
    answer = registry.open_blob(repository, descriptor["digest"])
    data = read_capped(answer, MAX_CONFIG_BYTES, "the image config")
    if "sha256:" + hashlib.sha256(data).hexdigest() != descriptor["digest"]:
        raise ImageError(f"the config blob {short(descriptor['digest'])} does not match its "
                         "digest: refused (nothing was stored)")
    return data


def check_config(config_bytes: bytes, layer_count: int, where: str) -> None:
    config = _json(config_bytes, f"the config of {where}")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != layer_count:
        raise ImageError(f"{where}: {layer_count} layers but {len(diff_ids)} diff_ids in its "
                         "config: refused")


def fetch_layers(store: ImageStore, registry: Registry, repository: str, layers: list[dict],
                 progress: Progress, parallel: int) -> None:
    """Download ``layers``, ``parallel`` at a time. On an error or Ctrl-C the others
    stop at their next chunk and delete their temp files before this returns."""
    if not layers:
        return
    cancel = threading.Event()
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="pull") as pool:
        futures = [pool.submit(fetch_blob, store, registry, repository, layer, progress, cancel)
                   for layer in layers]
        try:
            while True:   # short waits, so that Ctrl-C reaches this thread
                done, pending = wait(futures, timeout=0.2, return_when=FIRST_EXCEPTION)
                if not pending or any(f.exception() for f in done):
                    break
        except BaseException:
            cancel.set()
            raise
        finally:
            if any(f.done() and f.exception() for f in futures):
                cancel.set()
    for future in futures:
        error = future.exception()
        if error is not None and not isinstance(error, Cancelled):
            raise error


def fetch_blob(store: ImageStore, registry: Registry, repository: str, descriptor: dict,
               progress: Progress, cancel: threading.Event) -> None:
    """Stream one blob into a hidden temp file, check it, then rename it into the store."""
    digest, size = descriptor["digest"], descriptor["size"]
    bar = progress.layer(digest, size, "Downloading")
    answer = registry.open_blob(repository, digest)
    sha, received = hashlib.sha256(), 0
    try:
        with BlobWriter(store, "pull") as out:
            while True:
                if cancel.is_set():
                    raise Cancelled()
                chunk = _read_chunk(answer, digest, received, size)
                if not chunk:
                    break
                received += len(chunk)
                if received > size:
                    raise RegistryError(f"blob {short(digest)} is larger than the {size} bytes "
                                        "its manifest says: refused (nothing was stored)")
                sha.update(chunk)
                out.file.write(chunk)
                bar.update(len(chunk))
            if received < size:
                raise RegistryError(f"blob {short(digest)} ended after {received} of {size} "
                                    "bytes: nothing was stored; pull again to resume")
            if "sha256:" + sha.hexdigest() != digest:
                raise ImageError(f"blob {short(digest)} does not match its digest (the "
                                 "registry sent other bytes): refused, nothing was stored")
            out.commit(digest)
    except BaseException:
        bar.close("Failed")
        raise
    finally:
        answer.close()
    bar.close("Pull complete")


def _read_chunk(answer, digest: str, received: int, size: int) -> bytes:
    import requests
    import urllib3
    try:
        return answer.raw.read(CHUNK, decode_content=False)
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
        raise RegistryError(f"blob {short(digest)}: the download broke off after {received} of "
                            f"{size} bytes ({e.__class__.__name__}): nothing was stored; "
                            "pull again to resume") from None


def _json(data: bytes, what: str) -> dict:
    try:
        document = json.loads(data)
    except ValueError:
        raise ImageError(f"{what} is not valid JSON") from None
    if not isinstance(document, dict):
        raise ImageError(f"{what} is not a JSON object")
    return document
