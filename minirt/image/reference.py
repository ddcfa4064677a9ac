"""Image references: Docker's grammar for naming an image.

``busybox`` means ``docker.io/library/busybox:latest``; a first component with
a dot or colon, or ``localhost``, names a registry (``localhost:5000/lab/app:1``);
``@sha256:...`` pins a digest. Grammar: distribution/reference (reference.go,
regexp.go). Every class is spelled out in ASCII: Python's ``\\w`` and ``\\d`` also
match other scripts' letters and digits, Go's do not.
"""

from ..errors import UsageError
from ..record import Record

DEFAULT_REGISTRY = "docker.io"
COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
DIGEST = r"sha256:[0-9a-f]{64}"
# A registry: DNS-like labels joined by dots (``localhost`` is one), or an IPv6
# address in brackets, then an optional port.
DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
DOMAIN = rf"(?:{DOMAIN_COMPONENT}(?:\.{DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
MAX_NAME = 255  # characters in registry/repository, as docker counts them


class Reference(Record):
    """A parsed image name: registry, repository, and a tag and/or a digest."""

    __slots__ = ("registry", "repository", "tag", "digest")

    def __init__(self, registry: str, repository: str, tag: str | None = "latest",
                 digest: str | None = None):
        self.registry = registry        # e.g. "docker.io", "localhost:5000"
        self.repository = repository    # e.g. "library/busybox"
        self.tag = tag
        self.digest = digest

    @property
    def name(self) -> str:
        """``registry/repository`` in full, e.g. ``docker.io/library/busybox``."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        """The full, canonical form used as a key in the store."""
        return self._with_tag_and_digest(self.name)

    @property
    def familiar(self) -> str:
        """The short form docker shows: ``busybox:latest``, ``localhost:5000/app:1``.

        Only a one-component official repository loses ``library/``:
        ``docker.io/library/a/b`` stays ``library/a/b``, as ``a/b`` names ``docker.io/a/b``.
        """
        if self.registry != DEFAULT_REGISTRY:
            return self._with_tag_and_digest(self.name)
        official = self.repository.removeprefix("library/")
        return self._with_tag_and_digest(official if "/" not in official else self.repository)

    def _with_tag_and_digest(self, text: str) -> str:
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text


def parse(text: str) -> Reference:
    """Parse ``text`` as docker does; raise ``UsageError`` naming what is wrong."""
    import re  # here, not at the top: ``minirt run`` of a known image never needs it
    original = text
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not re.fullmatch(DIGEST, digest):
            raise UsageError(f"invalid image reference {original!r}: digest must be sha256:<64 hex>")
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        if not re.fullmatch(TAG, tag):
            raise UsageError(f"invalid image reference {original!r}: bad tag {tag!r}")
    parts = text.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, path = parts[0], parts[1:]
    else:
        registry, path = DEFAULT_REGISTRY, parts
    if not re.fullmatch(DOMAIN, registry):
        raise UsageError(f"invalid image reference {original!r}: bad registry {registry!r} (a "
                         "host name, host:port or [IPv6]:port)")
    if registry == DEFAULT_REGISTRY and len(path) == 1:
        path = ["library"] + path
    if not path or not all(re.fullmatch(COMPONENT, p) for p in path):
        raise UsageError(f"invalid image reference {original!r}: names use lowercase letters, "
                         "digits and . _ - separated by /")
    if len(registry) + 1 + len("/".join(path)) > MAX_NAME:
        raise UsageError(f"invalid image reference: the repository name {registry}/"
                         f"{'/'.join(path)[:40]}... must not be more than {MAX_NAME} characters")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, "/".join(path), tag, digest)
