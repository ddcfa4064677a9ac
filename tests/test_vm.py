"""The VM baseline: the busybox rootfs booted by its own kernel under QEMU.

Real QEMU, real kernel, no mocks. Boots are few (TCG takes ~5 s each): one
full boot shared by the measurement tests, one KVM probe at most, and a few
boots killed within a second or two.
"""

import gzip
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import psutil
import pytest

from minirt.doctor import find_kernel
from minirt.image.busybox import find_static_busybox
from minirt.lab import vm

STRICT = os.environ.get("MINIRT_STRICT") == "1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false, or fail under MINIRT_STRICT=1 (as in conftest)."""
    if not condition:
        if STRICT:
            pytest.fail(f"MINIRT_STRICT=1 and this test cannot run: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def can_boot():
    require(shutil.which(vm.QEMU) is not None,
            f"{vm.QEMU} not installed (make setup installs qemu-system-x86 as root)")
    require(find_kernel() is not None,
            "no kernel to boot (make setup runs scripts/fetch-vm-kernel as root)")
    require(find_static_busybox() is not None, "no static busybox (install busybox-static)")


@pytest.fixture(scope="module")
def booted(can_boot):
    """One real boot, acceleration chosen as a notebook would; its workload exits 3."""
    workload = "uname -r; tr '\\0' ' ' < /proc/1/cmdline; echo; echo hello-from-the-guest; exit 3"
    return vm.boot(workload, timeout=120, interval=0.1)


def read_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """Parse a newc cpio archive (kernel buffer-format.rst), independently of vm.py."""
    members, offset = {}, 0
    while True:
        assert data[offset:offset + 6] == b"070701", f"bad magic at {offset}"
        fields = [int(data[offset + 6 + 8 * i: offset + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rdev = fields[1], fields[6], (fields[9], fields[10])
        namesize = fields[11]
        name = data[offset + 110: offset + 110 + namesize - 1].decode()
        assert data[offset + 110 + namesize - 1] == 0, "name not NUL-terminated"
        offset += 110 + namesize
        offset += -offset % 4
        body = data[offset: offset + filesize]
        offset += filesize
        offset += -offset % 4
        if name == "TRAILER!!!":
            assert not data[offset:].strip(b"\0"), "bytes after the trailer"
            return members
        members[name] = (mode, body, rdev)


def test_initramfs_is_a_newc_cpio_with_init_and_busybox(tmp_path):
    busybox = find_static_busybox()
    require(busybox is not None, "no static busybox (install busybox-static)")
    path = vm.pack_initramfs(str(tmp_path / "initramfs.cpio.gz"), "echo hi", busybox)
    members = read_newc(gzip.decompress(open(path, "rb").read()))

    mode, script, _ = members["init"]
    assert stat.S_ISREG(mode) and mode & 0o111, "/init must be an executable file"
    assert script.startswith(b"#!/bin/sh\n") and b"echo hi" in script
    assert vm.READY.encode() in script and b"poweroff -f" in script
    mode, body, _ = members["bin/busybox"]
    assert stat.S_ISREG(mode) and mode & 0o111
    assert body == open(busybox, "rb").read()
    mode, target, _ = members["bin/sh"]
    assert stat.S_ISLNK(mode) and target == b"/bin/busybox"
    mode, _, rdev = members["dev/console"]
    assert stat.S_ISCHR(mode) and rdev == (5, 1)


def test_initramfs_is_reproducible(tmp_path):
    require(find_static_busybox() is not None, "no static busybox (install busybox-static)")
    a = vm.pack_initramfs(str(tmp_path / "a.cpio.gz"), "true")
    b = vm.pack_initramfs(str(tmp_path / "b.cpio.gz"), "true")
    assert open(a, "rb").read() == open(b, "rb").read()


def test_vm_boots_its_own_kernel_and_runs_the_workload(booted):
    assert vm.READY in booted.console
    lines = booted.output.splitlines()
    assert lines[-1] == "hello-from-the-guest"
    # The guest runs the kernel we handed QEMU, whatever the host runs.
    assert lines[0] == vm.kernel_release(booted.kernel)
    assert lines[1].split() == ["/bin/sh", "/init"], "PID 1 in the guest is our /init"
    assert booted.exit_status == 3
    assert booted.qemu_exit_code == 0, "the guest powered the machine off"


def test_boot_is_labelled_with_its_acceleration(booted):
    assert booted.acceleration in (vm.KVM_LABEL, vm.TCG_LABEL)
    assert booted.acceleration == vm.choose_acceleration(booted.kernel).label
    assert booted.acceleration_detail
    started = time.monotonic()
    assert vm.choose_acceleration(booted.kernel) is vm.choose_acceleration(booted.kernel)
    assert time.monotonic() - started < 0.1, "the decision is cached per process"


def test_boot_measures_time_memory_and_cpu(booted):
    assert 0 < booted.ready_s < booted.total_s <= 120
    assert booted.workload_s >= 0 and booted.guest_uptime_at_ready_s > 0
    assert booted.attempts == 1
    assert len(booted.samples) >= 2
    assert all(a.t < b.t for a, b in zip(booted.samples, booted.samples[1:]))
    peak_sampled = max(s.rss_bytes for s in booted.samples)
    assert 16 * 2**20 < peak_sampled <= booted.peak_rss_bytes
    assert booted.cpu_seconds >= booted.samples[-1].cpu_seconds > 0
    assert gone(booted.pid)


def qemu_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "qemu" in child.name():
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def gone(pid: int) -> bool:
    """No process with ``pid``, or a different process that reused it."""
    try:
        return "qemu" not in psutil.Process(pid).name()
    except psutil.NoSuchProcess:
        return True


def test_guest_that_hangs_is_killed_retried_once_and_leaves_nothing(can_boot):
    # No guest reaches /init in 0.5 s under TCG (or KVM: the firmware alone takes longer).
    with pytest.raises(vm.GuestTimeout) as caught:
        vm.boot("true", timeout=0.5, accel="tcg")
    assert len(caught.value.pids) == 2, "one boot and one retry"
    assert all(gone(pid) for pid in caught.value.pids)
    assert qemu_children() == []


def test_ctrl_c_during_boot_leaves_no_qemu(can_boot):
    script = ("from minirt.lab import vm\n"
              "print('booting', flush=True)\n"
              "vm.boot('sleep 600', timeout=300, accel='tcg')\n")
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "booting\n"
        deadline = time.monotonic() + 30
        qemu = []
        while not qemu and time.monotonic() < deadline:
            qemu = [p for p in psutil.Process(child.pid).children(recursive=True)
                    if "qemu" in p.name()]
            time.sleep(0.05)
        assert qemu, "qemu never started"
        time.sleep(0.5)  # mid-boot
        child.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, err = child.communicate(timeout=30)
        assert "KeyboardInterrupt" in err
        psutil.wait_procs(qemu, timeout=5)
        assert all(gone(p.pid) for p in qemu)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_published_baselines_are_marked_published():
    figures = vm.published_baselines()
    assert len(figures) >= 10
    assert {f.kind for f in figures} == {"published"}
    assert all(f.source and f.system and f.metric for f in figures)
    firecracker_start = next(f for f in figures if f.system == "Firecracker"
                             and f.metric.startswith("start API call to guest"))
    assert firecracker_start.value == 125 and firecracker_start.unit == "ms"
    assert firecracker_start.verified is True
    secondhand = [f for f in figures if "secondhand" in f.source]
    assert secondhand and not any(f.verified for f in secondhand)
    assert not any(isinstance(f, vm.VMResult) for f in figures)
