"""The OCI distribution API, client side: how ``docker pull`` and ``push`` talk to a registry.

Everything is plain HTTP requests under ``/v2/`` (spec: opencontainers/distribution-spec,
spec.md; Docker's original: distribution/docs/spec/api.md)::

    GET  /v2/                                   are you a registry? (and: how do I log in?)
    GET  /v2/<repo>/manifests/<tag|digest>      a manifest or an index, by tag or digest
    PUT  /v2/<repo>/manifests/<tag>             publish a manifest under a tag
    HEAD /v2/<repo>/blobs/<digest>              is this layer/config already here?
    GET  /v2/<repo>/blobs/<digest>              fetch it
    POST /v2/<repo>/blobs/uploads/              start an upload (or ?mount=&from= to
                                                borrow a blob from another repository)
    PATCH <location>                            send a chunk      (chunked upload)
    PUT  <location>?digest=<digest>             finish the upload (or send it all at once)

Blobs and manifests are named by the sha256 of their bytes, so a client checks
everything it receives: a registry (or anyone in between) cannot hand over other
bytes without the digest showing it.

Plain HTTP is used only for ``localhost`` / ``127.0.0.1`` / ``::1`` and for hosts
listed in ``$MINIRT_INSECURE_REGISTRIES`` (comma-separated, like docker's
``insecure-registries``); everything else is HTTPS, with the system's CAs or a
private one in ``<config>/certs.d/<host:port>/ca.crt`` (docker's
``/etc/docker/certs.d`` layout).
"""

import hashlib
import os
from urllib.parse import urljoin

from ..errors import AuthError, RegistryError
from . import auth

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"   # docker.io's distribution API lives here
MAX_MANIFEST_BYTES = 4 << 20              # the distribution spec's limit for a manifest
TIMEOUT = (10, 60)                        # seconds: to connect, and between reads


def hostname(registry: str) -> str:
    """``localhost:5000`` -> ``localhost``; ``[::1]:5000`` -> ``[::1]``."""
    if registry.startswith("["):
        return registry[:registry.index("]") + 1]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_insecure(registry: str) -> bool:
    """May we talk plain HTTP to ``registry``? Only to loopback names or listed hosts."""
    listed = {h.strip() for h in os.environ.get("MINIRT_INSECURE_REGISTRIES", "").split(",")}
    return hostname(registry) in LOOPBACK_HOSTS or registry in listed


def base_url(registry: str) -> str:
    host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
    return ("http://" if is_insecure(registry) else "https://") + host


def ca_bundle(registry: str):
    """``requests``' ``verify``: a private CA for this registry if one is installed, else True."""
    path = os.path.join(auth.config_dir(), "certs.d", registry, "ca.crt")
    return path if os.path.exists(path) else True


class Registry:
    """One registry's distribution API, over one HTTP session (keep-alive, one login).

    ``scopes`` are the token scopes to ask for when the registry wants a bearer
    token, e.g. ``["repository:lab/app:pull"]``; a challenge naming more adds them.
    """

    def __init__(self, registry: str, scopes=(), credentials: auth.Credentials | None = None):
        try:
            import requests
        except ImportError:
            raise RegistryError("talking to a registry needs the Python package requests: "
                                "`pip install requests` (make setup installs it)") from None

        from .. import __version__
        self.registry = registry
        self.base = base_url(registry)
        self.scopes = list(scopes)
        self.credentials = credentials or auth.stored_credentials(registry)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"minirt/{__version__}"
        # Given with each request: requests lets $REQUESTS_CA_BUNDLE override a
        # session's own ``verify`` (psf/requests#3829), a request's it respects.
        self.verify = ca_bundle(registry)
        self._authorization = None   # the Authorization header, once we know which

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # --- requests, with the login dance ----------------------------------------------
    def request(self, method: str, path: str, expect=(200,), **kw):
        """Send a request; on 401 authenticate as the challenge asks and retry once.

        ``path`` is below the registry (``/v2/...``) or a full URL (an upload's
        Location). Answers outside ``expect`` become a ``RegistryError`` naming
        the registry's own error code.
        """
        url = urljoin(self.base + "/", path)
        answer = self._send(method, url, **kw)
        if answer.status_code == 401:
            self._authenticate(answer)
            rewind = kw.get("data")
            if hasattr(rewind, "seek"):
                rewind.seek(0)
            answer = self._send(method, url, **kw)
            if answer.status_code == 401:
                who = f"user {self.credentials.username!r}" if self.credentials else "anonymous"
                raise AuthError(f"{self.registry} refused {who} for {method} {path} "
                                f"({_error_text(answer)})")
        if answer.status_code not in expect:
            raise _answer_error(self.registry, method, path, answer)
        return answer

    def _send(self, method: str, url: str, headers=None, **kw):
        import requests
        headers = dict(headers or {})
        if self._authorization:
            headers["Authorization"] = self._authorization
        try:
            return self.session.request(method, url, headers=headers, timeout=TIMEOUT,
                                        verify=self.verify, allow_redirects=True, **kw)
        except requests.exceptions.SSLError as e:
            raise RegistryError(
                f"{self.registry}: TLS failed ({_reason(e)}). minirt speaks HTTPS to every "
                "registry but localhost/127.0.0.1: for a plain-HTTP one, list it in "
                "MINIRT_INSECURE_REGISTRIES; for a private CA, put it in "
                f"{auth.config_dir()}/certs.d/{self.registry}/ca.crt") from None
        except requests.exceptions.ConnectionError as e:
            raise RegistryError(f"cannot reach the registry at {self.base} ({_reason(e)}): "
                                "is it running? (the lab's own: `minirt registry start`)") \
                from None
        except requests.exceptions.Timeout:
            raise RegistryError(f"the registry at {self.base} did not answer in time") from None

    def _authenticate(self, answer) -> None:
        header = answer.headers.get("WWW-Authenticate", "")
        challenge = auth.parse_challenge(header) if header else None
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            raise AuthError(f"{self.registry} wants a login it does not name "
                            f"(WWW-Authenticate: {header or 'missing'})")
        if challenge.scheme == "basic":
            if not self.credentials:
                raise AuthError(f"{self.registry} needs a login: run `minirt login {self.registry}`")
            self._authorization = self.credentials.basic
            return
        wanted = challenge.params.get("scope")
        if wanted and wanted not in self.scopes:
            self.scopes.append(wanted)
        token = auth.fetch_token(self.session, challenge, self.scopes, self.credentials,
                                 TIMEOUT, self.verify)
        self._authorization = "Bearer " + token

    # --- the API --------------------------------------------------------------------------
    def ping(self) -> None:
        """``GET /v2/``: checks this is a registry, and logs in if it asks."""
        self.request("GET", "/v2/")

    def manifest(self, repository: str, ref: str, accept: list[str]) -> tuple[bytes, str, str]:
        """Fetch a manifest or index: (its bytes, its media type, its checked digest)."""
        from .. import seams  # fetch_manifest is a seam (exercises/07-registry-pull)
        fetch = seams.replaceable("fetch_manifest", self.fetch_manifest)
        return fetch(self.base, repository, ref, accept)

    def fetch_manifest(self, base_url: str, repository: str, ref: str,
                       accept: list[str]) -> tuple[bytes, str, str]:
        """``GET <base_url>/v2/<repository>/manifests/<ref>`` with ``Accept: <accept>``:
        (the body, its media type (Content-Type), its digest). The digest is
        checked: the sha256 of the body must be ``ref`` when that is a digest, or
        else the registry's ``Docker-Content-Digest`` header, when it sends one.
        A registry's error (404 for an unknown tag) is a ``RegistryError`` in its
        own words. This one also logs in when asked (``request``); ``base_url`` is
        this session's own."""
        answer = self.request("GET", f"/v2/{repository}/manifests/{ref}", stream=True,
                              headers={"Accept": ", ".join(accept)})
        data = read_capped(answer, MAX_MANIFEST_BYTES, f"the manifest {repository}:{ref}")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        claimed = ref if ref.startswith("sha256:") else answer.headers.get("Docker-Content-Digest")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise RegistryError(f"the manifest {repository}@{claimed[:19]} from {self.registry} "
                                f"does not match its digest (got {digest[:19]}): refused")
        media_type = answer.headers.get("Content-Type", "").split(";")[0].strip()
        return data, media_type, digest

    def has_blob(self, repository: str, digest: str) -> bool:
        answer = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", expect=(200, 404))
        return answer.status_code == 200

    def open_blob(self, repository: str, digest: str):
        """A streaming response for the blob; read it with ``.raw.read`` or ``iter_content``."""
        return self.request("GET", f"/v2/{repository}/blobs/{digest}", stream=True)

    def start_upload(self, repository: str, mount_from: str | None = None, digest: str = ""):
        """POST an upload: (mounted?, Location). With ``mount_from`` the registry may
        link the blob from that repository at once (201) instead of opening a session (202)."""
        params = {"mount": digest, "from": mount_from} if mount_from else None
        answer = self.request("POST", f"/v2/{repository}/blobs/uploads/", expect=(201, 202),
                              params=params)
        return answer.status_code == 201, answer.headers.get("Location", "")

    def upload_blob(self, location: str, digest: str, f, size: int, chunk_size: int,
                    on_bytes=lambda n: None) -> None:
        """Send a blob to an open upload session: in one PUT when it fits in
        ``chunk_size``, else chunk by chunk with PATCH (each ``Content-Range``),
        then a PUT with ``?digest=`` that the registry checks against what it got."""
        if size <= chunk_size:
            data = f.read()
            self.request("PUT", location, expect=(201,), params={"digest": digest}, data=data,
                         headers={"Content-Type": "application/octet-stream"})
            on_bytes(len(data))
            return
        offset = 0
        while chunk := f.read(chunk_size):
            answer = self.request("PATCH", location, expect=(202,), data=chunk, headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                "Content-Length": str(len(chunk))})
            location = answer.headers.get("Location", location)
            offset += len(chunk)
            on_bytes(len(chunk))
        self.request("PUT", location, expect=(201,), params={"digest": digest},
                     headers={"Content-Length": "0"})

    def put_manifest(self, repository: str, ref: str, data: bytes, media_type: str) -> str:
        answer = self.request("PUT", f"/v2/{repository}/manifests/{ref}", expect=(201,),
                              data=data, headers={"Content-Type": media_type})
        return answer.headers.get("Docker-Content-Digest", "")


def read_capped(answer, limit: int, what: str) -> bytes:
    """The whole body of a streamed answer, refusing more than ``limit`` bytes."""
    length = answer.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        raise RegistryError(f"{what} is {length} bytes, over the {limit} allowed: refused")
    data = answer.raw.read(limit + 1, decode_content=True)
    if len(data) > limit:
        raise RegistryError(f"{what} is over {limit} bytes: refused")
    return data


def _answer_error(registry: str, method: str, path: str, answer) -> RegistryError:
    text = _error_text(answer)
    if answer.status_code == 403:
        return AuthError(f"{registry} denied {method} {path}: {text}")
    return RegistryError(f"{registry}: {method} {path}: {text}")


def _error_text(answer) -> str:
    """The registry's own words: ``{"errors": [{"code", "message"}]}`` (spec: error codes)."""
    try:
        errors = answer.json().get("errors") or []
        words = "; ".join(f"{e.get('message') or e.get('code')} ({e.get('code')})" for e in errors)
    except (ValueError, AttributeError):
        words = ""
    return words or f"HTTP {answer.status_code} {answer.reason}"


def _reason(error) -> str:
    """The innermost cause of a requests error, in a few words (e.g. 'Connection refused')."""
    cause = error
    while cause.__context__ is not None or getattr(cause, "reason", None) is not None:
        nxt = getattr(cause, "reason", None) or cause.__context__
        if nxt is cause or nxt is None or isinstance(nxt, str):
            break
        cause = nxt
    text = str(cause)
    for known in ("Connection refused", "Name or service not known", "certificate verify failed",
                  "wrong version number", "timed out"):
        if known in text:
            return known
    return text.split(": ")[-1][:120] or cause.__class__.__name__
