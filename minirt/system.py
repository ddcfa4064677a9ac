"""``minirt system prune``: remove what nothing uses any more, and what crashes left behind.

Docker's ``docker system prune`` removes stopped containers, unused networks,
dangling images and the build cache, after asking. minirt's does the same for
what it has, and also sweeps up after crashes (a killed daemon, a full disk,
a power cut), in this order:

1. **stale containers are finished first** (``Engine.reap_stale``): a container
   whose owner (its ``minirt run``, its shim, the daemon) was killed gets its
   cgroup removed, its proxy stopped, its veth and address lease released, and
   is marked exited with an unknown exit code;
2. **stopped containers**: every container that has no process running and is
   ``exited``, or ``created`` and held only by its shim (as ``docker container
   prune`` removes created ones). Never touched: a running container; one
   being started by a foreground ``minirt run`` that is still alive; a build's
   RUN container (``minirt-build-*``) while its builder is alive (it is about
   to commit it);
3. **the build cache** (``build.prune_cache``, as ``minirt builder prune``):
   the ``minirt-build-cache:*`` step images, the RUN views a killed build left
   tagged, and ``build-cache.json``;
4. **crash leftovers** no live process is writing: the temp files of
   interrupted downloads, loads and commits (``images/blobs/sha256/.*``),
   ``atomic_write`` temp files (``.tmp-PID-NAME``) of a dead PID, half-unpacked
   layers (``layers/.unpack-*``), a build's staging directories
   (``minirt-build-*``) and a daemon's received build contexts
   (``minirt-build-context-*``) in the state root. "Not being written" means:
   no process has it (or a file below it) open or as its working directory,
   its writer's PID (when its name gives one) is dead, and it was last
   modified more than ``GC_GRACE_SECONDS`` ago;
5. **dangling blobs and unpacked layers** (``ImageStore.collect_garbage``):
   what no tagged image and no remaining container uses, older than
   ``GC_GRACE_SECONDS`` (another process may be between writing an image's
   blobs and tagging it: a pull, a commit, a load).

Kept: every tagged image (docker's ``prune -a`` has no equivalent here),
networks and their bridges (``minirt network rm``), the lab's registry
(``registry/``), the VM kernel (``vm/``), locks and the run-plan cache.

The report lists what went and the bytes reclaimed. Without ``-f`` the
command asks first, as docker does.
"""

import os
import re
import time

from .record import Record

TEMP_DIR_PREFIXES = ("minirt-build-context-", "minirt-build-")   # in the state root
ATOMIC_TEMP = re.compile(r"^\.tmp-(\d+)-")                       # paths.atomic_write's names

WARNING = """WARNING! This will remove:
  - all stopped containers
  - all build cache
  - all dangling blobs and unpacked layers (no image or container uses them)
  - temp files and directories left by interrupted pulls, builds and commits
"""


class PruneReport(Record):
    """What ``prune`` removed."""

    __slots__ = ("containers", "cache_images", "blobs", "layers", "temp", "reclaimed")

    def __init__(self):
        self.containers: list[str] = []      # container ids
        self.cache_images: list[str] = []    # build cache tags untagged
        self.blobs: list[str] = []           # blob digests deleted
        self.layers: list[str] = []          # unpacked layer dirs deleted (diff_id hex)
        self.temp: list[str] = []            # leftover temp paths, relative to the state root
        self.reclaimed = 0                   # bytes


def prune(engine) -> PruneReport:
    """Do the whole prune on ``engine``'s state root (see the module docstring)."""
    from .image import build
    from .image.store import GC_GRACE_SECONDS, tree_size
    report = PruneReport()
    engine.reap_stale()

    # 2. stopped containers
    for container in engine.containers():
        if not _stopped(engine, container):
            continue
        directory = os.path.join(engine.containers_dir, container["id"])
        size = _size(directory)
        _detach_mounts(directory)
        try:
            engine.remove_container(container["id"])
        except Exception:   # it started or went meanwhile: leave it to the next prune
            continue
        report.containers.append(container["id"])
        report.reclaimed += size

    # 3. the build cache: untag its images here, so that step 5 counts their blobs
    store = engine.images
    if os.path.isdir(store.layout):
        for image in store.images():
            if image.name.split(":", 1)[0] in (build.CACHE_REPOSITORY, build.RUN_VIEW_REPOSITORY):
                store.untag(image.name)
                report.cache_images.append(image.name)
    build.BuildCache(engine.root).clear()

    # 4. crash leftovers
    recent = time.time() - GC_GRACE_SECONDS
    busy = _paths_in_use()
    for path in _temp_candidates(engine):
        if _in_use(path, busy) or _newest_mtime(path) >= recent or _writer_alive(path):
            continue
        size = _size(path)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                from .paths import remove_tree
                _detach_mounts(path)
                remove_tree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            continue
        report.temp.append(os.path.relpath(path, engine.root))
        report.reclaimed += size

    # 5. dangling blobs and layers
    if os.path.isdir(store.layout):
        blobs_dir = os.path.join(store.layout, "blobs", "sha256")
        blob_sizes = {}
        for name in os.listdir(blobs_dir) if os.path.isdir(blobs_dir) else []:
            try:
                blob_sizes["sha256:" + name] = os.lstat(os.path.join(blobs_dir, name)).st_size
            except FileNotFoundError:
                pass
        layers_before = set(_listdir(store.layers_root))
        in_use = {layer for c in engine.containers() for layer in c.get("layers", [])}
        keep = {os.path.basename(d) for d in in_use}
        for image in store.images():
            keep |= {layer.diff_id.removeprefix("sha256:") for layer in image.layers}
        layer_sizes = {name: tree_size(os.path.join(store.layers_root, name))
                       for name in layers_before - keep if not name.startswith(".")}
        report.blobs = store.collect_garbage(in_use)
        report.reclaimed += sum(blob_sizes.get(d, 0) for d in report.blobs)
        report.layers = sorted(set(layer_sizes) - set(_listdir(store.layers_root)))
        report.reclaimed += sum(layer_sizes[name] for name in report.layers)
    return report


def _stopped(engine, container: dict) -> bool:
    """May prune remove this container? (See the module docstring, step 2.)"""
    from .engine import process_alive
    if container["running"]:
        return False
    status = container["state"].get("status")
    owner_alive = process_alive(container.get("owner"))
    if status == "exited":
        # A build's RUN container: its builder commits it, then removes it itself.
        return not (owner_alive and not container.get("shim")
                    and str(container.get("name", "")).startswith("minirt-build-"))
    if status == "created":
        # Created and held by its shim (docker create): stopped. Held by a live foreground
        # `minirt run`: it is starting right now.
        return not owner_alive or bool(container.get("shim"))
    return False   # "running" on disk, no process yet or any more: its owner is on it


def _temp_candidates(engine) -> list[str]:
    """Every path that looks like an unfinished write (in use or not)."""
    store = engine.images
    found = []
    blobs = os.path.join(store.layout, "blobs", "sha256")
    found += [os.path.join(blobs, n) for n in _listdir(blobs) if n.startswith(".")]
    found += [os.path.join(store.layers_root, n) for n in _listdir(store.layers_root)
              if n.startswith(".unpack-")]
    for directory in (engine.root, store.layout, os.path.join(engine.root, "networks")):
        found += [os.path.join(directory, n) for n in _listdir(directory)
                  if ATOMIC_TEMP.match(n)]
    found += [os.path.join(engine.root, n) for n in _listdir(engine.root)
              if n.startswith(TEMP_DIR_PREFIXES) and os.path.isdir(os.path.join(engine.root, n))]
    return found


def _writer_alive(path: str) -> bool:
    """An ``atomic_write`` temp file names its writer: is that PID still running?"""
    match = ATOMIC_TEMP.match(os.path.basename(path))
    if not match:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _paths_in_use() -> set[str]:
    """Every path some process has open, or as its working directory or root."""
    paths = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        for link in ("cwd", "root"):
            try:
                paths.add(os.readlink(f"/proc/{pid}/{link}"))
            except OSError:
                pass
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                paths.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
    return paths


def _in_use(path: str, busy: set[str]) -> bool:
    real = os.path.realpath(path)
    return real in busy or any(p.startswith(real + "/") for p in busy)


def _newest_mtime(path: str) -> float:
    """The latest modification time of ``path`` or anything below it."""
    try:
        newest = os.lstat(path).st_mtime
    except FileNotFoundError:
        return float("inf")   # gone: nothing to remove
    if os.path.isdir(path) and not os.path.islink(path):
        for directory, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(directory, name)).st_mtime)
                except FileNotFoundError:
                    pass
    return newest


def _detach_mounts(path: str) -> None:
    """A crash may leave a mount below a directory we remove: detach it first."""
    from .kernel import mounts
    if mounts.mount_points_under(path):
        mounts.unmount_all_under(path)


def _size(path: str) -> int:
    from .image.store import tree_size
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            return tree_size(path)
        return os.lstat(path).st_size
    except OSError:
        return 0


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


# --- the command -------------------------------------------------------------------------
def command(engine, force: bool = False, stdin=None, out=None) -> int:
    """``minirt system prune [-f]``: ask (unless ``force``), prune, print what went."""
    import sys
    stdin, out = stdin or sys.stdin, out or sys.stdout
    if not force:
        out.write(WARNING + "\nAre you sure you want to continue? [y/N] ")
        out.flush()
        answer = stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            print("minirt: system prune has been cancelled", file=sys.stderr)
            return 1
    report = prune(engine)
    sections = [("Deleted Containers:", report.containers),
                ("Deleted build cache objects:", report.cache_images),
                ("Deleted Images:", [f"deleted: {d}" for d in report.blobs] +
                 [f"deleted: layer {name}" for name in report.layers]),
                ("Deleted temporary files:", report.temp)]
    for title, items in sections:
        if items:
            print(title, file=out)
            for item in items:
                print(item, file=out)
            print(file=out)
    from .cli import human_size
    print(f"Total reclaimed space: {human_size(report.reclaimed)}", file=out)
    return 0
