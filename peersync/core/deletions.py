"""The deletion-record rule (pure): when a copy one side holds is a version the other side deleted.

Records themselves are stored by each replica (replica/tombstones.py); see there for why they exist.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from peersync.core.types import COARSE_SLACK_NS, Entry, coarse

Dead = Mapping[str, Sequence[Entry]]  # path -> versions deleted there


def to_wire(dead: Dead) -> dict[str, list]:
    return {p: [e.to_wire() for e in versions] for p, versions in dead.items()}


def from_wire(raw) -> dict[str, list[Entry]]:
    """A peer's records; anything malformed is dropped (records only ever cause deletions of
    copies a side already deleted, so a dropped record is the safe direction)."""
    out: dict[str, list[Entry]] = {}
    if not isinstance(raw, dict):
        return out
    for p, versions in raw.items():
        if not isinstance(p, str) or not isinstance(versions, list):
            continue
        for wire in versions:
            try:
                out.setdefault(p, []).append(Entry.from_wire(wire))
            except (ValueError, TypeError):
                continue
    return out


def stale(entry: Entry, deleted: Sequence[Entry]) -> bool:
    """`entry` is a copy of one of the `deleted` versions: the same bytes, and not written after
    it (a copy keeps its writer's mtime, so a copy of the deleted version has an equal or older
    mtime; re-creating the same bytes later gives a newer one, which is new content)."""
    for dead in deleted:
        if not entry.same_content(dead):
            continue
        slack = COARSE_SLACK_NS if coarse(entry.mtime_ns, dead.mtime_ns) else 0
        if entry.mtime_ns <= dead.mtime_ns + slack:
            return True
    return False
