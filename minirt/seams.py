"""Seams: the pieces of minirt a student may replace with code of their own.

A seam is one function whose docstring states its contract (arguments,
result, errors). minirt never calls such a function directly but asks
``replaceable(name, default)``, which returns the default, unless this copy
of minirt was made by ``minirt exercise start``: then the copy's
``exercise.json`` names the student's file, and the student's function of the
same name is used instead. Swapping a piece is therefore a one-file change,
and the rest of minirt (the real runtime) tells whether it still works.

The seams (name: where the default lives):

    unshare            kernel/syscalls.py    unshare(flags): new namespaces
    sethostname        kernel/syscalls.py    sethostname(name): the UTS namespace's name
    populate_dev       kernel/devices.py     populate_dev(dev, ...): a minimal /dev
    pivot_into         kernel/mounts.py      pivot_into(root, trace): make root the new /
    write_memory_limit kernel/cgroups/v1|v2  write_memory_limit(directory, version, limit)
    apply_layer        image/layer.py        unpack(fileobj, dest, max_bytes): a layer, whiteouts
    image_manifest     image/store.py        image_manifest(config, layers): manifest, its digest
    fetch_manifest     registry/client.py    Registry.fetch_manifest(base_url, repository, ref, accept)
    list_containers    daemon/api.py         list_containers(records, query): containers_list's answer

Looking a seam up costs one ``os.path.exists`` per process: normal installs
have no ``exercise.json``.
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))
EXERCISE_FILE = os.path.join(_HERE, "exercise.json")
_overrides: dict | None = None


def _load_overrides() -> dict:
    """{seam name: path of the student's file}, from this copy's exercise.json."""
    global _overrides
    if _overrides is None:
        _overrides = {}
        if os.path.exists(EXERCISE_FILE):
            import json  # only an exercise copy pays for it (~3 ms of every start)
            with open(EXERCISE_FILE) as f:
                wiring = json.load(f)
            for name, path in (wiring.get("seams") or {}).items():
                _overrides[name] = os.path.normpath(os.path.join(_HERE, path))
    return _overrides


def replaced(name: str) -> bool:
    """Has this copy of minirt been wired to a student's ``name``?"""
    return name in _load_overrides()


def replaceable(name: str, default):
    """The function to call for seam ``name``: the student's, when wired, else ``default``."""
    path = _load_overrides().get(name)
    if path is None:
        return default
    return getattr(_student_module(path), name)


_modules: dict = {}


def _student_module(path: str):
    """Import the student's file once (by path: it is not part of the package)."""
    if path not in _modules:
        import importlib.util
        spec = importlib.util.spec_from_file_location(
            "student_" + os.path.splitext(os.path.basename(path))[0], path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[path] = module
    return _modules[path]
