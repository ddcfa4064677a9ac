"""``minirt bundle``: a minirt container as an OCI bundle, for runc or crun to run.

An OCI *bundle* (the OCI runtime spec, bundle.md and config.md) is what every
production runtime takes as input: a directory holding

    config.json   the container as data: the process (argv, env, cwd, user,
                  capabilities, rlimits, no_new_privs), the root filesystem,
                  the mounts in the order to make them, and under ``linux`` the
                  namespaces, cgroup resources, seccomp filter and the masked
                  and read-only paths
    rootfs/       the root filesystem, as a plain directory

``runc run --bundle DIR ID`` (or crun) reads the two and builds the same kind
of sandbox ``runtime/init.py`` builds. ``ContainerSpec`` is minirt's own,
smaller, config.json; this module translates one into the other, so that the
same container can run under minirt and under runc and be compared from inside
(tests/test_bundle.py does exactly that).

How each minirt setting lands in config.json::

    minirt (ContainerSpec / security profile)   config.json
    -----------------------------------------   ------------------------------------------
    layers + init layer + upper/ (overlay),     rootfs/: copied bottom-up with whiteouts
      or the container's rootfs/ (--storage       applied (rootfs.copy_layers); root.path
      copy)                                       "rootfs"
    read_only (--read-only)                     root.readonly
    command                                     process.args (resolved in $PATH by the
                                                  runtime, as minirt's init does)
    env (+ PATH, HOSTNAME, HOME defaults)       process.env (init.container_env)
    workdir                                     process.cwd (created in rootfs/ if missing)
    user (--user)                               process.user.uid/gid/additionalGids, from
                                                  rootfs/etc/passwd and group
                                                  (profile.resolve_user); HOME as minirt
    tty                                         process.terminal is always false
    capabilities.effective_set(...)             process.capabilities: bounding, effective,
                                                  permitted; inheritable and ambient empty
    no-new-privileges                           process.noNewPrivileges
    rlimits (--ulimit; rootless -m/--pids)      process.rlimits
    hostname                                    hostname
    namespaces mnt uts ipc net pid cgroup user  linux.namespaces mount uts ipc network pid
                                                  cgroup user (+ uid/gid mappings)
    network none | bridge | NAME                a new network namespace (only lo: the
                                                  veth and address are not reproduced)
    network host                                no network namespace
    mounts made by runtime/init.py              mounts, in minirt's order: /etc/hosts,
                                                  /etc/resolv.conf, /etc/hostname (copies
                                                  of the container's, beside config.json;
                                                  written as its start would if it never
                                                  ran), volumes, /proc, /sys (ro), /dev
                                                  tmpfs, /dev/pts, /dev/shm
    volumes (-v HOST:PATH[:ro])                 bind mounts ("rbind", "ro" when :ro)
    limits.memory                               linux.resources.memory.limit (+ swap equal
                                                  to it: no swap, as minirt writes memsw)
    limits.cpus                                 linux.resources.cpu.quota / period 100000
    limits.pids                                 linux.resources.pids.limit
    cgroups v1 restrict_devices                 linux.resources.devices: deny all, then
                                                  minirt's ALLOWED_DEVICES
    security/paths.py MASKED, READ_ONLY         linux.maskedPaths, linux.readonlyPaths
    security/seccomp.py policy                  linux.seccomp: defaultAction ALLOW, every
                                                  rule as SCMP_ACT_ERRNO with its errno
                                                  (EPERM; clone3 ENOSYS), argument rules
                                                  (clone's CLONE_NEW* flags, personality,
                                                  socket(AF_VSOCK)) as args; the
                                                  machine's ABIs as architectures
    privileged                                  every capability, no seccomp, no masked
                                                  paths, /sys rw, the host's devices in
                                                  linux.devices
    make_private("/")                           linux.rootfsPropagation "rprivate"

What a bundle cannot carry: the container's network wiring (veth, address,
published ports: a runtime's hooks or a CNI plugin do that), and minirt's own
records (name, labels: kept as annotations). The cgroup is the runtime's own
(``linux.cgroupsPath`` is left to runc's default, ``<its cgroup>/<ID>``).

The bundle is written into a temporary directory beside DIR and renamed to DIR
at the end: DIR is either complete or absent (or left as the empty directory
it was).
"""

import json
import os
import shutil
import stat
import tempfile

from ..errors import ContainerError, MinirtError
from ..paths import remove_tree
from . import rootfs as rootfs_module
from .spec import ContainerSpec

OCI_VERSION = "1.0.2"

# minirt's namespace names -> the OCI spec's.
NAMESPACE_TYPES = {"pid": "pid", "mnt": "mount", "ipc": "ipc", "uts": "uts", "net": "network",
                   "cgroup": "cgroup", "user": "user"}

# The ABIs a filter must cover on each machine (as seccomp._compat_arches): a
# 32-bit call would otherwise walk around a filter written for 64-bit numbers.
SECCOMP_ARCHITECTURES = {
    "x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
    "s390x": ("SCMP_ARCH_S390X", "SCMP_ARCH_S390"),
}

CPU_PERIOD_US = 100_000  # what the cgroup drivers write (cgroups.cpu_quota's default)


def write_bundle(engine, ref: str, directory: str) -> str:
    """Write container ``ref`` (created or exited) as an OCI bundle at ``directory``:
    ``config.json`` and ``rootfs/``. Returns the bundle's absolute path."""
    container = engine.find_container(ref)
    if container.get("running"):
        raise ContainerError(f"container {container['name']} is running: stop it first "
                             "(its files would change while they are copied)")
    spec = ContainerSpec.from_dict(container)
    container_dir = os.path.join(engine.containers_dir, spec.id)
    target = os.path.abspath(directory)
    _check_target(target)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.bundle-", dir=parent)
    try:
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would lock a non-root runtime user out
        root = os.path.join(staging, "rootfs")
        os.mkdir(root, 0o755)
        copy_root(spec, container_dir, root)
        etc_files = copy_etc_files(spec, container_dir, staging)
        config = oci_config(spec, root, etc_files, cgroup_version=engine.cgroups.version)
        with open(os.path.join(staging, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        _check_target(target)
        try:
            os.rename(staging, target)  # replaces an empty directory, never a full one
        except OSError as e:
            raise MinirtError(f"cannot write the bundle to {target}: {e.strerror}") from None
    except BaseException:
        remove_tree(staging)
        raise
    return target


def _check_target(target: str) -> None:
    """DIR may be missing or an empty directory; anything else is refused."""
    if not os.path.lexists(target):
        return
    if not os.path.isdir(target) or os.path.islink(target):
        raise MinirtError(f"cannot write a bundle to {target}: it exists and is not a directory")
    if os.listdir(target):
        raise MinirtError(f"cannot write a bundle to {target}: the directory is not empty")


# --- the root filesystem ---------------------------------------------------------------

def copy_root(spec: ContainerSpec, container_dir: str, dest: str) -> None:
    """The container's merged root filesystem, copied into ``dest``.

    Overlay storage: the image layers bottom-up, then the init layer, then what the
    container wrote (upper/), each over the last with overlayfs's whiteouts and
    opaque directories applied, which is what its overlay mount shows. Copy
    storage: its rootfs/ is already the merged tree (or, never started, the layers).
    """
    for layer in spec.layers:
        if not os.path.isdir(layer):
            raise MinirtError(f"image layer {layer} of container {spec.name} is missing: "
                              "cannot rebuild its root filesystem")
    own_copy = rootfs_module.root_path(container_dir)
    if spec.storage == "copy" and os.path.isdir(own_copy) and os.listdir(own_copy):
        stack = [own_copy]
    else:
        stack = list(reversed(spec.layers))
        stack += [d for d in (os.path.join(container_dir, "init"),
                              os.path.join(container_dir, "upper")) if os.path.isdir(d)]
    rootfs_module.copy_layers(stack, dest)
    # minirt's init creates the working directory at start; runc wants it to exist.
    os.makedirs(rootfs_module.secure_join(dest, spec.workdir), exist_ok=True)


def copy_etc_files(spec: ContainerSpec, container_dir: str, bundle: str) -> list[str]:
    """The container's own /etc/hosts, hostname, resolv.conf, copied beside config.json
    (bind sources relative to the bundle: it keeps working after ``minirt rm``).

    A container never started has none yet (its network sandbox writes them at
    start): they are written as that start would, without an address.
    """
    from ..network import etcfiles
    names = etcfiles.present(container_dir)
    if names:
        for name in names:
            shutil.copyfile(os.path.join(container_dir, name), os.path.join(bundle, name))
    elif spec.namespaces:  # not an emulated (proot) container, which mounts none
        hosts = None
        if spec.network == "host":  # as NetworkSandbox._write_etc_files
            try:
                with open("/etc/hosts") as f:
                    hosts = f.read()
            except OSError:
                pass
        etcfiles.write_all(bundle, spec.hostname, hosts or etcfiles.hosts_text(None),
                           etcfiles.resolv_conf_text(spec.dns or ()))
        names = list(etcfiles.FILES)
    for name in names:
        os.chmod(os.path.join(bundle, name), 0o644)
    return names


# --- config.json ---------------------------------------------------------------------

def oci_config(spec: ContainerSpec, root: str, etc_files=(), cgroup_version: int = 1) -> dict:
    """config.json for ``spec``, whose root filesystem is (already) at ``root``."""
    from ..security import profile as security_profile
    profile = security_profile.from_spec(spec)
    linux = {
        "namespaces": [{"type": NAMESPACE_TYPES[n]} for n in spec.namespaces],
        "resources": resources(spec, cgroup_version),
        "rootfsPropagation": "rprivate",
    }
    if "user" in spec.namespaces:
        linux["uidMappings"], linux["gidMappings"] = id_mappings()
    if spec.privileged:
        linux["devices"] = host_devices()
    if profile.mask_paths:
        from ..security import paths
        linux["maskedPaths"] = list(paths.MASKED)
        linux["readonlyPaths"] = list(paths.READ_ONLY)
    if profile.seccomp:
        linux["seccomp"] = seccomp_section(profile.capabilities)
    config = {
        "ociVersion": OCI_VERSION,
        "process": process_section(spec, profile, root),
        "root": {"path": "rootfs", "readonly": bool(spec.read_only)},
        "mounts": mounts_section(spec, etc_files),
        "linux": linux,
        "annotations": {"org.minirt.container.id": spec.id,
                        "org.minirt.container.name": spec.name,
                        "org.minirt.image": spec.image,
                        "org.minirt.network": spec.network},
    }
    if "uts" in spec.namespaces and spec.hostname:  # runc refuses a hostname without one
        config["hostname"] = spec.hostname
    return config


def process_section(spec: ContainerSpec, profile, root: str) -> dict:
    from .init import container_env
    env = container_env(spec)
    uid, gid, groups = 0, 0, []
    if spec.user:
        uid, gid, groups, home = resolve_user_in(spec.user, root)
        if "HOME" not in spec.env:  # as harden() hands HOME to the command
            env["HOME"] = home
    user = {"uid": uid, "gid": gid}
    if groups:
        user["additionalGids"] = groups  # minirt's setgroups(2) list, the gid first
    caps = capability_names(profile.capabilities)
    process = {
        "terminal": False,
        "user": user,
        "args": list(spec.command),
        "env": [f"{key}={value}" for key, value in env.items()],
        "cwd": spec.workdir or "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps,
                         "inheritable": [], "ambient": []},
        "noNewPrivileges": bool(profile.no_new_privs),
    }
    if spec.rlimits:
        process["rlimits"] = [rlimit(name, value) for name, value in spec.rlimits.items()]
    return process


def resolve_user_in(user: str, root: str) -> tuple[int, int, list[int], str]:
    """``--user`` resolved against the copied root's /etc/passwd and /etc/group.

    The two files are looked up with ``secure_join`` and read from a private copy:
    an image whose /etc/passwd is a symlink to an absolute path must not make us
    read the host's.
    """
    from ..security.profile import resolve_user
    with tempfile.TemporaryDirectory(prefix="minirt-etc-") as etc:
        for name in ("passwd", "group"):
            source = rootfs_module.secure_join(root, f"/etc/{name}")
            if os.path.isfile(source) and not os.path.islink(source):
                shutil.copyfile(source, os.path.join(etc, name))
        return resolve_user(user, etc)


def capability_names(keep) -> list[str]:
    """The names in ``keep`` that this process's bounding set still holds (so the kernel
    knows them), in capability-number order.

    minirt's init keeps what it has of ``keep`` (drop_bounding only drops); runc
    instead fails ("unable to apply caps") on one it cannot have, as
    --privileged's "every capability" would be where a sandbox already took some.
    """
    from ..security import capabilities
    held = capabilities.bounding_set()
    return sorted((n for n in keep if n in held), key=capabilities.NUMBERS.__getitem__)


def rlimit(name: str, value) -> dict:
    """``("RLIMIT_NOFILE", [1024, 2048])`` or ``("RLIMIT_AS", 67108864)`` (both limits)."""
    soft, hard = value if isinstance(value, (list, tuple)) else (value, value)
    return {"type": name, "soft": int(soft), "hard": int(hard)}


def mounts_section(spec: ContainerSpec, etc_files=()) -> list[dict]:
    """runtime/init.py's mounts, in its order: the /etc files and volumes first (onto
    the root), then /proc, /sys and /dev (rootfs.mount_system)."""
    mounts = [{"destination": f"/etc/{name}", "type": "bind", "source": name,
               "options": ["rbind", "rprivate"]} for name in etc_files]
    for volume in spec.volumes:
        mounts.append({"destination": volume.target, "type": "bind", "source": volume.source,
                       "options": ["rbind", "rprivate", "ro" if volume.readonly else "rw"]})
    mounts += [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev"] + ([] if spec.privileged else ["ro"])},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]
    return mounts


def resources(spec: ContainerSpec, cgroup_version: int) -> dict:
    """linux.resources: the cgroup limits minirt's driver writes."""
    from ..kernel.cgroups import cpu_quota
    found = {}
    limits = spec.limits
    if limits.memory is not None:
        found["memory"] = {"limit": limits.memory}
        if _swap_accounted(cgroup_version):
            found["memory"]["swap"] = limits.memory  # memory + swap = memory: no swap
    if limits.cpus is not None:
        found["cpu"] = {"quota": cpu_quota(limits.cpus, CPU_PERIOD_US), "period": CPU_PERIOD_US}
    if limits.pids is not None:
        found["pids"] = {"limit": limits.pids}
    if spec.privileged:
        found["devices"] = [{"allow": True, "access": "rwm"}]
    else:
        from ..kernel.cgroups.v1 import ALLOWED_DEVICES
        found["devices"] = [{"allow": False, "access": "rwm"}] + [
            device_rule(rule) for rule in ALLOWED_DEVICES]
    return found


def _swap_accounted(cgroup_version: int) -> bool:
    """Does this machine limit swap (v1: memory.memsw.* exists; v2: always)? minirt
    writes the swap limit only then, and runc fails on a missing memsw file."""
    if cgroup_version != 1:
        return True
    from ..kernel.cgroups import mounted_hierarchies
    memory = mounted_hierarchies().get("memory")
    return bool(memory) and os.path.exists(os.path.join(memory, "memory.memsw.limit_in_bytes"))


def device_rule(rule: str) -> dict:
    """``"c 1:3 rwm"`` (devices.allow) -> an OCI device rule; ``*`` is left out (any)."""
    kind, numbers, access = rule.split()
    major, _, minor = numbers.partition(":")
    found = {"allow": True, "type": kind}
    if major != "*":
        found["major"] = int(major)
    if minor != "*":
        found["minor"] = int(minor)
    found["access"] = access
    return found


def host_devices(host_dev: str = "/dev") -> list[dict]:
    """--privileged: every character and block device of the host, as
    devices.copy_host_devices recreates them (pts, shm, mqueue, hugepages skipped)."""
    from ..kernel.devices import SYMLINKS
    found = []
    for directory, subdirs, names in os.walk(host_dev):
        subdirs[:] = sorted(d for d in subdirs if directory != host_dev or
                            d not in ("pts", "shm", "mqueue", "hugepages"))
        for name in sorted(names):
            path = os.path.join(directory, name)
            if directory == host_dev and name in SYMLINKS:
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                found.append({"path": path, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                              "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                              "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                              "gid": st.st_gid})
    return found


def id_mappings() -> tuple[list[dict], list[dict]]:
    """Rootless: the user namespace's maps minirt writes (kernel/idmap.py)."""
    from ..kernel import idmap
    mapping = idmap.for_user()

    def lines(own: int, borrowed) -> list[dict]:
        found = [{"containerID": 0, "hostID": own, "size": 1}]
        if borrowed:
            found.append({"containerID": 1, "hostID": borrowed[0], "size": borrowed[1]})
        return found
    return lines(mapping.uid, mapping.uid_range), lines(mapping.gid, mapping.gid_range)


def seccomp_section(capabilities) -> dict:
    """linux.seccomp from minirt's own policy (security/seccomp.py), rule by rule.

    Unconditional rules are grouped by errno; a rule with argument conditions
    becomes one entry per alternative (entries for one call are ORed, the args
    of one entry ANDed, as in libseccomp). SCMP_CMP_MASKED_EQ's ``value`` is the
    mask and ``valueTwo`` the value, as libseccomp takes them.
    """
    from ..security import seccomp
    # The private _rules is the one place the policy is spelled out (the same list
    # build_filter compiles): using it keeps bundle and minirt from drifting apart.
    rules = seccomp._rules(seccomp._capability_names(capabilities))
    plain: dict[int, list[str]] = {}
    conditional = []
    for name, _why, code, conditions, _compat in rules:
        if not conditions:
            plain.setdefault(code, []).append(name)
            continue
        for comparisons in conditions:
            conditional.append({
                "names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": code,
                "args": [{"index": index, "value": a, "valueTwo": b, "op": f"SCMP_CMP_{op}"}
                         for index, op, a, b in comparisons]})
    section = {"defaultAction": "SCMP_ACT_ALLOW"}
    arches = SECCOMP_ARCHITECTURES.get(os.uname().machine)
    if arches:
        section["architectures"] = list(arches)
    section["syscalls"] = [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": code}
                           for code, names in plain.items()] + conditional
    return section
