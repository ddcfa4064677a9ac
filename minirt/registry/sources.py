"""Where each blob is known to exist remotely, so a push can mount instead of upload.

Pushing ``localhost:5000/lab/app`` whose base layer was pulled from (or pushed
to) ``localhost:5000/lab/busybox`` need not send that layer again: the
distribution API lets a client ask the registry to *mount* a blob from another
repository it already holds (``POST .../blobs/uploads/?mount=DIGEST&from=REPO``).
dockerd keeps the same kind of record (its "v2 metadata" per layer).

On disk: ``<state root>/images/sources.json``, ``{digest: ["registry/repository", ...]}``.
"""

import json
import os

from ..paths import atomic_write

MAX_PER_BLOB = 8   # remember a few repositories per blob, the latest last


def _path(store) -> str:
    return os.path.join(store.layout, "sources.json")


def _load(store) -> dict:
    try:
        with open(_path(store), "rb") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}   # only a cache of hints: losing it costs an upload, nothing more


def remember(store, digests: list[str], repository_name: str) -> None:
    """Note that every blob in ``digests`` now exists in ``registry/repository``."""
    with store._locked():
        # Blobs deleted from the store since (rmi) are forgotten here, so the file
        # stays as small as the store.
        known = {d: names for d, names in _load(store).items() if store.has_blob(d)}
        for digest in digests:
            names = [n for n in known.get(digest, []) if n != repository_name]
            known[digest] = (names + [repository_name])[-MAX_PER_BLOB:]
        atomic_write(_path(store), json.dumps(known, sort_keys=True).encode(), durable=False)


def candidates(store, digests: list[str], registry: str, repository: str) -> dict:
    """``{digest: another repository on the same registry known to hold it}``."""
    known, found = _load(store), {}
    for digest in digests:
        for name in reversed(known.get(digest, [])):
            host, _, repo = name.partition("/")
            if host == registry and repo != repository:
                found[digest] = repo
                break
    return found
