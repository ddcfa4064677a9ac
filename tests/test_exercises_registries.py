"""Notebook 7's exercises: the reference solutions pass their checks, wrong answers fail.

The blob and pull checks read busybox's real blobs and manifests from a private
store; the API check pushes to a real registry (Distribution) and fetches back.
None leaves a scratch directory or a local tag behind.
"""

import hashlib
import os
import shutil
import sys
import tempfile

import pytest
import requests

from minirt.image import busybox, reference
from minirt.image.store import ImageStore
from minirt.lab.checks import registries as checks
from registry_fixtures import registry, workdir  # noqa: F401 (fixtures)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "notebooks", "solutions"))
import registries as solution  # noqa: E402


def scratch_left() -> list[str]:
    return [n for n in os.listdir("/var/tmp") if n.startswith(f"nb07-check-{os.getpid()}-")]


@pytest.fixture(autouse=True)
def nothing_left():
    yield
    assert scratch_left() == []


@pytest.fixture(scope="module")
def store():
    """A private store: busybox, and app:1 = busybox + one small layer."""
    root = tempfile.mkdtemp(prefix="minirt-nb07-test-", dir="/var/tmp")
    store = ImageStore(root)
    base = busybox.ensure(store)
    rootfs = os.path.join(root, "app-rootfs")
    os.makedirs(os.path.join(rootfs, "app"))
    with open(os.path.join(rootfs, "app", "hello.sh"), "w") as f:
        f.write("echo hello from app\n")
    store.add_rootfs(rootfs, "app:1", {"Cmd": ["sh", "/app/hello.sh"]}, "COPY app /app",
                     parent=base)
    yield store
    shutil.rmtree(root, ignore_errors=True)


# --- 7.1 ------------------------------------------------------------------------------

def test_reference_solution_passes_on_every_shape_of_name(capsys):
    assert checks.check_parse_reference(solution.parse_reference)
    out = capsys.readouterr().out
    assert "library/busybox" in out and "localhost:5000, lab/app, tag 1" in out


def test_solution_agrees_with_minirts_own_parser():
    for text in checks.NAMES:
        ref = reference.parse(text)
        assert solution.parse_reference(text) == (ref.registry, ref.repository, ref.tag,
                                                  ref.digest)


def no_library(text):
    host, repository, tag, digest = solution.parse_reference(text)
    return host, repository.removeprefix("library/"), tag, digest


def first_part_is_always_a_registry(text):
    host, repository, tag, digest = solution.parse_reference(text)
    if host == "docker.io" and not repository.startswith("library/"):
        host, _, repository = repository.partition("/")
    return host, repository, tag, digest


def no_default_tag(text):
    host, repository, tag, digest = solution.parse_reference(text)
    return host, repository, None if tag == "latest" and ":latest" not in text else tag, digest


def tag_after_any_colon(text):
    host, repository, tag, digest = solution.parse_reference(text)
    name = text.split("@")[0]
    if ":" in name:
        tag = name.rsplit(":", 1)[1]
    return host, repository, tag, digest


@pytest.mark.parametrize("wrong, hint", [
    (no_library, "library/NAME"),
    (first_part_is_always_a_registry, "is not a registry host"),
    (no_default_tag, "means the tag 'latest'"),
    (tag_after_any_colon, "a ':' in the\nfirst component is a port"),
    (lambda text: text.split("/"), "return a tuple of four"),
])
def test_wrong_parsers_fail_with_a_hint(wrong, hint, capsys):
    assert not checks.check_parse_reference(wrong)
    out = capsys.readouterr().out
    assert " ".join(hint.split()) in " ".join(out.split()), out


# --- 7.2 ------------------------------------------------------------------------------

def test_verify_solution_passes_on_busybox_blobs(store, capsys):
    assert checks.check_verify_blob(solution.verify_blob, store)
    out = capsys.readouterr().out
    assert "one bit flipped is refused" in out and "busybox's layer blob is accepted" in out


def sha_without_prefix(path, digest):
    return hashlib.sha256(open(path, "rb").read()).hexdigest() == digest


def sha_of_the_name(path, digest):
    return "sha256:" + hashlib.sha256(path.encode()).hexdigest() == digest


def test_wrong_verifiers_fail(store, capsys):
    assert not checks.check_verify_blob(lambda path, digest: True, store)
    assert "checks nothing" in capsys.readouterr().out
    assert not checks.check_verify_blob(sha_without_prefix, store)
    assert "'sha256:' + hexdigest()" in capsys.readouterr().out
    assert not checks.check_verify_blob(sha_of_the_name, store)
    assert "not its name" in capsys.readouterr().out
    assert not checks.check_verify_blob(lambda path, digest: "yes", store)
    assert "returns True or False" in capsys.readouterr().out


def test_unfinished_verifier_fails(store, capsys):
    def verify_blob(path, digest):
        raise NotImplementedError
    assert not checks.check_verify_blob(verify_blob, store)
    assert "not written yet" in capsys.readouterr().out


# --- 7.3 ------------------------------------------------------------------------------

def test_fetch_solution_passes_on_made_up_and_real_manifests(store, capsys):
    assert checks.check_layers_to_fetch(solution.layers_to_fetch, store, "busybox", "app:1")
    out = capsys.readouterr().out
    assert "fetches 1 of its 2 layers" in out and "are already here" in out


def by_position(have, want):
    return [layer["digest"] for i, layer in enumerate(want["layers"])
            if i >= len(have["layers"]) or have["layers"][i]["digest"] != layer["digest"]]


def with_duplicates(have, want):
    here = {layer["digest"] for layer in have["layers"]}
    return [layer["digest"] for layer in want["layers"] if layer["digest"] not in here]


def descriptors(have, want):
    here = {layer["digest"] for layer in have["layers"]}
    return [layer for layer in want["layers"] if layer["digest"] not in here]


def with_config(have, want):
    return solution.layers_to_fetch(have, want) + [want["config"]["digest"]]


@pytest.mark.parametrize("wrong, hint", [
    (by_position, "not position by position"),
    (with_duplicates, "each layer once"),
    (descriptors, "not their descriptors"),
    (with_config, "list only the layers"),
])
def test_wrong_fetch_lists_fail_with_a_hint(wrong, hint, store, capsys):
    assert not checks.check_layers_to_fetch(wrong, store, "busybox", "app:1")
    assert hint in capsys.readouterr().out


# --- 7.4 ------------------------------------------------------------------------------

def local_check_tags(store):
    return [i.name for i in store.images() if checks.CHECK_REPOSITORY in i.name]


def test_api_solution_passes_against_a_real_registry(store, registry, capsys):  # noqa: F811
    assert checks.check_fetch_manifest(solution.fetch_manifest_and_config, registry, store)
    out = capsys.readouterr().out
    assert "the manifest is the one pushed" in out and "the config is busybox's" in out
    assert local_check_tags(store) == []


def without_accept(registry_url, repository, tag):
    answer = requests.get(f"{registry_url}/v2/{repository}/manifests/{tag}", timeout=10)
    answer.raise_for_status()
    return answer.json(), {}


def without_accept_or_status(registry_url, repository, tag):
    manifest = requests.get(f"{registry_url}/v2/{repository}/manifests/{tag}", timeout=10).json()
    digest = manifest["config"]["digest"]
    return manifest, requests.get(f"{registry_url}/v2/{repository}/blobs/{digest}").json()


def config_from_manifests(registry_url, repository, tag):
    manifest, _ = solution.fetch_manifest_and_config(registry_url, repository, tag)
    config_digest = manifest["config"]["digest"]
    answer = requests.get(f"{registry_url}/v2/{repository}/manifests/{config_digest}",
                          headers={"Accept": solution.OCI_MANIFEST}, timeout=10)
    answer.raise_for_status()
    return manifest, answer.json()


def manifest_twice(registry_url, repository, tag):
    manifest, _ = solution.fetch_manifest_and_config(registry_url, repository, tag)
    return manifest, manifest


@pytest.mark.parametrize("wrong, hint", [
    (without_accept, "Accept: application/vnd.oci.image.manifest.v1+json"),
    (without_accept_or_status, "Accept: application/vnd.oci.image.manifest.v1+json"),
    (config_from_manifests, "the config is a blob"),
    (manifest_twice, "that is the manifest again"),
])
def test_wrong_api_calls_fail_with_a_hint(wrong, hint, store, registry, capsys):  # noqa: F811
    assert not checks.check_fetch_manifest(wrong, registry, store)
    assert " ".join(hint.split()) in " ".join(capsys.readouterr().out.split())
    assert local_check_tags(store) == []


def test_api_check_without_a_registry_explains(store, capsys):
    assert not checks.check_fetch_manifest(solution.fetch_manifest_and_config, None, store)
    assert "needs the registry the notebook started" in capsys.readouterr().out
