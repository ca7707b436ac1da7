"""Deletion records ("tombstones"): versions of a file a replica agreed on with a peer and that
both then no longer held — the file was deleted, here or there, and the deletion synced.

Ancestors are per pair, so with three or more replicas a deletion can meet a copy of the deleted
version through a pair whose ancestor never knew the file.  Without a record of the deletion that
copy looks new and comes back, and a deletion and a copy can chase each other round a ring for
ever.  reconcile consults these records (see `stale`): a copy of a version the other side deleted,
no newer than it, is removed (to the trash) instead of resurrected.  A newer write, or different
bytes, is new content and always wins over a deletion.

Stored in the state dir as `tombstones.json`: {"format": 1, "entries": {path: [[size, mtime_ns,
mode, hash, recorded_s], ...]}}, at most KEEP_PER_PATH versions per path, newest last; records
older than the trash retention are pruned by housekeeping.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterable

from peersync.core.types import Entry
from peersync.workspace.storage import atomic_write_bytes

FORMAT = 1
FILE = "tombstones.json"
KEEP_PER_PATH = 4


def load(path: Path) -> dict[str, list[list]]:
    """The records as stored; a missing or unreadable file is no records (never an error: a lost
    record can only mean a deleted version comes back, which loses nothing)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def lookup(path: Path, paths: Iterable[str] | None = None) -> dict[str, list[Entry]]:
    """Records for `paths` (all when None), as Entries; malformed records are skipped."""
    stored = load(path)
    out = {}
    for p in stored if paths is None else paths:
        versions = []
        for wire in stored.get(p) or ():
            try:
                versions.append(Entry.from_wire(wire[:4]))
            except (ValueError, TypeError):
                continue
        if versions:
            out[p] = versions
    return out


def add(path: Path, items: Iterable[tuple[str, Entry]], now: float | None = None) -> int:
    """Record deleted versions; returns how many records are new."""
    items = list(items)
    if not items:
        return 0
    stored = load(path)
    now = time.time() if now is None else now
    added = 0
    for p, entry in items:
        wire = entry.to_wire()
        before = [w for w in stored.get(p) or () if isinstance(w, list) and len(w) == 5]
        versions = [w for w in before if w[:4] != wire]  # a version recorded again moves to the end
        added += len(versions) == len(before)
        stored[p] = [*versions, [*wire, int(now)]][-KEEP_PER_PATH:]
    _save(path, stored)
    return added


def prune(path: Path, days: float, now: float | None = None) -> int:
    """Drop records older than `days`; returns how many went."""
    if not path.exists():
        return 0
    stored = load(path)
    cutoff = (time.time() if now is None else now) - days * 86400
    kept, dropped = {}, 0
    for p, versions in stored.items():
        young = [w for w in versions if isinstance(w, list) and len(w) == 5 and isinstance(w[4], (int, float))
                 and w[4] >= cutoff]
        dropped += len(versions) - len(young)
        if young:
            kept[p] = young
    if dropped:
        _save(path, kept)
    return dropped


def present(path: Path) -> bool:
    """Whether there may be any records (cheap: no read; the file goes with its last record)."""
    return path.exists()


def _save(path: Path, stored: dict) -> None:
    if not stored:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    atomic_write_bytes(path, json.dumps({"format": FORMAT, "entries": stored}, separators=(",", ":")).encode())


