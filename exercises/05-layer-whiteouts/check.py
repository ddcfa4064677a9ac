"""Checks for exercise 05: layers minirt unpacks with the student's apply_layer.

The check writes a ``docker save`` archive of a two-layer image itself (the
top layer deletes a file and makes a directory opaque), loads it with the
student's copy (``minirt load``), then asks that copy's store for the image's
layer directories (``ImageStore.unpacked_layers``: the unpacking a container
start does, and the call that reaches the student's function) and merges them
with minirt's own no-overlayfs code (``runtime.rootfs.copy_layers``), in a
throwaway interpreter that reports what it found as JSON. No container runs:
any tier, no root needed. Hostile layers aim at ``<state root>/outside``; all
of it lives in the check's private state root, removed afterwards.
"""

import hashlib
import io
import json
import os
import tarfile

from minirt.exercises import Hint, last_line

IMAGE = "lab/whiteouts:1"
TIME = 946684800  # 2000-01-01: fixed, so the layers' digests do not change

# The bottom layer: files, directories, a symlink, a hard link.
BOTTOM = [
    ("dir", "./", 0o755, None),
    ("dir", "etc/", 0o755, None),
    ("file", "etc/hostname", 0o644, b"ex05\n"),
    ("file", "etc/secret.txt", 0o600, b"the bottom layer's secret\n"),
    ("dir", "opt/", 0o755, None),
    ("file", "opt/old.txt", 0o644, b"old\n"),
    ("dir", "opt/old/", 0o755, None),
    ("file", "opt/old/readme.txt", 0o644, b"old too\n"),
    ("dir", "bin/", 0o755, None),
    ("file", "bin/tool", 0o755, b"#!/bin/sh\necho tool\n"),
    ("symlink", "bin/tool-link", 0o777, "tool"),
    ("hardlink", "bin/tool-hard", 0o755, "bin/tool"),
]
# The top layer: deletes etc/secret.txt, replaces opt/ with a directory of its own.
TOP = [
    ("dir", "./etc/", 0o755, None),
    ("file", "./etc/.wh.secret.txt", 0o644, b""),
    ("file", "./etc/added.txt", 0o644, b"added by the top layer\n"),
    ("dir", "./opt/", 0o755, None),
    ("file", "./opt/.wh..wh..opq", 0o644, b""),
    ("file", "./opt/new.txt", 0o644, b"new\n"),
]


def tar_bytes(members) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, mode, data in members:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, TIME
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, data
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return out.getvalue()


def docker_archive(path: str, tag: str, layers: list[bytes]) -> None:
    """A ``docker save`` tarball of one image made of ``layers`` (plain tars, bottom first)."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2000-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/tool"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2000-01-01T00:00:00Z", "created_by": f"exercise 05, layer {i}"}
                    for i in range(len(layers))],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    files = {config_name: config}
    paths = []
    for diff_id, layer in zip(diff_ids, layers):
        paths.append(f"{diff_id[7:]}/layer.tar")
        files[paths[-1]] = layer
    files["manifest.json"] = json.dumps(
        [{"Config": config_name, "RepoTags": [tag], "Layers": paths}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), TIME, 0o644
            tar.addfile(info, io.BytesIO(data))


# Runs in the student's copy: unpack the image's layers through the store (the student's
# apply_layer), describe each layer directory and their merge, print it all as JSON.
PROBE = r"""
import json, os, stat, sys, tempfile, traceback
if len(sys.argv) > 2:
    os.environ["MINIRT_MAX_LAYER_BYTES"] = sys.argv[2]  # read when minirt's layer.py loads
from minirt.image.layer import is_opaque
from minirt.image.store import ImageStore
from minirt.paths import state_root
from minirt.runtime.rootfs import copy_layers

def describe(top):
    found = {}
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            entry = {"mode": stat.S_IMODE(st.st_mode), "inode": st.st_ino}
            if stat.S_ISDIR(st.st_mode):
                entry.update(kind="directory", opaque=is_opaque(path))
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    entry.update(kind="file", data=f.read(200).decode(errors="replace"))
            elif stat.S_ISLNK(st.st_mode):
                entry.update(kind="symlink", target=os.readlink(path))
            elif stat.S_ISCHR(st.st_mode):
                entry.update(kind="character device %d/%d" % (os.major(st.st_rdev),
                                                              os.minor(st.st_rdev)))
            else:
                entry.update(kind="something else")
            found[os.path.relpath(path, top)] = entry
    return found

store = ImageStore(state_root())
try:
    layers = list(reversed(store.unpacked_layers(store.resolve(sys.argv[1]))))
except Exception as e:
    where = traceback.extract_tb(e.__traceback__)[-1]
    print(json.dumps({"error": type(e).__name__, "message": str(e),
                      "where": f"{os.path.basename(where.filename)}, line {where.lineno}"}))
else:
    merged = tempfile.mkdtemp(prefix=".merged-", dir=state_root())
    copy_layers(layers, merged)
    print(json.dumps({"layers": [describe(layer) for layer in layers],
                      "merged": describe(merged)}))
"""


def load(ctx, tag: str, layers: list[bytes]) -> None:
    """``minirt load`` of a one-image archive (written by the check), with the student's copy."""
    scratch = os.path.join(ctx.state_root, "ex05")
    os.makedirs(scratch, exist_ok=True)
    archive = os.path.join(scratch, tag.replace("/", "_").replace(":", "_") + ".tar")
    docker_archive(archive, tag, layers)
    done = ctx.run_minirt("load", "-i", archive)
    if done.returncode != 0:
        raise Hint(f"`minirt load` of the check's archive failed: {last_line(done.stderr)}")


def unpack(ctx, tag: str, max_bytes: int | None = None) -> dict:
    """The probe's report: {"layers": [...], "merged": {...}} or {"error", "message", "where"}."""
    done = ctx.python("-c", PROBE, tag, *([str(max_bytes)] if max_bytes else []))
    lines = done.stdout.decode(errors="replace").splitlines()
    if done.returncode != 0 or not lines:
        raise Hint(f"unpacking {tag} stopped the interpreter: {last_line(done.stderr)} (does "
                   "apply_layer.py load? `python -c 'import apply_layer'` in your folder)")
    return json.loads(lines[-1])


def two_layers(ctx) -> dict:
    """The two-layer image, loaded and unpacked once; the report shared by three steps."""
    if not hasattr(ctx, "ex05_report"):
        load(ctx, IMAGE, [tar_bytes(BOTTOM), tar_bytes(TOP)])
        ctx.ex05_report = unpack(ctx, IMAGE)
    report = ctx.ex05_report
    if "error" in report:
        if report["error"] == "NotImplementedError":
            raise Hint(f"apply_layer still raises NotImplementedError ({report['message']})")
        raise Hint(f"minirt could not unpack the layers: your apply_layer raised "
                   f"{report['error']}: {report['message']} ({report['where']})")
    return report


def describe(entry: dict | None) -> str:
    if entry is None:
        return "nothing"
    kind = entry["kind"]
    if kind == "symlink":
        return f"a symlink to {entry['target']!r}"
    if kind == "file":
        return f"a file holding {entry['data']!r} with mode {entry['mode']:04o}"
    return f"a {kind}"


def expect_file(tree: dict, path: str, data: bytes, mode: int, where: str) -> None:
    entry = tree.get(path)
    if entry is None or entry["kind"] != "file":
        raise Hint(f"{path} should be a regular file {where}; it is {describe(entry)}: write each "
                   "regular member with the bytes of tar.extractfile(member)")
    if entry["data"] != data.decode():
        raise Hint(f"{path} {where} holds {entry['data']!r}, not {data.decode()!r}: copy all of "
                   "tar.extractfile(member) into the file")
    if entry["mode"] & 0o777 != mode:
        raise Hint(f"{path} {where} has mode {entry['mode']:04o}, the tar says {mode:04o}: "
                   "os.chmod(path, member.mode & 0o1777) once it is written")


def no_whiteout_names(tree: dict, where: str) -> None:
    leftovers = sorted(p for p in tree if os.path.basename(p).startswith(".wh."))
    if leftovers:
        raise Hint(f"{', '.join(leftovers)} {where} were written as files: a name starting with "
                   ".wh. is an instruction (delete NAME, or hide the directory), never a file "
                   "of the image")


# --- the steps -------------------------------------------------------------------------------

def bottom_layer(ctx):
    tree = two_layers(ctx)["layers"][0]
    where = "in the bottom layer's directory"
    for path in ("etc", "opt", "opt/old", "bin"):
        if (tree.get(path) or {}).get("kind") != "directory":
            raise Hint(f"{path} should be a directory {where}; it is {describe(tree.get(path))}")
    for kind, name, mode, data in BOTTOM:
        if kind == "file":
            expect_file(tree, name, data, mode, where)
    link = tree.get("bin/tool-link")
    if link is None or link["kind"] != "symlink" or link["target"] != "tool":
        raise Hint(f"bin/tool-link should be a symlink to 'tool' {where}; it is {describe(link)}: "
                   "os.symlink(member.linkname, path), the target exactly as the tar has it")
    hard, tool = tree.get("bin/tool-hard"), tree["bin/tool"]
    if hard is None or hard["kind"] != "file" or hard["inode"] != tool["inode"]:
        raise Hint(f"bin/tool-hard should be a hard link to bin/tool (the same inode) {where}; "
                   f"it is {describe(hard)}"
                   + (", a copy" if hard and hard["kind"] == "file" else "")
                   + ": os.link(os.path.join(dest, member.linkname), path)")
    return "files with their content and modes, directories, a symlink, a hard link"


def top_layer(ctx):
    tree = two_layers(ctx)["layers"][1]
    where = "in the top layer's directory"
    no_whiteout_names(tree, where)
    secret = tree.get("etc/secret.txt")
    if secret is None or secret["kind"] != "character device 0/0":
        raise Hint(f"etc/secret.txt should be a whiteout {where} (from etc/.wh.secret.txt): a "
                   f"character device numbered 0/0, os.mknod(path, stat.S_IFCHR, "
                   f"os.makedev(0, 0)); it is {describe(secret)}")
    if not (tree.get("opt") or {}).get("opaque"):
        raise Hint(f"opt {where} is not marked opaque (its tar has opt/.wh..wh..opq): set the "
                   "xattr trusted.overlay.opaque to b'y' on the directory, or, when that raises "
                   "PermissionError (not root), user.overlay.opaque")
    if (tree.get("etc") or {}).get("opaque"):
        raise Hint("etc was marked opaque, but only opt has the marker: a whiteout of one file "
                   "hides that file, not its directory")
    expect_file(tree, "etc/added.txt", b"added by the top layer\n", 0o644, where)
    expect_file(tree, "opt/new.txt", b"new\n", 0o644, where)
    return "etc/secret.txt is a 0/0 whiteout, opt is opaque, no .wh. file left"


def merged(ctx):
    tree = two_layers(ctx)["merged"]
    where = "in the merged image"
    if "etc/secret.txt" in tree:
        raise Hint(f"etc/secret.txt is still there {where} ({describe(tree['etc/secret.txt'])}): "
                   "the top layer's whiteout did not hide it")
    opt = sorted(p for p in tree if p.startswith("opt/"))
    if opt != ["opt/new.txt"]:
        raise Hint(f"opt holds {', '.join(opt) or 'nothing'} {where}, and should hold only "
                   "new.txt: the opaque marker hides what the bottom layer had in opt")
    expect_file(tree, "etc/hostname", b"ex05\n", 0o644, where)
    expect_file(tree, "etc/added.txt", b"added by the top layer\n", 0o644, where)
    expect_file(tree, "bin/tool", b"#!/bin/sh\necho tool\n", 0o755, where)
    return "etc/secret.txt gone, opt holds only new.txt, the rest as the layers made it"


def hostile(ctx):
    outside = os.path.join(ctx.state_root, "outside")
    os.makedirs(outside, exist_ok=True)
    # Layers are unpacked in <state root>/layers/.unpack-XXXX: two levels down.
    cases = [
        ("a '..' path", "lab/hostile:dotdot",
         [("file", "../../outside/dotdot.txt", 0o644, b"escaped\n")], None),
        ("an absolute path", "lab/hostile:absolute",
         [("file", os.path.join(outside, "absolute.txt"), 0o644, b"escaped\n")], None),
        ("a symlink, then a file through it", "lab/hostile:symlink",
         [("symlink", "escape", 0o777, outside),
          ("file", "escape/through-the-link.txt", 0o644, b"escaped\n")], None),
        ("more bytes than max_bytes", "lab/hostile:big",
         [("file", "big.bin", 0o644, b"\0" * 300_000)], 100_000),
    ]
    for what, tag, members, limit in cases:
        load(ctx, tag, [tar_bytes(members)])
        report = unpack(ctx, tag, limit)
        written = sorted(os.listdir(outside))
        if written:
            raise Hint(f"a layer with {what} wrote {', '.join(written)} OUTSIDE the layer's "
                       "directory: " + ESCAPES[what])
        if "error" not in report:
            raise Hint(f"a layer with {what} was unpacked without complaint: "
                       + ESCAPES[what])
        if report["error"] == "NotImplementedError":
            raise Hint(f"apply_layer still raises NotImplementedError ({report['message']})")
        if report["error"] != "ImageError":
            raise Hint(f"a layer with {what} was refused, but with {report['error']}: "
                       f"{report['message']} ({report['where']}); raise ImageError(\"...\") "
                       "(from minirt.errors), which minirt reports in one line")
    return ("'..', an absolute path, a symlink out and an oversized layer: ImageError, "
            "nothing outside")


ESCAPES = {
    "a '..' path": "refuse a member whose name has a '..' part (ImageError)",
    "an absolute path": "refuse a member whose name starts with '/' (ImageError)",
    "a symlink, then a file through it": "before writing below a directory, resolve it "
    "(os.path.realpath) and refuse it unless it is still inside dest",
    "more bytes than max_bytes": "add up member.size of the regular files and raise ImageError "
    "once the total passes max_bytes",
}


STEPS = [
    ("the bottom layer: files, directories, a symlink and a hard link", bottom_layer),
    ("the top layer: a whiteout and an opaque directory, as overlayfs reads them", top_layer),
    ("the two layers merged: what a container of this image sees", merged),
    ("hostile layers are refused and write nothing outside", hostile),
]
