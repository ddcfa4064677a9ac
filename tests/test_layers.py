"""Layers from containers: commit, diff, export, and images that share layers."""

import io
import json
import os
import tarfile

import pytest

from conftest import minirt_cli
from minirt.image.store import tree_size


def make_changes(engine, name):
    result = engine.run("busybox", ["sh", "-c", "echo hello > /hello; rm /bin/ls; "
                                    "mkdir -p /opt/app && echo v1 > /opt/app/v; "
                                    "rm -rf /var && mkdir /var && echo new > /var/only"],
                        remove=False, name=name)
    assert result.exit_code == 0, result.errors
    return result


def test_diff_lists_added_changed_deleted(engine):
    make_changes(engine, "differ")
    try:
        changes = dict((path, kind) for kind, path in engine.diff("differ"))
        assert changes["/hello"] == "A" and changes["/opt/app/v"] == "A"
        assert changes["/bin/ls"] == "D" and changes["/bin"] == "C"
        assert changes["/var"] == "C"
        assert not any(p.startswith("/etc") for p in changes), "the init layer is not a change"
    finally:
        engine.remove_container("differ")


def test_commit_makes_an_image_that_carries_the_changes(engine):
    make_changes(engine, "committer")
    try:
        image = engine.commit("committer", "committed:1", changes=['CMD ["cat", "/hello"]'])
        base = engine.images.resolve("busybox")
        assert image.layers[:-1] == base.layers, "the new image is the old one plus a layer"
        assert engine.run("committed:1").output == "hello\n", "--change set the command"
        check = engine.run("committed:1", ["sh", "-c", "test ! -e /bin/ls && cat /opt/app/v && "
                                           "ls /var"])
        assert check.output.split() == ["v1", "only"], "deletion and opaque dir carried over"
        assert engine.run("busybox", ["sh", "-c", "test -e /bin/ls && test ! -e /hello && "
                                      "test -e /etc/passwd && echo intact"]).output == "intact\n"
        layer_tar = io.BytesIO()
        import gzip
        with gzip.open(engine.images.blob_path(image.layers[-1].digest)) as f:
            layer_tar.write(f.read())
        layer_tar.seek(0)
        names = tarfile.open(fileobj=layer_tar).getnames()
        assert "bin/.wh.ls" in names and "var/.wh..wh..opq" in names, "OCI whiteouts"
        assert engine.images.resolve("committed:1").config["history"][-1]["created_by"] \
            .startswith("minirt commit committer")
    finally:
        engine.remove_container("committer")
        engine.remove_image("committed:1")


def test_export_is_the_merged_filesystem(engine, state_root, tmp_path):
    make_changes(engine, "exporter")
    try:
        out = tmp_path / "fs.tar"
        result = minirt_cli("export", "-o", str(out), "exporter", state_root=state_root)
        assert result.returncode == 0, result.stderr
        names = set(tarfile.open(out).getnames())
        assert {"hello", "opt/app/v", "bin/busybox", "var/only"} <= names
        assert "bin/ls" not in names and "var/log" not in names
        assert not [n for n in names if ".wh." in n]
    finally:
        engine.remove_container("exporter")


def test_two_images_from_one_base_share_its_layer_on_disk(engine, state_root):
    for tag, word in (("app-a:1", "a"), ("app-b:1", "b")):
        engine.run("busybox", ["sh", "-c", f"echo {word} > /{word}"], remove=False, name=f"mk-{word}")
        engine.commit(f"mk-{word}", tag)
        engine.remove_container(f"mk-{word}")
    try:
        a, b = engine.images.resolve("app-a:1"), engine.images.resolve("app-b:1")
        base_a, base_b = engine.images.unpacked_layers(a)[-1], engine.images.unpacked_layers(b)[-1]
        assert base_a == base_b, "one directory on disk for the shared base layer"
        usage = engine.images.disk_usage()
        per = {i["name"]: i for i in usage["images"]}
        base = engine.images.resolve("busybox").layers[0]
        base_bytes = base.size + tree_size(engine.images.layer_dir(base.diff_id))
        assert per["app-a:1"]["shared"] == per["app-b:1"]["shared"] == base_bytes
        assert usage["saved"] == 2 * base_bytes, "three images, the base stored once"
        layers_root = engine.images.layers_root
        layer_blobs = {layer.digest for image in engine.images.images() for layer in image.layers}
        on_disk = sum(tree_size(os.path.join(layers_root, d)) for d in os.listdir(layers_root)
                      if not d.startswith(".")) + \
            sum(os.path.getsize(engine.images.blob_path(d)) for d in layer_blobs)
        assert on_disk == usage["total"], "system df agrees with what is on disk"
        df = minirt_cli("system", "df", "-v", state_root=state_root).stdout.decode()
        assert "SAVED BY SHARING" in df and "app-a:1" in df
    finally:
        engine.remove_image("app-a:1")
        engine.remove_image("app-b:1")
    assert os.path.isdir(base_a), "garbage collection keeps a layer busybox still uses"


def test_rmi_refuses_an_image_a_container_was_made_from(engine, state_root):
    engine.run("busybox", ["true"], remove=False, name="user1")
    engine.commit("user1", "inuse:1")
    engine.run("inuse:1", ["true"], remove=False, name="user2")
    try:
        refused = minirt_cli("rmi", "inuse:1", state_root=state_root)
        assert refused.returncode == 125 and b"user2" in refused.stderr
    finally:
        engine.remove_container("user1")
        engine.remove_container("user2")
    assert minirt_cli("rmi", "inuse:1", state_root=state_root).returncode == 0


def test_tag_history_inspect(engine, state_root):
    assert minirt_cli("tag", "busybox", "mybox:2", state_root=state_root).returncode == 0
    try:
        assert engine.images.resolve("mybox:2").id == engine.images.resolve("busybox").id
        history = minirt_cli("history", "mybox:2", state_root=state_root).stdout.decode()
        assert "busybox rootfs" in history
        [info] = json.loads(minirt_cli("inspect", "mybox:2", state_root=state_root).stdout)
        assert info["Id"] == engine.images.resolve("busybox").id and info["Config"]["Cmd"] == ["sh"]
        missing = minirt_cli("inspect", "nothing-here", state_root=state_root)
        assert missing.returncode != 0 and b"no such image or container" in missing.stderr
    finally:
        engine.images.untag("mybox:2")


def test_commit_of_a_copied_rootfs_is_refused_clearly(engine):
    engine.run("busybox", ["true"], remove=False, name="copied", storage="copy")
    try:
        with pytest.raises(Exception, match="copied root filesystem"):
            engine.commit("copied", "nope:1")
    finally:
        engine.remove_container("copied")
