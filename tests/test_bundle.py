"""``minirt bundle``: the same container under minirt and under runc, compared from inside.

Each test creates a container with minirt, writes it as an OCI bundle
(``runtime/bundle.py``), runs the bundle with ``runc run`` (its state in a
private ``--root``), runs the same probe with ``engine.run`` and compares what
the two containers observe: capabilities, no_new_privs, seccomp, the user,
the hostname, the masked and read-only paths, the mount table, the network,
the limits (as the kernel enforces them and as the host's cgroup files say).
Every runc container is deleted (``runc delete -f``, which removes its cgroups)
and its bundle removed, whatever the outcome.
"""

import json
import os
import shutil
import stat
import subprocess

import pytest

from conftest import minirt_cli, require
from minirt.errors import ContainerNotFound, MinirtError
from minirt.runtime.bundle import write_bundle

RUNC = shutil.which("runc")

# Each line "key: value", from shell builtins and busybox applets only. What the
# probe itself smooths over, because it legitimately differs:
# * the root mount: minirt's is an overlay of the image's layers, runc's a plain
#   directory (the bundle's rootfs/), so only its ro/rw is printed;
# * the /etc/hosts, hostname and resolv.conf binds: their source is a host file
#   (in minirt's state dir, or beside config.json), on whatever filesystem holds
#   it, so only the target and ro/rw are printed;
# * a masked directory: minirt mounts "tmpfs size=0,mode=0555" read-only on it
#   (security/paths.mask), runc a read-only tmpfs with no options; sed drops the two.
PROBE = r"""
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status | tr -d '\t' | sed 's/:/: /'
echo "id: $(id)"
echo "pid: $$"
echo "hostname: $(hostname)"
echo "etc_hostname: $(cat /etc/hostname)"
echo "cwd: $(pwd)"
echo "env: $(env | grep -v '^PWD=' | sort | tr '\n' ' ')"
echo "timer_list: $(cat /proc/timer_list | wc -c)"
echo "kcore: $(cat /proc/kcore 2>/dev/null | wc -c)"
echo "firmware: $(ls -A /sys/firmware | wc -l)"
if (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null; then echo "proc_sys: writable"; else echo "proc_sys: refused"; fi
if (echo 1 > /proc/sysrq-trigger) 2>/dev/null; then echo "sysrq: writable"; else echo "sysrq: refused"; fi
if touch /sys/kernel/x 2>/dev/null; then echo "sys: writable"; else echo "sys: refused"; fi
echo "net: $(ls /sys/class/net | tr '\n' ' ')"
echo "cgroupfs: $(ls -A /sys/fs/cgroup | wc -l)"
echo "cgroup: $(tr '\n' ' ' < /proc/self/cgroup)"
echo "dev: $(ls /dev | tr '\n' ' ')"
echo "mounts: $(awk '$2 == "/" {next} $2 ~ "^/etc/" {split($4, o, ","); print $2, "bind", o[1]; next} {print $2, $3, $4}' /proc/self/mounts | sed 's/,size=0k//; s/,mode=555//' | sort | tr '\n' ';')"
echo "root: $(awk '$2 == "/" {split($4, o, ","); print o[1]}' /proc/self/mounts)"
unshare -U true 2>/dev/null; echo "unshare_user: $?"
unshare -m true 2>/dev/null; echo "unshare_mount: $?"
echo "nofile: $(ulimit -Sn) $(ulimit -Hn)"
dd if=/dev/zero of=/dev/null bs=96M count=1 2>/dev/null; echo "alloc_96m: $?"
(for i in $(seq 64); do sleep 30 & done) 2>/dev/null
n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo "pids_reached: $n"
kill -9 -1 2>/dev/null
"""

HOSTNAME = "probe-host"

CONFIGS = {
    # Root, docker's default hardening, every limit, a --ulimit.
    "root": dict(hostname=HOSTNAME, memory="64m", cpus="0.5", pids_limit=12, network="none",
                 ulimits=["nofile=1024:2048"]),
    # A user from the image's /etc/passwd, a changed capability set.
    "nobody": dict(hostname=HOSTNAME, memory="64m", pids_limit=10, network="none",
                   user="nobody", cap_add=["SYS_PTRACE"], cap_drop=["NET_RAW", "MKNOD"]),
}


@pytest.fixture(autouse=True)
def remove_bundles(tmp_path):
    """Bundles hold a whole root filesystem: gone after each test (set up first, so
    torn down last: after ``runc`` has deleted its containers)."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def runc(engine, tmp_path):
    """A runc with its state in tmp_path; every container it made is deleted after."""
    require(RUNC is not None, "needs runc (apt-get install runc)")
    from minirt.kernel import mounts
    require(mounts.is_mount_point("/"), "runc needs / to be a mount point (not in a chroot)")
    runtime = Runc(str(tmp_path / "runc-state"))
    yield runtime
    runtime.delete_all()


class Runc:
    def __init__(self, state: str):
        self.state = state
        self.made: list[str] = []

    def __call__(self, *args, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([RUNC, "--root", self.state, *args], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=60, **kw)

    def name(self) -> str:
        self.made.append(f"minirt-bundle-{os.getpid()}-{len(self.made)}")
        return self.made[-1]

    def run(self, bundle: str) -> subprocess.CompletedProcess:
        container_id = self.name()
        try:
            return self("run", "--bundle", bundle, container_id)
        finally:
            self.delete(container_id)

    def create(self, bundle: str, log: str) -> tuple[str, int]:
        """``runc create``: the container set up, cgroup and limits included, its
        process waiting to exec. Its stdio are /dev/null and ``log``: a pipe would
        stay open in that process and keep us waiting. (id, host pid)"""
        container_id = self.name()
        with open(log, "w") as errors:
            created = subprocess.run([RUNC, "--root", self.state, "create", "--bundle", bundle,
                                      container_id], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=errors, timeout=60)
        with open(log) as f:
            assert created.returncode == 0, f.read()
        return container_id, json.loads(self("state", container_id).stdout)["pid"]

    def delete(self, container_id: str) -> None:
        self("delete", "-f", container_id)
        assert not own_cgroup_dirs(container_id), "runc left its cgroup behind"

    def delete_all(self) -> None:
        for container_id in self.made:
            self.delete(container_id)


def cgroup_mounts() -> dict[str, str]:
    """Controller (``unified`` for cgroup2) -> mount point, for every controller
    (minirt's mounted_hierarchies lists only those it uses, not ``devices``)."""
    found = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if tail[:1] == ["cgroup2"]:
                found.setdefault("unified", fields[4])
            elif tail[:1] == ["cgroup"]:
                for option in tail[2].split(","):
                    found.setdefault(option, fields[4])
    return found


def own_cgroup_dirs(name: str) -> list[str]:
    """Cgroup dirs named ``name`` under this process's own cgroups (where runc puts a
    container when config.json has no cgroupsPath)."""
    found = []
    hierarchies = cgroup_mounts()
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") or ["unified"]:
                mount = hierarchies.get(controller or "unified")
                if mount and os.path.isdir(os.path.join(mount + path, name)):
                    found.append(os.path.join(mount + path, name))
    return found


def observations(output: str) -> dict:
    found = {}
    for line in output.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            found[key] = value.strip()
    return found


def bundle_of(engine, tmp_path, command, name="bundle", **options):
    """Create a container, write its bundle, remove the container: (bundle, id)."""
    container_id = engine.create("busybox", command, **options)
    try:
        bundle = write_bundle(engine, container_id, str(tmp_path / name))
    finally:
        engine.remove_container(container_id)
    return bundle, container_id


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_runc_sees_what_minirt_shows(engine, runc, tmp_path, config):
    options = CONFIGS[config]
    bundle, _ = bundle_of(engine, tmp_path, ["sh", "-c", PROBE], **options)
    under_runc = runc.run(bundle)
    assert under_runc.returncode == 0, under_runc.stderr  # runc took the config.json
    under_minirt = engine.run("busybox", ["sh", "-c", PROBE], **options)
    assert under_minirt.exit_code == 0, under_minirt.errors

    theirs, ours = observations(under_runc.stdout), observations(under_minirt.output)
    assert set(theirs) == set(ours)
    # runc (libcontainer/rootfs_linux.go, setupDevSymlinks) also links /dev/core ->
    # /proc/kcore when the host has a /proc/kcore; minirt makes only fd, stdin,
    # stdout, stderr and ptmx (kernel/devices.py).
    theirs["dev"] = " ".join(n for n in theirs["dev"].split() if n != "core")
    if "ulimits" not in options:
        # Without --ulimit both inherit RLIMIT_NOFILE from whoever started them, but
        # the Go runtime (>= 1.19) raises its own soft limit to the hard one at start-up
        # and some runc releases pass that on to the container. Only the hard limit is
        # the same by design.
        theirs["nofile"], ours["nofile"] = theirs["nofile"].split()[1], ours["nofile"].split()[1]
    assert theirs == ours

    # And what both saw is the hardening minirt means to apply.
    uid = "65534" if options.get("user") == "nobody" else "0"
    assert ours["id"].startswith(f"uid={uid}(")
    assert ours["pid"] == "1" and ours["hostname"] == ours["etc_hostname"] == HOSTNAME
    assert ours["CapBnd"] != "0000000000000000" and ours["CapInh"] == ours["CapAmb"] == \
        "0000000000000000"
    assert ours["CapEff"] == (ours["CapBnd"] if uid == "0" else "0000000000000000")
    assert ours["NoNewPrivs"] == "1" and ours["Seccomp"] == "2"
    assert ours["timer_list"] == ours["kcore"] == ours["firmware"] == "0"   # masked
    assert ours["proc_sys"] == ours["sysrq"] == ours["sys"] == "refused"     # read-only
    assert ours["net"] == "lo" and ours["cgroupfs"] == "0"
    assert all(entry.endswith(":/") for entry in ours["cgroup"].split())    # cgroup ns
    # unshare(CLONE_NEWUSER) needs no capability: only the seccomp filter refuses it.
    assert ours["unshare_user"] != "0" and ours["unshare_mount"] != "0"
    assert ours["alloc_96m"] == "137"   # the memory limit: the OOM killer (SIGKILL)
    # pids: sh plus every sleep started before fork failed, with the subshell that
    # forked them taking the last place: pids.max - 1.
    assert ours["pids_reached"] == str(options["pids_limit"] - 1)
    assert ours["root"] == "rw"
    if "ulimits" in options:
        assert ours["nofile"] == "1024 2048"


SHORT_PROBE = r"""
grep -E '^(CapPrm|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\t' | sed 's/:/: /'
echo "dev: $(ls -R /dev | wc -l)"
echo "sys: $(awk '$2 == "/sys" {split($4, o, ","); print o[1]}' /proc/self/mounts)"
echo "masked: $(awk '$2 ~ "^/(proc|sys)/" {print $2}' /proc/self/mounts | sort | tr '\n' ' ')"
echo "net: $(ls /sys/class/net | sort | tr '\n' ' ')"
echo "hostname: $(hostname)"
unshare -U true 2>/dev/null; echo "unshare_user: $?"
"""


@pytest.mark.parametrize("options", [
    dict(privileged=True, network="none", hostname=HOSTNAME),
    dict(security_opt=["seccomp=unconfined", "no-new-privileges=false"], cap_add=["SYS_ADMIN"],
         cap_drop=["ALL"], network="none", hostname=HOSTNAME),
    dict(network="host"),   # the host's hostname too, in both
], ids=["privileged", "unconfined", "host-network"])
def test_other_settings_carry_over(engine, runc, tmp_path, options):
    """--privileged (every capability and host device, nothing masked, /sys writable),
    seccomp and no_new_privs turned off, --network host: same view under runc."""
    bundle, _ = bundle_of(engine, tmp_path, ["sh", "-c", SHORT_PROBE], **options)
    under_runc = runc.run(bundle)
    assert under_runc.returncode == 0, under_runc.stderr
    under_minirt = engine.run("busybox", ["sh", "-c", SHORT_PROBE], **options)
    assert under_minirt.exit_code == 0, under_minirt.errors
    theirs, ours = observations(under_runc.stdout), observations(under_minirt.output)
    if options.get("network") == "host":
        # The host's interfaces: minirt's own veths and bridges (mrt*), other
        # containers', come and go between the two runs; the rest must be the same.
        for seen in (theirs, ours):
            seen["net"] = " ".join(n for n in seen["net"].split() if not n.startswith("mrt"))
    assert theirs == ours
    if options.get("privileged"):
        assert ours["sys"] == "rw" and ours["masked"] == "" and ours["Seccomp"] == "0"
    elif options.get("security_opt"):
        assert ours["CapBnd"] == "0000000000200000"   # CAP_SYS_ADMIN alone
        assert ours["NoNewPrivs"] == ours["Seccomp"] == ours["unshare_user"] == "0"
    else:
        assert ours["net"].split() == sorted(n for n in os.listdir("/sys/class/net")
                                             if not n.startswith("mrt"))


def test_runc_enforces_the_same_cgroup_limits(engine, runc, tmp_path):
    """Limits as the host's cgroup files hold them: minirt's cgroup beside runc's."""
    options = dict(memory="48m", cpus="0.25", pids_limit=20, network="none")
    container_id = engine.create("busybox", ["sleep", "60"], **options)
    try:
        bundle = write_bundle(engine, container_id, str(tmp_path / "bundle"))
        engine.start(container_id)
        ours = cgroup_limits(engine.inspect(container_id)["State"]["Pid"])
        engine.kill(container_id)
        engine.wait(container_id)
    finally:
        engine.remove_container(container_id, force=True)

    name, pid = runc.create(bundle, str(tmp_path / "runc.log"))
    theirs = cgroup_limits(pid)
    assert own_cgroup_dirs(name)   # where runc.delete checks that they are gone
    runc.delete(name)

    assert ours["memory"] == theirs["memory"] == 48 * 1024 ** 2
    assert ours["swap"] == theirs["swap"]          # memory+swap = memory: no swap
    assert ours["cpu"] == theirs["cpu"] == (25_000, 100_000)
    assert ours["pids"] == theirs["pids"] == 20
    # The device rules are compared in the two tests below (minirt's are not applied).
    from minirt.kernel.cgroups.v1 import ALLOWED_DEVICES
    assert set(ALLOWED_DEVICES) <= theirs["devices"] and "a *:* rwm" not in theirs["devices"]


# A device outside docker's list: /dev/kmsg (the host's kernel log). CAP_MKNOD lets
# root make the node ("c *:* m" allows mknod of any); opening it (for writing, nothing
# written) is what the devices cgroup must refuse.
DEVICE_PROBE = "mknod /tmp/kmsg c 1 11 && (true > /tmp/kmsg) 2>/dev/null; echo \"open_kmsg: $?\""


def test_runc_refuses_a_device_outside_minirts_list(engine, runc, tmp_path):
    bundle, _ = bundle_of(engine, tmp_path, ["sh", "-c", DEVICE_PROBE], network="none")
    result = runc.run(bundle)
    assert result.returncode == 0, result.stderr
    assert observations(result.stdout) == {"open_kmsg": "1"}


def test_minirt_refuses_a_device_outside_its_list(engine):
    result = engine.run("busybox", ["sh", "-c", DEVICE_PROBE], network="none")
    assert observations(result.output) == {"open_kmsg": "1"}


def cgroup_limits(pid: int) -> dict:
    """memory, swap, cpu (quota, period), pids, devices of ``pid``'s cgroups (v1, or v2)."""
    hierarchies = cgroup_mounts()
    paths = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in (controllers.split(",") if controllers else ["unified"]):
                if controller in hierarchies:
                    paths[controller] = hierarchies[controller] + path

    def read(controller, name):
        with open(os.path.join(paths[controller], name)) as f:
            return f.read().strip()

    def number(text):
        return None if text == "max" else int(text)

    if "memory" in paths:
        memsw = os.path.join(paths["memory"], "memory.memsw.limit_in_bytes")
        return {"memory": int(read("memory", "memory.limit_in_bytes")),
                "swap": int(read("memory", "memory.memsw.limit_in_bytes"))
                if os.path.exists(memsw) else None,
                "cpu": (int(read("cpu", "cpu.cfs_quota_us")),
                        int(read("cpu", "cpu.cfs_period_us"))),
                "pids": number(read("pids", "pids.max")),
                "devices": set(read("devices", "devices.list").splitlines())}
    quota, period = read("unified", "cpu.max").split()
    return {"memory": number(read("unified", "memory.max")),
            "swap": read("unified", "memory.swap.max"),
            "cpu": (number(quota), int(period)), "pids": number(read("unified", "pids.max")),
            "devices": set()}   # v2: an eBPF program, no file to compare


def test_bundle_with_volumes_and_a_read_only_root(engine, runc, tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    (data / "in.txt").write_text("from the host\n")
    probe = r"""
    echo "read: $(cat /data/in.txt)"
    if echo x > /data/new 2>/dev/null; then echo "ro_volume: writable"; else echo "ro_volume: refused"; fi
    if echo "$1" > /out/$1 2>/dev/null; then echo "rw_volume: written"; else echo "rw_volume: refused"; fi
    if touch /root-file 2>/dev/null; then echo "root: writable"; else echo "root: refused"; fi
    if echo 1 >> /etc/hosts 2>/dev/null; then echo "etc_hosts: writable"; else echo "etc_hosts: refused"; fi
    if touch /dev/shm/x 2>/dev/null; then echo "shm: writable"; else echo "shm: refused"; fi
    echo "mounts: $(awk '$2 ~ "^/(data|out)$" {split($4, o, ","); print $2, o[1]}' /proc/self/mounts | tr '\n' ';')"
    """
    options = dict(volumes=[f"{data}:/data:ro", f"{out}:/out"], read_only=True,
                   network="none", hostname=HOSTNAME)
    bundle, _ = bundle_of(engine, tmp_path, ["sh", "-c", probe, "sh", "runc"], **options)
    with open(os.path.join(bundle, "config.json")) as f:
        config = json.load(f)
    assert config["root"] == {"path": "rootfs", "readonly": True}
    volumes = {m["destination"]: m for m in config["mounts"]
               if m["source"] in (str(data), str(out))}
    assert "ro" in volumes["/data"]["options"] and "rw" in volumes["/out"]["options"]

    under_runc = runc.run(bundle)
    assert under_runc.returncode == 0, under_runc.stderr
    under_minirt = engine.run("busybox", ["sh", "-c", probe, "sh", "minirt"], **options)
    assert under_minirt.exit_code == 0, under_minirt.errors
    theirs, ours = observations(under_runc.stdout), observations(under_minirt.output)
    assert theirs == ours == {
        "read": "from the host", "ro_volume": "refused", "rw_volume": "written",
        "root": "refused", "etc_hosts": "writable", "shm": "writable",
        "mounts": "/data ro;/out rw;"}
    assert (out / "runc").read_text() == "runc\n" and (out / "minirt").read_text() == "minirt\n"


@pytest.mark.parametrize("storage", ["overlay", "copy"])
def test_the_rootfs_is_the_containers_merged_filesystem(engine, runc, tmp_path, storage):
    """What the container wrote and deleted (overlayfs whiteouts, or its own copy of
    the image with --storage copy) is in rootfs/."""
    changes = "echo changed > /etc/motd && rm /bin/ls && mkdir -p /srv/app && echo v1 > /srv/app/v"
    container_id = engine.create("busybox", ["sh", "-c", changes], network="none",
                                 workdir="/srv/app", storage=storage)
    try:
        engine.start(container_id)
        assert engine.wait(container_id) == 0
        bundle = write_bundle(engine, container_id, str(tmp_path / "bundle"))
        layers = engine.find_container(container_id)["layers"]
    finally:
        engine.remove_container(container_id)
    assert any(os.path.lexists(os.path.join(layer, "bin/ls")) for layer in layers)
    root = os.path.join(bundle, "rootfs")
    with open(os.path.join(root, "etc/motd")) as f:
        assert f.read() == "changed\n"
    assert not os.path.lexists(os.path.join(root, "bin/ls"))     # whiteout applied
    assert os.path.exists(os.path.join(root, "bin/sh"))
    whiteouts = [os.path.join(d, n) for d, _, names in os.walk(root) for n in names
                 if stat.S_ISCHR(os.lstat(os.path.join(d, n)).st_mode)]
    assert not whiteouts   # no 0/0 character device made it into the copy
    # The files minirt bind-mounts over the image's /etc, beside config.json.
    with open(os.path.join(bundle, "hostname")) as f:
        assert f.read() == container_id[:12] + "\n"
    with open(os.path.join(bundle, "config.json")) as f:
        config = json.load(f)
    assert config["hostname"] == container_id[:12]
    assert config["process"]["cwd"] == "/srv/app"
    assert config["annotations"]["org.minirt.container.id"] == container_id

    config["process"]["args"] = ["sh", "-c", "pwd; cat v /etc/motd /etc/hostname; ls /bin/ls"]
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f)
    result = runc.run(bundle)
    assert result.stdout.split() == ["/srv/app", "v1", "changed", container_id[:12]]
    assert result.returncode != 0 and "ls" in result.stderr


def test_bundle_refuses_a_bad_reference_a_full_directory_and_a_running_container(
        engine, tmp_path):
    with pytest.raises(ContainerNotFound) as error:
        write_bundle(engine, "no-such-container", str(tmp_path / "b"))
    assert "\n" not in str(error.value)
    assert not os.path.exists(tmp_path / "b")

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep").write_text("mine\n")
    container_id = engine.create("busybox", ["sleep", "60"], network="none")
    try:
        with pytest.raises(MinirtError, match="not empty") as error:
            write_bundle(engine, container_id, str(full))
        assert "\n" not in str(error.value)
        assert os.listdir(full) == ["keep"]
        engine.start(container_id)
        with pytest.raises(MinirtError, match="running") as error:
            write_bundle(engine, container_id, str(tmp_path / "b"))
        assert "\n" not in str(error.value)
        engine.kill(container_id)
        engine.wait(container_id)
        # An empty directory is taken, and replaced whole.
        empty = tmp_path / "empty"
        empty.mkdir()
        assert write_bundle(engine, container_id, str(empty)) == str(empty)
        assert sorted(os.listdir(empty)) == ["config.json", "hostname", "hosts", "resolv.conf",
                                             "rootfs"]
    finally:
        engine.remove_container(container_id, force=True)
    # Nothing half-written beside the bundles (the staging directories are gone).
    assert sorted(os.listdir(tmp_path)) == ["empty", "full"]


def test_cli_bundle(engine, state_root, tmp_path):
    container_id = engine.create("busybox", ["true"], name="to-bundle", network="none")
    try:
        done = minirt_cli("bundle", "to-bundle", str(tmp_path / "b"), state_root=state_root)
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().strip() == str(tmp_path / "b")
        with open(tmp_path / "b" / "config.json") as f:
            assert json.load(f)["process"]["args"] == ["true"]
        again = minirt_cli("bundle", "to-bundle", str(tmp_path / "b"), state_root=state_root)
        assert again.returncode == 125
        assert len(again.stderr.decode().strip().splitlines()) == 1
        missing = minirt_cli("bundle", "nope", str(tmp_path / "c"), state_root=state_root)
        assert missing.returncode != 0 and "no such container" in missing.stderr.decode()
        assert len(missing.stderr.decode().strip().splitlines()) == 1
    finally:
        engine.remove_container(container_id)
