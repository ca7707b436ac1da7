"""Reviewing quarantined versions: list, read, diff, restore (or merge back) and drop them (the CLI
and the dashboard call these)."""

from __future__ import annotations

import difflib
import functools

from peersync.errors import UsageError
from peersync.replica.store import Refused, Store
from peersync.workspace.lock import workspace_lock
from peersync.workspace.workspace import Workspace

LOCK_WAIT = 30.0  # seconds a restore or drop waits for a running sync to finish


def store(ws: Workspace):
    return Store(ws.root, ws.sync_config().selection)


def find(ws: Workspace, cid: str) -> dict:
    """The index entry of conflict `cid`; an unknown id is bad input (exit 2)."""
    try:
        return store(ws).find_conflict(cid)
    except Refused:
        raise UsageError(f"no conflict {cid!r}", "See the ids with: peersync conflicts list") from None


def listed(ws: Workspace) -> list[dict]:
    """Quarantined versions, newest first."""
    return list(reversed(store(ws).conflicts()))


def content(ws: Workspace, cid: str) -> tuple[dict, bytes]:
    item = find(ws, cid)
    return item, store(ws).conflict_bytes(cid)  # read without following links


def diff(ws: Workspace, cid: str) -> tuple[dict, str | None]:
    """How quarantined version `cid` differs from the live file: a unified diff ("" when they are
    equal), or None with a one-line explanation in the item's "note" when either is not text."""
    item, kept = content(ws, cid)
    try:
        live = (ws.root / item["path"]).read_bytes()
    except FileNotFoundError:
        live = None
    try:
        old, new = kept.decode("utf-8"), (live or b"").decode("utf-8")
    except UnicodeDecodeError:
        same = "the same as" if kept == live else "different from"
        note = (f"{item['path']}: not text — the kept version ({len(kept)} bytes) is {same} the live one"
                + ("" if live is not None else " (no live file)"))
        return {**item, "note": note}, None
    where = f"{cid} {item['path']} (kept {item.get('time', '?')}: {item.get('reason', 'conflict')})"
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), where,
                                 f"{item['path']} (live)" if live is not None else f"{item['path']} (no live file)")
    return item, "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def restore(ws: Workspace, cid: str, *, merge: bool = False) -> dict:
    """Put a quarantined version back at its path, under the workspace lock (a sync must not
    run meanwhile); the live version it replaces is quarantined in its place.  `merge`: what the
    live file lacks of the kept version is merged back into it instead (text block by block, JSON
    key by key); versions that cannot be merged are bad input and change nothing."""
    path = find(ws, cid)["path"]
    combine = None
    if merge:
        from peersync.core.mergefile import merge_back  # deferred: merge3 and pathspec cost start-up time

        combine = functools.partial(merge_back, path)
    with workspace_lock(ws, LOCK_WAIT, what="conflicts restore"):
        try:
            return store(ws).restore_conflict(cid, merge=combine)
        except Refused as err:
            if not merge:
                raise
            raise UsageError(str(err), "Restore it without --merge (the live version is then kept as a conflict).") from None


def drop(ws: Workspace, cid: str) -> dict:
    """Delete a quarantined version for good, under the workspace lock."""
    find(ws, cid)
    with workspace_lock(ws, LOCK_WAIT, what="conflicts drop"):
        return store(ws).drop_conflict(cid)
