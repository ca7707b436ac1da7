"""Versions of mergeable files a replica knows its copies descend from, kept with their content as
merge bases: the versions a copy's source had in common with its own peers (carried along by
Run._carry_bases).

In a mesh, two machines can each take one of two concurrent edits from the machines that made
them, neither ever holding the version both edits were made from.  Their merge then had only an
older common version to go by, and a line one side removed since looked like the other side's
insertion: it came back, and a later merge of the same edits made elsewhere undid one of the two
merges.  With the versions a copy descends from kept here, the merge finds the true latest
common version (op merge_bases answers these as well as the ancestors' entries).

`bases.json` in the state dir: {"format": 1, "paths": {path: [[hash, vector], …]}}, at most
PER_PATH versions a path (those with the most events, fewest first); their content lives with the other merge bases
(Store's log base dir) and is pruned with them when no record refers to it.  A cache for better
merges, not data: lost or unreadable, merges fall back to the bases the ancestors name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from peersync.workspace.storage import atomic_write_bytes, ensure_private_dir

FILE = "bases.json"
FORMAT = 1
PER_PATH = 8  # the latest versions of a path kept as bases (a handful of concurrent edits)
MAX_BASE = 16 << 20  # as mergefile.BASE_MAX: larger files keep no merge base


# The last parse of each state dir's file, by the file's identity: a kept agent or a keeper asks on
# every sync that copies or merges a memory file.  Read-only for callers.
_PARSED: dict[str, tuple[tuple, dict]] = {}


def load(state: Path) -> dict[str, list[list]]:
    """{path: [[hash, vector wire], …]}; {} when there is none or it cannot be read (callers
    never modify it)."""
    where = os.path.join(state, FILE)
    try:
        with open(where, "rb") as f:
            st = os.fstat(f.fileno())
            ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            kept = _PARSED.get(where)
            if kept is not None and kept[0] == ident:
                return kept[1]
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    paths = doc.get("paths") if isinstance(doc, dict) and doc.get("format") == FORMAT else None
    paths = paths if isinstance(paths, dict) else {}
    _PARSED[where] = (ident, paths)
    return paths


def remember(state: Path, items: list[tuple[str, str, list]]) -> int:
    """Record (path, hash, vector wire) triples (whose content is kept already); beyond PER_PATH
    a path keeps those with the most events.  How many were new."""
    paths = dict(load(state))  # a copy: the parsed one is shared
    added = 0
    for path, digest, vv in items:
        known = [k for k in paths.get(path, []) if isinstance(k, list) and len(k) == 2]
        if [digest, vv] in known:
            continue
        # By events, not by arrival: a version has more than any it descends from, so what is
        # forgotten is older than what stays — never a merge's inputs for the old versions a
        # copy's source knew below them (which arrive with them).
        kept = sorted([*known, [digest, vv]], key=lambda k: _events(k[1]))[-PER_PATH:]
        if [digest, vv] in kept:
            paths[path] = kept
            added += 1
    if added:
        ensure_private_dir(Path(state))
        atomic_write_bytes(Path(state) / FILE, json.dumps({"format": FORMAT, "paths": paths},
                                                          sort_keys=True, separators=(",", ":")).encode(),
                           durable=False)  # a cache (see above): no fsync
    return added


def _events(vv) -> int:
    """How many events a vector (wire form) counts; 0 for a malformed one."""
    if not isinstance(vv, list):
        return 0
    return sum(p[1] for p in vv if isinstance(p, list) and len(p) == 2 and type(p[1]) is int)


def hashes(state: Path) -> set[str]:
    """Every content hash a record refers to (kept when unreferenced merge bases are pruned)."""
    return {k[0] for known in load(state).values() if isinstance(known, list)
            for k in known if isinstance(k, list) and k and isinstance(k[0], str)}
