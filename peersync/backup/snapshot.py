"""`backup now`: hand restic the backup selection and record what it did."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from peersync.backup import openclaw, schedule
from peersync.backup.config import BackupConfig, backup_dir, load_config, passphrase_notice
from peersync.backup.pruning import prune
from peersync.backup.repo import (INSTANCE_TAG, TAG, Repo, Snapshot, forget_layout, local_lock, open_repo,
                                  restic_time, save_stats)
from peersync.backup.restic import EXIT_INCOMPLETE, NoRepository, ResticError
from peersync.backup.selection import for_workspace, plan
from peersync.errors import BackupError, PeersyncError
from peersync.core.paths import STATE_DIR
from peersync.core.types import Problem
from peersync.workspace.storage import atomic_write_json, read_json
from peersync.workspace.workspace import Workspace

Progress = Callable[[str, int, int], None]  # (phase, done, total): phases upload/restore/verify


@dataclass
class BackupResult:
    snapshot: Snapshot
    target: dict
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    bytes_added: int = 0  # what restic stored for this snapshot (compressed, before encryption overhead)
    total_bytes: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # said once: a generated passphrase, a lock removed
    pruned: "object | None" = None  # PruneResult

    @property
    def files(self) -> int:
        return self.files_new + self.files_changed + self.files_unmodified

    def to_json(self) -> dict:
        return {"ok": True, "snapshot": self.snapshot.summary(), **self.target, "files": self.files,
                "files_new": self.files_new, "files_changed": self.files_changed,
                "files_unmodified": self.files_unmodified, "bytes_added": self.bytes_added,
                "total_bytes": self.total_bytes, "seconds": round(self.seconds, 3),
                "problems": [{"path": p.path, "message": p.message} for p in self.problems],
                "notices": self.notices, "pruned": self.pruned.to_json() if self.pruned else None}


def take_snapshot(ws: Workspace, *, target: str | None = None, now: datetime | None = None,
                  progress: Progress | None = None, prune_after: bool = True) -> BackupResult:
    """One snapshot; then, with a keep policy and `prune_after`, retention is applied."""
    started = time.monotonic()
    cfg = load_config(ws)
    try:
        with local_lock(ws):
            repo = open_repo(ws, cfg, target, create=True)
            result = _backup(ws, cfg, repo, now, progress)
    except Exception as err:
        schedule.record_run(ws.state, ok=False, error=str(err).split("\n")[0])
        raise
    schedule.record_run(ws.state, ok=True, snapshot=result.snapshot.short_id, target=result.target["target"])
    notice = passphrase_notice(ws, consume=False)
    if notice:
        result.notices.insert(0, notice)
    if prune_after and cfg.keep is not None and not cfg.keep.empty:
        try:
            result.pruned = prune(ws, target=target, config=cfg)
        except PeersyncError as err:  # the snapshot is safe; retention can wait for the next run
            result.problems.append(Problem("", f"prune after the backup failed: {err.message}"))
    result.seconds = time.monotonic() - started
    return result


def _backup(ws: Workspace, cfg: BackupConfig, repo: Repo, now: datetime | None,
            progress: Progress | None) -> BackupResult:
    problems: list[Problem] = []
    scratch = backup_dir(ws) / f"run-{secrets.token_hex(4)}"
    scratch.mkdir(mode=0o700)
    try:
        extra: list[str] = []
        if openclaw.openclaw_state(ws, cfg.include_openclaw, backup_dir(ws) / openclaw.ARCHIVE_DIR, problems):
            extra.append(f"{STATE_DIR}/backup/{openclaw.ARCHIVE_DIR}")
        chosen = plan(ws.root, for_workspace(ws), include_state=cfg.include_state, extra=extra)
        problems += chosen.problems
        if not chosen.targets:
            raise BackupError("nothing to back up: the backup selection is empty",
                              "Add files to memory/, MEMORY.md, … or check sync.exclude in config.yaml.")
        listing = scratch / "files"
        listing.write_bytes(b"".join(t.encode() + b"\0" for t in chosen.targets))
        said: list[str] = []
        summary = repo.with_lock_recovery(lambda: _run(ws, repo, listing, now, progress, problems), said=said)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    short = summary["snapshot_id"][:8]  # restic 0.14's summary gives the short id only
    stats = {"files": summary.get("total_files_processed", 0), "bytes": summary.get("total_bytes_processed", 0),
             "bytes_added": summary.get("data_added", 0), "files_new": summary.get("files_new", 0),
             "files_changed": summary.get("files_changed", 0)}
    snap = Snapshot(summary["snapshot_id"], short, now or datetime.now().astimezone(), socket.gethostname(),
                    (TAG, INSTANCE_TAG + ws.instance_id), tuple(chosen.targets), stats)
    save_stats(ws, short, stats)
    _remember_parent(ws, repo, short)
    return BackupResult(snap, repo.describe(), files_new=summary.get("files_new", 0),
                        files_changed=summary.get("files_changed", 0),
                        files_unmodified=summary.get("files_unmodified", 0),
                        bytes_added=summary.get("data_added", 0), total_bytes=summary.get("total_bytes_processed", 0),
                        problems=problems, notices=said)


def _run(ws: Workspace, repo: Repo, listing, now, progress, problems: list[Problem]) -> dict:
    """One `restic backup`.  A previous snapshot of this instance is named as the parent, so
    restic re-reads only files whose size, mtime or inode changed (restic would look for a parent
    with the very same path list, which a growing workspace rarely has)."""
    args = ["backup", "--files-from-raw", str(listing), "--host", socket.gethostname(),
            "--tag", f"{TAG},{INSTANCE_TAG}{ws.instance_id}"]
    if now is not None:
        args += ["--time", restic_time(now)]
    parent = _parent(ws, repo)
    summary: dict = {}
    errors: list[Problem] = []

    def on_line(doc: dict) -> None:
        kind = doc.get("message_type")
        if kind == "status" and progress:
            progress("upload", int(doc.get("bytes_done") or 0), int(doc.get("total_bytes") or 0))
        elif kind == "error":
            item = str(doc.get("item") or "")
            err = doc.get("error")
            message = err.get("message") if isinstance(err, dict) else str(err)
            errors.append(Problem(os.path.relpath(item, ws.root) if item.startswith("/") else item,
                                  f"not backed up: {message or doc.get('during') or 'unreadable'}"))
        elif kind == "summary":
            summary.update(doc)

    try:
        code, stderr = repo.restic.stream([*args, *(["--parent", parent] if parent else [])], on_line,
                                          cwd=str(ws.root), ok_codes=(0, EXIT_INCOMPLETE))
    except NoRepository:
        forget_layout(repo)  # the repository vanished since we remembered it
        raise BackupError(f"the repository at {repo.display} is gone",
                          "Run `peersync backup now` again to start a new one there.") from None
    except ResticError as err:
        if parent and ("invalid id" in err.stderr or "no matching ID" in err.stderr or "parent" in err.stderr.lower()):
            _remember_parent(ws, repo, None)  # pruned or from another repository: do without
            return _run(ws, repo, listing, now, progress, problems)
        raise
    if "snapshot_id" not in summary:
        raise BackupError(f"restic backup to {repo.display} ended without a snapshot",
                          (stderr.strip().splitlines() or ["no output"])[-1][:200])
    problems += errors
    return summary


def _parents_file(ws: Workspace):
    return ws.state / "backup" / "parents.json"


def _parent(ws: Workspace, repo: Repo) -> str | None:
    try:
        doc = read_json(_parents_file(ws), default={}) or {}
    except ValueError:
        return None
    value = doc.get(repo.display) if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def _remember_parent(ws: Workspace, repo: Repo, snapshot_id: str | None) -> None:
    try:
        doc = read_json(_parents_file(ws), default={}) or {}
    except ValueError:
        doc = {}
    doc[repo.display] = snapshot_id
    with contextlib.suppress(OSError):
        atomic_write_json(_parents_file(ws), doc)
