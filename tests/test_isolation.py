"""Isolation, observed from inside the container and from the host at the same time."""

import hashlib
import os
import signal
import socket
import time

from conftest import container_init_pid, minirt_popen
from minirt.kernel import mounts, namespaces, syscalls


def run(engine, *command, **options):
    result = engine.run("busybox", list(command), **options)
    assert result.exit_code == 0, result.errors
    return result.output


def test_hostname_inside_differs_from_the_host(engine):
    inside = run(engine, "hostname").strip()
    assert inside and inside != socket.gethostname()
    assert run(engine, "hostname", hostname="lab-box").strip() == "lab-box"
    assert socket.gethostname() != "lab-box"


def test_pid_namespace_hides_host_processes(engine):
    listing = run(engine, "ps", "-o", "pid,comm").splitlines()[1:]
    pids = [int(line.split()[0]) for line in listing]
    assert pids[0] == 1, "the command is PID 1"
    assert len(pids) <= 2, f"only the container's processes are visible: {listing}"
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) > 20  # the host has many


def test_container_pid_1_is_an_ordinary_host_process(engine, state_root):
    cli = minirt_popen("run", "--rm", "busybox", "sleep", "30", state_root=state_root)
    try:
        host_pid = container_init_pid(engine)
        with open(f"/proc/{host_pid}/status") as f:
            nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
        assert nspid == [str(host_pid), "1"]
        for name in ("pid", "mnt", "uts", "net", "ipc", "cgroup"):
            assert namespaces.namespace_id(host_pid, name) != namespaces.namespace_id("self", name)
    finally:
        cli.send_signal(signal.SIGTERM)
        cli.communicate(timeout=10)


def test_network_none_has_only_loopback_and_it_is_up(engine):
    result = engine.run("busybox", ["sh", "-c", "ls /sys/class/net; ip link show lo; "
                                    "ping -c 1 -W 2 127.0.0.1 >/dev/null && echo pinged"],
                        network="none")
    assert result.exit_code == 0, result.errors
    lines = result.output.split("\n")
    assert lines[0] == "lo" and "UP" in lines[1] and "pinged" in lines



def test_mount_made_inside_is_invisible_outside(engine, state_root, tmp_path):
    flag = tmp_path / "ready"
    # Mounting needs CAP_SYS_ADMIN, which a container lacks by default (test_hardening).
    cli = minirt_popen("run", "--rm", "--cap-add", "SYS_ADMIN", "-v", f"{tmp_path}:/shared",
                       "busybox", "sh", "-c",
                       "mkdir -p /mnt/secret && mount -t tmpfs lab-secret /mnt/secret && "
                       "touch /shared/ready && sleep 30", state_root=state_root)
    try:
        deadline = time.monotonic() + 10
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert flag.exists(), cli.stderr.read1().decode() if cli.poll() is not None else "timeout"
        host_pid = container_init_pid(engine)
        with open(f"/proc/{host_pid}/mounts") as f:
            assert "lab-secret" in f.read(), "the mount exists in the container's namespace"
        with open("/proc/self/mounts") as f:
            assert "lab-secret" not in f.read(), "and not in the host's"
    finally:
        cli.send_signal(signal.SIGTERM)
        cli.communicate(timeout=10)


def tree_digest(path: str) -> str:
    h = hashlib.sha256()
    for directory, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files + dirs):
            full = os.path.join(directory, name)
            st = os.lstat(full)
            h.update(f"{os.path.relpath(full, path)} {st.st_mode} {st.st_size}".encode())
            if os.path.islink(full):
                h.update(os.readlink(full).encode())
    return h.hexdigest()


def test_writes_inside_do_not_change_the_image(engine):
    image = engine.images.resolve("busybox")
    layer = engine.images.unpacked_layers(image)[0]
    before = tree_digest(layer)
    run(engine, "sh", "-c", "echo changed > /etc/group; rm /bin/ls; echo new > /newfile")
    assert tree_digest(layer) == before
    assert run(engine, "head", "-1", "/etc/group").strip() == "root:x:0:"
    assert run(engine, "sh", "-c", "test -e /bin/ls && test ! -e /newfile && echo clean").strip() == "clean"


def test_copy_storage_also_isolates_writes(engine):
    image = engine.images.resolve("busybox")
    before = tree_digest(engine.images.unpacked_layers(image)[0])
    out = run(engine, "sh", "-c", "rm /bin/ls; grep ' / ' /proc/mounts", storage="copy")
    assert "overlay" not in out
    assert tree_digest(engine.images.unpacked_layers(image)[0]) == before


def host_root_identity() -> str:
    """Device and inode of "/" as this process sees it."""
    st = os.stat("/")
    return f"{st.st_dev}:{st.st_ino}"


def in_child(action) -> str:
    """Run ``action`` in a forked child from the host mount namespace's real root."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            mounts.leave_chroot()
            os.write(write_fd, action().encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    answer = os.read(read_fd, 200).decode()
    os.close(read_fd)
    os.waitpid(pid, 0)
    return answer


def classic_chroot_escape(confine) -> bool:
    """The classic chroot escape, run in a child; True when it reached the host's root.

    "The host's root" is the root of the host's mount namespace, compared by
    device and inode (so this also holds when the tests themselves run in a chroot).

    ``confine()`` first puts the child where a program in a container would be.
    Then: mkdir a dir and chroot into it without chdir, so our cwd is outside
    the new root; enough ``chdir("..")`` walk up to the real / and
    ``chroot(".")`` makes it ours. This beats chroot alone. After pivot_root
    with the old root detached, no host / is left in the mount namespace.
    """
    host_root = in_child(host_root_identity)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        result = b"0"
        try:
            confine()
            os.makedirs("/tmp/escape-hatch", exist_ok=True)
            os.chroot("/tmp/escape-hatch")
            for _ in range(64):
                os.chdir("..")
            os.chroot(".")
            result = b"1" if host_root_identity() == host_root else b"0"
        except BaseException as e:
            result = f"error {e}".encode()
        finally:
            os.write(write_fd, result)
            os._exit(0)
    os.close(write_fd)
    answer = os.read(read_fd, 200).decode()
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert answer in ("0", "1"), answer
    return answer == "1"


def test_chroot_escape_cannot_reach_the_host_root(engine, state_root, tmp_path):
    jail = tmp_path / "jail"
    jail.mkdir()
    cli = minirt_popen("run", "--rm", "busybox", "sleep", "30", state_root=state_root)
    try:
        host_pid = container_init_pid(engine)

        def chroot_into_jail():
            os.chroot(str(jail))
            os.chdir("/")

        def enter_container():  # setns(2) into its mount namespace: / and cwd become its root
            syscalls.setns(os.open(f"/proc/{host_pid}/ns/mnt", os.O_RDONLY), namespaces.FLAGS["mnt"])

        assert classic_chroot_escape(chroot_into_jail), "control: chroot alone is escapable"
        assert not classic_chroot_escape(enter_container)
    finally:
        cli.send_signal(signal.SIGTERM)
        cli.communicate(timeout=10)


def test_proc_and_sys_are_read_only_and_dev_is_minimal(engine):
    out = run(engine, "sh", "-c",
              "echo 1 > /proc/sys/kernel/hostname 2>/dev/null && echo proc-writable; "
              "touch /sys/x 2>/dev/null && echo sys-writable; ls /dev; echo hi > /dev/null && echo null-ok")
    assert "writable" not in out
    listing = set(out.split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx",
            "fd", "stdin", "stdout", "stderr"} <= listing
    assert not listing & {"vda", "sda", "mem", "kmsg", "kvm"}, "no host devices"
    assert "null-ok" in listing


def test_the_image_root_is_what_the_container_sees(engine):
    assert run(engine, "cat", "/etc/group").split()[0] == "root:x:0:"
    assert run(engine, "sh", "-c", "test -e /work || test -e /var/tmp/minirt-test-* || echo clean").strip() == "clean"
