"""``docker push``: send an image's blobs, then its manifest, to a registry.

For each blob (every layer, then the config), cheapest first:

1. ``HEAD`` it: already in this repository? Then nothing to send ("Layer already exists").
2. Known in another repository of the same registry (sources.py)? Ask the
   registry to *mount* it from there: one request, no bytes ("Mounted from ...").
3. Otherwise upload it: ``POST`` opens a session, then one ``PUT`` with the
   whole blob, or ``PATCH`` chunk after chunk and a final ``PUT ?digest=``; the
   registry checks the digest before accepting it.

The manifest goes last, with ``PUT /v2/<repo>/manifests/<tag>``: a registry
refuses a manifest whose blobs it lacks, so a reader never sees a tag that
points at missing layers.
"""

import os

from ..errors import UsageError
from ..image import reference
from ..image.store import ImageStore
from ..record import Record
from . import auth, sources
from .client import Registry
from .progress import Progress

CHUNK_BYTES = 16 << 20   # blobs up to this size go in one PUT; bigger ones in PATCH chunks


class PushResult(Record):
    __slots__ = ("reference", "digest", "pushed_bytes", "pushed", "existing", "mounted")

    def __init__(self, reference: str):
        self.reference = reference
        self.digest = ""                 # the manifest's digest, as the registry reports it
        self.pushed_bytes = 0
        self.pushed: list[str] = []      # blobs uploaded
        self.existing: list[str] = []    # blobs the repository already had
        self.mounted: list[str] = []     # blobs mounted from another repository


def push(store: ImageStore, name: str, progress: Progress | None = None,
         chunk_bytes: int = CHUNK_BYTES,
         credentials: auth.Credentials | None = None) -> PushResult:
    """Push the local image ``name`` (``REGISTRY/REPOSITORY:TAG``) to its registry.

    ``credentials``: the login for this push only; None uses the stored one, if any.
    """
    ref = reference.parse(name)
    if not ref.tag:
        raise UsageError(f"push needs a tag, not only a digest: e.g. `minirt tag {name} "
                         f"{ref.name}:1` then push that")
    image = store.resolve(name)
    progress = progress or Progress()
    manifest_digest = image.manifest_digest
    manifest_bytes = _read_blob(store, manifest_digest)
    media_type = _media_type(store, manifest_digest)
    blobs = [(layer.digest, layer.size) for layer in image.layers]
    blobs.append((image.config_digest, os.path.getsize(store.blob_path(image.config_digest))))
    mountable = sources.candidates(store, [d for d, _ in blobs], ref.registry, ref.repository)
    scopes = [auth.scope(ref.repository, "pull", "push")]
    scopes += sorted({auth.scope(repo, "pull") for repo in mountable.values()})

    result = PushResult(str(ref))
    with Registry(ref.registry, scopes, credentials) as registry:
        registry.ping()
        progress.message(f"The push refers to repository [{ref.name}]")
        for digest, size in blobs:
            if registry.has_blob(ref.repository, digest):
                progress.done(digest, "Layer already exists")
                result.existing.append(digest)
                continue
            mounted, location = registry.start_upload(ref.repository, mountable.get(digest), digest)
            if mounted:
                progress.done(digest, f"Mounted from {mountable[digest]}")
                result.mounted.append(digest)
                continue
            bar = progress.layer(digest, size, "Pushing")
            with open(store.blob_path(digest), "rb") as f:
                registry.upload_blob(location, digest, f, size, chunk_bytes, bar.update)
            bar.close("Pushed")
            result.pushed.append(digest)
            result.pushed_bytes += size
        result.digest = registry.put_manifest(ref.repository, ref.tag, manifest_bytes,
                                              media_type) or manifest_digest
    sources.remember(store, [d for d, _ in blobs], ref.name)
    progress.message(f"{ref.tag}: digest: {result.digest} size: {len(manifest_bytes)}")
    return result


def _read_blob(store: ImageStore, digest: str) -> bytes:
    with open(store.blob_path(digest), "rb") as f:
        return f.read()


def _media_type(store: ImageStore, manifest_digest: str) -> str:
    """The manifest's media type: its own field, else OCI (the store's default)."""
    from ..image.store import MEDIA_MANIFEST
    return store.read_json(manifest_digest).get("mediaType") or MEDIA_MANIFEST
