"""Reviewing quarantined versions: list, read, restore and drop them (the CLI and the dashboard call these)."""

from __future__ import annotations

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


def restore(ws: Workspace, cid: str) -> dict:
    """Put a quarantined version back at its path, under the workspace lock (a sync must not
    run meanwhile); the live version it replaces is quarantined in its place."""
    find(ws, cid)
    with workspace_lock(ws, LOCK_WAIT, what="conflicts restore"):
        return store(ws).restore_conflict(cid)


def drop(ws: Workspace, cid: str) -> dict:
    """Delete a quarantined version for good, under the workspace lock."""
    find(ws, cid)
    with workspace_lock(ws, LOCK_WAIT, what="conflicts drop"):
        return store(ws).drop_conflict(cid)
