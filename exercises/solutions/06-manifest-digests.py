"""Reference solution of exercise 06: an OCI image manifest, and its digest."""

import hashlib
import json

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_manifest(config: bytes, layers: list[tuple[str, int]]) -> tuple[bytes, str]:
    """The image's manifest as canonical JSON, and the digest of those bytes (see starter.py)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": digest, "size": size}
                   for digest, size in layers],
    }
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return data, digest_of(data)
