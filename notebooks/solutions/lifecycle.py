"""Reference solutions for notebook 6 (Container lifecycle, first half)."""

import json

KINDS = {"A": "added", "C": "changed", "D": "deleted"}


def changes_by_kind(diff_list):
    """Sort ``engine.diff(...)``'s (kind, path) pairs into added, changed, deleted."""
    found = {"added": [], "changed": [], "deleted": []}
    for kind, path in diff_list:
        found[KINDS[kind]].append(path)
    return found


def commit_and_run(engine, container, image, path):
    """Commit ``container`` as ``image`` whose CMD prints ``path``; run it with no command."""
    engine.commit(container, image, changes=["CMD " + json.dumps(["cat", path])])
    return engine.run(image)
