"""A container's root filesystem: copy-on-write over the image, then /proc, /sys, /dev.

On disk, in the container's directory::

    init/    docker's "init layer": empty /etc/hosts, /etc/hostname and
             /etc/resolv.conf, the mount points for the container's own copies
             (``network/etcfiles.py``); the topmost read-only layer, so that
             they never show up in ``diff`` or ``commit``
    upper/   what the container wrote (overlayfs upper dir): its only own data
    work/    overlayfs scratch space
    rootfs/  where the merged view is mounted (or, without overlayfs, a full copy)

The merged mount exists only inside the container's mount namespace, so it
disappears with the container and never needs unmounting from the host.
"""

import os
import stat

from .. import seams
from ..errors import ContainerStartError
from ..kernel import devices, mounts

OVERLAY_WHITEOUT = (0, 0)


def root_path(container_dir: str) -> str:
    return os.path.join(container_dir, "rootfs")


def overlay_supported() -> bool:
    """True when the running kernel lists overlayfs (it may be a module not loaded yet)."""
    try:
        with open("/proc/filesystems") as f:
            if any(line.split()[-1] == "overlay" for line in f if line.strip()):
                return True
    except OSError:
        return False
    release = os.uname().release
    return any(os.path.exists(f"/lib/modules/{release}/kernel/fs/overlayfs/overlay.ko{ext}")
               for ext in ("", ".xz", ".zst"))


def prepare(spec, container_dir: str, trace) -> None:
    """Create the container's directories (parent side, before any namespace exists)."""
    for name in ("upper", "work", "rootfs"):
        os.makedirs(os.path.join(container_dir, name), exist_ok=True)
    if spec.storage == "overlay":
        make_init_layer(container_dir)
    if spec.storage == "copy":
        with trace.step("copy image layers", dest=root_path(container_dir),
                        layers=len(spec.layers)):
            copy_layers(list(reversed(spec.layers)), root_path(container_dir))


def make_init_layer(container_dir: str) -> str:
    """The init layer: ``init/etc/{hosts,hostname,resolv.conf}``, empty files to mount on."""
    from ..network import etcfiles
    etc = os.path.join(container_dir, "init", "etc")
    os.makedirs(etc, exist_ok=True)
    for name in etcfiles.FILES:
        open(os.path.join(etc, name), "a").close()
    return os.path.dirname(etc)


def copy_layers(bottom_first: list[str], dest: str) -> None:
    """Merge layer directories into ``dest`` by copying: the no-overlayfs fallback.

    Upper layers overwrite lower ones; an overlay whiteout (a 0/0 character
    device) deletes the lower file, as overlayfs would hide it.
    """
    import shutil

    from ..image.layer import is_opaque  # here: tarfile and gzip are not for every start
    for layer in bottom_first:
        for directory, subdirs, files in os.walk(layer):
            relative = os.path.relpath(directory, layer)
            target_dir = os.path.normpath(os.path.join(dest, relative))
            if is_opaque(directory) and os.path.isdir(target_dir):
                shutil.rmtree(target_dir)  # an opaque dir hides all lower content
            os.makedirs(target_dir, exist_ok=True)
            shutil.copystat(directory, target_dir)
            for name in files + [d for d in subdirs if os.path.islink(os.path.join(directory, d))]:
                source, target = os.path.join(directory, name), os.path.join(target_dir, name)
                st = os.lstat(source)
                if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0:
                    _remove_path(target)
                    continue
                _remove_path(target)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(source), target)
                elif stat.S_ISREG(st.st_mode):
                    shutil.copy2(source, target, follow_symlinks=False)
                try:
                    os.lchown(target, st.st_uid, st.st_gid)
                except (PermissionError, FileNotFoundError):
                    pass


def _remove_path(path: str) -> None:
    import shutil
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def mount_root(spec, container_dir: str, trace) -> str:
    """Mount the container's root at ``rootfs/`` (inside its mount namespace)."""
    root = root_path(container_dir)
    if spec.storage == "overlay":
        upper, work = os.path.join(container_dir, "upper"), os.path.join(container_dir, "work")
        init = os.path.join(container_dir, "init")
        lower = ([init] if os.path.isdir(init) else []) + spec.layers
        with trace.step("mount", source="overlay", target=root, fstype="overlay", flags="",
                        lowerdir=len(lower), upperdir=upper):
            mounts.overlay(lower, upper, work, root, userxattr="user" in spec.namespaces)
    else:
        with trace.step("mount", source=root, target=root, fstype="", flags="MS_BIND|MS_REC"):
            mounts.bind(root, root)
    return root


def secure_join(root: str, path: str) -> str:
    """Resolve ``path`` inside ``root`` as if ``root`` were ``/``.

    Symlinks in the image are followed relative to the container's root, so a
    link such as ``/data -> /etc`` cannot redirect a volume onto the host's
    /etc (the idea behind runc's securejoin, CVE-2021-30465).
    """
    parts, resolved, hops = [p for p in path.split("/") if p], [], 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise ContainerStartError(f"too many symlinks resolving {path!r} in the image")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
        else:
            resolved.append(part)
    return os.path.join(root, *resolved)


def mount_etc_files(container_dir: str, root: str, trace) -> None:
    """Bind the container's own /etc/hostname, /etc/hosts and /etc/resolv.conf (written
    by its network sandbox, ``network/etcfiles.py``) over the image's, before the pivot."""
    from ..network import etcfiles  # standard library only: safe before pivot_root
    for name in etcfiles.present(container_dir):
        target = secure_join(root, f"/etc/{name}")
        if not os.path.lexists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        with trace.step("mount", source=f"{container_dir}/{name}", target=f"/etc/{name}",
                        fstype="", flags="MS_BIND"):
            mounts.bind(os.path.join(container_dir, name), target)


def mount_volumes(spec, root: str, trace) -> None:
    """Bind each ``-v HOST:PATH[:ro]`` into the container, before the pivot."""
    for volume in spec.volumes:
        if not os.path.exists(volume.source):
            raise ContainerStartError(f"volume source {volume.source!r} does not exist on the host")
        target = secure_join(root, volume.target)
        if os.path.isdir(volume.source):
            os.makedirs(target, exist_ok=True)
        elif not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        flags = "MS_BIND|MS_REC" + (" then MS_REMOUNT|MS_RDONLY" if volume.readonly else "")
        with trace.step("mount", source=volume.source, target=volume.target, fstype="",
                        flags=flags):
            mounts.bind(volume.source, target, readonly=volume.readonly)


def mount_system(root: str, trace, use_mknod: bool = True, privileged: bool = False,
                 borrow_sys: bool = False) -> None:
    """Mount /proc, /sys and a minimal /dev inside the new root.

    /proc is writable, as Docker mounts it: the dangerous parts of it are
    masked or made read-only one by one after the pivot (``security/paths.py``).
    /sys is read-only unless ``privileged``, which also gets every host device
    (a devtmpfs) instead of the minimal /dev.
    """
    for name in ("proc", "sys", "dev"):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    with trace.step("mount", source="proc", target=f"{root}/proc", fstype="proc",
                    flags="MS_NOSUID|MS_NODEV|MS_NOEXEC"):
        mounts.proc(os.path.join(root, "proc"), readonly=False)
    if borrow_sys:
        # A user namespace may mount sysfs only if it owns the network namespace; with
        # the host's network (rootless --network host) it does not: bind the host's /sys.
        with trace.step("mount", source="/sys", target=f"{root}/sys", fstype="",
                        flags="MS_BIND|MS_REC then MS_REMOUNT|MS_RDONLY"):
            mounts.bind("/sys", os.path.join(root, "sys"), readonly=True)
    else:
        with trace.step("mount", source="sysfs", target=f"{root}/sys", fstype="sysfs",
                        flags="MS_NOSUID|MS_NODEV|MS_NOEXEC" + ("" if privileged else "|MS_RDONLY")):
            mounts.sysfs(os.path.join(root, "sys"), readonly=not privileged)
    populate_dev = seams.replaceable("populate_dev", devices.populate_dev)
    populate_dev(os.path.join(root, "dev"), use_mknod=use_mknod, trace=trace,
                 host_devices=privileged and use_mknod)
