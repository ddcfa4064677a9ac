"""Exercise 07: the first request of every pull, written by hand.

minirt calls your ``fetch_manifest`` each time ``minirt pull`` asks a registry
for a manifest (``Registry.manifest`` in minirt/registry/client.py): once by
tag or digest, and once more for this machine's manifest when the first answer
is an index of several platforms. Everything else of the pull (config, layers,
the tag in the store) is minirt's, and trusts what you return.

This version talks to registries that need no login, such as the lab's own
(``minirt registry start``); minirt's own version also does the login dance.
Plain HTTP is fine here: ``base_url`` is ``http://127.0.0.1:PORT``.
"""

import hashlib  # noqa: F401  (hashlib.sha256(body).hexdigest())
import json  # noqa: F401  (the registry's error body is JSON)
import urllib.error  # noqa: F401  (urlopen raises urllib.error.HTTPError for a 404)
import urllib.request  # noqa: F401  (or http.client, or requests: your choice)

from minirt.errors import RegistryError  # noqa: F401  (what minirt prints as one line)


def fetch_manifest(base_url: str, repository: str, reference: str,
                   accept: list[str]) -> tuple[bytes, str, str]:
    """``GET {base_url}/v2/{repository}/manifests/{reference}``: ``(body, media_type, digest)``.

    ``reference`` is a tag (``1``, ``latest``) or a digest (``sha256:<64 hex>``).
    ``accept`` lists the media types minirt can read, best first: send them in
    the ``Accept`` header, comma-separated. A registry answers with the format
    you did not ask for as if the manifest did not exist.

    Return:

    * ``body``: the bytes of the answer, exactly as received (never re-encoded);
    * ``media_type``: the answer's ``Content-Type``, without any ``; charset=``;
    * ``digest``: ``"sha256:"`` + the hex sha256 of ``body``.

    Check the digest before returning: when ``reference`` is a digest, the
    body's must equal it; otherwise, when the registry sends a
    ``Docker-Content-Digest`` header, the body's must equal that. When it does
    not, raise ``RegistryError`` saying the manifest does not match its digest:
    someone between you and the registry changed it.

    When the registry answers an error (404 for a tag it does not have),
    raise ``RegistryError`` with the registry's own words: its body is JSON,
    ``{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}``.
    """
    # TODO 1: build the URL and a request carrying the Accept header.
    # TODO 2: send it; read the body, the Content-Type and the Docker-Content-Digest
    #         headers. A 4xx/5xx answer (urllib raises HTTPError, which you can .read()):
    #         RegistryError with the code and message from its JSON body.
    # TODO 3: hash the body, compare with the digest it should have, refuse a mismatch.
    # TODO 4: return (body, media type, digest).
    raise NotImplementedError("fetch_manifest() is not written yet: see the TODOs in "
                              "fetch_manifest.py")
