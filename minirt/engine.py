"""The Engine: images plus containers, the one object every front end drives.

The CLI and the notebooks call it in-process; the daemon (minirtd) serves it
over the Docker Engine API. It turns user-level requests ("run busybox with
64m") into a ``ContainerSpec`` and hands it to the runtime.
"""

import os
import sys
import _signal as signal  # the C module under `signal`: same calls, no enums to build (~1 ms)
import time
from .errors import MinirtError, UsageError
from .image.store import ImageStore
from .kernel.cgroups import Limits, open_driver
from .paths import atomic_write, remove_tree, state_root
from .record import Record
from .runtime import rootfs
from .runtime.container import FORWARDED_SIGNALS, ContainerProcess
from .runtime.jsonlog import rfc3339_nano
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
        self.shim_factory = None   # a socket: shims are forked there (minirtd sets it)

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
                    tty=False, stdin=False, storage=None, entrypoint=None,
                    labels=None, network=None, ip=None, publish=(), dns=(), privileged=False,
                    cap_add=(), cap_drop=(), security_opt=(), user=None, read_only=False,
                    ulimits=()) -> ContainerSpec:
        """Check every argument and build the spec; nothing is written yet.

        ``network`` is ``--network`` (bridge, none, host or a network's name;
        default: ``network.sandbox.default_mode()``), ``publish`` the ``-p``
        values (strings or ``PortMapping``), ``dns`` the ``--dns`` servers.

        ``entrypoint`` (a list) replaces the image's Entrypoint, and then, as in
        docker, the image's Cmd is not used either (``[]`` clears both)."""
        limits = Limits.parse(memory, cpus, pids_limit)
        if name is not None:
            self._check_name_free(name)
        parsed_volumes = [parse_volume(v) if isinstance(v, str) else v for v in volumes]
        parsed_env = parse_env(env)
        network, ports = self._network_options(network, ip, publish)
        self._check_security_options(cap_add, cap_drop, security_opt)
        found = self.images.run_plan(image)
        config = found.run_config
        argv = list(command) if command else []
        if entrypoint is not None:
            argv = [part for part in entrypoint if part] + argv
        else:
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
        namespaces = container_namespaces()
        if network == "host":  # the host's network stack, and so (as docker) its hostname
            namespaces = tuple(n for n in namespaces if n != "net")
            hostname = hostname or os.uname().nodename
        return ContainerSpec(
            id=container_id, layers=found.layers, command=argv,
            env={**image_env, **parsed_env}, workdir=workdir or config.get("WorkingDir") or "/",
            hostname=hostname or container_id[:12], volumes=parsed_volumes, limits=limits,
            tty=tty, stdin=stdin, storage=storage, name=name or container_id[:12],
            image=found.name, image_id=found.image_id, namespaces=namespaces,
            labels={str(k): str(v) for k, v in (labels or {}).items()},
            network=network, ip=ip or "", ports=ports, dns=[str(d) for d in dns or ()],
            privileged=bool(privileged), cap_add=list(cap_add or ()), cap_drop=list(cap_drop or ()),
            security_opt=list(security_opt or ()), user=user or config.get("User") or "",
            read_only=bool(read_only), rlimits=parse_ulimits(ulimits))

    @staticmethod
    def _check_security_options(cap_add, cap_drop, security_opt) -> None:
        """Unknown capabilities or --security-opt values fail here, before anything starts."""
        from .security import capabilities, profile
        for name in list(cap_add or ()) + list(cap_drop or ()):
            capabilities.normalize(name)
        profile.parse_security_opts(security_opt)

    def _network_options(self, network, ip, publish) -> tuple[str, list[dict]]:
        """``--network``, ``--ip`` and ``-p`` checked together: (mode, [port mapping])."""
        from .network import sandbox
        network = network or sandbox.default_mode()
        mappings = []
        if publish:
            from .network.proxy import PortMapping, parse_publish
            mappings = [p if isinstance(p, PortMapping) else parse_publish(str(p))
                        for p in publish]
        sandbox.check_mode(self.root, network, ip, mappings, rootless=os.geteuid() != 0)
        return network, [m.to_dict() for m in mappings]

    def _check_name_free(self, name: str) -> None:
        """Docker's rule: a name is [a-zA-Z0-9][a-zA-Z0-9_.-]* and used by one container."""
        if not name or not name[0].isalnum() or not all(c.isalnum() or c in "_.-" for c in name):
            raise UsageError(f"invalid container name {name!r}: use letters, digits and _ . - "
                             "(starting with a letter or digit)")
        for other in self.containers():
            if other.get("name") == name:
                from .errors import NameInUse
                raise NameInUse(f"the container name {name!r} is already in use by container "
                                 f"{other['id'][:12]}: choose another name or remove that one")

    def containers(self) -> list[dict]:
        """Every container on disk (running, or exited without --rm): its config plus
        ``state`` (status, pid, exit code) and ``running`` (processes in its cgroup now)."""
        found = []
        if os.path.isdir(self.containers_dir):
            for entry in os.listdir(self.containers_dir):
                config = self._load_container(entry)
                if config is not None:
                    found.append(config)
        return found

    def _load_container(self, entry: str) -> dict | None:
        """One container of ``containers()``, by its directory's name (its id); None if
        it has no readable record (being created or removed right now)."""
        import json
        directory = os.path.join(self.containers_dir, entry)
        try:
            with open(os.path.join(directory, "config.json")) as f:
                config = json.load(f)
        except (OSError, ValueError):
            return None
        try:
            with open(os.path.join(directory, "state.json")) as f:
                config["state"] = json.load(f)
        except (OSError, ValueError):
            config["state"] = {"status": "created"}
        # Processes in its cgroup; rootless (no cgroup), its owner still waiting on it.
        config["running"] = bool(self.cgroups.cgroup(config["id"]).procs()) or (
            config["state"].get("status") == "running"
            and process_alive(config.get("owner")))
        return config

    def reap_stale(self) -> list[str]:
        """Finish the cleanup of containers whose owner was killed (SIGKILL): a
        foreground ``minirt run``, or a detached container's shim.

        Their processes died with it (PR_SET_PDEATHSIG) and their mounts with
        their mount namespace; what is left on the host is the cgroup and the
        container's directory. Nobody saw the exit, so its code is unknown
        (recorded as None; ``inspect`` says -1 and gives the Error). Returns
        the ids it cleaned.
        """
        import json
        reaped = []
        for container in self.containers():
            if container["state"].get("status") not in ("created", "running") or \
                    process_alive(container.get("owner")):
                continue
            # The owner is gone; only now read the state again: a shim writes its last
            # state *before* it exits, so what we read from here on is final. (Read
            # earlier, "running" may be stale by a moment, and an exit code known to
            # the shim would be overwritten with "unknown".)
            directory = os.path.join(self.containers_dir, container["id"])
            try:
                with open(os.path.join(directory, "state.json")) as f:
                    status = json.load(f).get("status")
            except (OSError, ValueError):   # no state written yet: as containers() reads it
                if not os.path.isdir(directory):
                    continue                # removed meanwhile (--rm)
                status = "created"
            if status not in ("created", "running"):
                continue
            cgroup = self.cgroups.cgroup(container["id"])
            cgroup.kill_all()
            cgroup.remove()
            from .network import sandbox
            sandbox.teardown(self.root, directory)  # its proxy, veth and address
            if container.get("auto_remove"):
                remove_tree(directory)
            else:
                who = "its shim" if container.get("shim") else "minirt run"
                self._write_state(directory, "exited", exit_code=None,
                                  started_at=container["state"].get("started_at", ""),
                                  finished_at=rfc3339_nano(),
                                  error=f"{who} was killed while the container was {status}: "
                                        "the exit code is unknown")
            reaped.append(container["id"])
        self._release_departed_leases()
        return reaped

    def _release_departed_leases(self) -> None:
        """Addresses still leased to containers that no longer exist (their minirt was
        killed between the lease and its record): give them back."""
        if not os.path.isdir(os.path.join(self.root, "networks")):
            return
        from .network import ipam
        try:
            alive = os.listdir(self.containers_dir)
        except FileNotFoundError:
            alive = []
        ipam.release_departed(self.root, alive)

    def remove_container(self, ref: str, force: bool = False) -> str:
        """``docker rm``: delete a stopped container's directory (``force`` kills it first)."""
        from .errors import ContainerError
        from .runtime import shim
        container = self.find_container(ref)
        cgroup = self.cgroups.cgroup(container["id"])
        directory = os.path.join(self.containers_dir, container["id"])
        if container["running"] and not force:
            raise ContainerError(f"container {container['name']} is running: stop it first "
                                 "or use rm -f")
        owner_finishing = container["running"]
        if self._shim_alive(container):
            owner_finishing = True
            try:  # the shim kills the container, cleans up and exits
                shim.request(directory, {"op": "shutdown"})
            except OSError:
                pass  # it was exiting anyway
        elif container["running"]:
            cgroup.kill_all()
        deadline = time.monotonic() + 10
        while owner_finishing and process_alive(container.get("owner")) and \
                time.monotonic() < deadline:
            time.sleep(0.02)  # its minirt run (or shim) notices, cleans up and exits
        cgroup.remove()
        if os.path.isdir(directory):
            remove_tree(directory)
        return container["id"]

    # --- detached containers: create, start, stop, wait, logs, exec ---------------------
    def create(self, image: str, command=None, *, tty: bool = False, stdin_open: bool = False,
               remove: bool = False, notice=None, **options) -> str:
        """``docker create``: a container with its shim, not started; returns its id.

        Options are ``create_spec``'s. The shim (``runtime/shim.py``) lives on
        its own, so the container outlives this process; its attach socket
        exists from now on (``attach_socket_path``).
        """
        spec = self.create_spec(image, command, tty=tty, stdin=stdin_open, **options)
        self._fit_to_machine(spec, notice)
        container_dir = os.path.join(self.containers_dir, spec.id)
        os.makedirs(container_dir)
        try:
            self._spawn_shim(spec, container_dir, remove)
        except BaseException:
            remove_tree(container_dir)
            raise
        return spec.id

    def _spawn_shim(self, spec: ContainerSpec, container_dir: str, remove: bool) -> None:
        """Start the container's shim (``python -m minirt.engine shim``) and wait until
        it listens. It is a fresh interpreter, not a fork of this one: the caller may be
        a notebook's or a daemon's process with threads and open connections."""
        import json
        import subprocess
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [package_parent] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        request = {"root": self.root, "cgroup_parent": self.cgroup_parent,
                   "cgroup_version": self.cgroup_version, "container_dir": container_dir,
                   "spec": spec.to_dict(), "auto_remove": remove}
        answer = self._ask_shim_factory(request) if self.shim_factory else None
        if answer is None:
            with open(os.path.join(container_dir, "shim.log"), "ab") as log:
                process = subprocess.Popen([sys.executable, "-m", "minirt.engine", "shim"],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=log, env=env, cwd=container_dir,
                                           start_new_session=True)
            answer, _ = process.communicate(json.dumps(request).encode(), timeout=60)
        try:
            answer = json.loads(answer) if answer else {}
        except ValueError:
            answer = {}
        if not answer.get("ok"):
            from .errors import ContainerStartError
            with open(os.path.join(container_dir, "shim.log"), errors="replace") as f:
                why = f.read().strip().splitlines()[-1:] or ["no answer"]
            raise ContainerStartError("the container's shim did not start: "
                                      f"{answer.get('message') or why[0]}")

    def _ask_shim_factory(self, request: dict) -> bytes | None:
        """Have the daemon's shim factory fork the shim (see ``serve_shim_factory``):
        its answer line, or None if there is no factory to ask (then we spawn it)."""
        import json
        import socket
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(60)
                conn.connect(self.shim_factory)
                conn.sendall(json.dumps(request).encode() + b"\n")
                with conn.makefile("rb") as answer:
                    return answer.readline()
        except (FileNotFoundError, ConnectionRefusedError):
            return None

    def _shim_alive(self, container: dict) -> bool:
        return bool(container.get("shim")) and process_alive(container.get("owner"))

    def _container_dir(self, container: dict) -> str:
        return os.path.join(self.containers_dir, container["id"])

    def start(self, ref: str) -> str:
        """``docker start``: start a created or exited container (a no-op when running)."""
        from .runtime import shim
        container = self.find_container(ref)
        if container["running"]:
            return container["id"]
        directory = self._container_dir(container)
        if not (self._shim_alive(container) and container["state"].get("status") == "created"):
            if self._shim_alive(container):
                self.wait(container["id"])  # it is finishing the previous run: let it
            self._spawn_shim(ContainerSpec.from_dict(container), directory,
                             container.get("auto_remove", False))
        try:
            shim.raise_answer(shim.request(directory, {"op": "start"}, timeout=120))
        except MinirtError:
            if container.get("auto_remove"):
                self.remove_container(container["id"], force=True)
            raise
        return container["id"]

    def kill(self, ref: str, signal="KILL") -> str:
        """``docker kill [-s SIG]``: send a signal to the container's PID 1.

        As docker, the signal goes as it is: PID 1 of a pid namespace ignores
        the ones it has no handler for (all but SIGKILL, unless it catches them).
        """
        from .errors import ContainerError
        number = parse_signal(signal)
        container = self.find_container(ref)
        if not container["running"]:
            raise ContainerError(f"container {container['name']} is not running")
        self._signal(container, number)
        return container["id"]

    def _signal(self, container: dict, number: int) -> None:
        from .runtime import shim
        if self._shim_alive(container):
            shim.raise_answer(shim.request(self._container_dir(container),
                                           {"op": "kill", "signal": number}))
        elif container["state"].get("pid"):  # a foreground run's container
            try:
                os.kill(container["state"]["pid"], number)
            except ProcessLookupError:
                pass

    def stop(self, ref: str, timeout: float = 10) -> str:
        """``docker stop -t N``: SIGTERM to PID 1, SIGKILL if it still runs N seconds later."""
        from .errors import ContainerError, ContainerNotFound
        container = self.find_container(ref)
        if not container["running"]:
            return container["id"]
        try:
            self._signal(container, signal.SIGTERM)
            self.wait(container["id"], timeout=timeout)
        except TimeoutError:
            try:
                self._signal(container, signal.SIGKILL)
                self.wait(container["id"])
            except (ContainerError, ContainerNotFound):
                pass  # it ended meanwhile (and, with --rm, is gone)
        except (ContainerError, ContainerNotFound):
            pass
        return container["id"]

    def restart(self, ref: str, timeout: float = 10) -> str:
        """``docker restart``: stop (with ``timeout``), then start; PID 1 is a new process."""
        container_id = self.stop(ref, timeout)
        return self.start(container_id)

    def wait(self, ref: str, timeout: float | None = None) -> int:
        """``docker wait``: block until the container has exited; return its exit code
        (-1 when nobody saw the exit, see ``reap_stale``). ``TimeoutError`` after
        ``timeout`` seconds."""
        from .runtime import shim
        deadline = None if timeout is None else time.monotonic() + timeout
        container = self.find_container(ref)
        container_id = container["id"]
        while True:
            status = container["state"].get("status")
            if status == "exited":
                code = container["state"].get("exit_code")
                return -1 if code is None else code
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._shim_alive(container):
                try:
                    answer = shim.request(self._container_dir(container), {"op": "wait"}, left)
                    if "exit_code" in answer:
                        return answer["exit_code"]
                except TimeoutError:
                    raise TimeoutError(f"container {container['name']} still runs after "
                                       f"{timeout} seconds") from None
                except OSError:
                    pass  # the shim has just finished (or was killed): see the state on disk
            elif not process_alive(container.get("owner")):
                self.reap_stale()
            if left == 0.0:
                raise TimeoutError(f"container {container['name']} still runs after "
                                   f"{timeout} seconds")
            time.sleep(0.02)
            container = self.find_container(container_id)

    def logs(self, ref: str, follow: bool = False, tail: int | None = None,
             timestamps: bool = False, stdout: bool = True, stderr: bool = True):
        """``docker logs``: yield (stream, bytes) from the container's json-file log.

        ``follow`` keeps reading until the container stops; ``tail`` gives the
        last N lines first; ``timestamps`` prefixes each with its RFC 3339 time.
        """
        from .runtime.jsonlog import read_records
        container = self.find_container(ref)
        path = self.log_path(container)

        def still_running() -> bool:
            try:
                now = self.find_container(container["id"])
            except MinirtError:
                return False
            return now["state"].get("status") == "running" and (
                now["running"] or process_alive(now.get("owner")))

        wanted = {"stdout": stdout, "stderr": stderr}
        for record in read_records(path, follow=still_running if follow else None, tail=tail):
            if wanted.get(record.get("stream"), False):
                data = record["log"].encode()
                if timestamps:
                    data = record["time"].encode() + b" " + data
                yield record["stream"], data

    def log_path(self, container: dict) -> str:
        return os.path.join(self._container_dir(container), f"{container['id']}-json.log")

    def attach_socket_path(self, ref: str) -> str:
        """The shim's attach socket (protocol: ``runtime/shim.py``). Connect with
        ``runtime.shim.connect``: the path may be longer than a socket address allows."""
        from .runtime.shim import ATTACH_SOCKET
        return os.path.join(self._container_dir(self.find_container(ref)), ATTACH_SOCKET)

    def attach(self, ref: str):
        """A socket connected to the container's attach socket (see ``attach_socket_path``)."""
        from .errors import ContainerError
        from .runtime import shim
        container = self.find_container(ref)
        if not self._shim_alive(container):
            raise ContainerError(f"container {container['name']} has no shim to attach to "
                                 "(not created detached, or exited)")
        return shim.connect(self.attach_socket_path(container["id"]))

    def resize(self, ref: str, height: int, width: int) -> None:
        """The terminal size of a ``-t`` container (docker's resize)."""
        from .runtime import shim
        container = self.find_container(ref)
        shim.raise_answer(shim.request(self._container_dir(container),
                                       {"op": "resize", "height": height, "width": width}))

    def top(self, ref: str) -> dict:
        """``docker top``: the container's processes, as ``ps -ef`` columns (from psutil)."""
        import psutil
        from .errors import ContainerError
        container = self.find_container(ref)
        if not container["running"]:
            raise ContainerError(f"container {container['name']} is not running")
        pids = set(self.cgroups.cgroup(container["id"]).procs())
        if not pids and container["state"].get("pid"):  # no cgroup (rootless): PID 1's tree
            try:
                init = psutil.Process(container["state"]["pid"])
                pids = {init.pid} | {p.pid for p in init.children(recursive=True)}
            except psutil.Error:
                pass
        rows = []
        for pid in sorted(pids):
            try:
                p = psutil.Process(pid)
                with p.oneshot():
                    cpu = p.cpu_times()
                    used = int(cpu.user + cpu.system)
                    rows.append([p.username(), str(pid), str(p.ppid()), "0",
                                 time.strftime("%H:%M", time.localtime(p.create_time())),
                                 (p.terminal() or "?").removeprefix("/dev/"),
                                 f"{used // 3600:02d}:{used // 60 % 60:02d}:{used % 60:02d}",
                                 " ".join(p.cmdline()) or f"[{p.name()}]"])
            except psutil.Error:
                continue  # it ended while we looked
        return {"Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
                "Processes": rows}

    def exec(self, ref: str, command, env=None, workdir: str | None = None, tty: bool = False,
             detach: bool = False, stdio=None, interactive: bool = False) -> int:
        """``docker exec``: run ``command`` in the running container's namespaces and
        cgroup (``runtime/enter.py``); return its exit code (0 with ``detach``).

        ``stdio`` is a ``runtime.stdio`` object: ``Capture()`` collects the output
        (``stdio.output``), the default passes it through to ours, the CLI uses
        ``Terminal`` for -t.
        """
        from .errors import ContainerError, KernelFeatureMissing, UsageError
        from .runtime import enter
        from .runtime.stdio import Null, Passthrough
        container = self.find_container(ref)
        if not container["running"] or not container["state"].get("pid"):
            raise ContainerError(f"container {container['name']} is not running")
        spec = ContainerSpec.from_dict(container)
        if not spec.namespaces:
            raise KernelFeatureMissing("exec needs namespaces to enter: this container is a "
                                       "proot emulation")
        if not command:
            raise UsageError("exec needs a command")
        if detach:
            stdio = Null()
        elif stdio is None:
            stdio = Passthrough(interactive)
        cgroup = self.cgroups.cgroup(container["id"]) if self.cgroups.version else None
        return enter.exec_in(container["state"]["pid"], spec, cgroup, list(command),
                             parse_env(env), workdir, tty, detach, stdio)

    def inspect(self, ref: str) -> dict:
        """``docker inspect`` of a container: its record plus docker's State fields."""
        from .network import sandbox
        container = self.find_container(ref)
        state = container["state"]
        status = state.get("status", "created")
        code = state.get("exit_code")
        never = "0001-01-01T00:00:00Z"  # Go's zero time, as docker shows "never"
        return {
            **container,
            "Id": container["id"], "Name": "/" + container["name"],
            "Created": rfc3339_nano(int(container.get("created", 0) * 1e9)),
            "Path": container["command"][0], "Args": container["command"][1:],
            "Image": container.get("image_id", ""), "LogPath": self.log_path(container),
            "State": {
                "Status": status, "Running": container["running"], "Paused": False,
                "Restarting": False, "OOMKilled": bool(state.get("oom_killed")), "Dead": False,
                "Pid": state.get("pid", 0) if container["running"] else 0,
                "ExitCode": -1 if code is None and status == "exited" else code or 0,
                "Error": state.get("error", ""),
                "StartedAt": state.get("started_at") or never,
                "FinishedAt": state.get("finished_at") or never,
            },
            "HostConfig": {"NetworkMode": container.get("network") or "none"},
            "NetworkSettings": sandbox.inspect_settings(self._container_dir(container),
                                                        container.get("network") or "none"),
        }

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
        # Rootless: files the container's root made belong to this user on the host;
        # the layer records them as the container saw them (root, borrowed ids).
        id_map = None
        if os.geteuid() != 0:
            from .kernel import idmap
            id_map = idmap.for_user()
        return self.images.add_rootfs(upper, name, run_config, created_by, parent=parent,
                                      overlay_markers=True, reproducible=False, id_map=id_map)

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

    # --- registries ------------------------------------------------------------
    def pull(self, name: str, progress=None, credentials=None):
        """``docker pull``: fetch ``name`` from its registry (see minirt.registry.pull).
        ``credentials`` (registry.auth.Credentials): this pull's login, else the stored one."""
        from .registry import pull
        return pull.pull(self.images, name, progress, credentials=credentials)

    def push(self, name: str, progress=None, credentials=None):
        """``docker push``: send the local image ``name`` to its registry."""
        from .registry import push
        return push.push(self.images, name, progress, credentials=credentials)

    def find_container(self, ref: str) -> dict:
        """A container by name, full id or unique id prefix (as docker accepts them)."""
        from .errors import ContainerNotFound
        if len(ref) == 64 and os.sep not in ref and ref not in (".", ".."):
            # A full id (what the daemon's clients send) first, as docker does: one
            # container read, not all of them (every request would be O(containers)).
            config = self._load_container(ref)
            if config is not None and config.get("id") == ref:
                return config
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
        self._fit_to_machine(spec, notice)
        process = self._make_process(spec, container_dir, recorder)
        recorded = False
        try:
            with forwarded_signals(process), steps_on_error(recorder):
                process.launch(stdio.child_fds(), stdio.console_socket)
                self._write_container(container_dir, spec, remove)  # while the sandbox is built
                recorded = True
                process.wait_until_running()
                stdio.after_start()
                started_at = rfc3339_nano()
                self._write_state(container_dir, "running", pid=process.pid, started_at=started_at)
                stdio.pump()
                status = process.wait()
        finally:
            stdio.close()
            process.cleanup()
            if remove or not recorded:  # a start that failed before its record: no trace
                remove_tree(container_dir)
        if not remove:
            self._write_state(container_dir, "exited", exit_code=status.exit_code,
                              oom_killed=status.oom_killed, started_at=started_at,
                              finished_at=rfc3339_nano())
        return RunResult(spec.id, spec.name, status.exit_code, status.oom_killed,
                         stdio.output.decode(errors="replace"), stdio.errors.decode(errors="replace"),
                         time.perf_counter() - started, recorder.steps)

    def _fit_to_machine(self, spec, notice) -> None:
        """Adapt the spec to this machine's tier (rlimits without cgroups, proot without
        namespaces) and say so through ``notice``."""
        if self.cgroups.version == 0 and spec.limits != Limits():
            from .kernel import rlimits  # no cgroup to write: rlimits, and say they are weaker
            spec.rlimits = {**spec.rlimits, **rlimits.from_limits(spec.limits)}
            spec.limits = Limits()
            if notice:
                notice(rlimits.WEAKER)
        if "user" in spec.namespaces and not user_namespaces_allowed():
            # No namespaces at all on this machine: proot, labelled as the emulation it is.
            from .errors import KernelFeatureMissing
            from .runtime import proot
            if proot.proot_path() is None:
                raise KernelFeatureMissing(
                    "this machine allows no namespaces (no user namespaces for this user), so a "
                    "container cannot run here; install proot for an emulation, or see "
                    "`minirt doctor` for what still works")
            if notice:
                notice(proot.LABEL)
                if spec.ports:
                    notice("-p is ignored: an emulated container uses the host's network")
            spec.namespaces, spec.storage = (), "copy"
            spec.network, spec.ports, spec.ip = "host", [], ""

    def _make_process(self, spec, container_dir, recorder=NULL_TRACE):
        """The runtime object that will start the container (not started yet)."""
        if not spec.namespaces:
            from .runtime import proot
            return proot.EmulatedProcess(spec, container_dir, recorder)
        from .network.sandbox import NetworkSandbox
        from .security import profile
        return ContainerProcess(spec, container_dir, self.cgroups, recorder,
                                network=NetworkSandbox(self.root, spec, container_dir, recorder),
                                security=profile.prepare(spec, os.path.join(self.root, "cache",
                                                                            "seccomp")))

    def _write_container(self, container_dir: str, spec: ContainerSpec, remove: bool,
                         shim: bool = False) -> None:
        """The container's record: its spec, whether --rm, and which process owns it.

        The owner is this process, named by pid *and* start time (pids are
        reused): ``minirt run`` in the foreground, or a detached container's
        shim (``shim`` True). If it is killed, ``reap_stale`` finishes its
        cleanup later.
        """
        import json
        os.makedirs(container_dir, exist_ok=True)
        created = time.time()
        try:  # a restarted container keeps its creation time
            with open(os.path.join(container_dir, "config.json")) as f:
                created = json.load(f).get("created", created)
        except (OSError, ValueError):
            pass
        record = {**spec.to_dict(), "auto_remove": remove, "created": created,
                  "owner": process_identity(os.getpid()), "shim": shim}
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
        with open(f"/proc/{identity[0]}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    # A zombie has exited: it only waits for its parent (for a shim: init) to reap it.
    return fields[0] != "Z" and [identity[0], int(fields[19])] == list(identity)


def parse_signal(value) -> int:
    """``9``, ``"9"``, ``"KILL"`` or ``"SIGKILL"`` -> 9, as ``docker kill -s`` accepts them."""
    from .errors import UsageError
    text = str(value).strip().upper()
    if text.isdigit() and 0 < int(text) < 65:
        return int(text)
    number = getattr(signal, text if text.startswith("SIG") else "SIG" + text, None)
    if not isinstance(number, int) or text in ("SIG_DFL", "SIG_IGN"):
        raise UsageError(f"invalid signal {value!r}: use a name such as TERM or KILL, or a number")
    return number


def serve_shim() -> None:
    """``python -m minirt.engine shim``: become a container's shim (``runtime/shim.py``).

    Reads the Engine's request (JSON) on stdin, forks once more so that the
    shim is re-parented to init and never a zombie of its caller, writes the
    container's record with itself as owner, and answers ``{"ok": true}`` on
    stdout once it listens. From then on its stdio is /dev/null (stderr:
    shim.log in the container's directory).
    """
    import json
    import sys
    request = json.loads(sys.stdin.buffer.read())
    if os.fork():
        os._exit(0)
    become_shim(request)


def become_shim(request: dict) -> None:
    """Be the shim ``request`` describes, until the container is gone; never returns.

    Answers ``{"ok": true}`` (one JSON line) on fd 1 once it listens, then puts
    /dev/null there; fd 2 is the container's shim.log.
    """
    import json
    import traceback
    from .runtime.shim import Shim
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    for number in (signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    try:
        with open("/proc/self/comm", "w") as f:
            f.write("minirt-shim")  # what ps and top show for it
    except OSError:
        pass
    answered = False

    def ready() -> None:
        nonlocal answered
        os.write(1, json.dumps({"ok": True, "pid": os.getpid()}).encode() + b"\n")
        os.dup2(null, 1)
        answered = True

    try:
        engine = Engine(request["root"], request["cgroup_parent"], request["cgroup_version"])
        container_dir = request["container_dir"]
        spec = ContainerSpec.from_dict(request["spec"])
        engine._write_container(container_dir, spec, request["auto_remove"], shim=True)
        Shim(spec, container_dir, lambda: engine._make_process(spec, container_dir),
             lambda status, **fields: engine._write_state(container_dir, status, **fields),
             request["auto_remove"]).serve(ready)
    except BaseException as e:
        traceback.print_exc()
        if not answered:
            os.write(1, json.dumps({"ok": False, "message": str(e) or repr(e)}).encode() + b"\n")
    finally:
        os._exit(0)


def serve_shim_factory(socket_path: str) -> None:
    """``python -m minirt.engine shim-factory SOCKET``: fork shims on request, fast.

    A shim started as a fresh interpreter pays ~20 ms (Python's start-up and
    imports) on every ``docker run``. minirtd starts one factory instead: a
    single-threaded process with those modules loaded, which fork(2)s each shim
    in well under a millisecond (a "zygote", as Android starts its apps). Each
    request is one JSON line, as the shim reads on stdin; the shim answers on the
    same connection. The factory ends with the daemon that started it
    (PR_SET_PDEATHSIG); the shims, in sessions of their own, do not.
    """
    import json
    import socket

    from .kernel import syscalls
    from .runtime import shim  # noqa: F401  (loaded once, here, for every shim)
    from .network import sandbox
    if os.geteuid() == 0 and sandbox.netlink_available():
        # A bridged container's shim plugs its veth in with pyroute2: ~100 ms of CPU and
        # ~17 MiB to import. Imported once here, not in each shim (nor kept by each).
        from pyroute2 import IPRoute  # noqa: F401
        from .network import bridge, ipam  # noqa: F401

    def leave(number=None, frame=None):
        # The daemon died (SIGTERM from PR_SET_PDEATHSIG) or stops us: take our socket
        # and its directory along, or a kill -9 of the daemon leaves them in /tmp.
        for remove, path in ((os.unlink, socket_path), (os.rmdir, os.path.dirname(socket_path))):
            try:
                remove(path)
            except OSError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, leave)
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:   # the daemon died before the line above
        leave()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    os.chmod(socket_path, 0o600)
    listener.listen(64)
    import gc
    gc.freeze()   # the shims' garbage collector leaves what is loaded alone: pages stay shared
    while True:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as f:
            try:
                request = json.loads(f.readline())
            except ValueError:
                continue
            pid = os.fork()
            if pid == 0:
                try:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a shim does not clean up for us
                    listener.close()
                    os.setsid()
                    os.chdir(request["container_dir"])
                    log = os.open("shim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                    os.dup2(log, 2)
                    os.dup2(conn.fileno(), 1)
                    os.close(log)
                    os.close(conn.detach())
                    if os.fork():   # re-parented to init, as the spawned shim is
                        os._exit(0)
                    become_shim(request)
                finally:
                    os._exit(1)
        os.waitpid(pid, 0)


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


def parse_ulimits(ulimits) -> dict:
    """``--ulimit nofile=1024[:2048]`` -> ``{"RLIMIT_NOFILE": [1024, 2048]}`` (setrlimit(2))."""
    import resource
    found = {}
    for text in ulimits or ():
        name, _, values = str(text).partition("=")
        soft, _, hard = values.partition(":")
        key = "RLIMIT_" + name.strip().upper()
        if not hasattr(resource, key) or not soft.isdigit() or (hard and not hard.isdigit()):
            raise UsageError(f"invalid --ulimit {text!r}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048")
        found[key] = [int(soft), int(hard or soft)]
        if found[key][0] > found[key][1]:
            raise UsageError(f"invalid --ulimit {text!r}: the soft limit is above the hard one")
    return found


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


if __name__ == "__main__":
    if sys.argv[1:] == ["shim"]:
        from minirt.engine import serve_shim as _serve_shim  # the module, not this __main__ copy
        _serve_shim()
    elif sys.argv[1:2] == ["shim-factory"] and len(sys.argv) == 3:
        from minirt.engine import serve_shim_factory as _serve_shim_factory
        _serve_shim_factory(sys.argv[2])
