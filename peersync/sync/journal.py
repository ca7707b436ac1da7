"""The intent journal: a record written before a pair's execution starts and removed once its commit
is done (as Unison's intent file).

A record left behind means a run died mid-way.  Nothing is lost then — every install, conflict and
deletion is atomic and the ancestor is written last — but the leftovers of that run (staged files,
a version held between its rename and its quarantine) must be put in order before anything new is
planned.  So the next run recovers first (this side's leftovers when it takes the workspace lock,
the peer's when it takes the peer's lock), then clears the record and says so in its report; a
recovery that fails stops the run.  `status` shows a record that is still pending.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from peersync.core.types import Plan
from peersync.workspace.storage import TEMP_PREFIX, TEMP_SUFFIX, atomic_write_json

FORMAT = 1  # bump me when a record's shape changes
DIR = "journal"
PATHS_KEPT = 20  # a record names the first planned paths, for the report


def begin(ws, remote_id: str, peer_name: str, plan: Plan) -> Path:
    """Record the intent to execute `plan` with `remote_id`; returns the record's path."""
    path = ws.state / DIR / f"{remote_id}.json"
    atomic_write_json(path, {"format": FORMAT, "peer": peer_name, "remote_id": remote_id, "started": time.time(),
                             "changes": len(plan.changes), "paths": [c.path for c in plan.changes[:PATHS_KEPT]]})
    return path


def end(path: Path) -> None:
    path.unlink()


def pending(ws) -> list[dict]:
    """Records of interrupted runs, oldest first; an unreadable one still counts (as peer '?')."""
    out = []
    directory = ws.state / DIR
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_bytes())
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except (OSError, ValueError):
            record = {"peer": "?", "started": os.path.getmtime(path) if path.exists() else 0}
        out.append({**record, "file": path})
    return sorted(out, key=lambda r: r.get("started") or 0)


def sweep(ws) -> None:
    """Remove the temp file of a record whose writer was killed mid-write (only the holder of the
    workspace lock writes records, and it calls this: none of them is in progress)."""
    directory = ws.state / DIR
    for leftover in directory.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}") if directory.is_dir() else ():
        leftover.unlink(missing_ok=True)


def settle(ws, remote_id: str | None) -> dict | None:
    """After the peer `remote_id` has been locked (so it recovered its side) and this side recovered
    at the start of the run: clear the pair's record, if any, and return it."""
    if not remote_id:
        return None
    for record in pending(ws):
        if record.get("remote_id") == remote_id or record["file"].stem == remote_id:
            record["file"].unlink(missing_ok=True)
            return record
    return None


def describe(record: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.get("started") or 0))
    planned = record.get("changes")
    what = f" ({planned} change{'s' if planned != 1 else ''} planned)" if isinstance(planned, int) else ""
    return f"recovered from an interrupted sync with {record.get('peer', '?')} started {started}{what}"
