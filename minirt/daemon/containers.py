"""minirtd's container endpoints: what ``docker run`` is made of.

Docker concept: ``docker run`` is not one request but four. The CLI asks the
daemon to *create* the container (``POST /containers/create``), *attaches* to
its stdio (``POST /containers/{id}/attach``: the connection is hijacked and
carries the container's raw stdin and output from then on), asks to be told
when it exits (``POST /containers/{id}/wait``, answered much later), and only
then *starts* it. Watch it happen in the request log (``GET /minirt/requests``).

Here each request goes to the same ``Engine`` the ``minirt`` command uses, and
each detached container is kept by its shim (``runtime/shim.py``), a process of
its own. So the daemon holds no container state that is not on disk (each
container's ``config.json`` and ``state.json`` under the state root): kill it
with ``kill -9``, start it again, and the running containers are still there,
still running, and can be stopped; the exited ones still show their exit code.
What it does keep in memory is only transient: one thread per running
container that waits for its exit to publish the ``die`` event, and one per
open attach, wait or ``logs -f``.

Networking: ``HostConfig.NetworkMode``, ``PortBindings``, ``Dns`` and the
IPAMConfig of ``NetworkingConfig`` become ``Engine.create``'s ``network``,
``publish``, ``dns`` and ``ip`` (``network_options``). The container's address
and its published ports exist while it runs (its sandbox's record): inspect
shows them in ``NetworkSettings``, whose ``Ports`` is what ``docker port`` prints.

Endpoints (Docker Engine API v1.43): ``POST /containers/create``,
``GET /containers/{id}/json``, ``POST /containers/{id}/start|stop|kill|restart|wait|resize|attach``,
``GET /containers/{id}/logs``, ``GET /containers/{id}/top``, ``POST /containers/prune``.
Events: create, attach, start, die (with ``exitCode``), kill, stop, restart,
resize, destroy.

Reference: https://docs.docker.com/reference/api/engine/version/v1.43/
(ContainerCreate, ContainerInspect, ContainerAttach, ContainerWait, ContainerLogs).
"""

import os
import socket
import struct
import threading
import time

from ..engine import process_alive
from ..errors import (CommandNotExecutable, CommandNotFound, ContainerError, ContainerNotFound,
                      ContainerStartError, ImageNotFound, MinirtError, NetworkError,
                      UsageError)
from ..runtime import shim
from ..runtime.jsonlog import parse_rfc3339, read_records
from .api import (Reply, _container_config, _find_container, _labels_match, _mounts,
                  parse_filters, route, seconds_of, status_for)
from .server import HTTPError

MIN_MEMORY = 6 * 1024 * 1024     # docker's smallest memory limit
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"  # 8-byte frames: no TTY
RAW = "application/vnd.docker.raw-stream"                  # the terminal's bytes: -t

# Fields of docker's create body that minirt does not act on, with what it does
# instead. Each one a client sets (to something other than its default) gets a
# warning in the answer, which the docker CLI prints: honest, not silent.
IGNORED = (
    ("HostConfig", "PublishAllPorts", "minirt publishes only the ports given with -p "
     "(PortBindings)"),
    ("Config", "Volumes", "minirt has no anonymous volumes: use a bind (-v HOST:PATH)"),
    ("Config", "Healthcheck", "minirt runs no health checks"),
    ("HostConfig", "Mounts", "minirt takes bind mounts as Binds (-v HOST:PATH) only"),
    ("HostConfig", "Devices", "minirt passes no host devices into containers"),
    ("HostConfig", "DnsSearch", "minirt's resolv.conf has nameserver lines only (--dns)"),
    ("HostConfig", "DnsOptions", "minirt's resolv.conf has nameserver lines only (--dns)"),
    ("HostConfig", "ExtraHosts", "minirt writes no extra lines into /etc/hosts"),
    ("HostConfig", "Links", "minirt has no links: put the containers on a network of your "
     "own (docker network create), where they find each other by name"),
    ("HostConfig", "CpuShares", "minirt sets no CPU shares (use NanoCpus, --cpus)"),
    ("HostConfig", "CpusetCpus", "minirt does not pin containers to CPUs"),
    ("HostConfig", "MemoryReservation", "minirt sets no memory reservation (only Memory)"),
    ("HostConfig", "Tmpfs", "minirt mounts no extra tmpfs"),
    ("HostConfig", "Init", "minirt runs the command itself as PID 1 (no --init)"),
    ("HostConfig", "VolumesFrom", "minirt has no volumes to share"),
)


# --- reading docker's create body ------------------------------------------------------
def _typed(section: dict, key: str, kind, where: str):
    """``section[key]`` if it has the JSON type docker's schema gives it (None if absent)."""
    value = section.get(key)
    if value is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    wrong_bool = isinstance(value, bool) and bool not in kinds  # JSON true is not a number
    if wrong_bool or not isinstance(value, kinds):
        names = {int: "an integer", str: "a string", bool: "true or false", list: "a list",
                 dict: "an object"}
        wanted = " or ".join(names.get(k, k.__name__) for k in kinds)
        raise HTTPError(400, f"invalid {where}.{key}: {value!r} is not {wanted}")
    return value


def _strings(section: dict, key: str, where: str, one: bool = False) -> list[str] | None:
    """A []string field (``one``: a single string too, as docker takes Cmd and Entrypoint)."""
    value = _typed(section, key, (list, str) if one else list, where)
    if isinstance(value, str):
        return [value]
    if value is not None and not all(isinstance(v, str) for v in value):
        raise HTTPError(400, f"invalid {where}.{key}: {value!r} is not a list of strings")
    return value


def create_options(body: dict) -> tuple[str, dict, list[str]]:
    """Docker's create body -> (image, ``Engine.create`` keyword arguments, warnings)."""
    config = body
    host = _typed(body, "HostConfig", dict, "body") or {}
    image = _typed(config, "Image", str, "Config")
    if not image:
        raise HTTPError(400, "Config.Image is required: which image should the container run?")
    env = _strings(config, "Env", "Config") or []
    labels = _typed(config, "Labels", dict, "Config") or {}
    if not all(isinstance(v, str) for v in labels.values()):
        raise HTTPError(400, f"invalid Config.Labels: {labels!r}: values must be strings")
    options = {
        "command": _strings(config, "Cmd", "Config", one=True),
        "entrypoint": _strings(config, "Entrypoint", "Config", one=True),
        # A bare "KEY" means "unset" to dockerd; copying the daemon's own value would leak it.
        "env": [item for item in env if "=" in item],
        "workdir": _typed(config, "WorkingDir", str, "Config") or None,
        "hostname": _typed(config, "Hostname", str, "Config") or None,
        "tty": bool(_typed(config, "Tty", bool, "Config")),
        "stdin_open": bool(_typed(config, "OpenStdin", bool, "Config")),
        "labels": labels,
        "remove": bool(_typed(host, "AutoRemove", bool, "HostConfig")),
        "volumes": _strings(host, "Binds", "HostConfig") or [],
    }
    for key in ("AttachStdin", "AttachStdout", "AttachStderr", "StdinOnce"):
        _typed(config, key, bool, "Config")  # the attach request says what is attached
    memory = _typed(host, "Memory", int, "HostConfig")
    memory = memory if memory and memory > 0 else None  # 0: no limit, as docker
    if memory and memory < MIN_MEMORY:
        raise HTTPError(400, f"invalid HostConfig.Memory {memory}: the minimum memory limit "
                        "is 6MB (6291456 bytes)")
    options["memory"] = memory
    nano = _typed(host, "NanoCpus", int, "HostConfig")
    quota = _typed(host, "CpuQuota", int, "HostConfig")
    period = _typed(host, "CpuPeriod", int, "HostConfig")
    if nano and (quota or period):
        raise HTTPError(400, "conflicting options: NanoCpus and CpuPeriod/CpuQuota cannot both "
                        "be set")
    if nano:
        options["cpus"] = nano / 1e9
    elif quota and quota > 0:
        options["cpus"] = quota / (period or 100_000)
    pids = _typed(host, "PidsLimit", int, "HostConfig")
    options["pids_limit"] = pids if pids and pids > 0 else None
    warnings = [f"{where}.{key} is ignored: {why}" for where, key, why in IGNORED
                if (config if where == "Config" else host).get(key)]  # set, not the empty default
    options.update(network_options(body, host, warnings))
    options.update(security_options(config, host))
    restart = (_typed(host, "RestartPolicy", dict, "HostConfig") or {}).get("Name") or "no"
    if restart != "no":
        warnings.append(f"restart policy {restart!r} is ignored: minirt never restarts a "
                        "container by itself")
    log_type = (_typed(host, "LogConfig", dict, "HostConfig") or {}).get("Type") or "json-file"
    if log_type != "json-file":
        warnings.append(f"log driver {log_type!r} is ignored: minirt writes the json-file log")
    swap = _typed(host, "MemorySwap", int, "HostConfig")
    if swap and swap > 0 and swap != memory:
        warnings.append("HostConfig.MemorySwap is ignored: a minirt container gets no swap "
                        "beyond its Memory")
    return image, options, warnings


def security_options(config: dict, host: dict) -> dict:
    """Docker's hardening fields -> ``Engine.create``'s ``user``, ``privileged``, ``cap_add``,
    ``cap_drop``, ``security_opt``, ``read_only`` and ``ulimits`` (minirt/security/)."""
    ulimits = []
    for limit in _typed(host, "Ulimits", list, "HostConfig") or []:
        if not (isinstance(limit, dict) and isinstance(limit.get("Name"), str)
                and isinstance(limit.get("Soft"), int) and isinstance(limit.get("Hard"), int)):
            raise HTTPError(400, f"invalid HostConfig.Ulimits entry {limit!r}: "
                            '{"Name": "nofile", "Soft": 1024, "Hard": 2048} expected')
        ulimits.append(f"{limit['Name']}={limit['Soft']}:{limit['Hard']}")
    return {"user": _typed(config, "User", str, "Config") or None,
            "privileged": bool(_typed(host, "Privileged", bool, "HostConfig")),
            "cap_add": _strings(host, "CapAdd", "HostConfig") or [],
            "cap_drop": _strings(host, "CapDrop", "HostConfig") or [],
            "security_opt": _strings(host, "SecurityOpt", "HostConfig") or [],
            "read_only": bool(_typed(host, "ReadonlyRootfs", bool, "HostConfig")),
            "ulimits": ulimits}


def network_options(body: dict, host: dict, warnings: list[str]) -> dict:
    """Docker's network fields -> ``Engine.create``'s ``network``, ``ip``, ``publish``, ``dns``.

    * ``HostConfig.NetworkMode``: ``bridge``, ``none``, ``host`` or a network's name;
      ``default`` (what the docker CLI sends without --network) is minirt's default,
      bridge as root and none without (``network.sandbox.default_mode``).
    * ``NetworkingConfig.EndpointsConfig[NETWORK].IPAMConfig.IPv4Address``: ``--ip``.
    * ``HostConfig.PortBindings``: ``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}``
      is ``-p 8080:80``. An empty HostIp is 127.0.0.1 here (docker binds every
      interface, 0.0.0.0; this lab exposes nothing beyond the machine unless asked),
      an empty HostPort any free port. TCP only.
    * ``HostConfig.Dns``: ``--dns``, the nameservers of the container's resolv.conf.
    """
    mode = _typed(host, "NetworkMode", str, "HostConfig") or "default"
    if mode.startswith("container:"):
        raise HTTPError(400, f"HostConfig.NetworkMode {mode!r} is not supported: minirt "
                        "cannot share another container's network namespace")
    networking = _typed(body, "NetworkingConfig", dict, "body") or {}
    endpoints = _typed(networking, "EndpointsConfig", dict, "NetworkingConfig") or {}
    others = [name for name in endpoints if name not in (mode, "default")]
    if mode == "default" and len(others) == 1:  # docker-py's networking_config alone
        mode, others = others[0], []
    if others:
        raise HTTPError(400, f"minirt connects a container to one network, not to "
                        f"{', '.join([mode] + others)}")
    endpoint = _typed(endpoints, mode, dict, "NetworkingConfig.EndpointsConfig") or \
        _typed(endpoints, "default", dict, "NetworkingConfig.EndpointsConfig") or {}
    where = f"NetworkingConfig.EndpointsConfig.{mode}"
    addresses = _typed(endpoint, "IPAMConfig", dict, where) or {}
    ip = _typed(addresses, "IPv4Address", str, where + ".IPAMConfig") or None
    for key, why in (("IPv6Address", "minirt's networks are IPv4 only"),
                     ("Aliases", "containers are found by their name and hostname only"),
                     ("Links", "minirt has no links"),
                     ("MacAddress", "the kernel picks the MAC address")):
        if (addresses if key == "IPv6Address" else endpoint).get(key):
            warnings.append(f"{where}.{key} is ignored: {why}")
    return {"network": None if mode == "default" else mode, "ip": ip,
            "publish": _port_bindings(host), "dns": _strings(host, "Dns", "HostConfig") or []}


def _port_bindings(host: dict) -> list:
    """``HostConfig.PortBindings`` -> ``PortMapping``s, each checked as ``-p`` is."""
    bindings = _typed(host, "PortBindings", dict, "HostConfig") or {}
    if not bindings:
        return []
    from ..network.proxy import parse_publish
    mappings = []
    for key, entries in bindings.items():
        port, _, protocol = key.partition("/")
        if (protocol or "tcp") != "tcp":
            raise HTTPError(400, f"cannot publish {key}: minirt publishes only tcp ports "
                            f"(its proxy relays TCP connections), not {protocol}")
        if entries is not None and not (isinstance(entries, list) and
                                        all(isinstance(e, dict) for e in entries)):
            raise HTTPError(400, f"invalid HostConfig.PortBindings[{key!r}]: {entries!r} is "
                            "not a list of {\"HostIp\", \"HostPort\"}")
        for entry in entries or []:
            address = str(entry.get("HostIp") or "")
            text = f"{f'[{address}]' if ':' in address else address}:" \
                   f"{entry.get('HostPort') or ''}:{port}"
            try:
                mappings.append(parse_publish(text))
            except UsageError as e:
                raise HTTPError(400, f"invalid HostConfig.PortBindings[{key!r}]: {e}") from None
    return mappings


@route("POST", r"/containers/create")
def container_create(request):
    """``docker create`` (and the first step of ``docker run``): a container, not started."""
    body = request.json(default=None)
    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object (docker's container Config "
                        "with its HostConfig)")
    image, options, warnings = create_options(body)
    name = request.arg("name") or None
    if name:
        name = name.lstrip("/")
    daemon = request.daemon
    command = options.pop("command")
    with daemon.lock:
        try:
            container_id = daemon.engine.create(image, command, name=name,
                                                notice=warnings.append, **options)
        except ImageNotFound:
            # The docker CLI and docker-py pull on this 404 (``POST /images/create``) and retry.
            raise ImageNotFound(f"No such image: {_familiar(image)}") from None
        except NetworkError as e:
            if status_for(e) == 404:
                # Not a 404 here: the docker CLI takes any 404 from create for a missing
                # image and pulls it. (dockerd finds out at start, minirt already now.)
                raise HTTPError(400, str(e)) from None
            raise
    c = daemon.engine.find_container(container_id)
    _publish(daemon, "create", c)
    return Reply(201, {"Id": container_id, "Warnings": warnings})


def _familiar(image: str) -> str:
    from ..image import reference
    try:
        return reference.parse(image).familiar
    except MinirtError:
        return image


# --- inspect ---------------------------------------------------------------------------
@route("GET", r"/containers/(?P<ref>[^/]+)/json")
def container_inspect(request, ref):
    """``docker inspect CONTAINER``: docker's shape, from ``Engine.inspect``."""
    daemon = request.daemon
    engine = daemon.engine
    with daemon.lock:
        engine.reap_stale()  # a container whose owner was killed: say so, not "running"
        c = _find_container(engine, ref)
        found = engine.inspect(c["id"])
    state = found["State"]
    if state["Status"] == "running" and not state["Running"]:
        state["Status"] = "exited"  # between its exit and the shim's last word
    directory = os.path.join(engine.containers_dir, c["id"])
    limits = c.get("limits") or {}
    command = c.get("command") or []
    storage = "overlay2" if c.get("storage") == "overlay" else c.get("storage", "")
    logged = bool(c.get("shim"))  # a detached container's shim keeps a json-file log
    stdin = bool(c.get("stdin"))
    return {
        "Id": c["id"], "Created": found["Created"], "Path": found["Path"], "Args": found["Args"],
        "State": state,
        "Image": found["Image"], "ResolvConfPath": "", "HostnamePath": "", "HostsPath": "",
        "LogPath": found["LogPath"] if logged else "", "Name": found["Name"],
        "RestartCount": 0, "Driver": storage, "Platform": "linux", "MountLabel": "",
        "ProcessLabel": "", "AppArmorProfile": "", "ExecIDs": None,
        "HostConfig": {
            "Binds": [f"{v['source']}:{v['target']}" + (":ro" if v.get("readonly") else "")
                      for v in c.get("volumes") or []] or None,
            "NetworkMode": found["HostConfig"]["NetworkMode"], "PortBindings": _bindings(c),
            "Dns": list(c.get("dns") or []), "AutoRemove": bool(c.get("auto_remove")),
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "Memory": limits.get("memory") or 0, "MemorySwap": limits.get("memory") or 0,
            "NanoCpus": int(round((limits.get("cpus") or 0) * 1e9)),
            "CpuQuota": 0, "CpuPeriod": 0, "PidsLimit": limits.get("pids"),
            "CgroupParent": engine.cgroup_parent, "Runtime": "minirt", "Privileged": False,
            "ReadonlyRootfs": False,
            "LogConfig": {"Type": "json-file" if logged else "none", "Config": {}}},
        "GraphDriver": {"Name": storage,
                        "Data": {"LowerDir": ":".join(c.get("layers") or []),
                                 "UpperDir": os.path.join(directory, "upper"),
                                 "WorkDir": os.path.join(directory, "work"),
                                 "MergedDir": os.path.join(directory, "rootfs")}},
        "Mounts": _mounts(c),
        "Config": _container_config(
            {}, Hostname=c.get("hostname", ""), Tty=bool(c.get("tty")), OpenStdin=stdin,
            AttachStdin=stdin, StdinOnce=stdin, AttachStdout=True, AttachStderr=True,
            Env=[f"{k}={v}" for k, v in (c.get("env") or {}).items()], Cmd=command,
            Image=c.get("image", ""), WorkingDir=c.get("workdir", "/"),
            Labels=c.get("labels") or {},
            ExposedPorts={key: {} for key in _bindings(c)} or None),
        "NetworkSettings": _network_settings(engine, c, found),
    }


def _bindings(c: dict) -> dict:
    """HostConfig.PortBindings: the ``-p`` mappings asked for (host port "" = any)."""
    bindings = {}
    for p in c.get("ports") or []:
        bindings.setdefault(f"{p['container_port']}/{p['protocol']}", []).append(
            {"HostIp": p["host_ip"], "HostPort": str(p["host_port"] or "")})
    return bindings


def _network_settings(engine, c: dict, found: dict) -> dict:
    """Docker's NetworkSettings, from ``Engine.inspect``'s (the sandbox's record while the
    container runs): ``Ports`` is what ``docker port`` prints, the host ports as bound."""
    from .api import network_record
    from .networks import endpoint_settings
    settings = dict(found["NetworkSettings"])
    mode = found["HostConfig"]["NetworkMode"]
    record = network_record(engine, c)
    endpoint = endpoint_settings(mode, record)
    settings.pop("NetworkID", None)  # a field of each network's entry, not of the whole
    if not record:
        settings["Ports"] = {}  # a stopped container publishes nothing
    return {"Bridge": "", "SandboxID": "", "HairpinMode": False, "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0, "SandboxKey": "", "SecondaryIPAddresses": None,
            "SecondaryIPv6Addresses": None, "EndpointID": endpoint["EndpointID"],
            "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPAddress": "",
            "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "", **settings,
            "Networks": {mode: endpoint}}


# --- start, stop, kill, restart --------------------------------------------------------
@route("POST", r"/containers/(?P<ref>[^/]+)/start")
def container_start(request, ref):
    """``docker start``: 204 when started, 304 when it was running already."""
    daemon = request.daemon
    engine = daemon.engine
    c = _find_container(engine, ref)
    if c["running"]:
        return Reply(304)
    # Listen for its exit before it can happen (an --rm container leaves no trace after).
    watcher = _Watcher(daemon, c) if _shim_created(engine, c) else None
    try:
        engine.start(c["id"])
    except BaseException as e:
        if watcher is not None:
            watcher.cancel()
        if isinstance(e, (CommandNotFound, CommandNotExecutable)):
            # The docker CLI reads these words to exit 127 / 126, as a shell would.
            words = "executable file not found in $PATH" if isinstance(e, CommandNotFound) \
                else "permission denied"
            raise HTTPError(400, f"failed to start container {c['name']}: {e} ({words})") from e
        if isinstance(e, ContainerStartError):
            raise HTTPError(400, f"failed to start container {c['name']}: {e}") from e
        raise
    _publish(daemon, "start", c)
    (watcher or _Watcher(daemon, c)).begin()
    return None


def _shim_created(engine, c: dict) -> bool:
    return engine._shim_alive(c) and (c.get("state") or {}).get("status") == "created"


@route("POST", r"/containers/(?P<ref>[^/]+)/stop")
def container_stop(request, ref):
    """``docker stop -t N``: SIGTERM, SIGKILL after N seconds; 304 if it was not running."""
    daemon = request.daemon
    engine = daemon.engine
    timeout = request.int_arg("t", 10)
    c = _find_container(engine, ref)
    if not c["running"]:
        return Reply(304)
    _ensure_watcher(daemon, c)
    _publish(daemon, "kill", c, signal="15")
    engine.stop(c["id"], timeout=max(timeout, 0) if timeout is not None else 10)
    _joined(daemon, c["id"])  # its die event first, as docker orders them
    _publish(daemon, "stop", c)
    return None


@route("POST", r"/containers/(?P<ref>[^/]+)/kill")
def container_kill(request, ref):
    """``docker kill -s SIG``: the signal as it is (409 when the container is not running)."""
    from ..engine import parse_signal
    daemon = request.daemon
    number = parse_signal(request.arg("signal") or "KILL")
    c = _find_container(daemon.engine, ref)
    _ensure_watcher(daemon, c)
    daemon.engine.kill(c["id"], number)
    _publish(daemon, "kill", c, signal=str(number))
    return None


@route("POST", r"/containers/(?P<ref>[^/]+)/restart")
def container_restart(request, ref):
    """``docker restart -t N``: stop (as docker stop), then start with a new PID 1."""
    daemon = request.daemon
    engine = daemon.engine
    timeout = request.int_arg("t", 10)
    c = _find_container(engine, ref)
    if c["running"]:
        _ensure_watcher(daemon, c)
        _publish(daemon, "kill", c, signal="15")
        engine.stop(c["id"], timeout=max(timeout, 0) if timeout is not None else 10)
        _joined(daemon, c["id"])
        _publish(daemon, "stop", c)
    engine.start(c["id"])
    _publish(daemon, "start", c)
    _Watcher(daemon, c).begin()
    _publish(daemon, "restart", c)
    return None


# --- the die event: one thread per running container -----------------------------------
class _Watcher:
    """Waits for one run of a container to end, then publishes ``die`` (and, for an
    --rm container, ``destroy``). Its connection to the shim is made at once, so an
    exit that follows immediately is not missed."""

    def __init__(self, daemon, c: dict):
        self.daemon, self.c = daemon, c
        self.sock = None
        try:
            path = os.path.join(daemon.engine.containers_dir, c["id"], shim.CONTROL_SOCKET)
            self.sock = shim.connect(path, timeout=5)
            self.sock.sendall(b'{"op": "wait"}\n')
        except OSError:
            if self.sock is not None:
                self.sock.close()
            self.sock = None  # no shim (any more): the state on disk says how it ended
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"minirtd-watch-{c['id'][:12]}")

    def cancel(self) -> None:
        if self.sock is not None:
            self.sock.close()

    def begin(self) -> None:
        with self.daemon.lock:
            watchers = _watchers(self.daemon)
            watchers[self.c["id"]] = self.thread
            for key in [k for k, t in watchers.items() if not t.is_alive() and t is not self.thread]:
                del watchers[key]
        self.thread.start()

    def _run(self) -> None:
        answer = {}
        if self.sock is not None:
            self.sock.settimeout(None)
            try:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = self.sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                answer = _json(data)
            except OSError:
                pass
            finally:
                self.sock.close()
        code = answer.get("exit_code")
        engine = self.daemon.engine
        if code is None:
            try:
                now = engine.find_container(self.c["id"])
            except MinirtError:
                now = None
            if now is None or now["state"].get("status") != "exited":
                return  # removed before it ran, or started again: nothing ended here
            code = now["state"].get("exit_code")
            code = -1 if code is None else code
        _publish(self.daemon, "die", self.c, exitCode=str(code))
        if self.c.get("auto_remove"):
            deadline = time.monotonic() + 10
            while os.path.isdir(os.path.join(engine.containers_dir, self.c["id"])) and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            _publish(self.daemon, "destroy", self.c)


def _json(data: bytes) -> dict:
    import json
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _watchers(daemon) -> dict:
    watchers = getattr(daemon, "container_watchers", None)
    if watchers is None:
        watchers = daemon.container_watchers = {}
    return watchers


def adopt_running(daemon) -> None:
    """At start-up: watch the containers an earlier daemon (or ``minirt run -d``) left
    running, whose shims outlived it, so their ``die`` events are not lost."""
    for c in daemon.engine.containers():
        if c.get("running"):
            _ensure_watcher(daemon, c)


def _ensure_watcher(daemon, c: dict) -> None:
    """A container started by an earlier daemon (or by ``minirt run -d``) gets a watcher too."""
    thread = _watchers(daemon).get(c["id"])
    # Only a *running* one: an exited container's shim may linger a moment (draining its
    # output); a watcher made then would answer at once and publish a second ``die``.
    if (thread is None or not thread.is_alive()) and c.get("running") and \
            daemon.engine._shim_alive(c):
        _Watcher(daemon, c).begin()


def _joined(daemon, container_id: str, timeout: float = 5.0) -> None:
    thread = _watchers(daemon).get(container_id)
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)


def _publish(daemon, action: str, c: dict, **extra) -> None:
    attributes = {**(c.get("labels") or {}), "name": c["name"], "image": c.get("image", ""),
                  **extra}
    daemon.events.publish("container", action, c["id"], attributes)


# --- wait ------------------------------------------------------------------------------
CONDITIONS = ("not-running", "next-exit", "removed")


@route("POST", r"/containers/(?P<ref>[^/]+)/wait")
def container_wait(request, ref):
    """``docker wait``: block until the condition holds, then ``{"StatusCode": N}``.

    The response header goes out at once, as dockerd sends it: ``docker run``
    waits for it before it starts the container, so the wait is in place
    before the container can exit.
    """
    condition = request.arg("condition") or "not-running"
    if condition not in CONDITIONS:
        raise HTTPError(400, f"invalid condition {condition!r}: use one of {', '.join(CONDITIONS)}")
    engine = request.daemon.engine
    c = _find_container(engine, ref)
    with request.json_stream() as stream:
        code = _wait(request, engine, c, condition)
        if code is None:
            request._conn.close_connection = True  # the client left: nobody to answer
            return
        stream.send({"StatusCode": code, "Error": None})


def _exit_code(c: dict) -> int:
    state = c.get("state") or {}
    if state.get("status") != "exited":
        return 0
    code = state.get("exit_code")
    return -1 if code is None else code


def _wait(request, engine, c: dict, condition: str) -> int | None:
    """The exit code once ``condition`` holds; None when the client went away first."""
    container_id = c["id"]
    state = c.get("state") or {}
    if condition == "not-running" and not c["running"] and state.get("status") != "running":
        return _exit_code(c)
    last = _exit_code(c)
    if condition == "next-exit" and state.get("status") == "exited":
        # Not this exit: the next one. Wait for the container to be started again.
        finished = state.get("finished_at")
        while True:
            try:
                now = engine.find_container(container_id)
            except ContainerNotFound:
                return last
            if now["state"].get("status") != "exited" or now["state"].get("finished_at") != finished:
                break
            if request.client_gone(0.2):
                return None
    while True:
        try:
            c = engine.find_container(container_id)
        except ContainerNotFound:
            return last  # removed (an --rm container, or docker rm -f meanwhile)
        status = c["state"].get("status")
        if status == "exited" and not c["running"]:
            last = _exit_code(c)
            if condition != "removed":
                return last
            if request.client_gone(0.1):
                return None
            continue
        if engine._shim_alive(c):
            answer = _shim_wait(request, engine, c)
            if answer is None:
                return None
            if "exit_code" in answer:
                last = answer["exit_code"]
                if condition != "removed":
                    return last
            continue  # see the state on disk (or that it is gone)
        if not process_alive(c.get("owner")):
            try:  # its owner was killed: record that (or it is being removed right now)
                with request.daemon.lock:
                    engine.reap_stale()
            except OSError:
                pass
            if request.client_gone(0.05):
                return None
            continue
        if request.client_gone(0.1):  # a foreground `minirt run`: it writes the state itself
            return None


def _shim_wait(request, engine, c: dict) -> dict | None:
    """The shim's answer to ``wait`` ({} if it went away); None if our client did first."""
    try:
        sock = shim.connect(os.path.join(engine.containers_dir, c["id"], shim.CONTROL_SOCKET),
                            timeout=5)
    except OSError:
        time.sleep(0.02)
        return {}
    import select
    with sock:
        try:
            sock.sendall(b'{"op": "wait"}\n')
            data = b""
            while not data.endswith(b"\n"):
                if select.select([sock], [], [], 0.5)[0]:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return {}
                    data += chunk
                elif request.client_gone():
                    return None
        except OSError:
            return {}
    return _json(data)


# --- attach ----------------------------------------------------------------------------
@route("POST", r"/containers/(?P<ref>[^/]+)/attach")
def container_attach(request, ref):
    """``docker attach`` (and ``docker run``'s second step): the connection becomes the
    container's stdio, spliced to its shim's attach socket in both directions."""
    daemon = request.daemon
    engine = daemon.engine
    c = _find_container(engine, ref)
    stream = request.flag("stream")
    logs = request.flag("logs")
    want_stdin = request.flag("stdin")
    wanted = {1: request.flag("stdout"), 2: request.flag("stderr")}
    if not stream and not logs:
        raise HTTPError(400, "Bad parameters: you must choose at least one stream "
                        "(stream=1 or logs=1)")
    tty = bool(c.get("tty"))
    upstream = None
    if stream:
        if not engine._shim_alive(c):
            raise ContainerError(f"You cannot attach to a stopped container, start it first "
                                 f"(container {c['name']} has no shim: it has exited, or was "
                                 "run in the foreground)")
        upstream = engine.attach(c["id"])
        upstream.settimeout(None)
    try:
        raw = request.hijack(RAW if tty else MULTIPLEXED)
    except BaseException:
        if upstream is not None:
            upstream.close()
        raise
    _publish(daemon, "attach", c)
    try:
        if logs:
            # A moment first: some clients (docker-py) read the response header through
            # a buffered reader, then switch to the raw socket; history sent in the same
            # burst as the header would be stranded in that reader's buffer.
            time.sleep(0.05)
            for record in read_records(engine.log_path(c)):
                number = 2 if record.get("stream") == "stderr" else 1
                if wanted[number]:
                    data = record["log"].encode()
                    raw.write(data) if tty else raw.write_frame(number, data)
        if upstream is not None:
            _splice(raw, upstream, want_stdin, wanted, tty)
    except OSError:
        pass  # the client went away
    finally:
        raw.close_write()
        if upstream is not None:
            upstream.close()


def _splice(raw, upstream: socket.socket, want_stdin: bool, wanted: dict, tty: bool) -> None:
    """Client -> shim (stdin, on a thread) and shim -> client (output, here) until the shim
    closes: the container has exited and its last output was sent."""

    def client_to_shim():
        try:
            while True:
                data = raw.read()
                if not data:
                    break
                if want_stdin:
                    upstream.sendall(data)
        except OSError:
            return
        if want_stdin:  # the client's half-close: close the container's stdin (StdinOnce)
            try:
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    reader = threading.Thread(target=client_to_shim, daemon=True, name="minirtd-attach-stdin")
    reader.start()
    filtering = not (wanted[1] and wanted[2])
    pending = b""
    try:
        while True:
            data = upstream.recv(65536)
            if not data:
                break
            if not filtering:
                raw.write(data)  # frames (or terminal bytes) as the shim sends them
            elif tty:
                if wanted[1]:
                    raw.write(data)
            else:
                pending += data
                while len(pending) >= 8:
                    number, size = struct.unpack(">BxxxI", pending[:8])
                    if len(pending) < 8 + size:
                        break
                    if wanted.get(number):
                        raw.write(pending[:8 + size])
                    pending = pending[8 + size:]
    finally:
        try:
            raw.socket.shutdown(socket.SHUT_RD)  # wakes the stdin thread: it reads EOF
        except OSError:
            pass
        reader.join(2)


# --- logs ------------------------------------------------------------------------------
@route("GET", r"/containers/(?P<ref>[^/]+)/logs")
def container_logs(request, ref):
    """``docker logs [-f] [--tail N] [-t] [--since T] [--until T]``: from the json-file log;
    multiplexed frames without a TTY, the raw bytes with one."""
    engine = request.daemon.engine
    c = _find_container(engine, ref)
    wanted = {"stdout": request.flag("stdout"), "stderr": request.flag("stderr")}
    if not any(wanted.values()):
        raise HTTPError(400, "Bad parameters: you must choose at least one stream "
                        "(stdout=1 and/or stderr=1)")
    follow, timestamps = request.flag("follow"), request.flag("timestamps")
    tail_text = request.arg("tail") or "all"
    if tail_text == "all":
        tail = None
    else:
        try:
            tail = int(tail_text)
        except ValueError:
            raise HTTPError(400, f"invalid tail {tail_text!r}: give a number or all") from None
        tail = None if tail < 0 else tail
    since = _log_time(request.arg("since"), "since")
    until = _log_time(request.arg("until"), "until")
    tty = bool(c.get("tty"))
    container_id = c["id"]

    def still_running() -> bool:
        if request.client_gone():
            return False
        try:
            now = engine.find_container(container_id)
        except MinirtError:
            return False
        return now["state"].get("status") == "running" and (
            now["running"] or process_alive(now.get("owner")))

    records = read_records(engine.log_path(c), follow=still_running if follow else None,
                           tail=tail)
    with request.json_stream(content_type=RAW if tty else MULTIPLEXED) as out:
        for record in records:
            name = record.get("stream")
            if not wanted.get(name):
                continue
            if since or until:
                when = parse_rfc3339(record.get("time", "")) or 0
                if (since and when < since) or (until and when > until):
                    if until and when > until:
                        break
                    continue
            data = record["log"].encode()
            if timestamps:
                data = record["time"].encode() + b" " + data
            if tty:
                out.write(data)
            else:
                out.write(struct.pack(">BxxxI", 2 if name == "stderr" else 1, len(data)) + data)


def _log_time(text: str | None, name: str) -> float | None:
    """``since``/``until``: Unix seconds (with a fraction) as the docker CLI sends them."""
    if text in (None, "", "0"):
        return None
    try:
        return float(text)
    except ValueError:
        parsed = seconds_of(text)
        if parsed is None:
            raise HTTPError(400, f"invalid {name} {text!r}: give Unix seconds") from None
        return parsed


# --- resize, top, prune ----------------------------------------------------------------
@route("POST", r"/containers/(?P<ref>[^/]+)/resize")
def container_resize(request, ref):
    """The terminal size of a ``-t`` container (the docker CLI sends its own, and on SIGWINCH)."""
    daemon = request.daemon
    height, width = request.int_arg("h"), request.int_arg("w")
    if height is None or width is None or not (0 < height < 65536 and 0 < width < 65536):
        raise HTTPError(400, "give the terminal size as h=ROWS&w=COLUMNS (1 to 65535)")
    c = _find_container(daemon.engine, ref)
    if not c["running"] or not daemon.engine._shim_alive(c):
        raise ContainerError(f"container {c['name']} is not running")
    daemon.engine.resize(c["id"], height, width)
    _publish(daemon, "resize", c, height=str(height), width=str(width))
    return Reply(200, body=b"", content_type="text/plain; charset=utf-8")


@route("GET", r"/containers/(?P<ref>[^/]+)/top")
def container_top(request, ref):
    """``docker top``: the container's processes (``ps_args`` is not supported: ``ps -ef``'s
    columns always)."""
    engine = request.daemon.engine
    return engine.top(_find_container(engine, ref)["id"])


@route("POST", r"/containers/prune")
def containers_prune(request):
    """``docker container prune``: remove every container that is not running."""
    from .api import parse_timestamp
    daemon = request.daemon
    engine = daemon.engine
    filters = parse_filters(request)
    until = parse_timestamp((filters.get("until") or [None])[0], "until")
    removed = []
    with daemon.lock:
        engine.reap_stale()
        for c in engine.containers():
            if c["running"] or (c.get("state") or {}).get("status") == "running":
                continue
            if until is not None and c.get("created", 0) * 1e9 > until:
                continue
            if not _labels_match(c.get("labels") or {}, filters.get("label", [])):
                continue
            try:
                engine.remove_container(c["id"], force=True)
            except ContainerNotFound:
                continue
            removed.append(c)
    for c in removed:
        _publish(daemon, "destroy", c)
    daemon.events.publish("container", "prune", "", {"reclaimed": "0"})
    return {"ContainersDeleted": [c["id"] for c in removed] or None, "SpaceReclaimed": 0}
