"""Checks for notebook 7 (Images and registries): references, digests, pulls, the API by hand.

``check_parse_reference`` compares the learner's parser with Docker's grammar
(``minirt.image.reference``) on names of every shape: Docker Hub's short ones,
a registry with a port, a digest instead of a tag, both.
``check_verify_blob`` gives the learner's function blobs the check writes
itself (one intact, one with a byte changed, one cut short), then busybox's
real blobs from the store. ``check_layers_to_fetch`` tries made-up manifests
chosen to catch the usual slips (layers compared by position, duplicates, the
config counted as a layer), then, when given two real images, their manifests.
``check_fetch_manifest`` pushes busybox to the notebook's running registry
under a tag of its own, asks the learner's function to fetch the manifest and
the config over HTTP, and compares with what the store holds byte for byte.

Scratch files live in /var/tmp as ``nb07-check-<pid>-*``; the local tag
``<registry>/nb07-check/busybox:<pid>`` exists only while the check runs. Both
are removed whatever the learner's code did (``cleanup`` catches an
interrupted check's leftovers).
"""

import hashlib
import os
import shutil
import tempfile

from .verdict import run_check

SCRATCH_PREFIX = "nb07-check-"
CHECK_REPOSITORY = "nb07-check/busybox"


def note(verdict, text: str) -> None:
    """A neutral line in the verdict: something the check could not try here."""
    verdict.lines.append(f"  · {text}")


def _store(store):
    if store is None:
        from ...engine import Engine
        store = Engine().images
    return store


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _short(digest) -> str:
    return str(digest).removeprefix("sha256:")[:12]


# --- exercise 7.1: what a name means ------------------------------------------------------

DIGEST = "sha256:" + hashlib.sha256(b"minirt lab").hexdigest()
NAMES = [
    "busybox",
    "ubuntu:22.04",
    "bitnami/redis",
    "localhost:5000/lab/app:1",
    "localhost:5000/lab/app",
    "localhost/app",
    "127.0.0.1:5000/nb07/busybox:1",
    f"ghcr.io/org/tool@{DIGEST}",
    f"registry.example.com:8443/team/web:2.1@{DIGEST}",
]


def _as_parts(got):
    """The learner's answer as a 4-tuple, or None when it is not one."""
    if all(hasattr(got, a) for a in ("registry", "repository", "tag", "digest")):
        return (got.registry, got.repository, got.tag, got.digest)
    if isinstance(got, (tuple, list)) and len(got) == 4:
        return tuple(got)
    return None


def _reference_hint(text: str, got: tuple, wanted: tuple) -> str:
    registry, repository, tag, digest = wanted
    if got[0] != registry:
        first = text.split("/")[0]
        if registry == "docker.io":
            return (f"{first!r} has no '.' or ':' and is not 'localhost', so it is not a "
                    "registry host: the name is on Docker Hub (docker.io) and "
                    f"{first!r} is part of the repository")
        return (f"{first!r} has a '.' or a ':' (or is 'localhost'): it names the registry "
                "host (with its port), not a repository")
    if got[1] != repository:
        if registry == "docker.io" and got[1] == repository.removeprefix("library/"):
            return ("a one-word name on Docker Hub is one of its official images, which "
                    "live in the repository library/NAME")
        return (f"the repository is the path between the registry and the tag "
                f"({repository!r}); got {got[1]!r}")
    if got[2] != tag:
        if tag == "latest" and got[2] is None:
            return "no tag and no digest means the tag 'latest'"
        if tag is None and got[2] == "latest":
            return "a name pinned by a digest gets no default tag: the tag is None"
        return ("the tag follows the last ':' of the *last* path component (a ':' in the "
                f"first component is a port); wanted {tag!r}, got {got[2]!r}")
    return f"the digest is everything after the '@': wanted {str(digest)[:19]}..., got {got[3]!r}"


def check_parse_reference(parse_reference) -> bool:
    """``parse_reference(text) -> (registry, repository, tag, digest)``, as docker reads it."""
    return run_check("Exercise 7.1: what does an image name mean?", _reference_body,
                     parse_reference)


def _reference_body(verdict, parse_reference):
    from ...image import reference
    for text in NAMES:
        ref = reference.parse(text)
        wanted = (ref.registry, ref.repository, ref.tag, ref.digest)
        got = parse_reference(text)
        parts = _as_parts(got)
        if parts is None:
            verdict.bad(f"parse_reference({text!r}) returns (registry, repository, tag, digest)",
                        f"it returned {got!r}: return a tuple of four (None for a missing "
                        "tag or digest)")
            return
        shown = text if len(text) < 40 else text[:36] + "..."
        if not verdict.expect(parts == wanted,
                              f"{shown:40} -> {wanted[0]}, {wanted[1]}, tag {wanted[2]}"
                              + (f", digest {wanted[3][:15]}..." if wanted[3] else ""),
                              _reference_hint(text, parts, wanted)):
            return


# --- exercise 7.2: a blob's digest --------------------------------------------------------

def check_verify_blob(verify_blob, store=None) -> bool:
    """``verify_blob(path, digest) -> True`` when the file's bytes have that sha256 digest."""
    return run_check("Exercise 7.2: check a blob against its digest", _verify_body,
                     verify_blob, store)


def _verify_body(verdict, verify_blob, store):
    data = os.urandom(3 * (1 << 20) + 17)   # a few MiB: more than one read of a loop
    digest = _sha(data)
    scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir="/var/tmp")
    try:
        paths = {}
        for name, content in (("intact", data), ("changed", data[:1000] + bytes([data[1000] ^ 1])
                                                  + data[1001:]), ("short", data[:-17])):
            paths[name] = os.path.join(scratch, name)
            with open(paths[name], "wb") as f:
                f.write(content)
        got = verify_blob(paths["intact"], digest)
        if got not in (True, False):
            verdict.bad("returns True or False", f"it returned {got!r}: compare, and return "
                        "the comparison (a bool)")
            return
        if not got:
            bare = hashlib.sha256(data).hexdigest()
            hint = ("compare the whole digest: 'sha256:' + hexdigest(); the digest given "
                    f"starts with {digest[:13]!r}, while hexdigest() alone starts with "
                    f"{bare[:6]!r}")
            verdict.bad("an intact 3 MiB blob is accepted", hint + "; and hash the file's "
                        "bytes (open it in binary mode), not its name")
            return
        verdict.good("an intact 3 MiB blob is accepted")
        if not verdict.expect(verify_blob(paths["changed"], digest) is False,
                              "the same blob with one bit flipped is refused",
                              "hash the file's bytes and compare with the digest: returning "
                              "True whatever the bytes checks nothing"):
            return
        if not verdict.expect(verify_blob(paths["short"], digest) is False,
                              "the same blob cut 17 bytes short is refused",
                              "hash the whole file, to its end"):
            return
        try:
            store = _store(store)
            image = store.resolve("busybox")
        except Exception as e:
            note(verdict, f"busybox's own blobs were not tried: {e}")
            return
        layer = image.layers[0]
        for what, blob_digest in (("config", image.config_digest), ("layer", layer.digest),
                                  ("manifest", image.manifest_digest)):
            if not verdict.expect(verify_blob(store.blob_path(blob_digest), blob_digest) is True,
                                  f"busybox's {what} blob is accepted ({_short(blob_digest)})",
                                  "a blob in the store is named by the sha256 of its bytes"):
                return
        verdict.expect(verify_blob(store.blob_path(layer.digest), layer.diff_id) is False,
                       "busybox's layer blob is refused against the layer's diff_id "
                       "(the digest of the uncompressed tar, notebook 5)",
                       "the blob is the gzip'd tar; the diff_id hashes the tar inside it")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- exercise 7.3: what a second pull fetches ---------------------------------------------

def _digest(n: int) -> str:
    return _sha(f"layer {n}".encode())


def _manifest(layers: list[int], size: int = 1000, config: int = 0) -> dict:
    return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _sha(f"config {config}".encode()), "size": 300},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": _digest(n), "size": size * n} for n in layers]}


# (what the case shows, have's layers, want's layers)
CASES = [
    ("base [1], app [1, 2]: only the app's own layer", [1], [1, 2]),
    ("the same layer at another position still counts", [5, 1], [1, 6]),
    ("nothing in common: every layer, bottom first", [1, 2], [3, 4, 5]),
    ("everything here already: nothing", [1, 2, 3], [1, 3]),
    ("a layer listed twice is fetched once", [], [7, 8, 7]),
]


def _expected(have: dict, want: dict) -> list[str]:
    here = {layer["digest"] for layer in have["layers"]}
    found = []
    for layer in want["layers"]:
        if layer["digest"] not in here and layer["digest"] not in found:
            found.append(layer["digest"])
    return found


def _fetch_hint(got, wanted, have, want) -> str:
    if isinstance(got, (list, tuple)) and got and isinstance(got[0], dict):
        return "return the layers' digests (strings), not their descriptors (dicts)"
    if not isinstance(got, (list, tuple)):
        return f"return a list of digests, not {type(got).__name__}"
    got = list(got)
    if want["config"]["digest"] in got:
        return "the config is fetched on every pull; list only the layers"
    if set(got) == set(wanted) and len(got) != len(wanted):
        return "each layer once: a layer listed twice is downloaded once"
    if set(got) == set(wanted):
        return "keep the order of the wanted manifest's layers (bottom first)"
    positional = [layer["digest"] for i, layer in enumerate(want["layers"])
                  if i >= len(have["layers"]) or have["layers"][i]["digest"] != layer["digest"]]
    if got == positional:
        return ("a layer is the same layer wherever it sits: compare digests as a set, not "
                "position by position")
    return f"wanted {[_short(d) for d in wanted]}, got {[_short(d) for d in got]}"


def check_layers_to_fetch(layers_to_fetch, store=None, have: str | None = None,
                          want: str | None = None) -> bool:
    """``layers_to_fetch(have_manifest, want_manifest) -> [digest, ...]``.

    ``have`` and ``want``: names of two images in ``store`` to try as well.
    """
    return run_check("Exercise 7.3: which layers must a pull fetch?", _fetch_body,
                     layers_to_fetch, store, have, want)


def _fetch_body(verdict, layers_to_fetch, store, have_name, want_name):
    for text, have_layers, want_layers in CASES:
        have, want = _manifest(have_layers), _manifest(want_layers, config=1)
        wanted = _expected(have, want)
        got = layers_to_fetch(have, want)
        ok = isinstance(got, (list, tuple)) and list(got) == wanted
        if not verdict.expect(ok, text, _fetch_hint(got, wanted, have, want)):
            return
    if not (have_name and want_name):
        return
    store = _store(store)
    try:
        have_image, want_image = store.resolve(have_name), store.resolve(want_name)
    except Exception as e:
        note(verdict, f"the real images were not tried: {e}")
        return
    have, want = (store.read_json(i.manifest_digest) for i in (have_image, want_image))
    wanted = _expected(have, want)
    got = layers_to_fetch(have, want)
    sizes = {layer["digest"]: layer["size"] for layer in want["layers"]}
    total = sum(sizes.values())
    ok = isinstance(got, (list, tuple)) and list(got) == wanted
    if verdict.expect(ok, f"with {have_image.name} here, a pull of {want_image.name} fetches "
                          f"{len(wanted)} of its {len(want['layers'])} layers",
                      _fetch_hint(got, wanted, have, want)):
        fetched = sum(sizes[d] for d in wanted)
        note(verdict, f"{fetched:,} of {total:,} layer bytes come over the wire; "
                      f"{total - fetched:,} are already here")


# --- exercise 7.4: the registry's API by hand ---------------------------------------------

def check_fetch_manifest(fetch_manifest_and_config, server=None, store=None) -> bool:
    """``fetch_manifest_and_config(registry_url, repository, tag) -> (manifest, config)``.

    ``server``: the running ``RegistryServer`` to push to and fetch from.
    """
    return run_check("Exercise 7.4: a manifest and its config, by hand", _api_body,
                     fetch_manifest_and_config, server, store)


def check_tag(server) -> str:
    """The local name the check pushes busybox under: one per notebook process."""
    return f"{server.address}/{CHECK_REPOSITORY}:{os.getpid()}"


def _api_body(verdict, fetch, server, store):
    from ...registry import server as registry_server
    if server is None or not registry_server.alive(server):
        verdict.bad("this check needs the registry the notebook started",
                    "run the cells of the part 'A registry of our own' first (they need "
                    "docker-registry: `make setup` installs it)")
        return
    import requests

    from ...registry.push import push
    store = _store(store)
    image = store.resolve("busybox")
    name = check_tag(server)
    store.tag(name, image.manifest_digest)
    try:
        push(store, name)
    finally:
        store.untag(name)   # the same manifest as busybox's: no blob goes with the tag
    verdict.good(f"the check pushed busybox as {CHECK_REPOSITORY}:{os.getpid()}")
    with open(store.blob_path(image.manifest_digest), "rb") as f:
        manifest_bytes = f.read()
    import json
    want_manifest = json.loads(manifest_bytes)
    try:
        got = fetch(server.url, CHECK_REPOSITORY, str(os.getpid()))
    except requests.HTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        url = str(getattr(e.response, "url", ""))
        if "/manifests/sha256:" in url:   # Distribution answers 404 or 500 here
            verdict.bad(f"GET /v2/{url.split('/v2/', 1)[-1][:60]}... answered {status}",
                        "the config is a blob, not a manifest: GET /v2/<repository>/blobs/"
                        "<manifest['config']['digest']>")
        elif status == 404 and "/manifests/" in url:
            verdict.bad(f"GET /v2/{CHECK_REPOSITORY}/manifests/TAG answered 404",
                        "the registry hides an OCI manifest from a client that does not say it "
                        "can read one: send the header Accept: "
                        "application/vnd.oci.image.manifest.v1+json")
        elif status == 404:
            verdict.bad(f"a request answered 404: {e}",
                        "the config is a blob: GET /v2/<repository>/blobs/<config digest>, "
                        "the digest from the manifest's config.digest")
        else:
            verdict.bad(f"a request failed: {e}")
        return
    except KeyError as e:
        if e.args and e.args[0] == "config":
            verdict.bad("your code raised KeyError: 'config': the manifest it read has no "
                        "config", "print what the registry answered: an error "
                        "(MANIFEST_UNKNOWN) means it hides an OCI manifest from a client that "
                        "does not say it can read one: send the header Accept: "
                        "application/vnd.oci.image.manifest.v1+json")
            return
        raise
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        verdict.bad("returns (manifest, config)", f"it returned {type(got).__name__}: return "
                    "the two documents as a pair of dicts")
        return
    manifest, config = got
    if hasattr(manifest, "json") or isinstance(manifest, (bytes, str)):
        verdict.bad("the manifest is a dict", "parse the answer: answer.json() (or json.loads)")
        return
    if isinstance(manifest, dict) and "errors" in manifest:
        codes = [e.get("code") for e in manifest["errors"] if isinstance(e, dict)]
        verdict.bad(f"the registry answered with errors {codes}",
                    "the registry hides an OCI manifest from a client that does not say it "
                    "can read one: send the header Accept: "
                    "application/vnd.oci.image.manifest.v1+json"
                    if "MANIFEST_UNKNOWN" in codes else "check the URL: /v2/<repository>/"
                    "manifests/<tag>")
        return
    if not verdict.expect(manifest == want_manifest,
                          f"the manifest is the one pushed: its bytes hash to "
                          f"{_short(image.manifest_digest)}..., busybox's manifest digest",
                          f"got {str(manifest)[:80]}..."):
        return
    if isinstance(config, dict) and config == manifest:
        verdict.bad("the config is the image config",
                    "that is the manifest again: the config is a blob, "
                    "GET /v2/<repository>/blobs/<manifest['config']['digest']>")
        return
    if isinstance(config, dict) and "errors" in config:
        verdict.bad("the config is the image config", f"the registry answered {config}: "
                    "fetch /v2/<repository>/blobs/<manifest['config']['digest']>")
        return
    if hasattr(config, "json") or isinstance(config, (bytes, str)):
        verdict.bad("the config is a dict", "parse the answer: answer.json() (or json.loads)")
        return
    verdict.expect(config == image.config,
                   f"the config is busybox's ({_short(image.config_digest)}...): "
                   f"{len(config.get('rootfs', {}).get('diff_ids', []))} layer, command "
                   f"{config.get('config', {}).get('Cmd')}",
                   f"got {str(config)[:80]}...: GET /v2/<repository>/blobs/<config digest>")


def cleanup(store=None) -> list[str]:
    """Remove what an interrupted check of this process left: scratch dirs, its local tag."""
    removed = []
    for name in os.listdir("/var/tmp"):
        if name.startswith(f"{SCRATCH_PREFIX}{os.getpid()}-"):
            path = os.path.join("/var/tmp", name)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    from ...image import reference
    try:
        store = _store(store)
        images = store.images()
    except Exception:
        return removed
    for image in images:
        ref = reference.parse(image.name)
        if ref.repository == CHECK_REPOSITORY and ref.tag == str(os.getpid()):
            store.untag(image.name)
            removed.append(image.name)
    return removed


__all__ = ["check_parse_reference", "check_verify_blob", "check_layers_to_fetch",
           "check_fetch_manifest", "cleanup"]
