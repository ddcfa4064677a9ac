"""Exercise 06: the manifest of an image, and the digest that names it.

minirt calls your ``image_manifest`` every time it makes an image: ``minirt
init`` (busybox), ``import``, ``commit``, and each step of ``build``
(``ImageStore.add_image`` in minirt/image/store.py). It has already stored the
config and the layer blobs, each under the sha256 of its bytes; it stores the
bytes you return as the manifest blob and tags the image with it. Your digest
is checked: if it is not the sha256 of your bytes, minirt refuses the image.
"""

import hashlib  # noqa: F401  (hashlib.sha256(data).hexdigest())
import json  # noqa: F401  (json.dumps(..., sort_keys=True, separators=(",", ":")))

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def image_manifest(config: bytes, layers: list[tuple[str, int]]) -> tuple[bytes, str]:
    """Return ``(manifest, digest)``: an OCI image manifest's bytes, and their digest.

    ``config`` is the image config exactly as minirt stored it (a JSON blob).
    ``layers`` holds ``(digest, size)`` for each layer blob, bottom layer first:
    each a gzip'd tar already stored under that digest.

    The manifest (OCI image-spec, manifest.md) is a JSON object with:

    * ``schemaVersion``: 2, and ``mediaType``: MEDIA_MANIFEST;
    * ``config``: a *descriptor* of the config blob: ``{"mediaType":
      MEDIA_CONFIG, "digest": "sha256:<64 hex digits>", "size": <bytes>}``,
      where the digest is the sha256 of exactly the bytes of ``config``;
    * ``layers``: one descriptor per layer, in the order given, each with
      ``mediaType`` MEDIA_LAYER_GZIP and the digest and size it came with.

    Encode it as canonical JSON, the way minirt writes every JSON blob: keys
    sorted, no spaces (``separators=(",", ":")``), UTF-8. Then the same image
    always gets the same bytes, and so the same digest.

    ``digest`` is ``"sha256:"`` + the hex sha256 of the manifest bytes you
    return: the name the image is known by (``minirt pull NAME@DIGEST``).
    """
    # TODO 1: the config's descriptor: hash `config` itself (never a re-encoding of it:
    #         one changed byte, e.g. a space, would be another digest).
    # TODO 2: one descriptor per layer, bottom first.
    # TODO 3: the manifest object, encoded as canonical JSON bytes.
    # TODO 4: return (those bytes, "sha256:" + their hex sha256).
    raise NotImplementedError("image_manifest() is not written yet: see the TODOs in "
                              "image_manifest.py")
