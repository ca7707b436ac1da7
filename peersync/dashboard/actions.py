"""What the served dashboard's buttons do: the same functions the CLI calls, each returning a short message."""

from __future__ import annotations

from peersync.backup import restore
from peersync.replica import conflicts
from peersync.workspace.workspace import Workspace


def restore_conflict(ws: Workspace, cid: str) -> str:
    item = conflicts.restore(ws, cid)
    swapped = item.get("replaced_saved_as")
    return f"Restored {item['path']} from {cid}" + (f"; the version it replaced is kept as {swapped}" if swapped else "")


def drop_conflict(ws: Workspace, cid: str) -> str:
    item = conflicts.drop(ws, cid)
    return f"Dropped {cid} ({item['path']}) for good"


def restore_snapshot(ws: Workspace, snapshot: str) -> str:
    """`peersync backup restore --snapshot ID`: into a new staging folder beside the workspace
    (never over the live files), every file verified.  With data.backup_overview, the one place
    to re-point at another backup engine."""

    result = restore(ws, snapshot=snapshot)
    text = f"Restored {len(result.restored)} files of {result.snapshot.short_id} to {result.dest}"
    if result.refused:
        text += f"; {len(result.refused)} failed verification and were not written (peersync backup verify)"
    return text
