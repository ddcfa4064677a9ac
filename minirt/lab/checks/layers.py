"""Checks for notebook 5 (Layers): a layer's diff_id, and an overlayfs whiteout.

``check_diff_id_of`` hashes tarballs the check makes itself (plain and gzip'd)
and, when the store has one, busybox's real layer blob: the learner's answer
must equal the diff_id minirt's store recorded for it.

``check_apply_whiteout`` calls the learner's function on a scratch layer
directory, looks at what it made, then mounts an overlay of that layer on top
of a base layer in a forked child's private mount namespace (nothing reaches
the host's mount table) and looks through it: the file must be hidden, its
neighbours not. Scratch directories live in /var/tmp as ``nb05-check-<pid>-*`` and are
removed whatever the learner's code did.
"""

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile

from ...kernel import mounts, syscalls
from .child import in_child
from .verdict import run_check

SCRATCH_PREFIX = "nb05-check-"


def note(verdict, text: str) -> None:
    """A neutral line in the verdict: something the check could not try here."""
    verdict.lines.append(f"  · {text}")


# --- a forked child with a private mount namespace ------------------------------------

def in_mount_namespace(action, timeout: float = 20.0):
    """Run ``action()`` in a forked child that has its own, private mount namespace.

    Whatever the child mounts disappears with it: the mount namespace dies with
    its last process (``child.in_child`` does the forking and the reporting).
    """
    def privately():
        mounts.make_private("/")  # our mounts never propagate back to the host
        return action()
    return in_child(privately, unshare=("mnt",), timeout=timeout)


def is_whiteout(path: str) -> bool:
    """overlayfs' mark for a deleted file: a character device numbered 0/0."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def describe(path: str) -> str:
    """What is at ``path``, in words (for hints)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "nothing"
    if stat.S_ISCHR(st.st_mode):
        return f"a character device {os.major(st.st_rdev)}/{os.minor(st.st_rdev)}"
    if stat.S_ISREG(st.st_mode):
        return f"a regular file of {st.st_size} bytes"
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    return "something else"


# --- exercise 5.1: a layer's diff_id ----------------------------------------------------

def make_tar(files: dict[str, bytes]) -> bytes:
    """A small tar (fixed owners and times) holding ``files``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 946684800, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def check_diff_id_of(diff_id_of, store=None) -> bool:
    """``diff_id_of(tar_path) -> "sha256:<hex>"`` of the *uncompressed* tar.

    ``store``: an ImageStore holding busybox (default: minirt's usual store).
    """
    return run_check("Exercise 5.1: a layer's diff_id", _diff_id_body, diff_id_of, store)


def _diff_id_body(verdict, diff_id_of, store):
    plain = make_tar({"hello.txt": b"hello, layers\n", "etc/motd": b"welcome\n"})
    wanted = "sha256:" + hashlib.sha256(plain).hexdigest()
    scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir="/var/tmp")
    try:
        tar_path = os.path.join(scratch, "layer.tar")
        gz_path = os.path.join(scratch, "layer.tar.gz")
        with open(tar_path, "wb") as f:
            f.write(plain)
        with open(gz_path, "wb") as f:
            f.write(gzip.compress(plain, mtime=0))
        got = diff_id_of(tar_path)
        if not isinstance(got, str):
            verdict.bad("returns a string", f"it returned {got!r} ({type(got).__name__}): "
                        'return "sha256:" + the hex digest')
            return
        if not got.startswith("sha256:") and got == wanted.removeprefix("sha256:"):
            verdict.bad("a plain tar: the right hash, with its algorithm",
                        'the hex digest is right; digests name their algorithm: '
                        '"sha256:" + hexdigest()')
            return
        if not verdict.expect(got == wanted, f"a plain tar: {wanted[:19]}...",
                              f"got {got[:19]}...: hash every byte of the file with "
                              "hashlib.sha256 (open it in binary mode)"):
            return
        got_gz = diff_id_of(gz_path)
        compressed = "sha256:" + hashlib.sha256(open(gz_path, "rb").read()).hexdigest()
        if not verdict.expect(got_gz == wanted, "the same tar, gzip'd: the same diff_id",
                              "that is the digest of the compressed file (how a manifest "
                              "names the blob); the diff_id hashes the tar *inside* it: open "
                              "it with gzip.open when it starts with b'\\x1f\\x8b'"
                              if got_gz == compressed else f"got {str(got_gz)[:19]}..."):
            return
        # The real thing: busybox's layer blob, as minirt's store keeps it.
        try:
            if store is None:
                from ...engine import Engine
                store = Engine().images
            image = store.resolve("busybox")
        except Exception as e:
            note(verdict, f"busybox's own layer was not tried: {e}")
            return
        layer = image.layers[0]
        blob = store.blob_path(layer.digest)
        got_real = diff_id_of(blob)
        verdict.expect(got_real == layer.diff_id,
                       f"busybox's layer blob ({layer.size // 1024} KiB gzip'd): "
                       f"{layer.diff_id[:19]}..., as the image config records it",
                       f"got {str(got_real)[:19]}...; the store's rootfs.diff_ids says "
                       f"{layer.diff_id[:19]}...")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- exercise 5.2: a whiteout -----------------------------------------------------------

def check_apply_whiteout(apply_whiteout) -> bool:
    """``apply_whiteout(layer_dir, path)`` hides ``path`` from the layers below."""
    return run_check("Exercise 5.2: delete a file in an upper layer (a whiteout)",
                     _whiteout_body, apply_whiteout)


def _whiteout_body(verdict, apply_whiteout):
    if os.geteuid() != 0:
        verdict.bad("this check needs root: only root may create the 0/0 character "
                    "device of a whiteout and mount an overlay here",
                    "run the notebook as root (the root tier)")
        return
    scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir="/var/tmp")
    try:
        base, layer = os.path.join(scratch, "base"), os.path.join(scratch, "layer")
        merged = os.path.join(scratch, "merged")
        for directory in (base + "/docs", layer, merged):
            os.makedirs(directory)
        for name in ("secret.txt", "keep.txt"):
            with open(os.path.join(base, "docs", name), "w") as f:
                f.write(f"{name} from the base layer\n")
        with open(os.path.join(base, "top.txt"), "w") as f:
            f.write("top\n")
        # 1. What the function makes in the layer directory. It runs in a child
        # chrooted into the scratch directory: a path joined wrongly lands there,
        # never in the host's own /.
        def call(path):
            os.chroot(scratch)
            os.chdir("/")
            apply_whiteout("/layer", path)
            return True

        in_mount_namespace(lambda: call("docs/secret.txt"))
        target = os.path.join(layer, "docs", "secret.txt")
        oci = os.path.join(layer, "docs", ".wh.secret.txt")
        if not is_whiteout(target):
            hint = (f"it made {describe(target)}: a whiteout is a character device with "
                    "device number 0/0: os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))")
            if os.path.lexists(oci):
                hint = (".wh.secret.txt is how a layer *tarball* marks a deletion (OCI); "
                        "overlayfs wants, at the file's own name, a character device 0/0")
            elif not os.path.lexists(target):
                hint = ("there is nothing at docs/secret.txt in the layer: create the "
                        "whiteout at the file's own path (and its parent directories)")
            verdict.bad("apply_whiteout(layer_dir, 'docs/secret.txt') makes docs/secret.txt "
                        "in the layer a whiteout (character device 0/0)", hint)
            return
        verdict.good("docs/secret.txt in the layer is a character device 0/0: a whiteout")
        extra = sorted(os.path.relpath(os.path.join(d, n), layer)
                       for d, _, files in os.walk(layer) for n in files)
        if not verdict.expect(extra == ["docs/secret.txt"], "nothing else was added to the layer",
                              f"the layer holds {extra}: add only the whiteout"):
            return
        in_mount_namespace(lambda: call("/top.txt"))  # a path as seen in the container
        escaped = os.path.lexists(os.path.join(scratch, "top.txt"))
        if not verdict.expect(is_whiteout(os.path.join(layer, "top.txt")) and not escaped,
                              "a path with a leading slash ('/top.txt') lands in the layer too",
                              "it was written outside the layer directory: os.path.join("
                              "layer_dir, '/top.txt') is '/top.txt' (an absolute second part "
                              "wins); strip the leading '/' first" if escaped else
                              f"layer/top.txt is {describe(os.path.join(layer, 'top.txt'))}"):
            return
        # 2. The kernel's view: the layer stacked over the base, read through overlayfs.
        base_files = sorted(os.listdir(os.path.join(base, "docs")))

        def look():
            syscalls.mount("overlay", merged, "overlay", syscalls.MS_RDONLY,
                           f"lowerdir={layer}:{base}")
            return {"docs": sorted(os.listdir(os.path.join(merged, "docs"))),
                    "top": sorted(os.listdir(merged))}

        seen = in_mount_namespace(look)
        verdict.expect(seen["docs"] == ["keep.txt"],
                       "through an overlay mount (in a child's own mount namespace), docs/ "
                       "shows keep.txt only: secret.txt is hidden",
                       f"docs/ shows {seen['docs']} (the base has {base_files})")
        verdict.expect("top.txt" not in seen["top"] and "docs" in seen["top"],
                       "and /top.txt is hidden at the top",
                       f"/ shows {seen['top']}")
        verdict.expect(sorted(os.listdir(os.path.join(base, "docs"))) == base_files,
                       "the base layer itself is untouched")
        verdict.expect(not mounts.mount_points_under(scratch),
                       "the mount stayed in the child: the host never saw it")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def cleanup() -> list[str]:
    """Remove this process's scratch directories a check interrupted mid-way left in /var/tmp."""
    removed = []
    for name in os.listdir("/var/tmp"):
        if name.startswith(f"{SCRATCH_PREFIX}{os.getpid()}-"):
            path = os.path.join("/var/tmp", name)
            if not mounts.mount_points_under(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


__all__ = ["check_diff_id_of", "check_apply_whiteout", "in_mount_namespace", "cleanup"]
