"""save / load: docker-save tarballs and OCI layouts, checked against skopeo and umoci.

The images here live in private stores (not the session's), so untagging and
garbage collection cannot disturb other tests, and the store's own layout holds
the familiar names as ``ref.name`` (``oci:<store>/images:NAME:TAG`` is unambiguous).
"""

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

from conftest import require
from minirt.errors import ImageError, ImageNotFound
from minirt.image import archive, busybox
from minirt.image.store import ImageStore

APP = "minirt-archive-test/app:1"


def skopeo(*args) -> str:
    require(shutil.which("skopeo") is not None,
            "skopeo is not installed (scripts/setup-system installs it)")
    done = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def umoci(*args) -> str:
    require(shutil.which("umoci") is not None,
            "umoci is not installed (scripts/setup-system installs it)")
    done = subprocess.run(["umoci", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def workdir():
    path = tempfile.mkdtemp(prefix="minirt-archive-", dir="/var/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def source(workdir):
    """A store with busybox:latest and APP: busybox plus a layer that adds /hello."""
    store = ImageStore(os.path.join(workdir, "source"))
    base = busybox.ensure(store)
    rootfs = tempfile.mkdtemp(dir=workdir)
    with open(os.path.join(rootfs, "hello"), "w") as f:
        f.write("hello from a saved image\n")
    store.add_rootfs(rootfs, APP, {**base.run_config, "Cmd": ["cat", "/hello"]},
                     created_by="COPY hello /hello", parent=base)
    return store


@pytest.fixture
def fresh(tmp_path):
    return ImageStore(str(tmp_path / "fresh"))


def saved(source, workdir, fmt, names=("busybox", APP)) -> str:
    path = os.path.join(workdir, f"saved-{fmt}-{len(names)}.tar")
    archive.save(source, list(names), path, format=fmt)
    return path


def blobs_in(store) -> list[str]:
    directory = os.path.join(store.layout, "blobs", "sha256")
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def unpacked_file(store, image, name) -> str:
    """Read ``name`` from the image's layers (top first), as overlayfs would see it."""
    for layer_dir in store.unpacked_layers(image):
        path = os.path.join(layer_dir, name)
        if os.path.exists(path):
            with open(path) as f:
                return f.read()
    raise FileNotFoundError(name)


# --- round trips ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_save_rmi_load_round_trips_to_identical_digests(source, workdir, fmt):
    store = ImageStore(os.path.join(workdir, f"roundtrip-{fmt}"))
    shutil.copytree(source.layout, store.layout)
    before = {name: store.resolve(name) for name in ("busybox:latest", APP)}
    path = os.path.join(workdir, f"roundtrip-{fmt}.tar")
    archive.save(store, ["busybox", APP], path, format=fmt)

    for name in before:
        store.untag(name)
    store.collect_garbage()
    assert store.images() == [] and blobs_in(store) == [], "rmi removed everything"

    loaded = archive.load(store, path)
    assert [image.name for image in loaded] == list(before)
    for name, old in before.items():
        new = store.resolve(name)
        assert (new.manifest_digest, new.config_digest) == (old.manifest_digest, old.config_digest)
        assert new.layers == old.layers
    app = store.resolve(APP)
    assert unpacked_file(store, app, "hello") == "hello from a saved image\n"
    assert os.path.isfile(os.path.join(store.unpacked_layers(app)[-1], "bin", "busybox"))
    assert store.resolve("busybox").layers[0] == app.layers[0], "the base layer is shared"


def test_loaded_image_runs(engine, source, workdir):
    path = saved(source, workdir, "docker", names=(APP,))
    try:
        [image] = archive.load(engine.images, path)
        assert image.id == source.resolve(APP).id
        result = engine.run(APP)
        assert (result.exit_code, result.output) == (0, "hello from a saved image\n")
    finally:
        engine.remove_image(APP)


def test_docker_archive_layout(source, workdir):
    path = saved(source, workdir, "docker")
    app = source.resolve(APP)
    with tarfile.open(path) as tar:
        [_, entry] = json.load(tar.extractfile("manifest.json"))
        assert entry == {"Config": app.config_digest[7:] + ".json", "RepoTags": [APP],
                         "Layers": [layer.diff_id[7:] + "/layer.tar" for layer in app.layers]}
        assert tar.extractfile(entry["Config"]).read() == \
            open(source.blob_path(app.config_digest), "rb").read()
        with gzip.open(source.blob_path(app.layers[-1].digest)) as layer:
            assert tar.extractfile(entry["Layers"][-1]).read() == layer.read(), "uncompressed"
        repositories = json.load(tar.extractfile("repositories"))
        assert repositories["minirt-archive-test/app"] == {"1": app.layers[-1].diff_id[7:]}


def test_compressed_archive_from_a_pipe(source, workdir, fresh):
    """``gzip -c saved.tar | minirt load``: compressed, and not seekable."""
    path = saved(source, workdir, "docker", names=(APP,))
    with subprocess.Popen(["gzip", "-c", path], stdout=subprocess.PIPE) as pipe:
        [image] = archive.load(fresh, pipe.stdout)
    assert pipe.returncode == 0
    assert image.manifest_digest == source.resolve(APP).manifest_digest


# --- real tools read minirt's archives ------------------------------------------------

def test_skopeo_reads_minirts_docker_archive(source, workdir):
    path = saved(source, workdir, "docker")
    app = source.resolve(APP)
    info = json.loads(skopeo("inspect", f"docker-archive:{path}:{APP}"))
    assert info["Layers"] == [layer.diff_id for layer in app.layers], "docker archives: diff_ids"
    raw = json.loads(skopeo("inspect", "--raw", f"docker-archive:{path}:{APP}"))
    assert raw["config"]["digest"] == app.id, "same image ID"
    config = json.loads(skopeo("inspect", "--config", f"docker-archive:{path}:busybox:latest"))
    assert config["rootfs"]["diff_ids"] == source.resolve("busybox").config["rootfs"]["diff_ids"]


def test_skopeo_reads_minirts_oci_archive(source, workdir):
    path = saved(source, workdir, "oci")
    app = source.resolve(APP)
    info = json.loads(skopeo("inspect", f"oci-archive:{path}:{APP}"))
    assert info["Digest"] == app.manifest_digest
    assert info["Layers"] == [layer.digest for layer in app.layers]
    config = json.loads(skopeo("inspect", "--config", f"oci-archive:{path}:{APP}"))
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in app.layers]


def test_umoci_unpacks_minirts_oci_archive(source, workdir, tmp_path):
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(saved(source, workdir, "oci")) as tar:
        tar.extractall(layout)  # our own archive, just written
    assert set(umoci("ls", "--layout", str(layout)).split()) == {"busybox:latest", APP}
    umoci("unpack", "--image", f"{layout}:{APP}", str(tmp_path / "bundle"))
    with open(tmp_path / "bundle" / "rootfs" / "hello") as f:
        assert f.read() == "hello from a saved image\n"
    assert os.path.isfile(tmp_path / "bundle" / "rootfs" / "bin" / "busybox")


def test_real_tools_read_the_store_itself(source, tmp_path):
    """The store's images/ dir is an OCI layout; its ref.name annotations are familiar names."""
    app = source.resolve(APP)
    info = json.loads(skopeo("inspect", f"oci:{source.layout}:{APP}"))
    assert info["Digest"] == app.manifest_digest
    assert set(umoci("ls", "--layout", source.layout).split()) == {"busybox:latest", APP}
    assert "COPY hello /hello" in umoci("stat", "--image", f"{source.layout}:{APP}")
    umoci("unpack", "--image", f"{source.layout}:{APP}", str(tmp_path / "bundle"))
    with open(tmp_path / "bundle" / "rootfs" / "hello") as f:
        assert f.read() == "hello from a saved image\n"


# --- minirt reads what skopeo writes --------------------------------------------------

@pytest.mark.parametrize("transport", ["docker-archive", "oci"])
def test_minirt_loads_what_skopeo_wrote(source, tmp_path, fresh, transport):
    app = source.resolve(APP)
    target = tmp_path / ("copy.tar" if transport == "docker-archive" else "copy-layout")
    skopeo("copy", "--quiet", f"oci:{source.layout}:{APP}", f"{transport}:{target}:copied/app:2")
    if transport == "docker-archive":
        with tarfile.open(target) as tar:
            assert json.load(tar.extractfile("manifest.json"))[0]["RepoTags"] == \
                ["docker.io/copied/app:2"]
    else:
        assert target.is_dir() and (target / "oci-layout").is_file()
    [image] = archive.load(fresh, str(target))
    assert image.name == "copied/app:2"
    assert image.config_digest == app.config_digest
    assert [layer.diff_id for layer in image.layers] == [layer.diff_id for layer in app.layers]
    assert unpacked_file(fresh, image, "hello") == "hello from a saved image\n"


def test_an_oci_layout_naming_only_a_tag_needs_a_repository(source, tmp_path, fresh):
    target = tmp_path / "tag-only"
    skopeo("copy", "--quiet", f"oci:{source.layout}:{APP}", f"oci:{target}:v7")
    with pytest.raises(ImageError, match="no repository name"):
        archive.load(fresh, str(target))
    assert fresh.images() == [] and blobs_in(fresh) == [], "refused before writing anything"
    [image] = archive.load(fresh, str(target), repository="lab/app")
    assert image.name == "lab/app:v7" and image.id == source.resolve(APP).id


def test_docker_v2_media_types_are_accepted_and_stored_as_oci(source, tmp_path, fresh):
    """A layout whose index points (via a two-platform index) at a Docker v2 manifest."""
    app = source.resolve(APP)
    layout = tmp_path / "v2"
    shutil.copytree(source.layout, layout)

    def put(obj) -> dict:
        data = json.dumps(obj).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": obj["mediaType"], "digest": digest, "size": len(data)}

    manifest = json.load(open(source.blob_path(app.manifest_digest)))
    manifest["mediaType"] = archive.DOCKER_MANIFEST
    manifest["config"]["mediaType"] = archive.DOCKER_CONFIG
    for layer in manifest["layers"]:
        layer["mediaType"] = archive.DOCKER_LAYER_GZIP
    other = {"mediaType": archive.DOCKER_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 2,
             "platform": {"os": "linux", "architecture": "s390x"}}
    ours = {**put(manifest), "platform": {"os": "linux", "architecture": app.config["architecture"]}}
    listing = put({"schemaVersion": 2, "mediaType": archive.DOCKER_MANIFEST_LIST,
                   "manifests": [other, ours]})
    (layout / "index.json").write_text(json.dumps(
        {"schemaVersion": 2, "manifests": [{**listing, "annotations": {
            "org.opencontainers.image.ref.name": "v2/app:x"}}]}))
    [image] = archive.load(fresh, str(layout))
    assert image.name == "v2/app:x" and image.id == app.id
    stored = json.load(open(fresh.blob_path(image.manifest_digest)))
    assert stored["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert image.manifest_digest == app.manifest_digest, "converted back to minirt's own manifest"


# --- refusals -------------------------------------------------------------------------

def flip_byte(path: str, member_name: str) -> None:
    """Change one byte in the middle of a tar member, in place."""
    with tarfile.open(path) as tar:
        member = tar.getmember(member_name)
    with open(path, "r+b") as f:
        f.seek(member.offset_data + member.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_tampered_archive_is_refused_and_nothing_is_tagged(source, workdir, tmp_path, fresh, fmt):
    path = str(tmp_path / "tampered.tar")
    shutil.copy(saved(source, workdir, fmt), path)
    top = source.resolve(APP).layers[-1]
    base = source.resolve("busybox").layers[0]
    member = f"{base.diff_id[7:]}/layer.tar" if fmt == "docker" else f"blobs/sha256/{base.digest[7:]}"
    flip_byte(path, member)
    with pytest.raises(ImageError, match="does not match its (diff_id|digest)"):
        archive.load(fresh, path)
    assert fresh.images() == [], "no tag written"
    with pytest.raises(ImageNotFound):
        fresh.resolve("busybox")
    assert not fresh.has_blob(base.digest) and not fresh.has_blob(top.digest)
    assert not [n for n in blobs_in(fresh) if n.startswith(".")], "no temp file left"


def test_a_corrupt_store_blob_leaves_no_half_written_archive(source, workdir, tmp_path):
    store = ImageStore(str(tmp_path / "corrupt"))
    shutil.copytree(source.layout, store.layout)
    layer = store.resolve(APP).layers[-1]
    blob = store.blob_path(layer.digest)
    os.chmod(blob, 0o644)
    with gzip.open(blob) as f:
        plain = bytearray(f.read())
    plain[len(plain) // 2] ^= 1
    with open(blob, "wb") as f:
        f.write(gzip.compress(bytes(plain)))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ImageError, match="does not match its diff_id"):
        archive.save_docker(store, [APP], str(out / "app.tar"))
    with pytest.raises(ImageError, match="does not match its digest"):
        archive.save_oci(store, [APP], str(out / "app.tar"))
    assert os.listdir(out) == [], "neither the archive nor its temp file"


def test_not_an_archive_is_a_clear_error(tmp_path, fresh):
    (tmp_path / "junk").write_bytes(b"this is not a tar file at all" * 100)
    with pytest.raises(ImageError, match="not a tar archive"):
        archive.load(fresh, str(tmp_path / "junk"))
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(ImageError, match="neither a docker save archive"):
        archive.load(fresh, str(tmp_path / "empty-dir"))
