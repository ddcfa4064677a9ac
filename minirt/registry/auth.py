"""Registry authentication: stored logins, HTTP challenges and bearer tokens.

A registry says how to authenticate in the ``WWW-Authenticate`` header of a 401:

``Basic realm="..."``
    send ``Authorization: Basic base64(user:password)`` with every request
    (the Distribution registry's htpasswd mode).
``Bearer realm="https://auth.example/token",service="registry",scope="repository:x:pull"``
    ask the token server at ``realm`` for a token good for that service and
    scope (with the login as Basic credentials, or anonymously), then send
    ``Authorization: Bearer <token>``. Docker Hub works this way; the token is a
    JWT the registry checks against the issuer's certificate.

Specs: RFC 7235 (challenges), distribution/docs/spec/auth/token.md (the token
flow) and scope.md (``repository:NAME:ACTIONS``).

``minirt login`` keeps credentials as docker keeps them in ``~/.docker/config.json``
(``{"auths": {"HOST": {"auth": base64(user:password)}}}``), in
``$MINIRT_CONFIG/auth.json`` (default ``~/.config/minirt/auth.json``), mode 0600:
readable by its owner only, since base64 is an encoding, not encryption.
"""

import base64
import json
import os

from ..errors import AuthError
from ..paths import atomic_write
from ..record import Record


class Credentials(Record):
    """A user name and password (or token) for one registry."""

    __slots__ = ("username", "password")

    def __init__(self, username: str, password: str):
        self.username = username
        self.password = password

    @property
    def basic(self) -> str:
        """The value of an ``Authorization: Basic`` header."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def __repr__(self) -> str:  # never print a password
        return f"Credentials(username={self.username!r}, password=***)"


class Challenge(Record):
    """A parsed ``WWW-Authenticate`` header: the scheme and its parameters."""

    __slots__ = ("scheme", "params")

    def __init__(self, scheme: str, params: dict):
        self.scheme = scheme    # "basic" or "bearer" (lowercase)
        self.params = params    # realm, service, scope, error, ...


def parse_challenge(header: str) -> Challenge:
    """``Bearer realm="x",service="y"`` -> Challenge("bearer", {"realm": "x", ...})."""
    from requests.utils import parse_dict_header  # RFC 7235 lists, quoted strings included
    scheme, _, rest = header.strip().partition(" ")
    params = {key.lower(): value for key, value in parse_dict_header(rest).items()}
    return Challenge(scheme.lower(), params)


def scope(repository: str, *actions: str) -> str:
    """The token scope for actions on a repository: ``repository:lab/app:pull,push``."""
    return f"repository:{repository}:{','.join(actions)}"


def fetch_token(session, challenge: Challenge, scopes: list[str],
                credentials: Credentials | None, timeout, verify=True) -> str:
    """Ask the challenge's token server for a bearer token covering ``scopes``."""
    realm = challenge.params.get("realm")
    if not realm:
        raise AuthError("the registry asked for a bearer token but named no token server (realm)")
    query = [("service", challenge.params["service"])] if "service" in challenge.params else []
    query += [("scope", s) for s in scopes]
    headers = {"Authorization": credentials.basic} if credentials else {}
    import requests
    try:
        answer = session.get(realm, params=query, headers=headers, timeout=timeout, verify=verify)
    except requests.RequestException as e:
        raise AuthError(f"cannot reach the token server {realm}: {e.__class__.__name__}") from None
    if answer.status_code in (401, 403):
        who = f"user {credentials.username!r}" if credentials else "anonymous access"
        hint = "" if credentials else ": run `minirt login` first"
        raise AuthError(f"the token server {realm} refused {who} ({answer.status_code}){hint}")
    if answer.status_code != 200:
        raise AuthError(f"the token server {realm} answered {answer.status_code}")
    try:
        body = answer.json()
        return body.get("token") or body["access_token"]
    except (ValueError, KeyError, AttributeError):
        raise AuthError(f"the token server {realm} sent no token") from None


# --- stored logins ------------------------------------------------------------------------

def config_dir() -> str:
    """Where logins are kept: ``$MINIRT_CONFIG``, else ``$XDG_CONFIG_HOME/minirt``."""
    explicit = os.environ.get("MINIRT_CONFIG")
    if explicit:
        return os.path.abspath(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "minirt")


def _auth_path() -> str:
    return os.path.join(config_dir(), "auth.json")


def _load_logins() -> dict:
    try:
        with open(_auth_path(), "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError:
        raise AuthError(f"{_auth_path()} is not valid JSON: fix or delete it") from None
    return data.get("auths") or {}


def _save_logins(auths: dict) -> None:
    os.makedirs(config_dir(), mode=0o700, exist_ok=True)
    atomic_write(_auth_path(), json.dumps({"auths": auths}, indent=2).encode(), mode=0o600)


def stored_credentials(registry: str) -> Credentials | None:
    """The login saved for ``registry`` (host[:port]), if any."""
    entry = _load_logins().get(registry)
    if not entry or "auth" not in entry:
        return None
    try:
        username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    except ValueError:
        raise AuthError(f"the login stored for {registry} in {_auth_path()} is damaged: "
                        f"run `minirt logout {registry}` and log in again") from None
    return Credentials(username, password)


def save_credentials(registry: str, credentials: Credentials) -> str:
    """Remember a login (file mode 0600); return the file's path."""
    auths = _load_logins()
    pair = f"{credentials.username}:{credentials.password}".encode()
    auths[registry] = {"auth": base64.b64encode(pair).decode()}
    _save_logins(auths)
    return _auth_path()


def forget_credentials(registry: str) -> bool:
    """Remove a stored login; False when there was none."""
    auths = _load_logins()
    if registry not in auths:
        return False
    del auths[registry]
    _save_logins(auths)
    return True
