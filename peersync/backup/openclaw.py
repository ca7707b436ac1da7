"""`backup.include_openclaw`: OpenClaw's own state in the snapshot, through OpenClaw's backup command.

OpenClaw keeps live SQLite databases (sessions, memory indexes) under ~/.openclaw; copying
those files while the gateway writes them gives torn, unrestorable copies, so peersync never
reads them itself.  The archive comes from `openclaw backup create --verify` (written and
checked by OpenClaw), and the snapshot holds that archive.

HOOK POINT for the lead: `openclaw_state()` below is the only place to wire in the function
that runs `openclaw backup create --verify`.  It must write its archive(s) into `into` and
return their paths; everything else (placing them in the snapshot under
memory/clawdbot-sync/backup/openclaw/, restoring them to a staging directory only, the
problem line when it fails) is done by the caller, peersync.backup.snapshot.
"""

from __future__ import annotations

from pathlib import Path

from peersync.core.types import Problem

ARCHIVE_DIR = "openclaw"  # under the state dir's backup/: memory/clawdbot-sync/backup/openclaw/


def openclaw_state(ws, cfg, into: Path, problems: list[Problem]) -> list[Path]:
    """Archives of OpenClaw's state for this snapshot, written into `into` (a private, empty dir).

    Not wired yet: the `openclaw backup create --verify` runner is being added separately.
    Until then nothing is archived and the backup says so in one problem line (the rest of the
    snapshot is taken as usual)."""
    problems.append(Problem("", "backup.include_openclaw: OpenClaw's state is not archived yet "
                                "(needs `openclaw backup create --verify`, not wired in this build)"))
    return []
