"""Reference solution of exercise 07: GET a manifest from a registry, by hand, and check it."""

import hashlib
import json
import urllib.error
import urllib.request

from minirt.errors import RegistryError

MAX_MANIFEST_BYTES = 4 << 20  # the distribution spec's limit


def fetch_manifest(base_url: str, repository: str, reference: str,
                   accept: list[str]) -> tuple[bytes, str, str]:
    """(body, media type, digest) of a manifest, its digest checked (see starter.py)."""
    url = f"{base_url}/v2/{repository}/manifests/{reference}"
    request = urllib.request.Request(url, headers={"Accept": ", ".join(accept)})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = answer.read(MAX_MANIFEST_BYTES + 1)
            media_type = answer.headers.get("Content-Type", "").split(";")[0].strip()
            claimed = answer.headers.get("Docker-Content-Digest")
    except urllib.error.HTTPError as error:
        raise RegistryError(f"GET {url}: {registry_words(error)}") from None
    except urllib.error.URLError as error:
        raise RegistryError(f"cannot reach the registry at {base_url}: {error.reason}") from None
    if len(body) > MAX_MANIFEST_BYTES:
        raise RegistryError(f"the manifest at {url} is over {MAX_MANIFEST_BYTES} bytes: refused")
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    expected = reference if reference.startswith("sha256:") else claimed
    if expected and expected != digest:
        raise RegistryError(f"the manifest {repository}@{expected} does not match its digest "
                            f"(its bytes hash to {digest}): refused")
    return body, media_type, digest


def registry_words(error: urllib.error.HTTPError) -> str:
    """The registry's own error: {"errors": [{"code": ..., "message": ...}]}, or the status."""
    try:
        errors = json.loads(error.read()).get("errors") or []
        words = "; ".join(f"{e.get('message') or e.get('code')} ({e.get('code')})" for e in errors)
    except (ValueError, AttributeError):
        words = ""
    return words or f"HTTP {error.code} {error.reason}"
