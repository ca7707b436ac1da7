"""Permission bits as a three-way-merged part of a version (pure).

Content and permission bits are merged separately: a `chmod +x` on one side and an edit on the
other both survive.  Per bit, the side that moved away from the pair's ancestor wins (both sides
moving a bit can only move it the same way); with no ancestor a bit set on either side is kept.
Only rwx for user, group and other travel — never setuid, setgid or sticky (Entry.mode holds
st_mode & 0o777).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Mapping

from peersync.core.types import Action, Change, Entry, Plan


def merge_mode(ancestor: int | None, local: int, remote: int) -> int:
    if ancestor is None:
        return local | remote
    moved = local ^ ancestor  # the bits local changed: local's value; every other bit: remote's
    return (local & moved) | (remote & ~moved & 0o777)


def with_modes(plan: Plan, ancestor: Mapping[str, Entry], local: Mapping[str, Entry], remote: Mapping[str, Entry],
               paths: Iterable[str]) -> Plan:
    """`plan` with each change that leaves a file on both sides carrying the merged mode where the two
    sides' bits differ, and an ADOPT for a file whose bytes agree but whose bits do not."""
    out, planned = [], set()
    for c in plan.changes:
        planned.add(c.path)
        if c.local is not None and c.remote is not None and c.local.mode != c.remote.mode and c.action in (
                Action.COPY, Action.ADOPT, Action.MERGE):
            a = ancestor.get(c.path)
            c = replace(c, mode=merge_mode(a.mode if a is not None else None, c.local.mode, c.remote.mode))
        out.append(c)
    for path in paths:
        if path in planned:
            continue
        l, r = local.get(path), remote.get(path)
        if l is not None and r is not None and l.mode != r.mode and l.same_content(r):
            a = ancestor.get(path)
            out.append(Change(path, Action.ADOPT, None, l, r, a, "mode-changed",
                              mode=merge_mode(a.mode if a is not None else None, l.mode, r.mode)))
    out.sort(key=lambda c: c.path)
    return Plan(tuple(out), plan.problems)
