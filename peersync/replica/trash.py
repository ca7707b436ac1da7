"""The trash of a workspace: files that syncs deleted here, listed, put back as a new edit, or emptied.

A sync moves a deleted file to `<state>/trash/<batch>/<path>` (store.Store.delete); a batch is
named after the UTC time it began (`20260126T101500-3fa2c1`) and is purged after `trash_days`.
Restoring puts the version back with the current time (store.Store.put_back), so every peer
takes it as the newest edit instead of deleting it again.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

from peersync.core.paths import BadPath, check_relpath, internal_rel
from peersync.errors import UsageError
from peersync.replica.store import Store, kept_files, remove_sidecar
from peersync.workspace.lock import workspace_lock
from peersync.workspace.workspace import Workspace

LOCK_WAIT = 30.0  # seconds a restore or empty waits for a running sync to finish


def _trash_dir(ws: Workspace) -> Path:
    return Store(ws.root, None).trash_dir  # the selection is not needed to find the trash


def batch_time(name: str) -> float | None:
    """When a batch began, from its name (epoch seconds), or None for a name we did not make."""
    try:
        return datetime.strptime(name[:15], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def listed(ws: Workspace, *, days: int | None = None) -> list[dict]:
    """Every file in the trash, newest batch first: path, batch, size, when it was deleted, until
    when it is kept, and the sync that deleted it (from history, when this machine started it)."""
    trash = _trash_dir(ws)
    if days is None:
        days = ws.sync_config().trash_days
    history = ws.history()
    out = []
    for batch in sorted((b for b in trash.iterdir() if b.is_dir()), key=lambda b: b.name, reverse=True) \
            if trash.is_dir() else ():
        started = batch_time(batch.name)
        for file, rel in sorted(kept_files(batch, links=True), key=lambda f: f[1]):  # a long path's copy by its real path
            file = Path(file)
            out.append({"path": rel, "batch": batch.name, "size": file.lstat().st_size, "deleted_at": started,
                        "kept_until": started + days * 86400 if started is not None else None,
                        "sync": _deleting_sync(history, started, rel)})
    return out


def _deleting_sync(history: list[dict], started: float | None, path: str) -> dict | None:
    """The first sync recorded after the batch began that deleted `path` here (None when another
    machine started that sync: it is in that machine's history)."""
    if started is None:
        return None
    best = None
    for entry in history:  # newest first
        when = entry.get("time") if isinstance(entry, dict) else None
        try:
            at = datetime.fromisoformat(when).timestamp() if isinstance(when, str) else None
        except ValueError:
            at = None
        if at is not None and at >= started - 1 and path in (entry.get("deleted_local") or []):
            best = entry
    return None if best is None else {"time": best.get("time"), "peer": best.get("peer"), "mode": best.get("mode")}


def restore(ws: Workspace, paths: list[str], *, batch: str | None = None) -> list[dict]:
    """Put trashed files back: each path's newest trashed version (or the one in `batch`); with
    only `batch`, every file in it.  A file that exists again meanwhile is kept as a conflict.
    Returns [{path, batch, replaced_saved_as}]."""
    trash = _trash_dir(ws)
    items = listed(ws)
    if batch is not None and not any(i["batch"] == batch for i in items):
        raise UsageError(f"no trash batch {batch!r}", "See the batches with: peersync trash list")
    chosen: list[dict] = []
    for path in paths or [i["path"] for i in items if i["batch"] == batch]:
        try:
            check_relpath(path)
        except BadPath as err:
            raise UsageError(f"bad path {path!r}: {err}") from None
        found = [i for i in items if i["path"] == path and (batch is None or i["batch"] == batch)]
        if not found:
            raise UsageError(f"{path} is not in the trash" + (f" batch {batch}" if batch else ""),
                             "See what is there with: peersync trash list")
        chosen.append(found[0])  # newest first
    store = Store(ws.root, ws.sync_config().selection)
    done = []
    with workspace_lock(ws, LOCK_WAIT, what="trash restore"):
        for item in chosen:
            source = trash / item["batch"] / internal_rel(item["path"])
            replaced = store.put_back(item["path"], source, reason=f"replaced by trash restore of {item['path']}")
            source.unlink()
            remove_sidecar(trash / item["batch"], item["path"])
            _prune(source.parent, trash / item["batch"])
            done.append({"path": item["path"], "batch": item["batch"], "replaced_saved_as": replaced})
    return done


def empty(ws: Workspace, *, batch: str | None = None, older_than_days: float | None = None,
          now: float, dry_run: bool = False) -> dict:
    """Delete trash batches for good: one, those older than a number of days, or all of them."""
    trash = _trash_dir(ws)
    batches = sorted(b for b in trash.iterdir() if b.is_dir()) if trash.is_dir() else []
    if batch is not None:
        batches = [b for b in batches if b.name == batch]
        if not batches:
            raise UsageError(f"no trash batch {batch!r}", "See the batches with: peersync trash list")
    if older_than_days is not None:
        cutoff = now - older_than_days * 86400
        batches = [b for b in batches if (batch_time(b.name) or now) < cutoff]
    files = [Path(f) for b in batches for f, _ in kept_files(b, links=True)]
    summary = {"batches": [b.name for b in batches], "files": len(files),
               "bytes": sum(p.lstat().st_size for p in files), "dry_run": dry_run}
    if not dry_run and batches:
        with workspace_lock(ws, LOCK_WAIT, what="trash empty"):
            for b in batches:
                shutil.rmtree(b, ignore_errors=True)
    return summary


def _prune(directory: Path, top: Path) -> None:
    """Remove directories a restore left empty, up to and including the batch itself."""
    while directory.is_relative_to(top):
        try:
            directory.rmdir()
        except OSError:
            return
        if directory == top:
            return
        directory = directory.parent
