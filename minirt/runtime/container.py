"""The parent side of a container: cgroup, two forks, waiting, signals, cleanup.

::

    minirt (parent, host namespaces)  creates the cgroup and writes the limits
     └─ fork: helper                   unshare(mnt uts ipc net pid)
         └─ fork: init                 PID 1 of the new pid namespace: joins the
                                       cgroup, unshare(cgroup), mounts, pivot_root,
                                       hostname, then execve(command)

Why two forks: a new pid namespace applies to the *children* of the process
that unshares it, and the parent (maybe a Jupyter kernel) must never change
its own namespaces. The helper stays outside as the container's reaper and
exits with the command's status. If the parent dies, PR_SET_PDEATHSIG takes
the helper and then the container down with it.

Mounts live only in the container's mount namespace and vanish with it; the
cgroup is removed by ``cleanup`` on every path (normal exit, error, Ctrl-C,
the command killed by a signal).
"""

import os
import _signal as signal  # the C module under `signal`: same calls, no enums to build (~1 ms)
import time

from .. import errors
from ..errors import ContainerStartError, MinirtError
from ..kernel import namespaces, syscalls
from ..trace import NULL_TRACE, Step, Trace
from . import rootfs
from .channel import Channel
from .init import container_init
from .spec import ContainerSpec, ExitStatus

# Signals a parent waiting on a container forwards to it (docker's sig-proxy).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)


class ContainerProcess:
    """One running container, seen from the parent."""

    def __init__(self, spec: ContainerSpec, container_dir: str, cgroup_driver, trace=NULL_TRACE,
                 network=None, security=None):
        self.spec = spec
        self.network = network  # a network.sandbox.NetworkSandbox, or None
        self.security = security  # a security.profile.SecurityProfile (seccomp compiled)
        self.container_dir = container_dir
        self.trace = trace
        self.cgroup = cgroup_driver.cgroup(spec.id, trace)
        self.helper_pid = 0
        self.pid = 0            # the container's PID 1, as the host numbers it
        self.status: ExitStatus | None = None
        self.pending_signals: list[int] = []  # arrived before we knew the pid
        self.channel: Channel | None = None
        self.cleaned = False

    # --- starting --------------------------------------------------------------
    def start(self, stdio: tuple[int, int, int], console_socket: int = -1) -> None:
        """Create the cgroup, fork, and return once the command is running."""
        self.launch(stdio, console_socket)
        self.wait_until_running()

    def launch(self, stdio: tuple[int, int, int], console_socket: int = -1) -> None:
        """Create the cgroup and the container's directories, and fork the helper.

        Returns at once: the container builds its sandbox while the caller
        goes on (e.g. writing its records), until ``wait_until_running``.
        """
        self.cgroup.create()
        netns = None
        try:
            self.cgroup.apply(self.spec.limits)
            if not self.spec.privileged:
                self.cgroup.restrict_devices()
            rootfs.prepare(self.spec, self.container_dir, self.trace)
            if self.network is not None:
                # Its network namespace, made and wired before any process is in it.
                netns = self.network.create()
            self.channel = Channel()
            self.console_socket = console_socket
            self.helper_pid = traced_fork(self.trace, "helper")
            if self.helper_pid == 0:
                self._run_helper(self.channel, stdio, netns)  # never returns
            self.channel.close_write()
        except BaseException:
            self.cleanup()
            raise
        finally:
            if netns is not None:
                os.close(netns)  # the helper holds it now (or it goes with the failure)

    def wait_until_running(self) -> None:
        """Block until the command has been exec'd, or raise the error set-up hit.

        The error (``CommandNotFound``, ...) is raised after cleaning up.
        """
        try:
            self._receive_setup(self.channel.receive_all())
            for number in self.pending_signals:
                self.send_signal(number)
        except BaseException:
            self.cleanup()
            raise

    def _receive_setup(self, messages: list[dict]) -> None:
        failure = None
        for message in messages:
            if "step" in message:
                self.trace.add_dict(message["step"])
            elif "pid" in message:
                self.pid = message["pid"]
            elif "error" in message:
                failure = message
        if failure is not None or not self.pid:
            self.wait()
            for step in self.trace.steps:
                if step.name == "execve" and failure is not None:
                    step.ok, step.error = False, failure["message"]
            if failure is None:
                raise ContainerStartError(f"the container's set-up process died "
                                          f"(exit status {self.status.exit_code})")
            kind = getattr(errors, failure["error"], ContainerStartError)
            if not (isinstance(kind, type) and issubclass(kind, MinirtError)):
                kind = ContainerStartError
            raise kind(failure["message"])

    # --- inside the forks ----------------------------------------------------------
    def _run_helper(self, channel: Channel, stdio, netns: int | None = None) -> None:
        """The helper process: join the network namespace prepared for it (if any),
        unshare the others, fork the init, reap it."""
        code = 125
        try:
            for number in FORWARDED_SIGNALS:
                signal.signal(number, signal.SIG_IGN)   # the parent decides what to forward
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
            os.close(channel.read_fd)
            trace = Trace(sink=channel.send_step) if self.trace.enabled else NULL_TRACE
            # Every namespace but the cgroup one: PID 1 joins its cgroup first, then
            # unshares that (see _run_init), so this helper never counts against
            # the container's memory or pids limits.
            early = [n for n in self.spec.namespaces if n != "cgroup"]
            if netns is not None:
                with trace.step("setns", flags="CLONE_NEWNET", into="the prepared network"):
                    namespaces.enter([("net", netns)])
                early.remove("net")
            if "user" in early:  # rootless: the other namespaces belong to this user namespace
                from ..kernel import idmap
                mapping = idmap.for_user()
                with trace.step("unshare + uid/gid map", flags=namespaces.flag_names(early),
                                uid_map=mapping.uid_map(), gid_map=mapping.gid_map()):
                    try:
                        idmap.unshare_mapped(early, mapping)
                    except OSError as e:
                        raise namespaces_refused(e, early) from None
            else:
                with trace.step("unshare", flags=namespaces.flag_names(early)):
                    try:
                        namespaces.unshare(early)
                    except OSError as e:
                        raise namespaces_refused(e, early) from None
            init_pid = traced_fork(trace, "init (PID 1)")
            if init_pid == 0:
                self._run_init(channel, stdio, trace)  # never returns
            channel.send(pid=init_pid)
            # From here on the helper only waits: it keeps none of the parent's files
            # open (the container's stdio, a shim's sockets, a notebook's
            # connections), so their other ends see end-of-file when they should.
            os.closerange(3, 1 << 20)
            _, status = os.waitpid(init_pid, 0)
            code = ExitStatus.from_wait_status(status).exit_code
        except BaseException as e:
            _report(channel, e)
        finally:
            os._exit(code)

    def _run_init(self, channel: Channel, stdio, trace) -> None:
        code = 125
        try:
            self.cgroup.trace = trace
            self.cgroup.join()  # before any work: everything PID 1 does is accounted
            if "cgroup" in self.spec.namespaces:
                # Now its own cgroup looks like the root of the tree (/proc/self/cgroup: "/").
                with trace.step("unshare", flags=namespaces.flag_names(["cgroup"])):
                    namespaces.unshare(["cgroup"])
            container_init(self.spec, self.container_dir, channel, stdio, trace,
                           self.console_socket, self.security)
        except BaseException as e:
            code = getattr(e, "exit_code", 125)
            _report(channel, e)
        finally:
            os._exit(code)

    # --- while it runs ---------------------------------------------------------
    def send_signal(self, number: int) -> None:
        """Deliver a signal to the container's PID 1.

        PID 1 of a pid namespace gets only the signals it has a handler for
        (plus SIGKILL): the kernel drops the rest. So when the command does not
        catch this one, forwarding it would do nothing, and we kill instead.
        """
        if self.status is not None:
            return
        if not self.pid:
            self.pending_signals.append(number)
            return
        try:
            target = number if catches_signal(self.pid, number) else signal.SIGKILL
            os.kill(self.pid, target)
        except ProcessLookupError:
            pass

    def wait(self) -> ExitStatus:
        """Wait for the container to end; note whether the OOM killer ended it."""
        if self.status is None:
            _, status = os.waitpid(self.helper_pid, 0)
            self.status = ExitStatus.from_wait_status(status)
            self.status.oom_killed = self.cgroup.oom_kills() > 0
        return self.status

    def cleanup(self) -> None:
        """Kill anything left in the cgroup and remove it. Safe to call twice."""
        if self.cleaned:
            return
        self.cleaned = True
        if self.helper_pid and self.status is None:
            try:
                os.kill(self.helper_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait()
        self.cgroup.kill_all()
        self.cgroup.remove()
        if self.network is not None:
            self.network.teardown()


def namespaces_refused(error: OSError, names) -> MinirtError:
    """Explain, in the learner's terms, why the kernel refused new namespaces."""
    from ..errors import KernelFeatureMissing
    if "user" in names:
        return KernelFeatureMissing(
            f"the kernel refused a user namespace ({error.strerror}): without root, containers "
            "need user namespaces, which this machine does not allow (max_user_namespaces=0, "
            "a seccomp policy, or a chroot); `minirt doctor` shows the tier and what still works")
    return KernelFeatureMissing(f"the kernel refused new namespaces ({error.strerror}): "
                                "run as root; `minirt doctor` shows what this machine allows")


def traced_fork(trace, role: str) -> int:
    """fork(2), recorded once, by the parent (a ``with`` block would end in both)."""
    start = time.monotonic_ns()
    pid = os.fork()
    if pid:
        trace.record(Step("fork", {"role": role, "child": pid}, start,
                          time.monotonic_ns() - start, pid=os.getpid()))
    return pid


def catches_signal(pid: int, number: int) -> bool:
    """True when process ``pid`` has a handler for signal ``number`` (SigCgt in /proc)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (number - 1)))
    except OSError:
        pass
    return False


def _report(channel: Channel, error: BaseException) -> None:
    """Send the error that stopped set-up to the parent, as one line it can show."""
    if isinstance(error, MinirtError):
        kind, message = type(error).__name__, str(error)
    elif isinstance(error, OSError):
        kind, message = "ContainerStartError", f"container set-up failed: {error}"
    else:
        kind, message = "ContainerStartError", f"container set-up failed: {error!r}"
    try:
        channel.send(error=kind, message=message)
    except OSError:
        pass
