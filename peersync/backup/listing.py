"""What the backups look like: snapshots, schedule, repository size, passphrase — for `backup list|status` and the dashboard."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from peersync.backup import schedule
from peersync.backup.config import (BackupConfig, configured_passphrase, load_config, passphrase_file,
                                    passphrase_notice, resolve)
from peersync.backup.repo import NoBackups, Repo, iso, load_snapshots, open_repo
from peersync.backup.legacy import legacy_summary
from peersync.backup.pruning import retention_decisions
from peersync.backup.restic import ResticMissing, tool_check
from peersync.backup.verifying import last_verify
from peersync.errors import ConfigError
from peersync.workspace.workspace import Workspace


def last_run(ws: Workspace) -> dict:
    return schedule.read_runs(ws.state)


def backup_due(ws: Workspace, now: float | None = None) -> bool:
    """The schedule's rule (peersync.backup.schedule.is_due) with this workspace's interval."""
    try:
        interval = load_config(ws).interval
    except ConfigError:
        return False
    return schedule.is_due(interval, last_run(ws), time.time() if now is None else now)


def next_due(ws: Workspace, cfg: BackupConfig | None = None) -> float | None:
    cfg = cfg or load_config(ws)
    return schedule.next_due(cfg.interval, last_run(ws), time.time())


def passphrase_info(ws: Workspace, cfg: BackupConfig | None = None) -> dict:
    """Where the passphrase comes from — never the passphrase itself."""
    cfg = cfg or load_config(ws)
    found = configured_passphrase(ws, cfg)
    if found is None:
        return {"source": None, "where": None,
                "note": f"none yet: the first backup generates one in {passphrase_file(ws)}"}
    return found.describe()


def list_snapshots(ws: Workspace, *, target: str | None = None) -> dict:
    """Every snapshot at the target — every instance's, for a restore on a new machine."""
    cfg = load_config(ws)
    repo = open_repo(ws, cfg, target)
    unreadable: dict[str, str] = {}
    snaps = load_snapshots(repo, unreadable)
    return {**repo.describe(), "instance": ws.instance_id, "snapshots": [s.summary() for s in snaps],
            "unreadable": [{"id": k, "error": v} for k, v in sorted(unreadable.items())],
            "legacy": legacy_summary(repo.location, repo.restic.rclone)}


def repository_size(ws: Workspace, *, target: str | None = None, repo: Repo | None = None) -> dict:
    """Bytes stored (compressed and encrypted pack files), blobs and snapshots."""
    repo = repo or open_repo(ws, load_config(ws), target)
    doc = repo.with_lock_recovery(lambda: repo.restic.json(["stats", "--mode", "raw-data", "--no-lock"])) or {}
    return {"bytes": doc.get("total_size"), "blobs": doc.get("total_blob_count"),
            "snapshots": doc.get("snapshots_count")}


def status(ws: Workspace, *, target: str | None = None) -> dict:
    """Everything `backup status` shows and the dashboard reads, in one document."""
    cfg = load_config(ws)
    runs = last_run(ws)
    now = time.time()
    due_at = schedule.next_due(cfg.interval, runs, now)
    out: dict = {
        "restic": tool_check(), "interval": cfg.interval, "keep": cfg.keep.describe() if cfg.keep else None,
        "due": schedule.is_due(cfg.interval, runs, now),
        "next_due": iso(datetime.fromtimestamp(due_at, timezone.utc)) if due_at else None,
        "last_run": {k: (iso(datetime.fromtimestamp(v, timezone.utc)) if k in ("last_attempt", "last_success")
                         and isinstance(v, (int, float)) else v) for k, v in runs.items() if k != "format"},
        "last_verify": last_verify(ws), "passphrase": passphrase_info(ws, cfg),
        "passphrase_notice": passphrase_notice(ws, consume=False),
        "include_state": cfg.include_state,
        "include_openclaw": "auto" if cfg.include_openclaw is None else cfg.include_openclaw,
    }
    empty = {"initialized": False, "snapshots": [], "unreadable": [], "latest": None, "retention": [],
             "repository": None, "legacy": None}
    if not out["restic"]["ok"]:
        return {**out, **empty, "target": resolve(ws, cfg, target).display}
    try:
        repo = open_repo(ws, cfg, target)
    except NoBackups as err:
        legacy = legacy_summary(err.location, err.rclone) if err.location else None
        return {**out, **empty, "target": resolve(ws, cfg, target).display, "legacy": legacy}
    except ResticMissing:  # pragma: no cover - tool_check said it was there
        raise
    unreadable: dict[str, str] = {}
    snaps = load_snapshots(repo, unreadable)
    own = [s for s in snaps if s.instance == ws.instance_id]
    return {**out, **repo.describe(), "initialized": True, "snapshots": [s.summary() for s in snaps],
            "unreadable": [{"id": k, "error": v} for k, v in sorted(unreadable.items())],
            "own_snapshots": len(own), "latest": (own or snaps)[-1].summary() if snaps else None,
            "retention": retention_decisions(snaps, cfg.keep, repo.restic.version) if cfg.keep else [],
            "repository": repository_size(ws, repo=repo), "legacy": legacy_summary(repo.location, repo.restic.rclone)}
