"""Reference solutions for notebook 7 (Images and registries)."""

import hashlib

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def parse_reference(text):
    """Docker's reading of an image name: (registry, repository, tag, digest)."""
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:                      # a ':' in the last component: a tag
        text, tag = text.rsplit(":", 1)
    first, _, rest = text.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = "docker.io", text
    if registry == "docker.io" and "/" not in repository:
        repository = "library/" + repository   # Docker Hub's official images
    if tag is None and digest is None:
        tag = "latest"
    return registry, repository, tag, digest


def verify_blob(path, digest):
    """True when the bytes of the file at ``path`` hash to ``digest`` ("sha256:<hex>")."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return "sha256:" + sha.hexdigest() == digest


def layers_to_fetch(have, want):
    """Digests of ``want``'s layers that ``have`` lacks, bottom first, each once."""
    here = {layer["digest"] for layer in have["layers"]}
    missing = []
    for layer in want["layers"]:
        if layer["digest"] not in here and layer["digest"] not in missing:
            missing.append(layer["digest"])
    return missing


def fetch_manifest_and_config(registry_url, repository, tag):
    """GET the manifest (saying which kinds we read), then its config blob."""
    answer = requests.get(f"{registry_url}/v2/{repository}/manifests/{tag}",
                          headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"}, timeout=10)
    answer.raise_for_status()
    manifest = answer.json()
    config_digest = manifest["config"]["digest"]
    blob = requests.get(f"{registry_url}/v2/{repository}/blobs/{config_digest}", timeout=10)
    blob.raise_for_status()
    return manifest, blob.json()
