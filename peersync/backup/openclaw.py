"""OpenClaw's own state in a snapshot: the verified archive `workspace.openclaw.snapshot()` writes.

OpenClaw keeps live SQLite databases (sessions, memory indexes), config and credentials in its
state dir; copying those files while the Gateway writes them gives torn copies, so peersync
never reads them itself.  OpenClaw writes and verifies one consistent archive
(`openclaw backup create --verify --no-include-workspace`), and the snapshot holds that archive
under memory/clawdbot-sync/backup/openclaw/ (restored to a staging directory only, never in
place; `openclaw backup verify` / OpenClaw's restore read it there).

`backup.include_openclaw`: unset ("auto") takes the archive when an OpenClaw CLI is found and
this workspace is one of its agents' workspaces (another workspace on the same machine is not
OpenClaw's, and its backup should not carry OpenClaw's credentials); `true` always asks for it
(a missing CLI is a problem line); `false` never.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from peersync.core.types import Problem
from peersync.workspace import openclaw

ARCHIVE_DIR = "openclaw"  # under the state dir's backup/: memory/clawdbot-sync/backup/openclaw/


def wanted(ws, setting: bool | None, claw: openclaw.OpenClaw | None) -> bool:
    """Does this backup take OpenClaw's archive?  (`setting`: backup.include_openclaw)"""
    if setting is not None:
        return setting
    return claw is not None and is_agent_workspace(ws, claw)


def is_agent_workspace(ws, claw: openclaw.OpenClaw) -> bool:
    """Is `ws` the workspace of one of OpenClaw's agents (`openclaw agents list --json`)?"""
    try:
        agents = claw.run_json("agents", "list", "--json")
    except openclaw.OpenClawError:
        return False
    root = os.path.realpath(ws.root)
    return isinstance(agents, list) and any(
        isinstance(a, dict) and isinstance(a.get("workspace"), str)
        and os.path.realpath(os.path.expanduser(a["workspace"])) == root for a in agents)


def openclaw_state(ws, setting: bool | None, into: Path, problems: list[Problem],
                   claw: openclaw.OpenClaw | None = None) -> list[Path]:
    """OpenClaw's verified archive for this snapshot, written into `into` (emptied first).

    [] when it is not wanted; a failure is one problem line and the rest of the snapshot is taken
    as usual (the workspace must not go unbacked-up because OpenClaw's command failed)."""
    if setting is False:
        return []
    claw = claw or openclaw.find()
    if not wanted(ws, setting, claw):
        return []
    shutil.rmtree(into, ignore_errors=True)  # only this run's archive: restic keeps the older ones
    into.mkdir(mode=0o700, parents=True)
    try:
        archive = openclaw.snapshot(into, claw)
    except openclaw.OpenClawError as err:
        problems.append(Problem("", f"OpenClaw's state not backed up: {err.message}"))
        return []
    os.chmod(archive, 0o600)  # it holds OpenClaw's credentials
    return [archive]
