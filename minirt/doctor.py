"""``minirt doctor``: what this machine lets us do, found by trying, never assumed.

Each probe really attempts the thing (a user namespace, an overlay mount, a
pivot_root, a cgroup directory) in a throw-away child process or directory and
reports what happened. From the results comes the privilege tier:

* ``root``: every namespace, mounts, cgroups: full containers;
* ``rootless``: user namespaces are allowed, so an ordinary user can be root
  inside one and build a container there (limits are weaker);
* ``unprivileged``: no namespaces at all (e.g. Binder): images, registries and
  measurements still work; running uses emulation or explains why it cannot.

The notebooks and the tests use ``probe()``, the same code the command prints.
"""

import os
import shutil
# idmap at the top, not in the function: probes run in children that may have left a
# chroot or dropped privileges, from where this package's files may be out of reach.
from .kernel import idmap, namespaces, syscalls
from .kernel.cgroups import mounted_hierarchies
from .record import Record


class Check(Record):
    """One probe: did it work, what it found, and why not."""

    __slots__ = ("name", "ok", "value", "detail")

    def __init__(self, name: str, ok: bool, value: str, detail: str = ""):
        self.name, self.ok, self.value, self.detail = name, ok, value, detail


class Report(Record):
    __slots__ = ("tier", "checks")

    def __init__(self, tier: str, checks: list[Check]):
        self.tier, self.checks = tier, checks

    def ok(self, name: str) -> bool:
        return any(c.ok for c in self.checks if c.name == name)

    def to_dict(self) -> dict:
        return {"tier": self.tier, "checks": [c.to_dict() for c in self.checks]}


def in_child(action) -> tuple[bool, str]:
    """Run ``action()`` in a forked child; report whether it worked and why not.

    Probes that change namespaces or mounts run here so the caller is untouched.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        message = b""
        code = 0
        try:
            action()
        except BaseException as e:  # report any failure to the parent
            code, message = 1, str(e).encode()[:500]
        finally:
            os.write(write_fd, message)
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        message = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0, message


def _try_user_namespace():
    namespaces.unshare(["user"])


def _try_container_namespaces():
    names = list(namespaces.CONTAINER_NAMESPACES)
    if os.geteuid() != 0:
        names = ["user"] + names
    namespaces.unshare(names)


def _private_scratch() -> str:
    """Enter a new mount namespace (a user namespace too when not root) and mount a
    tmpfs on /tmp there: probes then leave nothing on the host's disks."""
    from .kernel import mounts
    namespaces.unshare(["mnt"] if os.geteuid() == 0 else ["user", "mnt"])
    mounts.make_private("/")
    mounts.tmpfs("/tmp")
    return "/tmp"


def _try_overlay():
    from .kernel import mounts
    scratch = _private_scratch()
    dirs = [os.path.join(scratch, d) for d in ("lower", "upper", "work", "merged")]
    for d in dirs:
        os.mkdir(d)
    mounts.overlay([dirs[0]], dirs[1], dirs[2], dirs[3])
    with open(os.path.join(dirs[3], "probe"), "w") as f:
        f.write("copy-on-write")
    if os.listdir(dirs[0]):
        raise OSError("overlay wrote into its lower dir")


def _try_pivot_root():
    from .kernel import mounts
    mounts.pivot_into(_private_scratch())


def check_cgroup_controllers() -> list[Check]:
    """Can we create a cgroup and see each controller's limit file in it?"""
    from .kernel.cgroups import cgroup_version
    version = cgroup_version()
    found = mounted_hierarchies()
    checks = [Check("cgroup version", True, f"v{version}",
                    "hybrid: v1 controllers plus an empty v2 tree" if version == 1 and
                    "unified" in found else "")]
    limit_files = {1: {"memory": "memory.limit_in_bytes", "cpu": "cpu.cfs_quota_us",
                       "pids": "pids.max"},
                   2: {"memory": "memory.max", "cpu": "cpu.max", "pids": "pids.max"}}[version]
    delegated = None
    if version == 2 and os.geteuid() != 0:  # a user's own subtree, if one is delegated
        from .kernel.cgroups.v2 import delegated_root
        delegated = delegated_root()
    for controller, limit_file in limit_files.items():
        root = delegated or found.get(controller if version == 1 else "unified")
        if root is None:
            checks.append(Check(f"cgroup {controller}", False, "not mounted"))
            continue
        probe = os.path.join(root, f"minirt-probe-{os.getpid()}")
        detail = root
        try:
            if version == 2:
                with open(os.path.join(root, "cgroup.controllers")) as f:
                    available = f.read().split()
                if controller not in available:
                    checks.append(Check(f"cgroup {controller}", False, "not available",
                                        f"not in {root}/cgroup.controllers"))
                    continue
                detail, why = _v2_enable(root, controller)
                if why:
                    checks.append(Check(f"cgroup {controller}", False, "not enabled", why))
                    continue
            os.mkdir(probe)
            try:
                path = os.path.join(probe, limit_file)
                writable = _v2_write_default(path) if version == 2 else os.access(path, os.W_OK)
                checks.append(Check(f"cgroup {controller}", writable, "writable" if writable
                                    else "read-only", detail))
            finally:
                os.rmdir(probe)
        except OSError as e:
            checks.append(Check(f"cgroup {controller}", False, "read-only", e.strerror or str(e)))
    return checks


def _v2_enable(root: str, controller: str) -> tuple[str, str]:
    """On cgroup v2 a controller's files appear in a child cgroup only when the parent
    lists it in ``cgroup.subtree_control``. Enable it there if it is not yet, as the v2
    driver does on first use; not in a non-root cgroup that holds processes, where
    the driver does not either (``holds_processes``).
    Returns (detail, why not); ``why`` is empty when the controller is enabled."""
    from .kernel.cgroups.v2 import holds_processes
    control = os.path.join(root, "cgroup.subtree_control")
    with open(control) as f:
        if controller in f.read().split():
            return f"{root}, enabled in cgroup.subtree_control", ""
    busy = holds_processes(root)  # enabling there would be refused or harmful: not tried
    if busy:
        return "", f"not in {control}: {busy}"
    try:
        with open(control, "w") as f:
            f.write(f"+{controller}")
    except OSError as e:
        return "", f"cannot enable it in {control}: {e.strerror or e}"
    return f"{root}, enabled now in cgroup.subtree_control (as minirt does on first use)", ""


def _v2_write_default(path: str) -> bool:
    """Write a cgroup v2 limit file's default (no limit) into a probe cgroup: can we?"""
    try:
        with open(path, "w") as f:
            f.write("max 100000" if path.endswith("cpu.max") else "max")
        return True
    except OSError:
        return False


def check_kvm() -> Check:
    """Can we open /dev/kvm and create a VM? (Booting a guest is the VM notebook's test.)"""
    import fcntl
    if not os.path.exists("/dev/kvm"):
        return Check("kvm", False, "no /dev/kvm")
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return Check("kvm", False, "cannot open /dev/kvm", e.strerror)
    try:
        version = fcntl.ioctl(fd, 0xAE00)  # KVM_GET_API_VERSION
        vm = fcntl.ioctl(fd, 0xAE01, 0)    # KVM_CREATE_VM
        os.close(vm)
        return Check("kvm", True, f"API {version}", "creates a VM; whether a guest boots is "
                     "measured by the VM baseline")
    except OSError as e:
        return Check("kvm", False, "KVM_CREATE_VM failed", e.strerror)
    finally:
        os.close(fd)


def find_kernel() -> str | None:
    """A Linux kernel image QEMU could boot: the lab's own, or one in /boot."""
    from .paths import state_root
    candidates = [os.path.join(state_root(), "vm", "vmlinuz")]
    if os.path.isdir("/boot"):
        candidates += sorted((os.path.join("/boot", f) for f in os.listdir("/boot")
                              if f.startswith("vmlinuz")), reverse=True)
    return next((c for c in candidates if os.access(c, os.R_OK)), None)


def probe() -> Report:
    """Try everything and decide the tier."""
    from .image.busybox import find_static_busybox
    euid = os.geteuid()
    checks = [Check("euid", True, str(euid), "root" if euid == 0 else "an ordinary user")]
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            max_userns = f.read().strip()
    except OSError:
        max_userns = "?"
    ok, why = in_child(_try_user_namespace)
    checks.append(Check("user namespaces", ok, "allowed" if ok else "refused",
                        f"max_user_namespaces={max_userns}" + (f"; {why}" if why else "")))
    if euid != 0:
        checks.append(check_subordinate_ids())
    ok, why = in_child(_try_container_namespaces)
    checks.append(Check("container namespaces", ok, "mnt uts ipc net pid cgroup" if ok
                        else "refused", why))
    ok, why = in_child(_try_overlay)
    checks.append(Check("overlayfs", ok, "mounts" if ok else "unavailable", why))
    ok, why = in_child(_try_pivot_root)
    checks.append(Check("pivot_root", ok, "works" if ok else "refused", why))
    checks += check_cgroup_controllers()
    checks.append(check_bridge_networking())
    checks.append(check_seccomp())
    busybox = find_static_busybox()
    checks.append(Check("busybox (static)", busybox is not None, busybox or "not found",
                        "" if busybox else "install busybox-static"))
    try:
        import pychroot  # noqa: F401
        checks.append(Check("pychroot", True, "importable"))
    except Exception as e:
        checks.append(Check("pychroot", False, "not importable", str(e)[:80]))
    qemu = shutil.which("qemu-system-x86_64") or shutil.which("qemu-system-aarch64")
    checks.append(Check("qemu", qemu is not None, qemu or "not found"))
    kernel = find_kernel()
    checks.append(Check("bootable kernel", kernel is not None, kernel or "not found"))
    checks.append(check_kvm())
    return Report(decide_tier(checks), checks)


def _try_bridge_and_veth():
    """In a throwaway network namespace: a bridge and a veth pair, plugged together."""
    from pyroute2 import IPRoute
    namespaces.unshare(["net"])
    with IPRoute() as ipr:
        ipr.link("add", ifname="probe-br", kind="bridge")
        ipr.link("add", ifname="probe-a", kind="veth", peer="probe-b")
        ipr.link("set", index=ipr.link_lookup(ifname="probe-a")[0],
                 master=ipr.link_lookup(ifname="probe-br")[0])


def check_bridge_networking() -> Check:
    """Can containers get docker's default network here (``--network bridge``)?"""
    from .network.sandbox import netlink_available
    if os.geteuid() != 0:
        return Check("bridge networking", False, "needs root",
                     "containers get --network none (lo only) or host; bridges and veths "
                     "need CAP_NET_ADMIN on the host")
    if not netlink_available():
        return Check("bridge networking", False, "no pyroute2",
                     "pip install pyroute2; until then containers get --network none")
    ok, why = in_child(_try_bridge_and_veth)
    return Check("bridge networking", ok, "bridge + veth" if ok else "refused", why)


def check_seccomp() -> Check:
    """Can containers get Docker's default seccomp filter (security/seccomp.py)?"""
    from .security import seccomp
    if seccomp.available():
        return Check("seccomp", True, "default filter", "Docker's denied system calls fail "
                     "with EPERM in containers")
    return Check("seccomp", False, "unavailable", "pip install pyseccomp (and libseccomp2): "
                 "until then containers start without a seccomp filter")


def check_subordinate_ids() -> Check:
    """Rootless only: may this user borrow host ids (uidmap, /etc/subuid)? See kernel/idmap.py."""
    mapping = idmap.for_user()
    if mapping.subordinate:
        (u, n), (g, m) = mapping.uid_range, mapping.gid_range
        return Check("subordinate ids", True, f"uids {u}+{n}, gids {g}+{m}",
                     "newuidmap/newgidmap map them inside the user namespace")
    if not shutil.which("newuidmap"):
        why = "only your own id inside: install uidmap and give this user a range in /etc/subuid"
    else:
        why = "only your own id inside: no range for this user in /etc/subuid and /etc/subgid"
    return Check("subordinate ids", False, "none", why)


def decide_tier(checks: list[Check]) -> str:
    ok = {c.name: c.ok for c in checks}
    euid = next(c.value for c in checks if c.name == "euid")
    if euid == "0" and ok.get("container namespaces") and ok.get("pivot_root"):
        return "root"
    if ok.get("user namespaces") and ok.get("container namespaces"):
        return "rootless"
    return "unprivileged"


TIER_MEANING = {
    "root": "full containers: every namespace, pivot_root, overlayfs and cgroup limits",
    "rootless": "containers inside a user namespace; limits only where cgroups are delegated",
    "unprivileged": "no namespaces here: images, registries and plots work; running a "
                    "container needs emulation (proot)",
}


def format_report(report: Report) -> str:
    width = max(len(c.name) for c in report.checks)
    value_width = max(len(c.value) for c in report.checks)
    lines = [f"{'CHECK':<{width}}  OK   {'VALUE':<{value_width}}  DETAIL"]
    for c in report.checks:
        lines.append(f"{c.name:<{width}}  {'yes' if c.ok else 'no ':<3}  "
                     f"{c.value:<{value_width}}  {c.detail}".rstrip())
    lines.append("")
    lines.append(f"tier: {report.tier} ({TIER_MEANING[report.tier]})")
    return "\n".join(lines)
