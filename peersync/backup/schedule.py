"""When a scheduled backup is due: the one rule the heartbeat, `watch` and `backup status` share.

Imports only the standard library: the heartbeat's not-due path reads it on every tick.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

RUNS_FILE = ("backup", "last-run.json")  # under the state dir
RETRY_AFTER_FAILURE = 900  # a failed scheduled backup is retried after min(interval, this)


def runs_path(state_dir: str | os.PathLike) -> str:
    return os.path.join(state_dir, *RUNS_FILE)


def read_runs(state_dir: str | os.PathLike) -> dict:
    """{"last_attempt", "last_ok", "last_success", "snapshot", "target", "error"} or {}."""
    try:
        with open(runs_path(state_dir), "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def is_due(interval, runs: dict, now: float) -> bool:
    """True when `interval` (seconds) is set and that long has passed since the last good backup.

    After a failed attempt the next try waits min(interval, 15 min), so a dead target is not
    hammered every tick.  Pure: the caller reads the config and the runs file."""
    if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
        return False
    success, attempt = runs.get("last_success"), runs.get("last_attempt")
    if isinstance(success, (int, float)) and 0 <= now - success < interval:
        return False
    if runs.get("last_ok") is False and isinstance(attempt, (int, float)):
        return now - attempt >= min(interval, RETRY_AFTER_FAILURE)
    return True


def next_due(interval, runs: dict, now: float) -> float | None:
    """When the next scheduled backup is due (now or in the past: due), None when not scheduled."""
    if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
        return None
    if is_due(interval, runs, now):
        return now
    success, attempt = runs.get("last_success"), runs.get("last_attempt")
    due = success + interval if isinstance(success, (int, float)) else now
    if runs.get("last_ok") is False and isinstance(attempt, (int, float)):
        due = min(due, attempt + min(interval, RETRY_AFTER_FAILURE))
    return due


def record_run(state_dir: str | os.PathLike, *, ok: bool, snapshot: str | None = None, target: str | None = None,
               error: str | None = None, now: float | None = None) -> None:
    from peersync.workspace.storage import (  # lazy: off the heartbeat's fast path, which reads this module
        atomic_write_json,
        ensure_private_dir,
    )

    previous = read_runs(state_dir)
    now = time.time() if now is None else now
    doc = {"format": 1, "last_attempt": now, "last_ok": ok,
           "last_success": now if ok else previous.get("last_success"),
           "snapshot": snapshot if ok else previous.get("snapshot"),
           "target": target or previous.get("target"), "error": None if ok else error}
    try:
        ensure_private_dir(Path(state_dir) / RUNS_FILE[0])
        atomic_write_json(Path(runs_path(state_dir)), doc)
    except OSError:
        pass
