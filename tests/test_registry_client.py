"""minirt pull / push / login against real Distribution registries (no fakes).

Anonymous, basic-auth, token-auth and TLS registries come from registry_fixtures;
faults (truncated or lying blobs, slow links) from a proxy in registry_faults.
Every failing pull is checked to leave the store's images exactly as before and
no temp file behind.
"""

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import minirt_cli, minirt_popen, require, tier, wait_for
from minirt.errors import AuthError, ImageError, RegistryError, UsageError
from minirt.image import busybox, reference
from minirt.image.store import ImageStore
from minirt.registry import client, progress
from minirt.registry.pull import pull
from minirt.registry.push import push
from registry_faults import FaultProxy, layered_image
from registry_fixtures import (basic_registry, registry, tls_registry,  # noqa: F401 (fixtures)
                               token_registry, workdir)

MiB = 1 << 20


@pytest.fixture(scope="module")
def source():
    """A store with busybox and ``app`` (busybox + two 1 MiB layers): what we push."""
    root = tempfile.mkdtemp(prefix="minirt-push-src-", dir="/var/tmp")
    store = ImageStore(root)
    busybox.ensure(store)
    layered_image(store, "app:1", "busybox", [MiB, MiB], root)
    yield store
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fresh(monkeypatch):
    """An empty store to pull into, and a private config dir for logins."""
    root = tempfile.mkdtemp(prefix="minirt-pull-", dir="/var/tmp")
    monkeypatch.setenv("MINIRT_CONFIG", os.path.join(root, "config"))
    store = ImageStore(root)
    store.ensure_layout()
    yield store
    shutil.rmtree(root, ignore_errors=True)


def publish(store: ImageStore, local: str, remote: str, **kw):
    """Tag ``local`` as ``remote`` and push it; untag again so the store is as it was."""
    store.tag(remote, store.resolve(local).manifest_digest)
    try:
        return push(store, remote, **kw)
    finally:
        store.untag(remote)


def snapshot(store: ImageStore) -> dict:
    """The store's visible state: its index, and every file with its size."""
    files = {}
    for directory, _, names in os.walk(store.root):
        for name in names:
            path = os.path.join(directory, name)
            files[os.path.relpath(path, store.root)] = os.lstat(path).st_size
    index = store._index() if os.path.exists(store._index_path) else None
    return {"index": index, "files": files}


def hidden_files(store: ImageStore) -> list[str]:
    blobs = os.path.join(store.layout, "blobs", "sha256")
    return [n for n in os.listdir(blobs) if n.startswith(".")] if os.path.isdir(blobs) else []


def blobs_verify(store: ImageStore) -> None:
    """Every visible blob's bytes hash to its name."""
    blobs = os.path.join(store.layout, "blobs", "sha256")
    for name in os.listdir(blobs):
        if not name.startswith("."):
            with open(os.path.join(blobs, name), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == name


# --- names and transport --------------------------------------------------------------------

def test_reference_grammar_names_registry_repository_tag():
    ref = reference.parse("busybox")
    assert (ref.registry, ref.repository, ref.tag) == ("docker.io", "library/busybox", "latest")
    ref = reference.parse("localhost:5000/lab/app:1")
    assert (ref.registry, ref.repository, ref.tag) == ("localhost:5000", "lab/app", "1")
    digest = "sha256:" + "a" * 64
    ref = reference.parse(f"127.0.0.1:5000/app@{digest}")
    assert (ref.registry, ref.tag, ref.digest) == ("127.0.0.1:5000", None, digest)


def test_plain_http_only_for_loopback_names_or_listed_registries(monkeypatch):
    monkeypatch.delenv("MINIRT_INSECURE_REGISTRIES", raising=False)
    assert client.base_url("localhost:5000") == "http://localhost:5000"
    assert client.base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert client.base_url("[::1]:5000") == "http://[::1]:5000"
    assert client.base_url("127.0.1.1:5000") == "https://127.0.1.1:5000"
    assert client.base_url("registry.example:5000") == "https://registry.example:5000"
    assert client.base_url("docker.io") == "https://registry-1.docker.io"
    monkeypatch.setenv("MINIRT_INSECURE_REGISTRIES", "registry.example:5000, other:1")
    assert client.base_url("registry.example:5000") == "http://registry.example:5000"


def test_https_registry_needs_its_ca_and_is_never_spoken_to_in_plain_http(
        source, fresh, tls_registry, monkeypatch):
    monkeypatch.delenv("MINIRT_INSECURE_REGISTRIES", raising=False)
    name = f"{tls_registry.server.address}/lab/busybox:1"
    before = snapshot(fresh)
    with pytest.raises(RegistryError, match="TLS failed.*certs.d"):
        pull(fresh, name)
    assert snapshot(fresh) == before
    # Trust its CA the way docker does (certs.d/<host:port>/ca.crt): then it works.
    certs = os.path.join(os.environ["MINIRT_CONFIG"], "certs.d", tls_registry.server.address)
    os.makedirs(certs)
    shutil.copy(tls_registry.ca_cert, os.path.join(certs, "ca.crt"))
    publish(source, "busybox", name)
    assert pull(fresh, name).image.id == source.resolve("busybox").id


# --- push and pull ----------------------------------------------------------------------

def test_push_then_pull_into_an_empty_store_gives_the_same_image(source, fresh, registry):
    name = f"{registry.address}/lab/app:1"
    pushed = publish(source, "app:1", name)
    assert len(pushed.pushed) == 4 and not pushed.existing   # 3 layers + config
    result = pull(fresh, name)
    original = source.resolve("app:1")
    assert result.image.id == original.id
    assert result.digest == original.manifest_digest == pushed.digest
    assert [l.digest for l in result.image.layers] == [l.digest for l in original.layers]
    assert result.fetched_bytes == sum(l.size for l in original.layers)
    assert result.reused_bytes == 0
    blobs_verify(fresh)
    # The registry holds what we sent, under the same digest.
    answer = requests.get(f"{registry.url}/v2/lab/app/manifests/1",
                          headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert answer.headers["Docker-Content-Digest"] == original.manifest_digest


def test_second_pull_fetches_only_the_layers_not_already_here(source, fresh, registry):
    publish(source, "busybox", f"{registry.address}/lab/busybox:1")
    publish(source, "app:1", f"{registry.address}/lab/app:1")
    first = pull(fresh, f"{registry.address}/lab/busybox:1")
    base = first.image.layers[0]
    second = pull(fresh, f"{registry.address}/lab/app:1")
    assert second.reused_layers == [base.digest]
    assert second.reused_bytes == base.size
    app = source.resolve("app:1")
    assert second.fetched_bytes == sum(l.size for l in app.layers[1:])
    again = pull(fresh, f"{registry.address}/lab/app:1")
    assert again.fetched_bytes == 0 and len(again.reused_layers) == 3


def test_push_skips_blobs_the_repository_has_and_mounts_from_another(source, registry):
    name = f"{registry.address}/lab/app:1"
    publish(source, "app:1", name)
    again = publish(source, "app:1", name)
    assert len(again.existing) == 4 and not again.pushed and again.pushed_bytes == 0
    other = publish(source, "app:1", f"{registry.address}/other/app:2")
    assert len(other.mounted) == 4 and not other.pushed     # the registry linked them


def test_chunked_upload_is_accepted_and_read_back(source, fresh, registry):
    name = f"{registry.address}/lab/chunked:1"
    result = publish(source, "app:1", name, chunk_bytes=256 * 1024)   # PATCH in 4+ chunks
    assert result.pushed_bytes >= 2 * MiB
    assert pull(fresh, name).image.id == source.resolve("app:1").id
    blobs_verify(fresh)


def test_pull_by_digest_checks_the_manifest(source, fresh, registry):
    pushed = publish(source, "busybox", f"{registry.address}/lab/busybox:1")
    result = pull(fresh, f"{registry.address}/lab/busybox@{pushed.digest}")
    assert result.digest == pushed.digest


def put_index(registry, repository: str, tag: str, entries: list[tuple[str, dict]]) -> None:
    """Publish an OCI index naming already-pushed manifests with the given platforms."""
    manifests = []
    for digest, platform in entries:
        head = requests.head(f"{registry.url}/v2/{repository}/manifests/{digest}",
                             headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "digest": digest, "size": int(head.headers["Content-Length"]),
                          "platform": platform})
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": manifests}
    answer = requests.put(f"{registry.url}/v2/{repository}/manifests/{tag}",
                          data=json.dumps(index),
                          headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
    assert answer.status_code == 201, answer.text


def test_an_index_resolves_to_this_machines_platform(source, fresh, registry):
    from minirt.image.platform import oci_architecture
    arch = oci_architecture()
    busy = publish(source, "busybox", f"{registry.address}/lab/multi:busybox").digest
    app = publish(source, "app:1", f"{registry.address}/lab/multi:app").digest
    put_index(registry, "lab/multi", "1", [(busy, {"os": "linux", "architecture": "s390x"}),
                                           (app, {"os": "linux", "architecture": arch})])
    result = pull(fresh, f"{registry.address}/lab/multi:1")
    assert result.image.id == source.resolve("app:1").id
    assert result.digest == app


def test_an_index_for_other_platforms_only_is_refused_cleanly(source, fresh, registry):
    busy = publish(source, "busybox", f"{registry.address}/lab/foreign:busybox").digest
    put_index(registry, "lab/foreign", "1", [(busy, {"os": "linux", "architecture": "s390x"}),
                                             (busy, {"os": "windows", "architecture": "amd64"})])
    before = snapshot(fresh)
    with pytest.raises(ImageError, match=r"no image for linux/.*offers: linux/s390x, "
                                         r"windows/amd64"):
        pull(fresh, f"{registry.address}/lab/foreign:1")
    assert snapshot(fresh) == before


# --- a second real client: skopeo -----------------------------------------------------------

def test_skopeo_copies_what_minirt_pushed_and_runc_runs_it(source, registry, workdir, root_tier):
    require(shutil.which("skopeo") and shutil.which("umoci") and shutil.which("runc"),
            "needs skopeo, umoci and runc (make setup installs them)")
    from minirt.kernel import mounts
    require(mounts.is_mount_point("/"), "runc needs / to be a mount point (not in a chroot)")
    publish(source, "busybox", f"{registry.address}/lab/busybox:1")
    layout = os.path.join(workdir, "oci")
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false",
                    f"docker://{registry.address}/lab/busybox:1", f"oci:{layout}:copied"],
                   check=True, capture_output=True, timeout=60)
    with open(os.path.join(layout, "index.json")) as f:
        assert json.load(f)["manifests"][0]["digest"] == source.resolve("busybox").manifest_digest
    bundle = os.path.join(workdir, "bundle")
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:copied", bundle],
                   check=True, capture_output=True, timeout=60)
    with open(os.path.join(bundle, "config.json")) as f:
        config = json.load(f)
    config["process"]["args"] = ["/bin/echo", "runs under runc"]
    config["process"]["terminal"] = False
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f)
    container = f"minirt-test-skopeo-{os.getpid()}"
    ran = subprocess.run(["runc", "run", "--bundle", bundle, container],
                         capture_output=True, text=True, timeout=60)
    subprocess.run(["runc", "delete", "-f", container], capture_output=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "runs under runc\n"


def test_minirt_pulls_and_runs_what_skopeo_pushed_as_docker_v2(source, registry, workdir,
                                                                state_root, image_store):
    require(shutil.which("skopeo") is not None, "needs skopeo (make setup installs it)")
    from minirt.image import archive
    tar = os.path.join(workdir, "app.tar")
    archive.save(source, ["app:1"], tar, format="docker")
    remote = f"{registry.address}/skopeo/app:v2s2"
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--format", "v2s2",
                    f"docker-archive:{tar}", f"docker://{remote}"],
                   check=True, capture_output=True, timeout=120)
    out = minirt_cli("pull", remote, state_root=state_root)
    assert out.returncode == 0, out.stderr
    image = image_store.resolve(remote)
    assert image.id == source.resolve("app:1").id   # same config, so the same image ID
    manifest = image_store.read_json(image.manifest_digest)
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    if tier() == "root":
        ran = minirt_cli("run", "--rm", remote, "cat", "/etc/hostname", state_root=state_root)
        assert ran.returncode == 0, ran.stderr
    image_store.untag(remote)


# --- auth -----------------------------------------------------------------------------------

def test_basic_auth_login_is_checked_saved_0600_and_used(source, basic_registry, workdir,
                                                         state_root):
    server, user, password = basic_registry
    config = os.path.join(workdir, "config")
    env = {"MINIRT_CONFIG": config}
    name = f"{server.address}/lab/busybox:1"
    minirt_cli("tag", "busybox", name, state_root=state_root, env=env)
    try:
        refused = minirt_cli("push", name, state_root=state_root, env=env)
        assert refused.returncode == 125
        assert refused.stderr.decode().strip() == \
            f"minirt: {server.address} needs a login: run `minirt login {server.address}`"
        wrong = minirt_cli("login", "-u", user, "--password-stdin", server.address,
                           input=b"wrong\n", state_root=state_root, env=env)
        assert wrong.returncode == 125 and b"refused" in wrong.stderr
        assert not os.path.exists(os.path.join(config, "auth.json"))
        ok = minirt_cli("login", "-u", user, "--password-stdin", server.address,
                        input=password.encode() + b"\n", state_root=state_root, env=env)
        assert ok.returncode == 0, ok.stderr
        saved = os.path.join(config, "auth.json")
        assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
        assert password not in open(saved).read()   # base64, as docker stores it
        pushed = minirt_cli("push", "-q", name, state_root=state_root, env=env)
        assert pushed.returncode == 0, pushed.stderr
        assert minirt_cli("logout", server.address, state_root=state_root, env=env).returncode == 0
        assert server.address not in open(saved).read()
    finally:
        minirt_cli("rmi", name, state_root=state_root, env=env)


def test_bearer_token_flow_anonymous_pull_and_authenticated_push(source, fresh, token_registry):
    address = token_registry.server.address
    public = f"{address}/public/busybox:1"
    # Anonymous: the token server gives pull only, so a push is refused.
    with pytest.raises(AuthError):
        publish(source, "busybox", public)
    creds = client.auth.Credentials(*token_registry.credentials)
    client.auth.save_credentials(address, creds)
    pushed = publish(source, "busybox", public)
    assert pushed.pushed
    assert any(r["authenticated"] and any(s.endswith(":pull,push") for s in r["query"]["scope"])
               for r in token_registry.requests if "scope" in r["query"])
    # Mounting into another repository needs pull on the source too: asked for up front.
    other = publish(source, "busybox", f"{address}/private/busybox:1")
    assert other.mounted
    client.auth.forget_credentials(address)
    token_registry.requests.clear()
    result = pull(fresh, public)                    # anonymous pull of a public repository
    assert result.image.id == source.resolve("busybox").id
    assert token_registry.requests and not any(r["authenticated"] for r in token_registry.requests)
    before = snapshot(fresh)
    with pytest.raises(AuthError):                  # anonymous pull of a private one
        pull(fresh, f"{address}/private/busybox:1")
    assert snapshot(fresh) == before


# --- faults ---------------------------------------------------------------------------------

@pytest.fixture
def proxy(registry):
    p = FaultProxy(registry.address)
    yield p
    p.close()


def test_registry_down_is_one_clear_error(fresh):
    from registry_fixtures import free_port
    before = snapshot(fresh)
    with pytest.raises(RegistryError, match=r"cannot reach the registry at http://127.0.0.1:\d+ "
                                            r"\(Connection refused\): is it running\?"):
        pull(fresh, f"127.0.0.1:{free_port()}/lab/busybox:1")
    assert snapshot(fresh) == before


def test_unknown_tag_is_one_clear_error(source, fresh, registry):
    publish(source, "busybox", f"{registry.address}/lab/busybox:1")
    with pytest.raises(RegistryError, match="manifest unknown"):
        pull(fresh, f"{registry.address}/lab/busybox:nope")
    with pytest.raises(RegistryError, match="(repository name not known|manifest unknown)"):
        pull(fresh, f"{registry.address}/lab/nothing:1")
    with pytest.raises(UsageError):
        pull(fresh, f"{registry.address}/Lab/Bad:1")


@pytest.mark.parametrize("fault, message", [("truncate", "broke off|ended after"),
                                             ("corrupt", "does not match its digest")])
def test_a_bad_blob_stores_nothing(source, fresh, registry, proxy, fault, message):
    app = source.resolve("app:1")
    publish(source, "app:1", f"{registry.address}/lab/app:1")
    proxy.faults[app.layers[-1].digest] = fault
    before = snapshot(fresh)
    with pytest.raises((RegistryError, ImageError), match=message):
        pull(fresh, f"{proxy.address}/lab/app:1", parallel=1)
    assert fresh._index() == before["index"]
    assert not hidden_files(fresh)
    assert not os.path.exists(fresh.blob_path(app.layers[-1].digest))
    blobs_verify(fresh)


def test_ctrl_c_leaves_no_image_and_no_temp_file_and_a_rerun_resumes(
        source, registry, proxy, workdir):
    app = source.resolve("app:1")
    publish(source, "app:1", f"{registry.address}/lab/app:1")
    slow = app.layers[-1].digest
    proxy.faults[slow] = "slow"   # ~1 MiB at 16 KiB / 20 ms: over a second
    root = os.path.join(workdir, "state")
    store = ImageStore(root)
    store.ensure_layout()
    before = store._index()
    name = f"{proxy.address}/lab/app:1"
    process = minirt_popen("pull", name, state_root=root)
    deadline = time.monotonic() + 30
    fast = [l.digest for l in app.layers[:-1]]
    while not all(store.has_blob(d) for d in fast) and time.monotonic() < deadline:
        time.sleep(0.02)
    # The slow layer's temp file appears with its first bytes (a moment after the fast ones).
    wait_for(lambda: hidden_files(store), timeout=10, what="the slow layer, half-way")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert err.decode().strip().endswith("minirt: interrupted")
    assert store._index() == before                    # no image appeared
    assert not hidden_files(store)                     # no temp file left
    assert not store.has_blob(slow)
    blobs_verify(store)
    del proxy.faults[slow]
    rerun = minirt_cli("pull", name, state_root=root)
    assert rerun.returncode == 0, rerun.stderr
    assert b"in 1 layer(s), reused" in rerun.stdout and b"in 2 already here" in rerun.stdout


# --- progress -------------------------------------------------------------------------------

def test_progress_per_layer_and_quiet(source, registry, workdir):
    import io
    publish(source, "app:1", f"{registry.address}/lab/app:1")
    root = os.path.join(workdir, "bars")
    shown = io.StringIO()
    pull(ImageStore(root), f"{registry.address}/lab/app:1", progress.Bars(shown))
    text = shown.getvalue()
    for layer in source.resolve("app:1").layers:
        assert f"{layer.digest[7:19]} Pull complete" in text
    assert "Digest: sha256:" in text
    quiet = minirt_cli("pull", "-q", f"{registry.address}/lab/app:1",
                       state_root=os.path.join(workdir, "quiet"))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.decode() == f"{registry.address}/lab/app:1\n"
    assert quiet.stderr == b""
