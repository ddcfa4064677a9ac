"""The local image store: an OCI image layout plus one unpacked directory per layer.

On disk, under the state root::

    images/oci-layout            {"imageLayoutVersion": "1.0.0"}
    images/index.json            one descriptor per tagged manifest; the name is in
                                 the annotations "io.containerd.image.name"
                                 (full reference) and "org.opencontainers.image.ref.name"
                                 (the familiar one, e.g. busybox:latest)
    images/blobs/sha256/<hex>    manifests, configs and compressed layers, each
                                 named by the sha256 of its bytes
    layers/<hex>/                a layer unpacked, named by its diff_id (the
                                 sha256 of the uncompressed tar); shared by every
                                 image that contains that layer
    images/run-plans.marshal     a cache, derived from the files above: per tag,
                                 what ``minirt run`` needs (layer dirs, Cmd, Env).
                                 Reading it needs no JSON parser: the json module
                                 imports the regex engine, ~5 ms of every start.
                                 Rebuilt whenever index.json changes.

Blobs are immutable: the same bytes always have the same name, so a layer two
images share is stored and unpacked once. Writes go to a temp file or directory
and are renamed into place, so a crash never leaves half an image.
Spec: image-spec image-layout.md, manifest.md, config.md.
"""

import marshal
import os

from ..errors import ImageError, ImageNotFound
from ..paths import FileLock, atomic_write
from ..record import Record
from . import reference
from .platform import oci_architecture

# Packing and unpacking (tarfile, gzip, hashlib) are imported where they are used:
# ``minirt run`` only reads JSON here, and start-up time matters.

# Blobs and layers younger than this survive garbage collection (see collect_garbage).
GC_GRACE_SECONDS = float(os.environ.get("MINIRT_GC_GRACE_SECONDS", 120))
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
NAME_ANNOTATION = "io.containerd.image.name"
TAG_ANNOTATION = "org.opencontainers.image.ref.name"


class LayerInfo(Record):
    """One layer of an image, as its manifest and config name it."""

    __slots__ = ("digest", "diff_id", "size")

    def __init__(self, digest: str, diff_id: str, size: int):
        self.digest = digest      # sha256 of the compressed blob
        self.diff_id = diff_id    # sha256 of the uncompressed tar
        self.size = size          # bytes of the compressed blob


class Image(Record):
    """A tagged image: its manifest, its config and its layers (bottom first)."""

    __slots__ = ("name", "manifest_digest", "config_digest", "config", "layers")

    def __init__(self, name: str, manifest_digest: str, config_digest: str, config: dict,
                 layers: list[LayerInfo] | None = None):
        self.name = name                        # familiar reference, e.g. "busybox:latest"
        self.manifest_digest = manifest_digest
        self.config_digest = config_digest
        self.config = config                    # the image config (OCI config.md)
        self.layers = layers or []

    @property
    def id(self) -> str:
        """Docker's image ID: the digest of the config."""
        return self.config_digest

    @property
    def run_config(self) -> dict:
        """The ``config`` section: Cmd, Entrypoint, Env, WorkingDir, ..."""
        return self.config.get("config") or {}


def sha256_bytes(data: bytes) -> str:
    import hashlib
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    import json
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class ImageStore:
    def __init__(self, root: str):
        self.root = root
        self.layout = os.path.join(root, "images")
        self.layers_root = os.path.join(root, "layers")

    # --- the layout ----------------------------------------------------------
    def ensure_layout(self) -> None:
        os.makedirs(os.path.join(self.layout, "blobs", "sha256"), exist_ok=True)
        os.makedirs(self.layers_root, exist_ok=True)
        marker = os.path.join(self.layout, "oci-layout")
        if not os.path.exists(marker):
            atomic_write(marker, b'{"imageLayoutVersion":"1.0.0"}')
        if not os.path.exists(self._index_path):
            atomic_write(self._index_path, canonical_json(
                {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": []}))

    @property
    def _index_path(self) -> str:
        return os.path.join(self.layout, "index.json")

    def _locked(self):
        """Serialize changes to index.json between processes (flock(2))."""
        return FileLock(os.path.join(self.layout, ".lock"), self.ensure_layout)

    def _index(self) -> dict:
        import json
        try:
            with open(self._index_path, "rb") as f:
                return json.load(f)
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": []}

    # --- blobs ---------------------------------------------------------------
    def blob_path(self, digest: str) -> str:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64:
            raise ImageError(f"unsupported digest {digest!r}")
        return os.path.join(self.layout, "blobs", "sha256", hexdigest)

    def has_blob(self, digest: str) -> bool:
        return os.path.exists(self.blob_path(digest))

    def write_blob(self, data: bytes) -> str:
        """Store ``data`` under its own digest (once) and return the digest."""
        digest = sha256_bytes(data)
        path = self.blob_path(digest)
        if not os.path.exists(path):
            self.ensure_layout()
            atomic_write(path, data, mode=0o444)
        return digest

    def read_json(self, digest: str) -> dict:
        """Load a JSON blob. Digests are checked when blobs enter the store (``write_blob``,
        pulls, loads), as containerd does, not on every read."""
        import json
        try:
            with open(self.blob_path(digest), "rb") as f:
                return json.load(f)
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is missing from the store") from None
        except ValueError:
            raise ImageError(f"blob {digest} is not valid JSON: the store is corrupt") from None

    # --- tags ----------------------------------------------------------------
    def tag(self, name: str, manifest_digest: str, media_type: str = MEDIA_MANIFEST) -> None:
        """Point ``name`` at a manifest (replacing what it pointed at before).

        ``media_type`` is the manifest's own: OCI, or Docker's v2 for an image
        pulled as the registry served it (its digest must not change)."""
        ref = reference.parse(name)
        size = os.path.getsize(self.blob_path(manifest_digest))
        with self._locked():
            index = self._index()
            index["manifests"] = [m for m in index["manifests"]
                                  if m.get("annotations", {}).get(NAME_ANNOTATION) != str(ref)]
            index["manifests"].append({
                "mediaType": media_type, "digest": manifest_digest, "size": size,
                # ref.name: the familiar name, not the bare tag, so that tools reading
                # this layout (skopeo oci:DIR:NAME, umoci) can tell busybox:latest
                # from app:latest.
                "annotations": {NAME_ANNOTATION: str(ref), TAG_ANNOTATION: ref.familiar},
            })
            atomic_write(self._index_path, canonical_json(index))

    def untag(self, name: str) -> Image:
        """Remove a tag (``docker rmi``'s first half); returns the image it named."""
        image = self.resolve(name)
        wanted = str(reference.parse(image.name))
        with self._locked():
            index = self._index()
            index["manifests"] = [m for m in index["manifests"]
                                  if m.get("annotations", {}).get(NAME_ANNOTATION) != wanted]
            atomic_write(self._index_path, canonical_json(index))
        return image

    def collect_garbage(self, in_use: set[str] = frozenset()) -> list[str]:
        """Delete blobs and unpacked layers no tagged image refers to any more.

        Returns the digests removed. Shared layers stay as long as one image uses
        them; ``in_use`` names layer directories containers still stand on.
        Anything written in the last ``GC_GRACE_SECONDS`` stays too: another
        process may be between writing an image's blobs and tagging it (a
        commit, a load, a pull), and must not lose them to our ``rmi``.
        """
        import time

        from ..paths import remove_tree
        recent = time.time() - GC_GRACE_SECONDS
        keep_blobs, keep_layers = set(), {os.path.basename(d) for d in in_use}
        for image in self.images():
            keep_blobs |= {image.manifest_digest, image.config_digest}
            keep_blobs |= {layer.digest for layer in image.layers}
            keep_layers |= {layer.diff_id.removeprefix("sha256:") for layer in image.layers}
        removed = []
        with self._locked():
            blobs = os.path.join(self.layout, "blobs", "sha256")
            for name in os.listdir(blobs):
                if not name.startswith(".") and "sha256:" + name not in keep_blobs and \
                        os.lstat(os.path.join(blobs, name)).st_mtime < recent:
                    os.unlink(os.path.join(blobs, name))
                    removed.append("sha256:" + name)
            for name in os.listdir(self.layers_root) if os.path.isdir(self.layers_root) else []:
                if not name.startswith(".") and name not in keep_layers and \
                        os.lstat(os.path.join(self.layers_root, name)).st_mtime < recent:
                    remove_tree(os.path.join(self.layers_root, name))
        return removed

    def disk_usage(self) -> dict:
        """Bytes on disk per image (compressed blob + unpacked dir of each layer), shared vs unique.

        ``saved`` is what sharing saves: the images' sizes added up, minus what
        the distinct layers really take.
        """
        layer_bytes, users = {}, {}
        images = self.images()
        for image in images:
            for layer in image.layers:
                if layer.diff_id not in layer_bytes:
                    layer_bytes[layer.diff_id] = layer.size + tree_size(self.layer_dir(layer.diff_id))
                users.setdefault(layer.diff_id, set()).add(image.name)
        per_image = []
        for image in images:
            ids = {layer.diff_id for layer in image.layers}
            shared = sum(layer_bytes[i] for i in ids if len(users[i]) > 1)
            unique = sum(layer_bytes[i] for i in ids if len(users[i]) == 1)
            per_image.append({"name": image.name, "id": image.id, "size": shared + unique,
                              "shared": shared, "unique": unique, "layers": len(ids)})
        total = sum(layer_bytes.values())
        return {"images": per_image, "total": total,
                "saved": sum(i["size"] for i in per_image) - total}

    def images(self) -> list[Image]:
        """Every tagged image, in the order they were tagged."""
        return [self._load(m["annotations"][NAME_ANNOTATION], m["digest"])
                for m in self._index()["manifests"] if NAME_ANNOTATION in m.get("annotations", {})]

    def resolve(self, name: str) -> Image:
        """Find an image by reference (``busybox``), or by image ID or its prefix."""
        entries = [m for m in self._index()["manifests"] if NAME_ANNOTATION in m.get("annotations", {})]
        candidates = []
        try:
            wanted = str(reference.parse(name))
            candidates = [m for m in entries if m["annotations"][NAME_ANNOTATION] == wanted]
        except Exception:
            pass
        if candidates:
            m = candidates[0]
            return self._load(m["annotations"][NAME_ANNOTATION], m["digest"])
        hexprefix = name.removeprefix("sha256:")
        if len(hexprefix) >= 4 and all(c in "0123456789abcdef" for c in hexprefix):
            for image in self.images():
                if image.id.removeprefix("sha256:").startswith(hexprefix):
                    return image
        raise ImageNotFound(f"image {name!r} not found locally: see `minirt images` "
                            "(`make image` builds busybox:latest)")

    def _load(self, full_name: str, manifest_digest: str) -> Image:
        manifest = self.read_json(manifest_digest)
        config_digest = manifest["config"]["digest"]
        config = self.read_json(config_digest)
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(manifest["layers"]):
            raise ImageError(f"image {full_name}: {len(manifest['layers'])} layers but "
                             f"{len(diff_ids)} diff_ids in its config")
        infos = [LayerInfo(d["digest"], diff_id, d["size"])
                 for d, diff_id in zip(manifest["layers"], diff_ids)]
        return Image(reference.parse(full_name).familiar, manifest_digest, config_digest,
                     config, infos)

    # --- what `minirt run` needs, fast ---------------------------------------------
    def run_plan(self, name: str) -> "RunPlan":
        """The image's run config and layer directories (top first), unpacked.

        Served from ``run-plans.marshal`` when ``name`` is spelled as a tag there;
        otherwise (an image ID, an unusual spelling, a stale cache) from the
        OCI files through ``resolve``.
        """
        plan = self._cached_plans().get(name)
        if plan is None or not all(os.path.isdir(d) for d in plan.layers):
            image = self.resolve(name)
            plan = RunPlan(image.name, image.id, image.run_config, self.unpacked_layers(image))
        return plan

    @property
    def _plans_path(self) -> str:
        return os.path.join(self.layout, "run-plans.marshal")

    def _cached_plans(self) -> dict:
        try:
            st = os.stat(self._index_path)
        except FileNotFoundError:
            return {}
        index_key = (st.st_ino, st.st_mtime_ns, st.st_size)
        try:
            with open(self._plans_path, "rb") as f:
                cached = marshal.load(f)
            if cached["index"] == index_key:
                return {alias: RunPlan(**plan) for alias, plan in cached["plans"].items()}
        except (OSError, EOFError, ValueError, TypeError, KeyError):
            pass
        return self._rebuild_plans(index_key)

    def _rebuild_plans(self, index_key) -> dict:
        plans = {}
        for image in self.images():
            plan = RunPlan(image.name, image.id, image.run_config,
                           [self.layer_dir(info.diff_id) for info in reversed(image.layers)])
            for alias in aliases(image.name):
                plans[alias] = plan
        try:
            atomic_write(self._plans_path, marshal.dumps(
                {"index": index_key, "plans": {a: p.to_dict() for a, p in plans.items()}}),
                durable=False)
        except OSError:
            pass  # a read-only store (another user's): just no cache
        return plans

    # --- layers --------------------------------------------------------------
    def layer_dir(self, diff_id: str) -> str:
        return os.path.join(self.layers_root, diff_id.removeprefix("sha256:"))

    def unpacked_layers(self, image: Image) -> list[str]:
        """The image's layer directories, top layer first (overlayfs lowerdir order)."""
        return [self.ensure_unpacked(info) for info in reversed(image.layers)]

    def ensure_unpacked(self, info: LayerInfo) -> str:
        """Unpack a layer blob once into ``layers/<diff_id>``, checking its diff_id."""
        final = self.layer_dir(info.diff_id)
        if os.path.isdir(final):
            return final
        import gzip
        import shutil
        import tempfile

        from .. import seams
        from . import layer as layers
        os.makedirs(self.layers_root, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=self.layers_root, prefix=".unpack-")
        try:
            with open(self.blob_path(info.digest), "rb") as raw:
                head = raw.read(2)
                raw.seek(0)
                stream = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
                hashing = _HashingReader(stream)
                # A seam (exercises/05-layer-whiteouts): a student's unpacker, when wired.
                apply_layer = seams.replaceable("apply_layer", layers.unpack)
                apply_layer(hashing, tmp, layers.MAX_LAYER_BYTES)
                hashing.drain()
            if hashing.digest() != info.diff_id:
                raise ImageError(f"layer {info.digest[:19]} does not match its diff_id "
                                 f"{info.diff_id[:19]}: the image is corrupt")
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, final)
            except OSError:
                if not os.path.isdir(final):  # else another process won the race: fine
                    raise
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    # --- making images -------------------------------------------------------
    def add_rootfs(self, rootfs: str, name: str, run_config: dict, created_by: str,
                   parent: Image | None = None, overlay_markers: bool = False,
                   reproducible: bool = True, id_map=None) -> Image:
        """Pack a directory as one new layer (on top of ``parent``'s) and tag the image.

        ``overlay_markers``: ``rootfs`` is a container's overlayfs upper dir
        (``commit``); ``reproducible``: fixed owners and times (built images).
        """
        import tempfile
        import time

        from . import layer as layers
        with disk_full(self, f"writing the new layer of {name}"):
            self.ensure_layout()
            fd, tmp = tempfile.mkstemp(dir=os.path.join(self.layout, "blobs", "sha256"),
                                       prefix=".tmp-")
            os.close(fd)
            try:
                digest, diff_id, size = layers.pack_directory(rootfs, tmp, reproducible,
                                                              overlay_markers, id_map)
                os.chmod(tmp, 0o444)
                os.rename(tmp, self.blob_path(digest))
            except BaseException:
                os.unlink(tmp)
                raise
        new_layer = LayerInfo(digest, diff_id, size)
        base_layers = parent.layers if parent else []
        history = list(parent.config.get("history", [])) if parent else []
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(
            layers.REPRODUCIBLE_MTIME if reproducible else time.time()))
        history.append({"created": created, "created_by": created_by})
        config = {
            "created": created, "architecture": oci_architecture(), "os": "linux",
            "config": run_config,
            "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in base_layers] + [diff_id]},
            "history": history,
        }
        with disk_full(self, f"writing the image {name}"):
            return self.add_image(name, config, base_layers + [new_layer])

    def add_image(self, name: str, config: dict, image_layers: list[LayerInfo]) -> Image:
        """Write config and manifest blobs for layers already stored, and tag them."""
        from .. import seams  # image_manifest is a seam (exercises/06-manifest-digests)
        config_bytes = canonical_json(config)
        self.write_blob(config_bytes)
        manifest, digest = seams.replaceable("image_manifest", image_manifest)(
            config_bytes, [(l.digest, l.size) for l in image_layers])
        if sha256_bytes(manifest) != digest:
            raise ImageError(f"the manifest of {name} is named {digest!r}, but it must be "
                             "named 'sha256:' + the hex sha256 of its bytes, "
                             f"{sha256_bytes(manifest)}: not stored")
        self.write_blob(manifest)
        try:  # every blob it names is here, as it names them: only then may a tag point at it
            self._load(name, digest)
        except (ImageError, LookupError, TypeError, AttributeError, ValueError) as e:
            raise ImageError(f"the manifest made for {name} does not describe a usable image "
                             f"({e if isinstance(e, ImageError) else repr(e)}): not tagged") \
                from None
        self.tag(name, digest)
        return self.resolve(name)


def image_manifest(config: bytes, layers: list[tuple[str, int]]) -> tuple[bytes, str]:
    """An image's OCI manifest (image-spec manifest.md): its bytes and their digest.

    ``config`` is the image config exactly as stored (its blob); ``layers`` the
    ``(digest, size)`` of each gzip'd layer blob, bottom first. The manifest
    names each of them by a descriptor: media type, ``sha256:<hex>`` of the
    exact bytes, size in bytes. Written as canonical JSON (keys sorted, no
    spaces), so the same image always has the same digest.
    """
    manifest = {
        "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": sha256_bytes(config),
                   "size": len(config)},
        "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": digest, "size": size}
                   for digest, size in layers],
    }
    data = canonical_json(manifest)
    return data, sha256_bytes(data)


class disk_full:
    """Around a write into the store: a full disk (ENOSPC, or EDQUOT: over quota) becomes
    an ImageError that says so, where, and what to do, instead of a bare OSError.
    Whatever raised it has already deleted its temp files (BlobWriter, add_rootfs)."""

    def __init__(self, store: "ImageStore", what: str):
        self.store, self.what = store, what

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        import errno
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ImageError(f"no space left on device while {self.what} (state root "
                             f"{self.store.root}): nothing was stored; free some space "
                             "(`minirt system prune` removes what nothing uses) and try "
                             "again") from None
        return False


class RunPlan(Record):
    """What starting a container needs from its image."""

    __slots__ = ("name", "image_id", "run_config", "layers")

    def __init__(self, name: str, image_id: str, run_config: dict, layers: list[str]):
        self.name = name                # familiar reference, e.g. "busybox:latest"
        self.image_id = image_id
        self.run_config = run_config    # Cmd, Entrypoint, Env, WorkingDir, ...
        self.layers = layers            # unpacked layer directories, top first


def aliases(familiar: str) -> list[str]:
    """The spellings a user may type for a tag: busybox, busybox:latest, docker.io/..."""
    ref = reference.parse(familiar)
    names = [familiar, str(ref)]
    if ref.tag == "latest":
        names.append(familiar.rsplit(":", 1)[0])
    return names


class BlobWriter:
    """A temp file among the store's blobs, renamed to its digest by ``commit``.

    Until then the blob is invisible (its name starts with a dot); leaving the
    ``with`` block without a commit (an error, a Ctrl-C) deletes it.
    """

    def __init__(self, store: ImageStore, purpose: str = "load"):
        self.store, self.purpose, self.committed = store, purpose, False

    def __enter__(self):
        import tempfile
        fd, self.tmp = tempfile.mkstemp(dir=os.path.join(self.store.layout, "blobs", "sha256"),
                                        prefix=f".{self.purpose}-")
        self.file = os.fdopen(fd, "wb")
        return self

    def commit(self, digest: str) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.tmp, 0o444)
        os.rename(self.tmp, self.store.blob_path(digest))
        self.committed = True

    def __exit__(self, *exc):
        self.file.close()
        if not self.committed:
            os.unlink(self.tmp)
        return False


class _HashingReader:
    """Wraps a stream and hashes every byte read from it (to check a diff_id)."""

    def __init__(self, raw):
        import hashlib
        self.raw, self.sha = raw, hashlib.sha256()

    def read(self, n=-1):
        data = self.raw.read(n)
        self.sha.update(data)
        return data

    def drain(self):
        while self.read(1 << 20):
            pass

    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def tree_size(path: str) -> int:
    """Bytes used by the files below ``path`` (each hard-linked inode once), like ``du -b``."""
    seen, total = set(), 0
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(directory, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


