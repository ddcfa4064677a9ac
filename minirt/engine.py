"""The Engine: images plus containers, the one object every front end drives.

The CLI and the notebooks call it in-process; the daemon (minirtd) serves it
over the Docker Engine API. It turns user-level requests ("run busybox with
64m") into a ``ContainerSpec`` and hands it to the runtime.
"""

import os
import _signal as signal  # the C module under `signal`: same calls, no enums to build (~1 ms)
import time
from .errors import MinirtError, UsageError
from .image.store import ImageStore
from .kernel.cgroups import Limits, open_driver
from .paths import atomic_write, remove_tree, state_root
from .record import Record
from .runtime import rootfs
from .runtime.container import FORWARDED_SIGNALS, ContainerProcess
from .runtime.spec import ContainerSpec, Volume
from .trace import NULL_TRACE, Trace


class RunResult(Record):
    """What ``run`` returns: like ``docker run``'s exit status and output."""

    __slots__ = ("container_id", "name", "exit_code", "oom_killed", "output", "errors",
                 "seconds", "trace")

    def __init__(self, container_id: str, name: str, exit_code: int, oom_killed: bool = False,
                 output: str = "", errors: str = "", seconds: float = 0.0,
                 trace: list | None = None):
        self.container_id = container_id
        self.name = name
        self.exit_code = exit_code
        self.oom_killed = oom_killed
        self.output = output          # stdout, when captured
        self.errors = errors          # stderr, when captured
        self.seconds = seconds
        self.trace = trace or []      # trace.Step records, when traced

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Engine:
    def __init__(self, root: str | None = None, cgroup_parent: str | None = None,
                 cgroup_version: int | None = None, cgroups=None):
        self.root = root or state_root()
        self.images = ImageStore(self.root)
        self.containers_dir = os.path.join(self.root, "containers")
        # Containers' cgroups go under <tree>/<cgroup_parent>/<id>; MINIRT_CGROUP_PARENT
        # (e.g. "minirt-test-42") keeps one user's or one test run's containers apart.
        self.cgroup_parent = cgroup_parent or os.environ.get("MINIRT_CGROUP_PARENT", "minirt")
        # MINIRT_CGROUP_VERSION=2 forces the v2 driver (on a hybrid machine: the
        # cgroup2 tree, whatever controllers it holds).
        version = cgroup_version or os.environ.get("MINIRT_CGROUP_VERSION")
        self.cgroup_version = int(version) if version else None
        self._driver = cgroups

    @property
    def cgroups(self):
        if self._driver is None:
            if os.geteuid() != 0:
                # Rootless: a delegated cgroup v2 subtree if this user has one (real
                # limits), else no cgroups at all (limits become rlimits, see run).
                from .kernel.cgroups.v2 import V2Driver, delegated_root
                root = delegated_root()
                if root:
                    self._driver = V2Driver(parent=self.cgroup_parent, mount_point=root)
                else:
                    from .kernel.cgroups.none import NoCgroupDriver
                    self._driver = NoCgroupDriver()
            else:
                self._driver = open_driver(self.cgroup_version, parent=self.cgroup_parent)
        return self._driver

    # --- containers ------------------------------------------------------------
    def create_spec(self, image: str, command=None, *, name=None, hostname=None, env=None,
                    workdir=None, volumes=(), memory=None, cpus=None, pids_limit=None,
                    tty=False, stdin=False, storage=None) -> ContainerSpec:
        """Check every argument and build the spec; nothing is written yet."""
        limits = Limits.parse(memory, cpus, pids_limit)
        if name is not None:
            self._check_name_free(name)
        parsed_volumes = [parse_volume(v) if isinstance(v, str) else v for v in volumes]
        parsed_env = parse_env(env)
        found = self.images.run_plan(image)
        config = found.run_config
        argv = list(command) if command else []
        argv = list(config.get("Entrypoint") or []) + (argv or list(config.get("Cmd") or []))
        if not argv:
            raise UsageError(f"no command given and image {found.name} has no default "
                             "command (Cmd)")
        container_id = os.urandom(32).hex()
        image_env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
        storage = storage or os.environ.get("MINIRT_STORAGE") or (
            "overlay" if rootfs.overlay_supported() else "copy")
        if storage not in ("overlay", "copy"):
            raise UsageError(f"unknown storage {storage!r}: use overlay or copy")
        return ContainerSpec(
            id=container_id, layers=found.layers, command=argv,
            env={**image_env, **parsed_env}, workdir=workdir or config.get("WorkingDir") or "/",
            hostname=hostname or container_id[:12], volumes=parsed_volumes, limits=limits,
            tty=tty, stdin=stdin, storage=storage, name=name or container_id[:12],
            image=found.name, image_id=found.image_id, namespaces=container_namespaces())

    def _check_name_free(self, name: str) -> None:
        """Docker's rule: a name is [a-zA-Z0-9][a-zA-Z0-9_.-]* and used by one container."""
        if not name or not name[0].isalnum() or not all(c.isalnum() or c in "_.-" for c in name):
            raise UsageError(f"invalid container name {name!r}: use letters, digits and _ . - "
                             "(starting with a letter or digit)")
        for other in self.containers():
            if other.get("name") == name:
                raise UsageError(f"the container name {name!r} is already in use by container "
                                 f"{other['id'][:12]}: choose another name or remove that one")

    def containers(self) -> list[dict]:
        """Every container on disk (running, or exited without --rm): its config plus
        ``state`` (status, pid, exit code) and ``running`` (processes in its cgroup now)."""
        import json
        found = []
        if os.path.isdir(self.containers_dir):
            for entry in os.listdir(self.containers_dir):
                directory = os.path.join(self.containers_dir, entry)
                try:
                    with open(os.path.join(directory, "config.json")) as f:
                        config = json.load(f)
                except (OSError, ValueError):
                    continue  # being created or removed right now
                try:
                    with open(os.path.join(directory, "state.json")) as f:
                        config["state"] = json.load(f)
                except (OSError, ValueError):
                    config["state"] = {"status": "created"}
                # Processes in its cgroup; rootless (no cgroup), its owner still waiting on it.
                config["running"] = bool(self.cgroups.cgroup(config["id"]).procs()) or (
                    config["state"].get("status") == "running"
                    and process_alive(config.get("owner")))
                found.append(config)
        return found

    def reap_stale(self) -> list[str]:
        """Finish the cleanup of containers whose ``minirt run`` was killed (SIGKILL).

        Their processes died with it (PR_SET_PDEATHSIG) and their mounts with
        their mount namespace; what is left on the host is the cgroup and the
        container's directory. Returns the ids it cleaned.
        """
        reaped = []
        for container in self.containers():
            status = container["state"].get("status")
            if status not in ("created", "running") or process_alive(container.get("owner")):
                continue
            cgroup = self.cgroups.cgroup(container["id"])
            cgroup.kill_all()
            cgroup.remove()
            directory = os.path.join(self.containers_dir, container["id"])
            if container.get("auto_remove"):
                remove_tree(directory)
            else:
                self._write_state(directory, "exited", exit_code=None,
                                  error="minirt run was killed while the container ran")
            reaped.append(container["id"])
        return reaped

    def remove_container(self, ref: str, force: bool = False) -> str:
        """``docker rm``: delete a stopped container's directory (``force`` kills it first)."""
        from .errors import ContainerError
        container = self.find_container(ref)
        cgroup = self.cgroups.cgroup(container["id"])
        if container["running"]:
            if not force:
                raise ContainerError(f"container {container['name']} is running: stop it first "
                                     "or use rm -f")
            cgroup.kill_all()
            deadline = time.monotonic() + 10
            while process_alive(container.get("owner")) and time.monotonic() < deadline:
                time.sleep(0.02)  # its minirt run notices, cleans up and exits
        cgroup.remove()
        directory = os.path.join(self.containers_dir, container["id"])
        if os.path.isdir(directory):
            remove_tree(directory)
        return container["id"]

    # --- images from containers -------------------------------------------------------
    def _upper_dir(self, container: dict) -> str:
        from .errors import ContainerError
        if container.get("storage") != "overlay":
            raise ContainerError(f"container {container['name']} has a copied root filesystem "
                                 "(--storage copy): its changes cannot be told apart from the image")
        return os.path.join(self.containers_dir, container["id"], "upper")

    def diff(self, ref: str) -> list[tuple[str, str]]:
        """``docker diff``: what the container added (A), changed (C) and deleted (D)."""
        from .image.changes import container_changes
        container = self.find_container(ref)
        return container_changes(self._upper_dir(container), container["layers"])

    def commit(self, ref: str, name: str, changes=(), message: str = ""):
        """``docker commit``: the container's changes become a new layer of a new image."""
        from .image.changes import apply_changes
        container = self.find_container(ref)
        upper = self._upper_dir(container)
        parent = self.images.resolve(container["image_id"] or container["image"])
        run_config = dict(parent.run_config)
        run_config["Cmd"] = container["command"][len(run_config.get("Entrypoint") or []):]
        run_config["Env"] = [f"{k}={v}" for k, v in container["env"].items()]
        run_config["WorkingDir"] = container["workdir"]
        run_config = apply_changes(run_config, changes)
        created_by = f"minirt commit {container['name']}" + (f": {message}" if message else "")
        return self.images.add_rootfs(upper, name, run_config, created_by, parent=parent,
                                      overlay_markers=True, reproducible=False)

    def export(self, ref: str, out) -> None:
        """``docker export``: the container's whole filesystem as one flat tar.

        The layers and the container's upper dir are stacked read-only with
        overlayfs in a child's private mount namespace, and tar reads the result.
        """
        import tarfile
        from .kernel import mounts, namespaces
        container = self.find_container(ref)
        lower = [self._upper_dir(container)] + list(container["layers"])
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                namespaces.unshare(["mnt"])
                mounts.make_private("/")
                merged = os.path.join(self.containers_dir, container["id"], "rootfs")
                from .kernel import syscalls
                syscalls.mount("overlay", merged, "overlay", syscalls.MS_RDONLY,
                               f"lowerdir={':'.join(lower)}")
                with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for name in sorted(os.listdir(merged)):
                        tar.add(os.path.join(merged, name), arcname=name)
                out.flush()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise MinirtError(f"could not export container {container['name']}")

    def remove_image(self, name: str, force: bool = False) -> list[str]:
        """``docker rmi``: untag, then delete what no image uses any more.

        Refused while a container (running or stopped) was made from the image,
        unless ``force``.
        """
        from .errors import ImageError
        image = self.images.resolve(name)
        users = [c["name"] for c in self.containers() if c.get("image_id") == image.id]
        if users and not force:
            raise ImageError(f"image {image.name} is used by container(s) {', '.join(users)}: "
                             "remove them first, or use rmi -f")
        self.images.untag(image.name)
        in_use = {layer for c in self.containers() for layer in c["layers"]}
        return self.images.collect_garbage(in_use)

    def find_container(self, ref: str) -> dict:
        """A container by name, full id or unique id prefix (as docker accepts them)."""
        from .errors import ContainerNotFound
        everything = self.containers()
        exact = [c for c in everything if ref in (c.get("name"), c["id"])]
        matches = exact or [c for c in everything if c["id"].startswith(ref)]
        if len(matches) != 1:
            raise ContainerNotFound(f"no such container: {ref}" if not matches else
                                    f"{ref!r} matches {len(matches)} containers: give more of the id")
        return matches[0]

    def run(self, image: str, command=None, *, remove: bool = True, capture: bool = True,
            input: bytes | None = None, trace: bool = False, stdio=None, notice=None,
            **options) -> RunResult:
        """Run a container to completion, like ``docker run [--rm]``.

        ``capture`` collects its output into the result (the Python API);
        ``stdio`` may instead be a ``runtime.stdio`` object (the CLI uses
        passthrough or a terminal). ``trace=True`` records every kernel step.
        """
        started = time.perf_counter()
        recorder = Trace() if trace else NULL_TRACE
        spec = self.create_spec(image, command, **options)
        if stdio is None:
            from .runtime.stdio import Capture, Passthrough
            stdio = Capture(input) if capture else Passthrough(options.get("stdin", False))
        container_dir = os.path.join(self.containers_dir, spec.id)
        if self.cgroups.version == 0 and spec.limits != Limits():
            from .kernel import rlimits  # no cgroup to write: rlimits, and say they are weaker
            spec.rlimits, spec.limits = rlimits.from_limits(spec.limits), Limits()
            if notice:
                notice(rlimits.WEAKER)
        if "user" in spec.namespaces and not user_namespaces_allowed():
            process = self._emulated(spec, container_dir, recorder, notice)
        else:
            process = ContainerProcess(spec, container_dir, self.cgroups, recorder)
        try:
            with forwarded_signals(process), steps_on_error(recorder):
                process.launch(stdio.child_fds(), stdio.console_socket)
                self._write_container(container_dir, spec, remove)  # while the sandbox is built
                process.wait_until_running()
                stdio.after_start()
                self._write_state(container_dir, "running", pid=process.pid)
                stdio.pump()
                status = process.wait()
        finally:
            stdio.close()
            process.cleanup()
            if remove:
                remove_tree(container_dir)
        if not remove:
            self._write_state(container_dir, "exited", exit_code=status.exit_code,
                              oom_killed=status.oom_killed)
        return RunResult(spec.id, spec.name, status.exit_code, status.oom_killed,
                         stdio.output.decode(errors="replace"), stdio.errors.decode(errors="replace"),
                         time.perf_counter() - started, recorder.steps)

    def _emulated(self, spec, container_dir, recorder, notice):
        """No namespaces at all on this machine: proot, labelled as the emulation it is."""
        from .errors import KernelFeatureMissing
        from .runtime import proot
        if proot.proot_path() is None:
            raise KernelFeatureMissing(
                "this machine allows no namespaces (no user namespaces for this user), so a "
                "container cannot run here; install proot for an emulation, or see "
                "`minirt doctor` for what still works")
        if notice:
            notice(proot.LABEL)
        spec.namespaces, spec.storage = (), "copy"
        return proot.EmulatedProcess(spec, container_dir, recorder)

    def _write_container(self, container_dir: str, spec: ContainerSpec, remove: bool) -> None:
        """The container's record: its spec, whether --rm, and which process owns it.

        The owner is this process, named by pid *and* start time (pids are
        reused): if it is killed, ``reap_stale`` finishes its cleanup later.
        """
        import json
        os.makedirs(container_dir, exist_ok=True)
        record = {**spec.to_dict(), "auto_remove": remove, "created": time.time(),
                  "owner": process_identity(os.getpid())}
        atomic_write(os.path.join(container_dir, "config.json"),
                     json.dumps(record, indent=1).encode(), durable=False)

    def _write_state(self, container_dir: str, status: str, **fields) -> None:
        import json
        state = {"status": status, **fields}
        atomic_write(os.path.join(container_dir, "state.json"), json.dumps(state).encode(),
                     durable=False)


class steps_on_error:
    """Attach the steps recorded so far to a MinirtError (``--trace`` shows a failed start)."""

    def __init__(self, recorder):
        self.recorder = recorder

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if isinstance(error, MinirtError):
            error.trace = self.recorder.steps
        return False


class forwarded_signals:
    """While a container runs, signals sent to us go to it (docker's --sig-proxy)."""

    def __init__(self, process: ContainerProcess):
        self.process, self.saved = process, {}

    def __enter__(self):
        try:
            for number in FORWARDED_SIGNALS:
                self.saved[number] = signal.signal(number, self._forward)
        except ValueError:
            pass  # not the main thread (e.g. a web server's worker): no forwarding
        return self

    def _forward(self, number, frame):
        self.process.send_signal(number)

    def __exit__(self, *exc):
        for number, handler in self.saved.items():
            signal.signal(number, handler)
        return False


_USERNS_ALLOWED: bool | None = None


def user_namespaces_allowed() -> bool:
    """May this process create a user namespace? Tried once, in a child, then remembered."""
    global _USERNS_ALLOWED
    if _USERNS_ALLOWED is None:
        from .kernel import namespaces
        _USERNS_ALLOWED = namespaces.can_unshare(["user"])
    return _USERNS_ALLOWED


def container_namespaces() -> tuple[str, ...]:
    """Docker's namespaces; without root, a user namespace first (the rootless tier)."""
    from .kernel.namespaces import CONTAINER_NAMESPACES
    return CONTAINER_NAMESPACES if os.geteuid() == 0 else ("user",) + CONTAINER_NAMESPACES


def process_identity(pid: int) -> list:
    """[pid, start time in clock ticks since boot]: unique even when pids are reused."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return [pid, int(fields[19])]


def process_alive(identity) -> bool:
    """Is the process named by ``process_identity`` still there (and the same one)?"""
    if not identity:
        return False
    try:
        return process_identity(identity[0]) == list(identity)
    except (OSError, IndexError, ValueError):
        return False


def parse_volume(text: str) -> Volume:
    """``HOST:PATH[:ro|rw]`` -> Volume; both paths must be absolute."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise UsageError(f"invalid volume {text!r}: use HOSTPATH:CONTAINERPATH[:ro]")
    source, target = parts[0], parts[1]
    if not os.path.isabs(source) or not os.path.isabs(target):
        raise UsageError(f"invalid volume {text!r}: both paths must be absolute")
    return Volume(os.path.abspath(source), os.path.normpath(target),
                  len(parts) == 3 and parts[2] == "ro")


def parse_env(env) -> dict[str, str]:
    """Accept ``{"K": "V"}`` or ``["K=V", "K"]`` (a bare K copies our own value, as docker)."""
    if not env:
        return {}
    if isinstance(env, dict):
        return {str(k): str(v) for k, v in env.items()}
    parsed = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid environment variable {item!r}: use KEY=VALUE")
        if sep:
            parsed[key] = value
        elif key in os.environ:
            parsed[key] = os.environ[key]
    return parsed
