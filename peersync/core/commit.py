"""Commit (pure): the pair's new ancestor from what execution actually did, the deletion records it
leaves, and reading what a peer says its manifest and ancestor are.

The ancestor is rebuilt from what each side REPORTED after execution, never from the plan: a
path enters it only where both sides now hold the same content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from peersync.core.paths import BadPath, check_relpath, valid_instance_id
from peersync.core.types import READABLE_FORMATS, Entry
from peersync.errors import ProtocolError


@dataclass
class SideState:
    """One side during execution: what the scan saw, then what actually ended up there."""

    scanned: Mapping[str, Entry]
    final: dict[str, Entry | None] = field(default_factory=dict)

    def current(self, path: str) -> Entry | None:
        return self.final[path] if path in self.final else self.scanned.get(path)


def parse_manifest(raw, selection, who: str) -> dict[str, Entry]:
    """A peer's manifest, with every path validated; one bad path refuses the whole sync."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"{who} sent a malformed manifest")
    out = {}
    for path, wire in raw.items():
        try:
            check_relpath(path)
        except BadPath as err:
            raise ProtocolError(f"{who} sent a hostile path ({err}); refusing to sync with it",
                                "Nothing was written. Check the peer's peersync installation.") from None
        if not selection.contains(path):
            raise ProtocolError(f"{who} sent a path outside the synced selection: {path!r}; refusing to sync",
                                "Nothing was written. Check the peer's peersync installation.")
        try:
            out[path] = Entry.from_wire(wire)
        except (ValueError, TypeError) as err:
            raise ProtocolError(f"{who} sent a malformed entry for {path!r}: {err}") from None
    return out


def parse_paths(raw, who: str) -> list[str]:
    """A list of paths from a peer (a delta scan's deletions), each validated like a manifest's."""
    if not isinstance(raw, list):
        raise ProtocolError(f"{who} sent a malformed list of paths")
    for path in raw:
        try:
            check_relpath(path)
        except BadPath as err:
            raise ProtocolError(f"{who} sent a hostile path ({err}); refusing to sync with it",
                                "Nothing was written. Check the peer's peersync installation.") from None
    return raw


def check_instance_id(value, who: str) -> str:
    """A peer's instance id, if it is one; else the sync is refused before anything is saved (it
    names files in the state dir and is kept in peers.json)."""
    if valid_instance_id(value):
        return value
    shown = peer_text(value, 40) if isinstance(value, str) else type(value).__name__
    raise ProtocolError(f"{who} sent a malformed instance id ({shown!r}); refusing to sync with it",
                        "Nothing was written. Check the peer's peersync installation.")


def parse_problems(raw, who: str) -> list[tuple[str, str]]:
    """A scan's per-path problems from a peer, as text safe to show and keep (at most 1000)."""
    if not isinstance(raw, list) or not all(isinstance(p, list) and len(p) == 2 for p in raw):
        raise ProtocolError(f"{who} sent a malformed scan")
    return [(peer_text(path), peer_text(message)) for path, message in raw[:1000]]


def peer_text(value, limit: int = 300) -> str:
    """Text a peer sent (an error, a problem), made safe to show and keep: one line, no control
    characters, bounded."""
    text = value if isinstance(value, str) else repr(value)
    shown = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return shown + ("…" if len(text) > limit else "")


_CONFLICT_ID = re.compile(r"c-[0-9a-f]{1,32}")


def conflict_id(value) -> str | None:
    """A conflict id a peer reported, if it is one (anything else is not kept)."""
    return value if isinstance(value, str) and _CONFLICT_ID.fullmatch(value) else None


def read_ancestor(raw, *, trusted: bool = False) -> dict[str, Entry] | None:
    """An ancestor as stored; paths are validated unless it is our own file (`trusted`)."""
    if not isinstance(raw, dict) or raw.get("format") not in READABLE_FORMATS:
        return None
    try:
        if trusted:
            return {p: Entry.trusted(w) for p, w in raw["entries"].items()}
        return {check_relpath(p): Entry.from_wire(w) for p, w in raw["entries"].items()}
    except (BadPath, ValueError, TypeError, KeyError, AttributeError):
        return None  # an unreadable ancestor means "nothing known": union, never deletions


def agreed_ancestor(mine, theirs) -> dict[str, Entry]:
    """Entries both sides recorded alike.  A crash between the two saves leaves them different;
    any disagreement counts as unknown, which can only produce unions and conflicts."""
    if mine is None or theirs is None:
        return {}
    return {p: e for p, e in mine.items() if p in theirs and theirs[p].same_content(e)}


def new_ancestor(old: Mapping[str, Entry], local: SideState, remote: SideState,
                 touched: set[str] | None = None) -> dict[str, Entry]:
    """From what actually happened: a path enters the ancestor only where both sides now agree.
    `touched`: the paths reconcile looked at; every other one is `old`'s entry on both sides (and
    when there are none, and nothing was written, the answer is `old` itself: callers only read it)."""
    if touched is None:
        paths = set(old) | set(local.scanned) | set(remote.scanned) | set(local.final) | set(remote.final)
        result = {}
    else:
        paths = touched | set(local.final) | set(remote.final)
        if not paths:
            return dict(old) if not isinstance(old, dict) else old  # (a no-op: no copy of 100k entries)
        result = dict(old)  # (a copy, then only `paths` looked at: at 100k files, 10 ms less)
    for path in paths:
        mine, theirs = local.current(path), remote.current(path)
        if mine is not None and mine.same_content(theirs):
            result[path] = mine
        elif mine is None and theirs is None:
            result.pop(path, None)
        elif path in old:
            result[path] = old[path]
        else:
            result.pop(path, None)
    return result


def buried(old: Mapping[str, Entry], new: Mapping[str, Entry], deleted: Iterable[tuple[str, Entry]],
           touched: set[str] | None = None) -> list:
    """Deletion records for both sides (replica/tombstones.py) of versions from before version
    vectors: the ones this run `deleted`, and ancestor entries dropped because neither side holds
    the file any more.  (A version with a vector is recorded as a deletion version by each side
    itself: replica/versions.py.)"""
    dropped = [(p, old[p]) for p in (old if touched is None else touched) if p in old and p not in new]
    return [[p, e.to_wire()] for p, e in dict([*dropped, *deleted]).items() if not e.vv]


def ancestor_delta(old: Mapping[str, Entry], new: Mapping[str, Entry], paths: Iterable[str] | None = None) -> dict:
    """What turns ancestor `old` into `new` (for ancestor_put).  `paths`: where `new` can differ
    from `old` (new_ancestor's, when `new` was made from `old`): only those are compared, not every
    entry (at 100k files ~40 ms of a sync that changed a few hundred)."""
    if paths is None:
        return {"set": {p: e.to_wire() for p, e in new.items() if old.get(p) != e},
                "drop": [p for p in old if p not in new]}
    paths = sorted(paths)
    return {"set": {p: e.to_wire() for p in paths if (e := new.get(p)) is not None and old.get(p) != e},
            "drop": [p for p in paths if p in old and p not in new]}


def merge_base_items(old: Mapping[str, Entry], new: Mapping[str, Entry],
                     keeps_base: Callable[[str, Entry], bool], paths: Iterable[str] | None = None) -> list[list[str]]:
    """Mergeable files whose synced content changed: both sides keep it as the next merge's base
    (`keeps_base(path, entry)`: mergefile.MergeRules.keeps_base).  Bases no ancestor refers to any
    more are pruned with the ancestors (agent housekeeping).  `paths`: the only ones where `new`
    can differ from `old` (new_ancestor's)."""
    items = new.items() if paths is None else ((p, new[p]) for p in sorted(paths) if p in new)
    return [[p, e.hash] for p, e in items if ((o := old.get(p)) is None or o.hash != e.hash) and keeps_base(p, e)]
