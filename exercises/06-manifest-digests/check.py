"""Checks for exercise 06: images the student's copy of minirt makes with their manifest.

``minirt import`` turns a small root filesystem tar (written by the check) into
a one-layer image; a second layer goes on top of it the way ``minirt commit``
adds one (``ImageStore.add_rootfs`` with a parent: ``commit`` needs a
container, ``build``'s COPY root); ``minirt save --format oci`` writes the
result as an OCI image layout. Both images are made by the student's
``image_manifest``, through ``ImageStore.add_image``. The
check then reads the store's files (``images/index.json``, ``images/blobs/``)
and the saved archive itself, and, when skopeo is installed, lets skopeo copy
the archive: skopeo checks every digest on the way. No container runs: any
tier. Everything lives in the check's private state root.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

from minirt.exercises import Hint, last_line

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
BASE, ON_TOP = "lab/manifest:1", "lab/manifest:2"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def minirt(ctx, *args, what: str) -> str:
    """``minirt ARGS`` from the student's copy; its output, or a Hint saying why it failed."""
    done = ctx.run_minirt(*args, timeout=120)
    if done.returncode != 0:
        said = last_line(done.stderr)
        if "NotImplementedError" in said:
            raise Hint(f"{what} failed: image_manifest still raises NotImplementedError")
        if "Traceback" in done.stderr.decode(errors="replace"):
            raise Hint(f"{what} failed: your image_manifest raised {said}")
        if "is missing from the store" in said:
            raise Hint(f"{what} failed: {said}. Your manifest names a digest no stored blob "
                       "has: hash exactly the config bytes you were given (json.loads and "
                       "json.dumps again make other bytes), and copy the layers' digests as given")
        raise Hint(f"{what} failed: {said}")
    return done.stdout.decode(errors="replace")


def scratch(ctx) -> str:
    path = os.path.join(ctx.state_root, "ex06")
    os.makedirs(path, exist_ok=True)
    return path


def rootfs_tar(path: str) -> None:
    """A tiny root filesystem: what ``minirt import`` turns into a one-layer image."""
    with tarfile.open(path, "w") as tar:
        for name, data in (("etc/hostname", b"ex06\n"), ("bin/hello", b"#!/bin/sh\necho hi\n")):
            directory = tarfile.TarInfo(os.path.dirname(name))
            directory.type, directory.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(directory)
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))


def imported(ctx) -> None:
    """``minirt import`` of the check's rootfs as BASE, once."""
    if not getattr(ctx, "ex06_imported", False):
        path = os.path.join(scratch(ctx), "rootfs.tar")
        rootfs_tar(path)
        minirt(ctx, "import", path, BASE, what=f"`minirt import rootfs.tar {BASE}`")
        ctx.ex06_imported = True


# ``minirt build`` with COPY needs root (it gives the copied files to root), and ``minirt
# commit`` a container: so the second layer is added as commit adds one, through the copy's
# store (ImageStore.add_rootfs with a parent), in a throwaway interpreter.
ADD_LAYER = r"""
import os, sys, tempfile
from minirt.image.store import ImageStore
from minirt.paths import state_root
store = ImageStore(state_root())
base = store.resolve(sys.argv[1])
rootfs = tempfile.mkdtemp(prefix=".ex06-layer-", dir=state_root())
with open(os.path.join(rootfs, "hello.txt"), "w") as f:
    f.write("a second layer\n")
store.add_rootfs(rootfs, sys.argv[2], base.run_config, "exercise 06: a second layer",
                 parent=base)
"""


def built(ctx) -> None:
    """BASE plus one layer on top, as ON_TOP, once."""
    imported(ctx)
    if not getattr(ctx, "ex06_built", False):
        done = ctx.python("-c", ADD_LAYER, BASE, ON_TOP, timeout=120)
        what = f"adding a layer on top of {BASE} (ImageStore.add_rootfs, as `minirt commit` does)"
        if done.returncode != 0:
            said = last_line(done.stderr)
            if "NotImplementedError" in said:
                raise Hint(f"{what} failed: image_manifest still raises NotImplementedError")
            raise Hint(f"{what} failed: {said}")
        ctx.ex06_built = True


def blob(ctx, digest: str) -> bytes | None:
    path = os.path.join(ctx.state_root, "images", "blobs", "sha256", digest.removeprefix("sha256:"))
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def stored_manifest(ctx, familiar: str) -> tuple[str, bytes, dict]:
    """(digest, bytes, parsed) of the manifest the store's index.json tags ``familiar``."""
    with open(os.path.join(ctx.state_root, "images", "index.json"), "rb") as f:
        index = json.load(f)
    entries = [m for m in index["manifests"]
               if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == familiar]
    if not entries:
        raise Hint(f"the store has no image {familiar} after the command said it made it")
    digest = entries[-1]["digest"]
    data = blob(ctx, digest)
    if data is None:
        raise Hint(f"the store names {familiar}'s manifest {digest}, but holds no such blob")
    try:
        parsed = json.loads(data)
    except ValueError:
        raise Hint(f"{familiar}'s manifest is not JSON: it starts with {data[:40]!r}") from None
    if not isinstance(parsed, dict):
        raise Hint(f"{familiar}'s manifest is JSON, but not an object: {data[:60]!r}")
    return digest, data, parsed


def check_descriptor(ctx, descriptor, media_type: str, what: str) -> bytes:
    """A descriptor's fields, and the blob it names; returns that blob."""
    if not isinstance(descriptor, dict):
        raise Hint(f"the {what} descriptor is {descriptor!r}, not an object with mediaType, "
                   "digest and size")
    if descriptor.get("mediaType") != media_type:
        raise Hint(f"the {what} descriptor's mediaType is {descriptor.get('mediaType')!r}, not "
                   f"{media_type!r}")
    digest = descriptor.get("digest")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise Hint(f"the {what} descriptor's digest is {digest!r}: write 'sha256:' followed by "
                   "the 64 hex digits of hashlib.sha256(data).hexdigest()")
    data = blob(ctx, digest)
    if data is None:
        raise Hint(f"the {what} descriptor names {digest}, and no blob of the store has that "
                   "digest: hash exactly the bytes you were given (not a re-encoding, not "
                   "their repr)")
    if descriptor.get("size") != len(data) or isinstance(descriptor.get("size"), bool):
        raise Hint(f"the {what} descriptor's size is {descriptor.get('size')!r}, but that blob "
                   f"is {len(data)} bytes: the size is len() of the bytes, as an integer")
    return data


# --- the steps -------------------------------------------------------------------------------

def manifest_is_named_by_its_digest(ctx):
    imported(ctx)
    digest, data, manifest = stored_manifest(ctx, BASE)
    if sha256(data) != digest:
        raise Hint(f"the manifest is stored as {digest}, but its bytes hash to {sha256(data)}")
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    if data != canonical:
        raise Hint(f"the manifest is JSON but not canonical ({data[:50]!r}...): sort the keys "
                   "and leave no spaces, json.dumps(m, sort_keys=True, separators=(',', ':')), "
                   "so that the same image always gets the same digest")
    if manifest.get("schemaVersion") != 2 or manifest.get("mediaType") != MEDIA_MANIFEST:
        raise Hint(f"schemaVersion is {manifest.get('schemaVersion')!r} and mediaType "
                   f"{manifest.get('mediaType')!r}: the spec wants 2 and {MEDIA_MANIFEST!r}")
    return f"{BASE}: manifest {short(digest)}, {len(data)} bytes of canonical JSON"


def descriptors_name_the_blobs(ctx):
    imported(ctx)
    digest, _, manifest = stored_manifest(ctx, BASE)
    config = check_descriptor(ctx, manifest.get("config"), MEDIA_CONFIG, "config")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        raise Hint(f"an imported image has one layer, and the manifest's layers is {layers!r}")
    check_descriptor(ctx, layers[0], MEDIA_LAYER_GZIP, "layer")
    shown = json.loads(minirt(ctx, "inspect", BASE, what=f"`minirt inspect {BASE}`"))[0]
    if shown["Id"] != sha256(config) or shown["ManifestDigest"] != digest:
        raise Hint(f"`minirt inspect` shows Id {shown['Id']} and ManifestDigest "
                   f"{shown['ManifestDigest']}: expected {sha256(config)} (the config's digest, "
                   f"docker's image ID) and {digest}")
    return (f"config {short(sha256(config))} ({len(config)} bytes) and the layer, both found "
            "by digest")


def layers_bottom_first(ctx):
    built(ctx)
    _, _, base = stored_manifest(ctx, BASE)
    _, _, manifest = stored_manifest(ctx, ON_TOP)
    config = json.loads(check_descriptor(ctx, manifest.get("config"), MEDIA_CONFIG, "config"))
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 2:
        raise Hint(f"{ON_TOP} is {BASE} plus one layer, two layers, and its manifest's layers "
                   f"is {layers!r}")
    for number, (descriptor, diff_id) in enumerate(zip(layers, config["rootfs"]["diff_ids"])):
        data = check_descriptor(ctx, descriptor, MEDIA_LAYER_GZIP, f"layers[{number}]")
        if sha256(gzip.decompress(data)) != diff_id:
            raise Hint(f"layers[{number}] of {ON_TOP} is not the layer the config lists at "
                       f"{number} (its diff_ids): keep the layers in the order given, bottom first")
    if layers[0] != base["layers"][0]:
        raise Hint(f"{ON_TOP}'s bottom layer should be {BASE}'s layer, descriptor for descriptor")
    return f"{ON_TOP}: {BASE}'s layer, then the new one, each matching its diff_id"


def oci_archive_reads_back(ctx):
    built(ctx)
    archive = os.path.join(scratch(ctx), "saved-oci.tar")
    minirt(ctx, "save", "--format", "oci", "-o", archive, ON_TOP,
           what=f"`minirt save --format oci {ON_TOP}`")
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    if "oci-layout" not in files or "index.json" not in files:
        raise Hint("the saved archive lacks oci-layout or index.json")
    for name, data in files.items():
        if name.startswith("blobs/sha256/") and sha256(data) != "sha256:" + name.rsplit("/", 1)[1]:
            raise Hint(f"the archive's {name} does not hash to its name")
    descriptor = json.loads(files["index.json"])["manifests"][0]
    manifest = json.loads(files["blobs/sha256/" + descriptor["digest"][7:]])
    for child in [manifest["config"]] + manifest["layers"]:
        if "blobs/sha256/" + child["digest"][7:] not in files:
            raise Hint(f"the archive lacks the blob {child['digest']} its manifest names")
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        return "an OCI layout whose every blob hashes to its name (skopeo not installed: not tried)"
    copy = os.path.join(scratch(ctx), "skopeo-copy")
    done = subprocess.run([skopeo, "--insecure-policy", "copy", "--quiet",
                           f"oci-archive:{archive}:{ON_TOP}", f"dir:{copy}"],
                          capture_output=True, timeout=120,
                          env={**os.environ, "TMPDIR": scratch(ctx)})
    if done.returncode != 0:
        raise Hint(f"skopeo could not copy the saved image: {last_line(done.stderr)}")
    return "an OCI layout whose every blob hashes to its name; skopeo copied it, checking digests"


STEPS = [
    ("minirt import: the manifest is stored under the sha256 of its bytes",
     manifest_is_named_by_its_digest),
    ("its descriptors name the config and the layer by digest and size",
     descriptors_name_the_blobs),
    ("a layer on top: the manifest lists both, bottom first", layers_bottom_first),
    ("minirt save --format oci: a layout other tools can read", oci_archive_reads_back),
]
