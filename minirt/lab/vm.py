"""A virtual machine, booted for real: the baseline a container is compared with.

The concept: **a VM boots its own kernel; a container shares the host's.**
QEMU emulates a whole PC (firmware, CPU, interrupt controller, serial port); a
Linux kernel starts inside it, unpacks an initramfs into RAM as its root
filesystem and runs ``/init``. A container starts no kernel at all: its
processes run on the host's kernel, fenced off by namespaces and cgroups. Both
sides here use the same busybox root filesystem, so what the numbers show is
the cost of the machine and the kernel around it.

One ``boot()``, in order:

1. ``pack_initramfs``: lay out the busybox rootfs with ``make_rootfs`` (the very
   function that builds the container image), add ``/init`` (``init_script``)
   and ``/dev/console``, and write it as a gzip'd *newc* cpio archive, the
   format the kernel unpacks at start-up.
2. ``choose_acceleration``: with KVM the guest's code runs on the real CPU;
   without it QEMU's TCG translates every guest instruction in software, many
   times slower. KVM is tried once (does a guest reach ``/init`` within a few
   seconds?), else TCG; every result says which, because a TCG boot time is not
   "a VM's boot time".
3. ``qemu-system-x86_64 -kernel vmlinuz -initrd initramfs.cpio.gz`` with the
   serial console on a pipe. Measured: host-clock time from launch to the
   ``MINIRT-VM-READY`` line that /init prints; the qemu process's RSS and CPU,
   sampled with psutil; the workload's own run time on the guest's clock
   (``/proc/uptime`` in its start/end markers) and its exit status.
4. /init runs ``poweroff -f`` and QEMU exits. A guest that hangs is killed
   (SIGKILL to qemu's own process group) at the deadline and booted once more.
   On every path, Ctrl-C included, no qemu process is left behind.

On disk, under the state root (``minirt.paths.state_root()``)::

    vm/vmlinuz    the kernel booted; ``scripts/fetch-vm-kernel`` (run by
                  ``make setup``) puts Debian's there. Without it a readable
                  /boot/vmlinuz-* is used (``minirt.doctor.find_kernel``).

The initramfs is built per boot in a temporary directory and removed after.
Published figures to set beside ours come from ``published_baselines()``,
always marked ``kind="published"``, never mixed with measurements.

References:
  qemu-system-x86_64(1), invocation: https://www.qemu.org/docs/master/system/invocation.html
  direct Linux boot: https://www.qemu.org/docs/master/system/linuxboot.html
  initramfs: https://docs.kernel.org/filesystems/ramfs-rootfs-initramfs.html
  the newc cpio format: https://docs.kernel.org/driver-api/early-userspace/buffer-format.html
"""

import csv
import gzip
import os
import select
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import psutil

from ..errors import VMError
from ..record import Record

QEMU = "qemu-system-x86_64"
READY = "MINIRT-VM-READY"
START = "MINIRT-WORKLOAD-START"
END = "MINIRT-WORKLOAD-END"
MEMORY = "128M"  # a Debian kernel plus this initramfs does not boot in 64M
BOOT_TIMEOUT = 120.0  # TCG takes ~5 s here; a slow CI runner may take many times that
KVM_PROBE_TIMEOUT = 10.0  # a KVM guest reaches /init in about a second
# console=ttyS0: kernel and /init write to the serial port, which QEMU sends to
# our pipe. panic=-1 with -no-reboot: a kernel panic ends QEMU at once instead of
# hanging. rdinit=/init: the program the kernel runs from the initramfs.
KERNEL_ARGS = "console=ttyS0 panic=-1 quiet rdinit=/init"
PUBLISHED_CSV = os.path.join(os.path.dirname(__file__), "data", "published_vm_baselines.csv")


class Acceleration(Record):
    """How QEMU runs guest code: ``kvm`` (hardware) or ``tcg`` (software translation)."""

    __slots__ = ("name", "label", "detail")

    def __init__(self, name: str, label: str, detail: str = ""):
        self.name, self.label, self.detail = name, label, detail


KVM_LABEL = "QEMU KVM"
TCG_LABEL = "QEMU TCG (no KVM)"


class Sample(Record):
    """The qemu process at one moment: seconds since launch, resident memory, CPU used so far."""

    __slots__ = ("t", "rss_bytes", "cpu_seconds")

    def __init__(self, t: float, rss_bytes: int, cpu_seconds: float):
        self.t, self.rss_bytes, self.cpu_seconds = t, rss_bytes, cpu_seconds


class VMResult(Record):
    """One measured boot. Host clock: ``ready_s``, ``total_s``; guest clock: ``workload_s``.

    ``exit_status`` is the workload's, inside the guest; ``qemu_exit_code`` is
    QEMU's own (0 after the guest powered off).

    ``peak_rss_bytes`` and ``cpu_seconds`` are the kernel's own totals for the
    qemu process (``wait4`` rusage), exact where the ``samples`` are periodic.
    """

    __slots__ = ("acceleration", "acceleration_detail", "ready_s", "total_s",
                 "guest_uptime_at_ready_s", "workload_s", "exit_status", "output",
                 "qemu_exit_code", "peak_rss_bytes", "cpu_seconds", "samples", "interval",
                 "memory", "kernel", "attempts", "pid", "console")

    def __init__(self, acceleration: str, acceleration_detail: str, ready_s: float,
                 total_s: float, guest_uptime_at_ready_s: float, workload_s: float,
                 exit_status: int, output: str, qemu_exit_code: int, peak_rss_bytes: int,
                 cpu_seconds: float, samples: list, interval: float, memory: str, kernel: str,
                 attempts: int, pid: int, console: str):
        self.acceleration = acceleration
        self.acceleration_detail = acceleration_detail
        self.ready_s, self.total_s = ready_s, total_s
        self.guest_uptime_at_ready_s = guest_uptime_at_ready_s
        self.workload_s, self.exit_status, self.output = workload_s, exit_status, output
        self.qemu_exit_code = qemu_exit_code
        self.peak_rss_bytes, self.cpu_seconds = peak_rss_bytes, cpu_seconds
        self.samples, self.interval = samples, interval
        self.memory, self.kernel = memory, kernel
        self.attempts, self.pid, self.console = attempts, pid, console

    def describe(self) -> str:
        return (f"{self.acceleration}: ready in {self.ready_s:.2f} s (host clock), "
                f"peak RSS {self.peak_rss_bytes / 2**20:.0f} MiB, "
                f"workload {self.workload_s:.2f} s (guest clock), exit {self.exit_status}")


class PublishedFigure(Record):
    """A figure from a paper or a project's docs: cited, not measured here."""

    __slots__ = ("system", "metric", "value", "unit", "source", "verified", "kind")

    def __init__(self, system: str, metric: str, value, unit: str, source: str,
                 verified: bool):
        self.system, self.metric, self.value, self.unit = system, metric, value, unit
        self.source, self.verified = source, verified
        self.kind = "published"


class GuestTimeout(VMError):
    """The guest did not finish in time; its qemu processes (``pids``) were killed."""

    def __init__(self, message: str, pids: list[int]):
        super().__init__(message)
        self.pids = pids


# -- the guest's root filesystem ----------------------------------------------

def init_script(workload: str) -> str:
    """The guest's PID 1: mount, say ready, time the workload, power off."""
    return f"""#!/bin/sh
# PID 1 of the minirt VM, started by the guest's own kernel.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
hostname minirt-vm
read up idle < /proc/uptime
echo "{READY} $up"
read start idle < /proc/uptime
echo "{START} $start"
sh -c {shlex.quote(workload)} < /dev/null
status=$?
read end idle < /proc/uptime
echo "{END} $end $status"
# -f: no init system to ask; the kernel powers the machine off (ACPI), QEMU exits.
poweroff -f
"""


def cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0, nlink: int = 1,
               rdev: tuple[int, int] = (0, 0)) -> bytes:
    """One member of a "newc" cpio archive.

    A 110-byte ASCII header (magic ``070701`` then 13 fields as 8 hex digits),
    the NUL-terminated name, then the data, each padded to 4 bytes. Owner,
    mode and device numbers are just numbers in the header: no root needed to
    make a root-owned file or a device node in the guest.
    """
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    return (header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4)
            + data + b"\0" * (-len(data) % 4))


def cpio_newc(rootfs: str, extra: list[tuple[str, int, bytes, tuple[int, int]]] = ()) -> bytes:
    """The tree under ``rootfs`` (every entry owned by root) plus ``extra`` entries, as cpio."""
    members, ino = [], 0
    for directory, dirs, files in os.walk(rootfs):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, rootfs)
            st = os.lstat(path)
            ino += 1
            if stat.S_ISLNK(st.st_mode):  # the data of a symlink is its target
                members.append(cpio_entry(relative, st.st_mode, os.readlink(path).encode(), ino))
            elif stat.S_ISDIR(st.st_mode):
                members.append(cpio_entry(relative, st.st_mode, ino=ino, nlink=2))
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    members.append(cpio_entry(relative, st.st_mode, f.read(), ino))
    for name, mode, data, rdev in extra:
        ino += 1
        members.append(cpio_entry(name, mode, data, ino, rdev=rdev))
    members.append(cpio_entry("TRAILER!!!", 0))  # the archive's end
    return b"".join(members)


def pack_initramfs(path: str, workload: str = "true", busybox: str | None = None) -> str:
    """Write the busybox rootfs with ``/init`` running ``workload`` to ``path`` (cpio.gz)."""
    from ..image.busybox import find_static_busybox, make_rootfs
    busybox = busybox or find_static_busybox()
    if busybox is None:
        raise VMError("no static busybox for the guest: install busybox-static (make setup)")
    with tempfile.TemporaryDirectory(prefix="minirt-vm-rootfs-") as rootfs:
        make_rootfs(rootfs, busybox)
        archive = cpio_newc(rootfs, [
            ("init", stat.S_IFREG | 0o755, init_script(workload).encode(), (0, 0)),
            # The kernel opens /dev/console for PID 1's stdin/out/err before /init
            # runs, so it must exist in the archive itself: character device 5:1.
            ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
        ])
    # mtime=0: the same inputs give the same bytes.
    data = gzip.compress(archive, compresslevel=6, mtime=0)
    with open(path, "wb") as f:
        f.write(data)
    return path


# -- running QEMU ---------------------------------------------------------------

def find_qemu() -> str:
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise VMError(f"{QEMU} not found: install qemu-system-x86 (make setup does it as root)")
    return qemu


def find_kernel() -> str:
    from ..doctor import find_kernel as look
    kernel = look()
    if kernel is None:
        raise VMError("no kernel to boot: run scripts/fetch-vm-kernel as root (make setup "
                      "does), or make a /boot/vmlinuz-* readable")
    return kernel


def kernel_release(kernel: str) -> str:
    """The release (what ``uname -r`` prints) written in a bzImage's setup header.

    x86 boot protocol: "HdrS" at 0x202; the 16-bit field at 0x20E points
    (plus 0x200) to a NUL-terminated version string starting with the release.
    """
    with open(kernel, "rb") as f:
        header = f.read(0x210)
        if header[0x202:0x206] != b"HdrS":
            return ""
        f.seek(int.from_bytes(header[0x20E:0x210], "little") + 0x200)
        return f.read(256).split(b"\0")[0].decode(errors="replace").split(" ")[0]


def qemu_command(qemu: str, kernel: str, initramfs: str, accel: str,
                 memory: str = MEMORY) -> list[str]:
    """The qemu command line: one CPU, no disk, no network, serial console on stdout."""
    return [qemu, "-accel", accel, *(["-cpu", "host"] if accel == "kvm" else []),
            "-m", memory, "-smp", "1",
            # -nodefaults: no VGA, no default NIC, no monitor; we add only a serial port.
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
            "-nic", "none", "-no-reboot",
            "-kernel", kernel, "-initrd", initramfs, "-append", KERNEL_ARGS]


class _Run(Record):
    __slots__ = ("pid", "lines", "samples", "returncode", "rusage", "ended_s")

    def __init__(self, pid, lines, samples, returncode, rusage, ended_s):
        self.pid, self.lines, self.samples = pid, lines, samples
        self.returncode, self.rusage, self.ended_s = returncode, rusage, ended_s


def run_qemu(command: list[str], timeout: float, interval: float = 0.1,
             until_ready: bool = False) -> _Run:
    """Start qemu, read its console line by line with a host timestamp, sample it.

    Returns when qemu exits (or, with ``until_ready``, at the ready marker).
    Raises ``GuestTimeout`` at the deadline. Whatever happens, qemu is gone on
    return: it runs in its own session, so ``killpg(pid)`` reaches it and only it.
    """
    lines: list[tuple[float, str]] = []
    samples: list[Sample] = []
    started = time.monotonic()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            watched = psutil.Process(proc.pid)
        except psutil.Error:  # qemu failed at once (bad option, no firmware)
            watched = None
        fd = proc.stdout.fileno()
        pending = b""
        deadline = started + timeout
        next_sample = started
        while True:
            now = time.monotonic()
            if now >= next_sample and watched is not None:
                sample(watched, now - started, samples)
                next_sample = max(next_sample + interval, now)
            if now >= deadline:
                raise GuestTimeout(f"the guest did not finish in {timeout:g} s; qemu "
                                   f"(pid {proc.pid}) killed", [proc.pid])
            readable, _, _ = select.select([fd], [], [], min(next_sample, deadline) - now)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            t = time.monotonic() - started
            if not chunk:  # qemu closed its stdout: it is exiting
                break
            *complete, pending = (pending + chunk).split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace").rstrip("\r")
                lines.append((t, line))
                if until_ready and READY in line:
                    return _Run(proc.pid, lines, samples, None, None, t)
        if pending:
            lines.append((time.monotonic() - started, pending.decode(errors="replace")))
        returncode, rusage = reap(proc, deadline)
        return _Run(proc.pid, lines, samples, returncode, rusage, time.monotonic() - started)
    finally:
        kill_group(proc)
        proc.stdout.close()


def sample(process: psutil.Process, t: float, samples: list[Sample]) -> None:
    try:
        with process.oneshot():
            rss = process.memory_info().rss
            cpu = process.cpu_times()
    except psutil.Error:  # already exited (or a zombie): nothing to sample
        return
    if rss:
        samples.append(Sample(round(t, 4), rss, cpu.user + cpu.system))


def reap(proc: subprocess.Popen, deadline: float):
    """Wait for qemu's exit with ``wait4``, which also returns its rusage (peak RSS, CPU)."""
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
            return proc.returncode, rusage
        if time.monotonic() >= deadline:
            raise GuestTimeout(f"qemu (pid {proc.pid}) did not exit after its guest; killed",
                               [proc.pid])
        time.sleep(0.01)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL qemu's process group (its pid: it leads its own session) and reap it."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# -- acceleration -----------------------------------------------------------------

_chosen: dict[tuple[str, str], Acceleration] = {}


def choose_acceleration(kernel: str | None = None, qemu: str | None = None) -> Acceleration:
    """KVM if a KVM guest reaches /init within ``KVM_PROBE_TIMEOUT``, else TCG.

    Having /dev/kvm is not enough (nested virtualisation may let a VM be
    created and then never run it), so the test is a real boot. The answer is
    cached for this process.
    """
    qemu, kernel = qemu or find_qemu(), kernel or find_kernel()
    key = (qemu, kernel)
    if key not in _chosen:
        _chosen[key] = _probe_kvm(qemu, kernel)
    return _chosen[key]


def _probe_kvm(qemu: str, kernel: str) -> Acceleration:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        why = "no /dev/kvm" if not os.path.exists("/dev/kvm") else "/dev/kvm not accessible"
        return Acceleration("tcg", TCG_LABEL, f"{why}: every guest instruction is "
                            "translated in software")
    with tempfile.TemporaryDirectory(prefix="minirt-vm-") as work:
        initramfs = pack_initramfs(os.path.join(work, "initramfs.cpio.gz"))
        try:
            run = run_qemu(qemu_command(qemu, kernel, initramfs, "kvm"), KVM_PROBE_TIMEOUT,
                           until_ready=True)
        except GuestTimeout:
            return Acceleration("tcg", TCG_LABEL, "/dev/kvm is there but a KVM guest did "
                                f"not reach /init in {KVM_PROBE_TIMEOUT:g} s")
    if any(READY in line for _, line in run.lines):
        return Acceleration("kvm", KVM_LABEL, "guest code runs on the host CPU")
    last = run.lines[-1][1] if run.lines else "no output"
    return Acceleration("tcg", TCG_LABEL, f"/dev/kvm is there but qemu -accel kvm failed: {last}")


def acceleration_named(name: str) -> Acceleration:
    if name == "kvm":
        return Acceleration("kvm", KVM_LABEL, "requested")
    if name == "tcg":
        return Acceleration("tcg", TCG_LABEL, "requested: KVM not used")
    raise VMError(f"unknown acceleration {name!r}: use 'kvm', 'tcg' or None (choose)")


# -- one measured boot --------------------------------------------------------------

def boot(workload: str = "true", timeout: float = BOOT_TIMEOUT, accel: str | None = None,
         memory: str = MEMORY, interval: float = 0.1, kernel: str | None = None,
         retries: int = 1) -> VMResult:
    """Boot the busybox VM, run ``workload`` (a shell command) in it, power off, measure.

    ``timeout`` bounds each attempt (launch to qemu exit); a guest that hangs
    is killed and booted again up to ``retries`` times, then ``GuestTimeout``.
    """
    qemu, kernel = find_qemu(), kernel or find_kernel()
    acceleration = choose_acceleration(kernel, qemu) if accel is None else acceleration_named(accel)
    killed: list[int] = []
    with tempfile.TemporaryDirectory(prefix="minirt-vm-") as work:
        initramfs = pack_initramfs(os.path.join(work, "initramfs.cpio.gz"), workload)
        command = qemu_command(qemu, kernel, initramfs, acceleration.name, memory)
        for attempt in range(1, retries + 2):
            try:
                run = run_qemu(command, timeout, interval)
                break
            except GuestTimeout as e:
                killed += e.pids
        else:
            raise GuestTimeout(f"the guest hung {len(killed)} times (limit {timeout:g} s each, "
                               f"{acceleration.label}); qemu pids {killed} killed", killed)
    return measure(run, acceleration, interval, memory, kernel, attempt)


def measure(run: _Run, acceleration: Acceleration, interval: float, memory: str,
            kernel: str, attempts: int) -> VMResult:
    """Turn a finished run's console lines and rusage into a ``VMResult``."""
    console = "\n".join(line for _, line in run.lines)
    ready = next(((t, line) for t, line in run.lines if READY in line), None)
    start = next((line for _, line in run.lines if START in line), None)
    end_index = next((i for i, (_, line) in enumerate(run.lines) if END in line), None)
    if ready is None or start is None or end_index is None:
        tail = "\n".join(console.splitlines()[-15:])
        raise VMError(f"qemu exited ({run.returncode}) before the guest finished its "
                      f"workload; last console lines:\n{tail}")
    start_index = next(i for i, (_, line) in enumerate(run.lines) if START in line)
    guest_ready = float(ready[1].split(READY, 1)[1].split()[0])
    started = float(start.split(START, 1)[1].split()[0])
    ended, status = run.lines[end_index][1].split(END, 1)[1].split()[:2]
    output = "".join(line + "\n" for _, line in run.lines[start_index + 1:end_index])
    return VMResult(
        acceleration=acceleration.label, acceleration_detail=acceleration.detail,
        ready_s=ready[0], total_s=run.ended_s, guest_uptime_at_ready_s=guest_ready,
        workload_s=round(float(ended) - started, 2), exit_status=int(status), output=output,
        qemu_exit_code=run.returncode,
        peak_rss_bytes=run.rusage.ru_maxrss * 1024,  # Linux reports kilobytes
        cpu_seconds=run.rusage.ru_utime + run.rusage.ru_stime,
        samples=run.samples, interval=interval, memory=memory, kernel=kernel,
        attempts=attempts, pid=run.pid, console=console)


# -- published figures ----------------------------------------------------------------

def published_baselines(path: str = PUBLISHED_CSV) -> list[PublishedFigure]:
    """Figures from papers and project docs (see the ``source`` column), marked published.

    ``value`` is a number where the source gives one (bounds and "about" are in
    the ``metric`` text), else the source's words. ``verified`` says whether the
    figure was checked against the primary text.
    """
    figures = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                value = float(row["value"])
            except ValueError:
                value = row["value"]
            figures.append(PublishedFigure(row["system"], row["metric"], value, row["unit"],
                                           row["source"], row["verified"] == "yes"))
    return figures
