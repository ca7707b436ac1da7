"""Two local workspaces synced in-process through the real pipeline: no sshd, no rsync, milliseconds.

The other workspace is a LocalSession used as the remote replica, so every pipeline step runs as it
does over SSH (scan, ancestors on both sides, deletion records, execution with `expect` checks,
commit, journal); only the transport differs.  For engine tests and property tests.
"""

from __future__ import annotations

import asyncio

from peersync.core.types import Mode, Policy, Report
from peersync.errors import PeersyncError
from peersync.sync.pipeline import Job, sync_pair
from peersync.sync.runner import recover
from peersync.transport.local import LocalSession
from peersync.workspace.lock import workspace_lock
from peersync.workspace.workspace import Peer, Workspace


def sync_local(ws: Workspace, other: Workspace, *, mode: Mode = Mode.SYNC, dry_run: bool = False,
               force: bool = False, policy: Policy | None = None, name: str | None = None) -> Report:
    """Sync `ws` with `other` as `peersync sync` would with a peer named `name` (default: the other
    workspace's directory name); PeersyncErrors end up in the report, as in a real run."""
    name = name or other.root.name
    cfg = ws.sync_config()
    peer = Peer(name=name, host="in-process", path=str(other.root))
    report = Report(peer=name, host=peer.host, mode=mode, dry_run=dry_run)

    async def run() -> None:
        job = Job(ws, cfg, peer, mode, dry_run, force, policy or cfg.policy, asyncio.Lock())
        local, remote = LocalSession(ws.root), LocalSession(other.root)
        # One process plays both machines: each names itself by its workspace (kept passages).
        local.hello, remote.hello = {**local.hello, "machine": ws.root.name}, {**remote.hello, "machine": name}
        try:
            await sync_pair(job, local, remote, report)
        except PeersyncError as err:
            report.error, report.error_exit, report.error_kind = str(err), err.exit_code, err.kind
        finally:
            await local.close()
            await remote.close()

    ws.ensure_state()
    with workspace_lock(ws, 30, what="sync"):
        if not dry_run:
            recover(ws)
        asyncio.run(run())
    return report
