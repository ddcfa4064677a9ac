"""The image store: an OCI image layout on disk, and layers unpacked safely."""

import hashlib
import io
import json
import os
import stat
import tarfile

import pytest

from minirt.errors import ImageError, ImageNotFound, UsageError
from minirt.image import layer, reference
from minirt.image.store import ImageStore
from conftest import require
from minirt.kernel import mounts


def sha256_file(path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def test_store_is_an_oci_image_layout(image_store):
    layout = image_store.layout
    assert json.load(open(os.path.join(layout, "oci-layout"))) == {"imageLayoutVersion": "1.0.0"}
    index = json.load(open(os.path.join(layout, "index.json")))
    [entry] = [m for m in index["manifests"]
               if m["annotations"]["io.containerd.image.name"] == "docker.io/library/busybox:latest"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "busybox:latest"
    blobs = os.path.join(layout, "blobs", "sha256")
    for name in os.listdir(blobs):
        assert sha256_file(os.path.join(blobs, name)) == "sha256:" + name, "content-addressed"
    manifest = json.load(open(os.path.join(blobs, entry["digest"].split(":")[1])))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = json.load(open(os.path.join(blobs, manifest["config"]["digest"].split(":")[1])))
    assert config["os"] == "linux" and config["rootfs"]["type"] == "layers"
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"]) == 1


def test_busybox_image_is_a_real_root_filesystem(image_store):
    image = image_store.resolve("busybox")
    root = image_store.unpacked_layers(image)[0]
    assert os.path.isfile(os.path.join(root, "bin", "busybox"))
    assert os.readlink(os.path.join(root, "bin", "sh")) == "/bin/busybox"
    assert len(os.listdir(os.path.join(root, "bin"))) > 50, "one link per applet"
    assert "root:x:0:0" in open(os.path.join(root, "etc", "passwd")).read()
    assert os.path.isfile(os.path.join(root, "etc", "group"))
    assert open(os.path.join(root, "etc", "hostname")).read().strip() == "busybox"
    assert stat.S_IMODE(os.stat(os.path.join(root, "tmp")).st_mode) == 0o1777
    assert image.run_config["Cmd"] == ["sh"]


def test_layer_dir_is_named_by_diff_id_and_matches_it(image_store):
    image = image_store.resolve("busybox")
    info = image.layers[0]
    assert image_store.layer_dir(info.diff_id).endswith(info.diff_id.split(":")[1])
    import gzip
    with gzip.open(image_store.blob_path(info.digest)) as f:
        assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == info.diff_id


def test_references_follow_dockers_grammar():
    assert str(reference.parse("busybox")) == "docker.io/library/busybox:latest"
    assert reference.parse("busybox").familiar == "busybox:latest"
    ref = reference.parse("localhost:5000/lab/app:1")
    assert (ref.registry, ref.repository, ref.tag) == ("localhost:5000", "lab/app", "1")
    assert reference.parse("quay.io/a/b@sha256:" + "0" * 64).tag is None
    for bad in ("UPPER", "a//b", "x:bad tag", "x@sha256:zz"):
        with pytest.raises(Exception):
            reference.parse(bad)


@pytest.mark.parametrize("text", [
    "my registry.com/app", "localhost:abc/app", "evil.com#.x.y/app", "a..b/app", "-x.com/app",
    "a.b:/app", "x.com\n/app", "[::1/app",            # the registry part: docker's domain grammar
    "busybox:t\u00e2g", "busybox:\u0661\u0662",        # tags are ASCII: [A-Za-z0-9_.-]
    "a/" + "b" * 250,                                  # docker.io/a/bbb...: over 255 characters
])
def test_references_outside_dockers_grammar_are_usage_errors(text):
    with pytest.raises(UsageError) as caught:
        reference.parse(text)
    assert "\n" not in str(caught.value)


def test_registries_may_be_hosts_ports_and_ipv6_addresses():
    for text, registry in [("localhost/app", "localhost"), ("Reg-1.example.com:5000/a/b", None),
                           ("[::1]:5000/app:1", "[::1]:5000"), ("127.0.0.1:5000/app", None)]:
        assert reference.parse(text).registry == (registry or text.split("/")[0])


def test_familiar_form_drops_library_only_for_official_images():
    assert reference.parse("docker.io/library/busybox:1").familiar == "busybox:1"
    nested = reference.parse("docker.io/library/a/b:1")
    assert nested.familiar == "library/a/b:1", "a/b:1 would name docker.io/a/b"
    assert str(reference.parse(nested.familiar)) == str(nested)


def test_unknown_image_is_a_clear_error(image_store):
    with pytest.raises(ImageNotFound, match="not found locally"):
        image_store.resolve("nothing-here:1")


def tar_bytes(members) -> io.BytesIO:
    """Build a tar from (TarInfo, data) pairs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def member(name, kind=tarfile.REGTYPE, data=b"", linkname="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize("members, why", [
    ([member("/etc/passwd", data=b"x")], "absolute"),
    ([member("a/../../outside", data=b"x")], ".."),
    ([member("link", tarfile.SYMTYPE, linkname="/"), member("link/etc/evil", data=b"x")],
     "symlink"),
    ([member("dir", tarfile.SYMTYPE, linkname="../.."), member("dir/evil", data=b"x")], "symlink"),
    ([member("hard", tarfile.LNKTYPE, linkname="../../etc/passwd")], ".."),
    ([member(".wh.", data=b"")], "whiteout"),
])
def test_unpacking_refuses_paths_that_leave_the_layer(tmp_path, members, why):
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(ImageError):
        layer.unpack(tar_bytes(members), str(dest))
    assert not (tmp_path / "outside").exists() and not (tmp_path / "evil").exists()


def test_symlinks_inside_a_layer_are_kept_as_links(tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    layer.unpack(tar_bytes([member("etc/", tarfile.DIRTYPE, mode=0o755),
                            member("etc/hostname", data=b"box\n"),
                            member("bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox"),
                            member("etc/hn", tarfile.LNKTYPE, linkname="etc/hostname")]), str(dest))
    assert os.readlink(dest / "bin" / "sh") == "/bin/busybox"
    assert os.stat(dest / "etc" / "hn").st_ino == os.stat(dest / "etc" / "hostname").st_ino


def test_device_nodes_in_a_layer_are_skipped(tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    info = tarfile.TarInfo("dev/sda")
    info.type, info.devmajor, info.devminor = tarfile.BLKTYPE, 8, 0
    layer.unpack(tar_bytes([(info, None)]), str(dest))
    assert not (dest / "dev" / "sda").exists()


def test_whiteouts_become_overlay_whiteouts(tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    layer.unpack(tar_bytes([member("etc/", tarfile.DIRTYPE, mode=0o755),
                            member("etc/.wh.motd", data=b""),
                            member("var/", tarfile.DIRTYPE, mode=0o755),
                            member("var/.wh..wh..opq", data=b"")]), str(dest))
    st = os.lstat(dest / "etc" / "motd")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0
    assert os.getxattr(dest / "var", "trusted.overlay.opaque") == b"y"


def test_a_corrupt_layer_is_refused_and_leaves_no_directory(image_store, tmp_path):
    store = ImageStore(str(tmp_path / "store"))
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "motd").write_text("hello\n")
    image = store.add_rootfs(str(rootfs), "corrupt:1", {"Cmd": ["sh"]}, created_by="test")
    info = image.layers[0]
    blob = store.blob_path(info.digest)
    os.chmod(blob, 0o644)
    with open(blob, "wb") as f:  # a valid gzip'd tar, but not the layer the config names
        import gzip
        f.write(gzip.compress(tar_bytes([member("etc/motd", data=b"tampered\n")]).getvalue()))
    with pytest.raises(ImageError, match="diff_id"):
        store.ensure_unpacked(info)
    assert not os.path.exists(store.layer_dir(info.diff_id))
    assert not [n for n in os.listdir(store.layers_root) if n.startswith(".unpack-")]


def test_run_plans_follow_the_index(image_store, tmp_path):
    store = ImageStore(str(tmp_path / "store"))
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "tool").write_text("#!/bin/sh\n")
    first = store.add_rootfs(str(rootfs), "app:1", {"Cmd": ["tool"]}, created_by="test")
    plan = store.run_plan("app:1")
    assert plan.image_id == first.id and plan.run_config["Cmd"] == ["tool"]
    assert os.path.isdir(plan.layers[0])
    assert store.run_plan("docker.io/library/app:1").image_id == first.id
    (rootfs / "bin" / "tool").write_text("#!/bin/sh\necho v2\n")
    second = store.add_rootfs(str(rootfs), "app:1", {"Cmd": ["tool", "--v2"]}, created_by="test")
    assert store.run_plan("app:1").image_id == second.id, "a new tag is seen at once"
    with open(os.path.join(store.layout, "run-plans.marshal"), "wb") as f:
        f.write(b"not marshal")
    assert store.run_plan("app:1").run_config["Cmd"] == ["tool", "--v2"], "a broken cache is rebuilt"
    import shutil
    shutil.rmtree(store.layer_dir(second.layers[0].diff_id))
    assert os.path.isdir(store.run_plan("app:1").layers[0]), "a missing layer dir is unpacked again"
    with pytest.raises(ImageNotFound):
        store.run_plan("app:2")


@pytest.mark.parametrize("members, why", [
    ([member(".", tarfile.SYMTYPE, linkname="/etc")], "root"),
    ([member("/", tarfile.SYMTYPE, linkname="/etc")], "absolute"),
    ([member("d/", tarfile.DIRTYPE, mode=0o755), member("h", tarfile.LNKTYPE, linkname="d")],
     "regular file"),
    ([member("s", tarfile.SYMTYPE, linkname="/etc/passwd"), member("h", tarfile.LNKTYPE, linkname="s")],
     "regular file"),
    ([member("h", tarfile.LNKTYPE, linkname="missing")], "missing"),
    ([member("a/.wh.b/c", data=b"")], "whiteout"),
])
def test_hostile_layers_are_refused_with_a_clear_message(tmp_path, members, why):
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(ImageError, match=why):
        layer.unpack(tar_bytes(members), str(dest))
    assert not os.path.islink(dest), "the layer root itself is untouched"


def with_pax(pair, **pax):
    """A member (TarInfo, data) with PAX header fields, which may say anything."""
    pair[0].pax_headers = pax
    return pair


@pytest.mark.parametrize("members, why", [
    ([with_pax(member("f"), path="a\0b")], "NUL"),
    ([with_pax(member("l", tarfile.SYMTYPE, linkname="x"), linkpath="a\0b")], "NUL"),
    ([with_pax(member("f"), mtime="1e400")], "impossible time"),
    ([with_pax(member("f"), mtime="nan")], "impossible time"),
    ([with_pax(member("f"), uid=str(2 ** 40))], "impossible owner"),
    ([with_pax(member("f"), gid="-1")], "impossible owner"),
    # 1 byte stored, 8 MiB claimed: sparse members are refused, not expanded past max_bytes
    ([with_pax(member("s", data=b"x"), **{"GNU.sparse.map": f"{8 * 1024 * 1024 - 1},1",
                                          "GNU.sparse.size": str(8 * 1024 * 1024)})], "sparse"),
])
def test_members_no_file_can_be_are_refused_before_anything_is_written(tmp_path, members, why):
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(ImageError, match=why) as caught:
        layer.unpack(tar_bytes(members), str(dest), max_bytes=1024 * 1024)
    assert "\n" not in str(caught.value)
    assert os.listdir(dest) == []


def test_a_gzip_layer_read_one_byte_at_a_time_unpacks(tmp_path):
    """A chunked HTTP upload may hand over one byte per read: even the gzip magic."""
    import gzip

    class OneByte:
        def __init__(self, data):
            self.data = io.BytesIO(data)

        def read(self, n=-1):
            return self.data.read(1 if n is None or n < 0 else min(n, 1))

    data = gzip.compress(tar_bytes([member("hello", data=b"hi\n")]).getvalue())
    dest = tmp_path / "layer"
    dest.mkdir()
    layer.unpack(OneByte(data), str(dest))
    assert (dest / "hello").read_bytes() == b"hi\n"


def test_a_gzip_bomb_is_capped(tmp_path):
    import gzip
    big = gzip.compress(tar_bytes([member("zeros", data=b"\0" * (8 * 1024 * 1024))]).getvalue())
    assert len(big) < 64 * 1024, "a few KiB that unpack to 8 MiB"
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(ImageError, match="larger than"):
        layer.unpack(io.BytesIO(big), str(dest), max_bytes=1024 * 1024)


def test_a_whiteout_does_not_hide_its_own_layers_file(tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    layer.unpack(tar_bytes([member("etc/", tarfile.DIRTYPE, mode=0o755),
                            member("etc/motd", data=b"mine\n"),
                            member("etc/.wh.motd", data=b"")]), str(dest))
    assert (dest / "etc" / "motd").read_bytes() == b"mine\n"


def setuid_layer() -> bytes:
    return tar_bytes([member("bin/", tarfile.DIRTYPE, mode=0o755),
                      member("bin/su", data=b"#!", mode=0o4755)]).getvalue()


def test_setuid_bits_are_kept_when_unpacking_as_root(tmp_path):
    require(os.geteuid() == 0, "needs root")
    layer.unpack(io.BytesIO(setuid_layer()), str(tmp_path))
    assert stat.S_IMODE(os.stat(tmp_path / "bin" / "su").st_mode) == 0o4755


def test_setuid_bits_are_dropped_when_unpacking_as_an_ordinary_user():
    require(os.geteuid() == 0, "needs root to act as another user")
    require(mounts.is_mount_point("/"), "in a chroot (fresh-check) nobody cannot reach /var/tmp")
    tar = setuid_layer()
    import tempfile
    as_user = tempfile.mkdtemp(dir="/var/tmp")  # reachable by nobody, unlike pytest's tmp
    os.chown(as_user, 65534, 65534)
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir("/")  # the tests' own directory may be closed to nobody
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            layer.unpack(io.BytesIO(tar), as_user)
            os._exit(0)
        except BaseException as e:
            os.write(2, f"unpack as nobody failed: {e!r}\n".encode())
            os._exit(1)
    try:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert stat.S_IMODE(os.stat(os.path.join(as_user, "bin", "su")).st_mode) == 0o755, \
            "setuid dropped"
    finally:
        import shutil
        shutil.rmtree(as_user)


def test_garbage_collection_spares_blobs_written_moments_ago(tmp_path, monkeypatch):
    """A blob another process just wrote, before tagging it, survives a concurrent rmi."""
    from minirt.image import store as store_module
    store = ImageStore(str(tmp_path / "store"))
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "motd").write_text("hi\n")
    image = store.add_rootfs(str(rootfs), "tmp:1", {}, created_by="test")
    store.untag("tmp:1")  # now nothing refers to its blobs: as if a commit had not tagged yet
    monkeypatch.setattr(store_module, "GC_GRACE_SECONDS", 3600)
    assert store.collect_garbage() == []
    assert store.has_blob(image.layers[0].digest)
    monkeypatch.setattr(store_module, "GC_GRACE_SECONDS", 0)
    assert image.layers[0].digest in store.collect_garbage()
