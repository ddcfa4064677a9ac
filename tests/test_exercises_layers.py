"""Notebook 5's exercises: the reference solutions pass their checks, wrong answers fail.

The diff_id check hashes busybox's real layer blob from the test store; the
whiteout check mounts an overlay in a child's private mount namespace (root).
Neither leaves a scratch directory or a mount behind.
"""

import hashlib
import os
import sys

import pytest

from conftest import require
from minirt.kernel import mounts
from minirt.lab.checks import layers as checks

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "notebooks", "solutions"))
import layers as solution  # noqa: E402


def scratch_left() -> list[str]:
    return [n for n in os.listdir("/var/tmp") if n.startswith(f"nb05-check-{os.getpid()}-")]


@pytest.fixture(autouse=True)
def nothing_left():
    mounts_before = set(mounts.mount_points_under("/var/tmp"))
    yield
    assert scratch_left() == []
    assert set(mounts.mount_points_under("/var/tmp")) <= mounts_before


def test_diff_id_solution_passes_on_busybox_layer(image_store, capsys):
    assert checks.check_diff_id_of(solution.diff_id_of, image_store)
    out = capsys.readouterr().out
    assert "busybox's layer blob" in out and "as the image config records it" in out


def sha_of_file(path):
    return "sha256:" + hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_wrong_diff_ids_fail(image_store, capsys):
    assert not checks.check_diff_id_of(sha_of_file, image_store)            # the blob's digest
    assert "compressed" in capsys.readouterr().out
    no_prefix = lambda p: solution.diff_id_of(p).removeprefix("sha256:")  # noqa: E731
    assert not checks.check_diff_id_of(no_prefix, image_store)
    assert '"sha256:"' in capsys.readouterr().out
    md5 = lambda p: "sha256:" + hashlib.md5(open(p, "rb").read()).hexdigest()  # noqa: E731
    assert not checks.check_diff_id_of(md5, image_store)
    assert not checks.check_diff_id_of(lambda p: None, image_store)


def test_unfinished_diff_id_fails(image_store, capsys):
    def diff_id_of(tar_path):
        raise NotImplementedError
    assert not checks.check_diff_id_of(diff_id_of, image_store)
    assert "not written yet" in capsys.readouterr().out


def test_whiteout_solution_passes_and_hides_the_file(capsys):
    require(os.geteuid() == 0, "the whiteout check needs root (mknod, mount)")
    assert checks.check_apply_whiteout(solution.apply_whiteout)
    out = capsys.readouterr().out
    assert "secret.txt is hidden" in out and "the host never saw it" in out


def oci_marker(layer_dir, path):
    """A layer *tarball*'s marker: right for OCI tars, not for overlayfs."""
    parent = os.path.join(layer_dir, os.path.dirname(path.lstrip("/")))
    os.makedirs(parent, exist_ok=True)
    open(os.path.join(parent, ".wh." + os.path.basename(path)), "w").close()


def wrong_device(layer_dir, path):
    target = os.path.join(layer_dir, path.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.mknod(target, 0o20644, os.makedev(1, 3))  # /dev/null's numbers


def empty_file(layer_dir, path):
    target = os.path.join(layer_dir, path.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    open(target, "w").close()


def test_wrong_whiteouts_fail(capsys):
    require(os.geteuid() == 0, "the whiteout check needs root (mknod, mount)")
    assert not checks.check_apply_whiteout(oci_marker)
    assert "tarball" in capsys.readouterr().out
    assert not checks.check_apply_whiteout(wrong_device)
    assert "character device 1/3" in capsys.readouterr().out
    assert not checks.check_apply_whiteout(empty_file)
    assert not checks.check_apply_whiteout(lambda layer_dir, path: None)
    assert "there is nothing" in capsys.readouterr().out


def test_whiteout_joined_wrongly_fails_and_writes_nothing_on_the_host(capsys):
    require(os.geteuid() == 0, "the whiteout check needs root (mknod, mount)")

    def keeps_the_slash(layer_dir, path):  # os.path.join(d, "/x") is "/x"
        solution.apply_whiteout("/", os.path.join(layer_dir, path))
    assert not checks.check_apply_whiteout(keeps_the_slash)
    assert "strip the leading" in capsys.readouterr().out
    assert not os.path.lexists("/top.txt")
