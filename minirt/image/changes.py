"""What a container changed, and turning it into a layer: ``diff`` and ``commit``.

Everything a container writes lands in its overlayfs *upper* directory: new
and modified files as themselves, deletions as whiteouts (a 0/0 character
device), a directory that replaced a lower one as an *opaque* directory. So
``docker diff`` is a walk of the upper dir, and ``docker commit`` packs it as
one more layer on top of the image's, with overlayfs' markers rewritten as the
OCI whiteouts (``.wh.NAME``, ``.wh..wh..opq``; image-spec layer.md).
"""

import os
import stat



def container_changes(upper: str, lower_dirs: list[str]) -> list[tuple[str, str]]:
    """``docker diff``: (A added | C changed | D deleted, path), sorted by path."""
    found = []
    for directory, dirs, files in os.walk(upper):
        relative = os.path.relpath(directory, upper)
        base = "/" if relative == "." else "/" + relative
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            in_container = os.path.join(base, name)
            st = os.lstat(path)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                found.append(("D", in_container))
            elif any(os.path.lexists(os.path.join(lower, in_container.lstrip("/")))
                     for lower in lower_dirs):
                found.append(("C", in_container))
            else:
                found.append(("A", in_container))
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(directory, d))]
    return sorted(found, key=lambda change: change[1])


def apply_changes(config: dict, changes: list[str]) -> dict:
    """``commit --change``: Dockerfile-style edits of the image config (CMD, ENV, ...).

    Supported: ``CMD [..]``/``CMD cmd``, ``ENTRYPOINT``, ``ENV K=V``, ``WORKDIR``,
    ``LABEL K=V``, ``USER``.
    """
    import json
    run = dict(config)
    for change in changes:
        keyword, _, value = change.strip().partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword in ("CMD", "ENTRYPOINT"):
            argv = json.loads(value) if value.startswith("[") else ["/bin/sh", "-c", value]
            run["Cmd" if keyword == "CMD" else "Entrypoint"] = argv
        elif keyword == "ENV":
            key, _, val = value.partition("=")
            run["Env"] = [e for e in run.get("Env", []) if not e.startswith(key + "=")] + \
                [f"{key}={val}"]
        elif keyword == "WORKDIR":
            run["WorkingDir"] = value
        elif keyword == "LABEL":
            key, _, val = value.partition("=")
            run["Labels"] = {**(run.get("Labels") or {}), key: val.strip('"')}
        elif keyword == "USER":
            run["User"] = value
        else:
            from ..errors import UsageError
            raise UsageError(f"unsupported --change {change!r}: use CMD, ENTRYPOINT, ENV, "
                             "WORKDIR, LABEL or USER")
    return run
