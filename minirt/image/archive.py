"""Image archives: ``minirt save`` and ``minirt load``.

Two formats, both one tar file:

``docker``  What ``docker save`` writes and ``docker load`` (and skopeo's
            ``docker-archive:`` transport) read: ``manifest.json`` lists each
            image as ``{"Config", "RepoTags", "Layers"}``; the config is stored
            as ``<hex of its digest>.json``; every layer as an *uncompressed*
            ``<hex of its diff_id>/layer.tar``; ``repositories`` is the legacy
            tag map. There are no manifests: a loader writes its own, so only the
            image ID (the config digest) is promised to survive a round trip.
            Format: https://github.com/moby/docker-image-spec/blob/main/spec.md
            ("Combined Image JSON + Filesystem Changeset Format", v1.2) and
            https://github.com/moby/moby/blob/master/image/spec/v1.2.md
``oci``     An OCI image layout, as the store keeps it, in a tar: ``oci-layout``,
            ``index.json`` (one descriptor per tag, named by the annotations
            ``io.containerd.image.name`` and ``org.opencontainers.image.ref.name``)
            and ``blobs/sha256/<hex>``. Blobs are copied as they are, so
            manifest digests survive. skopeo ``oci-archive:`` and umoci read it.
            Spec: https://github.com/opencontainers/image-spec/blob/main/image-layout.md

``load`` accepts either, as a tar file (plain or compressed) or as a directory
(e.g. what ``skopeo copy ... oci:DIR:TAG`` writes), telling them apart by
``manifest.json`` and ``oci-layout``. Everything it reads is untrusted: every
blob is checked against its digest and every layer against its config's diff_id
*before* it is renamed into the store, tar member names are only used as keys
(nothing is extracted by name), and tags are written only once every blob of
every image is in. A failure leaves at most some untagged, content-addressed
blobs behind, which the next garbage collection removes.

Docker layers arrive uncompressed; they are compressed again exactly as
``layer.pack_directory`` does it (gzip, level 6, mtime 0), so an image minirt
built gets back its original layer and manifest digests too.
"""

import gzip
import hashlib
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile

from ..errors import ImageError, MinirtError, UsageError
from . import reference
from .layer import MAX_LAYER_BYTES, REPRODUCIBLE_MTIME, HashingWriter, Prepend
from . import platform
from .store import (MEDIA_CONFIG, MEDIA_INDEX, MEDIA_LAYER_GZIP, MEDIA_MANIFEST,
                    NAME_ANNOTATION, TAG_ANNOTATION, BlobWriter, Image, ImageStore, LayerInfo,
                    canonical_json, sha256_bytes)

FORMATS = ("docker", "oci")

MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = {MEDIA_MANIFEST, DOCKER_MANIFEST}
INDEX_TYPES = {MEDIA_INDEX, DOCKER_MANIFEST_LIST}
CONFIG_TYPES = {MEDIA_CONFIG, DOCKER_CONFIG}
# Layer media types the store can unpack, and what each becomes in an OCI manifest.
LAYER_TYPES = {MEDIA_LAYER_GZIP: MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR: MEDIA_LAYER_TAR,
               DOCKER_LAYER_GZIP: MEDIA_LAYER_GZIP}

MAX_JSON_BYTES = 16 << 20     # a manifest, config or index larger than this is refused
CHUNK = 1 << 20
HEX64 = re.compile(r"[0-9a-f]{64}")


# --- save ----------------------------------------------------------------------------

def save(store: ImageStore, names, out, format: str = "docker") -> None:
    """``minirt save``: write ``names`` to ``out`` (a path or a binary file) as ``format``."""
    if format == "docker":
        save_docker(store, names, out)
    elif format == "oci":
        save_oci(store, names, out)
    else:
        raise UsageError(f"unknown archive format {format!r}: use {' or '.join(FORMATS)}")


def save_docker(store: ImageStore, names, out) -> None:
    """Write the images ``names`` as a ``docker save`` tarball to ``out``.

    ``out`` is a path (written to a temp file, then renamed: readers never see
    half an archive) or a binary file object (e.g. stdout). Each image appears
    once, with every tag it was asked for; asked for by ID, it has no tags.
    """
    chosen = _choose(store, names, key=lambda image: image.config_digest)
    with _output(out) as f, tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        entries, repositories, written = [], {}, set()
        for image, tags in chosen:
            config_file = _hex(image.config_digest) + ".json"
            if config_file not in written:
                _add_blob(tar, config_file, store, image.config_digest)
                written.add(config_file)
            paths = []
            for info in image.layers:
                directory = _hex(info.diff_id)
                path = directory + "/layer.tar"
                if path not in written:
                    _add_member(tar, directory, directory=True)
                    _add_plain_layer(tar, path, store, info)
                    written.add(path)
                paths.append(path)
            entries.append({"Config": config_file, "RepoTags": tags or None, "Layers": paths})
            for tag in tags:
                ref = reference.parse(tag)
                if paths:
                    repositories.setdefault(_familiar_repository(ref), {})[ref.tag] = \
                        paths[-1].split("/")[0]
        _add_member(tar, "manifest.json", json.dumps(entries).encode())
        _add_member(tar, "repositories", json.dumps(repositories).encode())


def save_oci(store: ImageStore, names, out) -> None:
    """Write the images ``names`` as an OCI image layout in a tar to ``out``.

    Each tag gets its own descriptor in ``index.json``, annotated with the full
    reference (``io.containerd.image.name``, as containerd and docker write it)
    and the familiar one (``org.opencontainers.image.ref.name``, e.g.
    ``busybox:latest``, which skopeo ``oci-archive:FILE:busybox:latest`` and
    ``umoci --image DIR:busybox:latest`` match against).
    """
    chosen = _choose(store, names, key=lambda image: image.manifest_digest)
    with _output(out) as f, tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_member(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        descriptors, blobs = [], []
        for image, tags in chosen:
            manifest = store.read_json(image.manifest_digest)
            base = {"mediaType": manifest.get("mediaType", MEDIA_MANIFEST),
                    "digest": image.manifest_digest,
                    "size": os.path.getsize(store.blob_path(image.manifest_digest))}
            for tag in tags or [None]:
                descriptor = dict(base)
                if tag:
                    ref = reference.parse(tag)
                    descriptor["annotations"] = {NAME_ANNOTATION: str(ref), TAG_ANNOTATION: ref.familiar}
                descriptors.append(descriptor)
            for digest in [image.manifest_digest, image.config_digest] + \
                    [info.digest for info in image.layers]:
                if digest not in blobs:
                    blobs.append(digest)
        _add_member(tar, "index.json", canonical_json(
            {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": descriptors}))
        _add_member(tar, "blobs", directory=True)
        _add_member(tar, "blobs/sha256", directory=True)
        for digest in blobs:
            _add_blob(tar, "blobs/sha256/" + _hex(digest), store, digest)


def _choose(store: ImageStore, names, key) -> list[tuple[Image, list[str]]]:
    """The images ``names`` resolve to, each once (by ``key``), with the tags to record."""
    if isinstance(names, str):
        names = [names]
    if not names:
        raise UsageError("save: name at least one image")
    chosen = {}
    for text in names:
        image = store.resolve(text)
        _, tags = chosen.setdefault(key(image), (image, []))
        if _names_a_tag(text, image) and image.name not in tags:
            tags.append(image.name)
    return list(chosen.values())


def _names_a_tag(text: str, image: Image) -> bool:
    """Did the user name ``image`` by its tag (rather than by its ID)?"""
    try:
        return str(reference.parse(text)) == str(reference.parse(image.name))
    except MinirtError:
        return False


def _familiar_repository(ref) -> str:
    """``busybox``, ``localhost:5000/app``: the familiar name without its tag."""
    return ref.familiar[: -(len(ref.tag) + 1)] if ref.tag else ref.familiar


def _add_member(tar, name: str, data: bytes = b"", directory: bool = False) -> None:
    import io
    info = _tarinfo(name, 0 if directory else len(data))
    if directory:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    else:
        tar.addfile(info, io.BytesIO(data))


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, REPRODUCIBLE_MTIME
    return info


def _add_blob(tar, name: str, store: ImageStore, digest: str) -> None:
    """Copy a blob from the store into ``tar``, checking it still matches its digest."""
    path = store.blob_path(digest)
    with open(path, "rb") as f:
        reader = _HashingReader(f)
        tar.addfile(_tarinfo(name, os.fstat(f.fileno()).st_size), reader)
    if reader.digest() != digest:
        raise ImageError(f"blob {digest[:19]} in the store does not match its digest: "
                         "the store is corrupt")


def _add_plain_layer(tar, name: str, store: ImageStore, info: LayerInfo) -> None:
    """Add a layer uncompressed, as docker archives hold them, checking its diff_id.

    A tar member's size goes in its header, before its data: a first pass counts
    (and checks) the uncompressed bytes, the second copies them.
    """
    path = store.blob_path(info.digest)
    size = 0
    with _Plain(path) as plain:
        reader = _HashingReader(plain)
        while chunk := reader.read(CHUNK):
            size += len(chunk)
    if reader.digest() != info.diff_id:
        raise ImageError(f"layer {info.digest[:19]} does not match its diff_id "
                         f"{info.diff_id[:19]}: the store is corrupt")
    with _Plain(path) as plain:
        reader = _HashingReader(plain)
        tar.addfile(_tarinfo(name, size), reader)
    if reader.digest() != info.diff_id:
        raise ImageError(f"layer {info.digest[:19]} changed while it was being saved")


class _output:
    """A context manager giving a binary file for ``out``: a path is written atomically."""

    def __init__(self, out):
        self.out, self.tmp, self.file = out, None, None

    def __enter__(self):
        if not isinstance(self.out, (str, os.PathLike)):
            return self.out
        path = os.path.abspath(self.out)
        fd, self.tmp = tempfile.mkstemp(dir=os.path.dirname(path),
                                        prefix=f".{os.path.basename(path)}.tmp-")
        self.file = os.fdopen(fd, "wb")
        return self.file

    def __exit__(self, kind, error, tb):
        if self.tmp is None:
            if kind is None and hasattr(self.out, "flush"):
                self.out.flush()
            return False
        try:
            if kind is None:
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
            if kind is None:
                os.chmod(self.tmp, 0o644)
                os.rename(self.tmp, self.out)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
        return False


# --- load ----------------------------------------------------------------------------

class _Layer:
    """A layer to import: where it is in the archive and what it must hash to."""

    __slots__ = ("path", "diff_id", "digest", "size", "media_type")

    def __init__(self, path, diff_id, digest=None, size=None, media_type=None):
        self.path = path                # member name in the archive
        self.diff_id = diff_id          # from the config: sha256 of the plain tar
        self.digest = digest            # OCI: sha256 of the blob as stored; docker: None
        self.size = size
        self.media_type = media_type


class _Plan:
    """One image of the archive, checked and ready to import."""

    __slots__ = ("names", "config_bytes", "config_digest", "layers", "manifest", "manifest_bytes")

    def __init__(self, names, config_bytes, layers, manifest=None, manifest_bytes=None):
        self.names = names                  # the references to tag it as
        self.config_bytes = config_bytes    # exactly as archived: the image ID is their digest
        self.config_digest = sha256_bytes(config_bytes)
        self.layers = layers
        self.manifest = manifest            # OCI: the parsed manifest (None for docker)
        self.manifest_bytes = manifest_bytes  # OCI: its bytes, kept when already OCI


def load(store: ImageStore, source, repository: str | None = None) -> list[Image]:
    """``minirt load``: import every image of an archive; return them, one per tag.

    ``source`` is a path (a tar file, plain or compressed, or a directory holding
    an OCI layout or an unpacked docker save) or a binary file object. An image
    the archive gives no name (saved by ID; an OCI ``ref.name`` that is only a tag,
    such as ``latest``) is tagged ``repository[:its tag]``; without
    ``repository`` it is refused, since the store keeps only tagged images.
    """
    store.ensure_layout()  # a spooled (piped or compressed) archive goes next to the store
    with _open_source(store, source) as src:
        if src.exists("oci-layout") and src.exists("index.json"):
            plans = _plan_oci(src)
            if src.exists("manifest.json"):  # docker >= 25 writes both: borrow its tags
                by_config = {p.config_digest: p.names for p in _plan_docker(src)}
                for plan in plans:
                    plan.names = plan.names or by_config.get(plan.config_digest, [])
        elif src.exists("manifest.json"):
            plans = _plan_docker(src)
        elif src.exists("repositories"):
            raise ImageError("this is a docker save from before docker 1.10 (no manifest.json): "
                             "not supported")
        else:
            raise ImageError(f"{_describe(source)} is neither a docker save archive "
                             "(manifest.json) nor an OCI image layout (oci-layout, index.json)")
        if not plans:
            raise ImageError(f"{_describe(source)} holds no image")
        _name_plans(plans, repository)

        imported = {}  # diff_id or digest -> LayerInfo, so a shared layer is read once
        manifests = []
        for plan in plans:
            infos = []
            for layer in plan.layers:
                key = layer.digest or layer.diff_id
                if key not in imported:
                    imported[key] = (_import_blob(store, src, layer) if layer.digest else
                                     _import_plain_layer(store, src, layer))
                infos.append(imported[key])
            store.write_blob(plan.config_bytes)
            manifests.append(store.write_blob(_manifest_bytes(plan, infos)))

    # Every blob is in: only now do the tags appear.
    loaded = []
    for plan, manifest_digest in zip(plans, manifests):
        for name in plan.names:
            store.tag(name, manifest_digest)
    for plan in plans:
        loaded += [store.resolve(name) for name in plan.names]
    return loaded


def _plan_docker(src) -> list[_Plan]:
    entries = _read_json(src, "manifest.json", list)
    plans = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list):
            raise ImageError("manifest.json: each image needs Config and Layers")
        config_bytes = src.read(entry["Config"], MAX_JSON_BYTES)
        digest = sha256_bytes(config_bytes)
        stem = posixpath.basename(entry["Config"]).removesuffix(".json")
        if HEX64.fullmatch(stem) and "sha256:" + stem != digest:
            raise ImageError(f"config {entry['Config']} does not match its name "
                             f"(its digest is {digest[:19]}): the archive is corrupt")
        diff_ids = _diff_ids(config_bytes, len(entry["Layers"]), entry["Config"])
        layers = [_Layer(path, diff_id) for path, diff_id in zip(entry["Layers"], diff_ids)]
        names = entry.get("RepoTags") or []
        if not all(isinstance(n, str) for n in names):
            raise ImageError("manifest.json: RepoTags must be strings")
        plans.append(_Plan(list(names), config_bytes, layers))
    return plans


def _plan_oci(src) -> list[_Plan]:
    layout = _read_json(src, "oci-layout")
    if not str(layout.get("imageLayoutVersion", "")).startswith("1."):
        raise ImageError(f"unsupported OCI layout version {layout.get('imageLayoutVersion')!r}")
    index = _read_json(src, "index.json")
    plans = []
    for descriptor in index.get("manifests") or []:
        annotations = descriptor.get("annotations") or {}
        descriptor = _platform_manifest(src, descriptor)
        manifest_bytes = _read_blob(src, descriptor, MAX_JSON_BYTES)
        manifest = _parse(manifest_bytes, descriptor["digest"])
        media_type = manifest.get("mediaType") or descriptor.get("mediaType") or MEDIA_MANIFEST
        if media_type not in MANIFEST_TYPES:
            raise ImageError(f"manifest {descriptor['digest'][:19]} has media type "
                             f"{media_type!r}: not an image")
        config = manifest.get("config") or {}
        if config.get("mediaType") not in CONFIG_TYPES:
            raise ImageError(f"manifest {descriptor['digest'][:19]}: config media type "
                             f"{config.get('mediaType')!r} is not an image config")
        config_bytes = _read_blob(src, config, MAX_JSON_BYTES)
        layer_descriptors = manifest.get("layers") or []
        diff_ids = _diff_ids(config_bytes, len(layer_descriptors), config["digest"])
        layers = []
        for d, diff_id in zip(layer_descriptors, diff_ids):
            if d.get("mediaType") not in LAYER_TYPES:
                raise ImageError(f"layer {str(d.get('digest'))[:19]} has media type "
                                 f"{d.get('mediaType')!r}, which minirt cannot unpack "
                                 f"(it knows {', '.join(sorted(LAYER_TYPES))})")
            layers.append(_Layer(_blob_name(d.get("digest")), diff_id, d["digest"],
                                 d.get("size"), d["mediaType"]))
        names = _annotated_names(annotations)
        keep = media_type == MEDIA_MANIFEST and manifest.get("mediaType") == MEDIA_MANIFEST
        plans.append(_Plan(names, config_bytes, layers, manifest,
                           manifest_bytes if keep else None))
    return plans


def _platform_manifest(src, descriptor: dict, depth: int = 0) -> dict:
    """Follow an image index down to the manifest for this machine's platform."""
    media_type = descriptor.get("mediaType")
    if media_type is None:  # optional in a descriptor: ask the blob itself
        blob = _parse(_read_blob(src, descriptor, MAX_JSON_BYTES), descriptor.get("digest"))
        media_type = blob.get("mediaType") or (MEDIA_INDEX if "manifests" in blob
                                               else MEDIA_MANIFEST)
    if media_type in MANIFEST_TYPES:
        return descriptor
    if media_type not in INDEX_TYPES or depth > 2:
        raise ImageError(f"index entry {str(descriptor.get('digest'))[:19]} has media type "
                         f"{media_type!r}: not an image")
    index = _parse(_read_blob(src, descriptor, MAX_JSON_BYTES), descriptor["digest"])
    entry = platform.choose(index, lambda e: src.exists(_blob_name(e.get("digest"))))
    if entry is None:
        raise ImageError(f"index {descriptor['digest'][:19]} has no linux/"
                         f"{platform.oci_architecture()} image in this archive (platforms: "
                         f"{platform.describe(index.get('manifests') or [])})")
    return _platform_manifest(src, entry, depth + 1)


def _annotated_names(annotations: dict) -> list[str]:
    """The name an index.json descriptor gives its image ([] if none; a bare tag as ':TAG')."""
    full = annotations.get(NAME_ANNOTATION)
    if full:
        return [full]
    ref_name = annotations.get(TAG_ANNOTATION)
    if not ref_name:
        return []
    if "/" in ref_name or ":" in ref_name:  # a reference, e.g. busybox:latest
        return [ref_name]
    return [":" + ref_name]                 # only a tag: the repository comes from the caller


def _name_plans(plans: list[_Plan], repository: str | None) -> None:
    """Settle every image's names before anything is written; refuse unnamed images."""
    repo_ref = reference.parse(repository) if repository else None
    unnamed = []
    for plan in plans:
        names = []
        for name in plan.names or [None]:
            if name is None or name.startswith(":"):
                if repo_ref is None:
                    unnamed.append(plan)
                    break
                name = (f"{_familiar_repository(repo_ref)}{name}" if name
                        else repo_ref.familiar)
            try:
                names.append(reference.parse(name).familiar)
            except UsageError as e:
                raise ImageError(f"the archive names an image {name!r}, which is not a valid "
                                 f"reference: {e}") from None
        plan.names = names
    if unnamed:
        ids = ", ".join(p.config_digest[7:19] for p in unnamed)
        raise ImageError(f"the archive gives image(s) {ids} no repository name, and minirt "
                         "keeps only named images: load with a repository name "
                         "(e.g. `minirt load -i FILE --repository myapp`)")


def _diff_ids(config_bytes: bytes, layer_count: int, where: str) -> list[str]:
    config = _parse(config_bytes, where)
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = (rootfs or {}).get("diff_ids")
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and d.startswith("sha256:")
                                                 and HEX64.fullmatch(d[7:]) for d in diff_ids):
        raise ImageError(f"config {where[:30]} has no valid rootfs.diff_ids")
    if len(diff_ids) != layer_count:
        raise ImageError(f"config {where[:30]}: {len(diff_ids)} diff_ids for {layer_count} layers")
    return diff_ids


def _manifest_bytes(plan: _Plan, infos: list[LayerInfo]) -> bytes:
    """The OCI manifest to store: the archive's own when it is one, else one written
    the way ``ImageStore.add_image`` writes it (Docker v2 media types become OCI)."""
    if plan.manifest_bytes is not None:
        return plan.manifest_bytes
    media_types = [LAYER_TYPES[layer.media_type] if layer.media_type else MEDIA_LAYER_GZIP
                   for layer in plan.layers]
    manifest = {
        "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": plan.config_digest,
                   "size": len(plan.config_bytes)},
        "layers": [{"mediaType": m, "digest": i.digest, "size": i.size}
                   for m, i in zip(media_types, infos)],
    }
    if plan.manifest and plan.manifest.get("annotations"):
        manifest["annotations"] = plan.manifest["annotations"]
    return canonical_json(manifest)


def _import_blob(store: ImageStore, src, layer: _Layer) -> LayerInfo:
    """Copy an OCI layer blob into the store, checking its digest, size and diff_id."""
    if store.has_blob(layer.digest):  # checked when it entered the store
        return LayerInfo(layer.digest, layer.diff_id, os.path.getsize(store.blob_path(layer.digest)))
    with src.open(layer.path) as raw, BlobWriter(store) as out:
        compressed = _HashingReader(raw, tee=out.file)
        plain = _HashingReader(_decompressed(compressed))
        unreadable = None
        try:
            _drain(plain, layer.path)
        except ImageError as e:  # e.g. a gzip CRC error; but first: is it the blob we expect?
            unreadable = e
        _drain(compressed, layer.path)  # anything after the gzip stream
        if compressed.digest() != layer.digest or (layer.size is not None
                                                   and compressed.size != layer.size):
            raise ImageError(f"blob {layer.digest[:19]} does not match its digest or size: "
                             "the archive is corrupt (nothing was stored)")
        if unreadable is not None:
            raise unreadable
        if plain.digest() != layer.diff_id:
            raise ImageError(f"layer {layer.digest[:19]} does not match its diff_id "
                             f"{layer.diff_id[:19]}: the archive is corrupt (nothing was stored)")
        out.commit(layer.digest)
    return LayerInfo(layer.digest, layer.diff_id, compressed.size)


def _import_plain_layer(store: ImageStore, src, layer: _Layer) -> LayerInfo:
    """Compress a docker archive's layer into the store, checking its diff_id."""
    with src.open(layer.path) as raw, BlobWriter(store) as out:
        plain = _HashingReader(_decompressed(raw))
        compressed = HashingWriter(out.file)
        with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, compresslevel=6) as gz:
            while chunk := _read(plain, layer.path):
                gz.write(chunk)
        if plain.digest() != layer.diff_id:
            raise ImageError(f"layer {layer.path} does not match its diff_id "
                             f"{layer.diff_id[:19]}: the archive is corrupt (nothing was stored)")
        digest = "sha256:" + compressed.sha.hexdigest()
        out.commit(digest)
    return LayerInfo(digest, layer.diff_id, compressed.size)


def _read(reader, where: str) -> bytes:
    try:
        data = reader.read(CHUNK)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ImageError(f"{where}: cannot be read ({e}): the archive is corrupt") from None
    if getattr(reader, "size", 0) > MAX_LAYER_BYTES:
        raise ImageError(f"{where} is larger than {MAX_LAYER_BYTES} bytes uncompressed "
                         "(a gzip bomb?): refused")
    return data


def _drain(reader, where: str) -> None:
    while _read(reader, where):
        pass


# --- reading archives and directories ------------------------------------------------------

def _open_source(store: ImageStore, source):
    if isinstance(source, (str, os.PathLike)):
        if os.path.isdir(source):
            return _DirSource(os.fspath(source))
        try:
            f = open(source, "rb")
        except FileNotFoundError:
            raise ImageError(f"{source}: no such file or directory") from None
        return _TarSource(store, f, owned=True, label=os.fspath(source))
    return _TarSource(store, source, owned=False, label="the input")


class _Source:
    """What both kinds of archive offer: ``open(name)``, and ``read`` with a size cap."""

    label = ""

    def read(self, name: str, limit: int) -> bytes:
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ImageError(f"{self.label}: {name} is larger than {limit} bytes: refused")
        return data


class _TarSource(_Source):
    """A tar archive, read by member name. Compressed or unseekable input (a pipe)
    is first copied, uncompressed, to a temp file in the store (random access)."""

    def __init__(self, store: ImageStore, f, owned: bool, label: str):
        self.label, self.spool = label, None
        self.closing = [f] if owned else []
        head = f.read(6)
        if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00" \
                or not _seekable(f):
            self.spool = tempfile.TemporaryFile(dir=store.root)
            self.closing.append(self.spool)
            stream = Prepend(head, f)
            if head[:2] == b"\x1f\x8b":
                stream = gzip.GzipFile(fileobj=stream)
            elif head[:3] == b"BZh":
                import bz2
                stream = bz2.BZ2File(stream)
            elif head[:6] == b"\xfd7zXZ\x00":
                import lzma
                stream = lzma.LZMAFile(stream)
            try:
                shutil.copyfileobj(stream, self.spool, CHUNK)
            except (OSError, EOFError) as e:
                self.close()
                raise ImageError(f"{label}: cannot decompress ({e})") from None
            self.spool.seek(0)
            f = self.spool
        else:
            f.seek(-len(head), os.SEEK_CUR)
        try:
            self.tar = tarfile.open(fileobj=f, mode="r:")
            members = self.tar.getmembers()
        except (tarfile.TarError, EOFError) as e:
            self.close()
            raise ImageError(f"{label} is not a tar archive ({e})") from None
        self.members = {}
        for member in members:
            name = _normalize(member.name)
            if name:
                self.members[name] = member

    def exists(self, name: str) -> bool:
        return self._find(name) is not None

    def _find(self, name: str, hops: int = 0):
        member = self.members.get(_normalize(name))
        if member is not None and member.issym():  # e.g. skopeo's legacy <id>/layer.tar
            if hops > 16 or member.linkname.startswith("/"):
                raise ImageError(f"{self.label}: symlink {member.name!r} cannot be followed")
            return self._find(posixpath.join(posixpath.dirname(_normalize(name)),
                                             member.linkname), hops + 1)
        if member is not None and member.islnk():
            return self._find(member.linkname, hops + 1) if hops <= 16 else None
        return member

    def open(self, name: str):
        member = self._find(name)
        if member is None or not member.isreg():
            raise ImageError(f"{self.label} has no file {name!r}: the archive is incomplete")
        return self.tar.extractfile(member)

    def close(self):
        for f in reversed(self.closing):
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _DirSource(_Source):
    """An archive unpacked in a directory (e.g. ``skopeo copy ... oci:DIR:TAG``)."""

    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        self.label = root

    def _path(self, name: str) -> str:
        relative = _normalize(name)
        path = os.path.realpath(os.path.join(self.root, relative or "."))
        if not relative or os.path.commonpath([path, self.root]) != self.root:
            raise ImageError(f"{self.label}: {name!r} points outside the directory: refused")
        return path

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def open(self, name: str):
        path = self._path(name)
        if not os.path.isfile(path):
            raise ImageError(f"{self.label} has no file {name!r}: the layout is incomplete")
        return open(path, "rb")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _normalize(name: str) -> str:
    """A member name as a plain relative path, or '' when it is absolute or climbs out."""
    if not isinstance(name, str) or name.startswith("/"):
        return ""
    name = posixpath.normpath(name)
    return "" if name in (".", "..") or name.startswith("../") else name


def _blob_name(digest) -> str:
    if not isinstance(digest, str) or not digest.startswith("sha256:") \
            or not HEX64.fullmatch(digest[7:]):
        raise ImageError(f"unsupported digest {digest!r} (minirt knows sha256 only)")
    return "blobs/sha256/" + digest[7:]


def _read_blob(src, descriptor: dict, limit: int) -> bytes:
    digest = descriptor.get("digest")
    data = src.read(_blob_name(digest), limit)
    if sha256_bytes(data) != digest or \
            (descriptor.get("size") is not None and descriptor["size"] != len(data)):
        raise ImageError(f"blob {digest[:19]} does not match its digest or size: "
                         "the archive is corrupt (nothing was stored)")
    return data


def _read_json(src, name: str, kind=dict):
    return _parse(src.read(name, MAX_JSON_BYTES), name, kind)


def _parse(data: bytes, where, kind=dict):
    try:
        value = json.loads(data)
    except ValueError:
        value = None
    if not isinstance(value, kind):
        raise ImageError(f"{str(where)[:30]} is not a JSON {kind.__name__}: the archive is corrupt")
    return value


def _describe(source) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "the input"


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def _seekable(f) -> bool:
    try:
        return f.seekable()
    except (AttributeError, OSError):
        return False


class _HashingReader:
    """Hashes (and counts, and optionally copies to ``tee``) every byte read through it."""

    def __init__(self, raw, tee=None):
        self.raw, self.tee, self.sha, self.size = raw, tee, hashlib.sha256(), 0

    def read(self, n=-1):
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        if self.tee is not None:
            self.tee.write(data)
        return data

    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def _decompressed(reader):
    """``reader``'s bytes, gunzipped when they start with gzip's magic."""
    head = reader.read(2)
    rest = Prepend(head, reader)
    return gzip.GzipFile(fileobj=rest, mode="rb") if head == b"\x1f\x8b" else rest


class _Plain:
    """Open a stored layer blob as its plain tar (gunzipped if it is gzip)."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        self.file = open(self.path, "rb")
        return _decompressed(self.file)

    def __exit__(self, *exc):
        self.file.close()
        return False
