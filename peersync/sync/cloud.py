"""Cloud folders as peers (DESIGN 7): one mailbox, mirror or bisync run between the workspace and a
cloud folder, through the same reconcile, guards and execution (engine.Run) as SSH peers.

- bisync: reconcile(ancestor, local, cloud) in two-way mode; the ancestor lives only here, in
  `cloud/<peer>/ancestor.json` (tied to the folder's rclone path: another folder starts from
  nothing, i.e. union, never deletions).  No resync exists, so none runs by itself.
- mirror: the same plan in one-way mode (push by default; `direction: pull` for a reader).
- mailbox: a push of the selection minus `_inbox/` and `_outbox/`, then cloud_mailbox's drain.
The cloud side is a cloud_session.CloudSession; see its docstring for hashes, locks and trash.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from peersync.cloud import mailbox as cloud_mailbox
from peersync.cloud.config import CloudSpec, inbox_command
from peersync.cloud.folder import open_cloud
from peersync.cloud.session import MAILBOX_DIRS, CloudSession
from peersync.core.types import (
    Entry,
    Mode,
    Policy,
    Problem,
    Report,
    Side,
    manifest_to_wire,
)
from peersync.errors import PeersyncError, SafetyError, UsageError
from peersync.replica import tombstones
from peersync.sync.engine import (
    Run,
    SideState,
    deletion_records,
    describe,
    log_matcher,
    logbase_items,
    parse_manifest,
    plan_sync,
    read_ancestor,
    record,
)
from peersync.transport.local import LocalSession
from peersync.workspace.storage import atomic_write_json
from peersync.workspace.workspace import Peer, SyncConfig, Workspace


class CloudRun(Run):
    """engine.Run against a cloud folder: content moves through the CloudSession, never rsync."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._one_direction_at_a_time = asyncio.Lock()
        self.equalize_mtimes = False  # the cloud side keeps its own modtimes (and its hash index)

    async def copy(self, target: Side, changes) -> None:
        # Both directions can write the local conflicts/ index (a losing cloud version is kept
        # here), so they run one after the other rather than concurrently.
        async with self._one_direction_at_a_time:
            await super().copy(target, changes)

    async def transfer(self, source: Side, target: Side, items: list[dict]) -> list[dict]:
        if target is Side.LOCAL:  # (to the cloud, the session uploads from the workspace itself,
            stage = Path((await self.local_session.request("stage"))["dir"])  # checking each hash first)
            await self.remote_session.download([i["path"] for i in items], stage,
                                               {i["path"]: Entry.from_wire(i["new"]).hash for i in items})
        return await self._install(target, items)


def run_mode(peer: Peer, spec: CloudSpec, mode: Mode) -> Mode:
    """The direction of this run: mailbox always pushes; a mirror follows its direction unless the
    command names one (push / pull); bisync does what the command says."""
    if spec.mode == "mailbox":
        if mode is Mode.PULL:
            raise UsageError(f"{peer.name} is a mailbox: it only pushes; files come back through its _outbox/",
                             f"Run: peersync sync {peer.name}")
        return Mode.PUSH
    if spec.mode == "mirror" and mode is Mode.SYNC:
        return Mode(spec.direction)
    return mode


async def sync_cloud(ws: Workspace, cfg: SyncConfig, peer: Peer, *, mode: Mode, dry_run: bool, force: bool,
                     policy: Policy, write_lock: asyncio.Lock) -> Report:
    """One run with a cloud peer; like engine.sync_one, failures end up in the Report."""
    report = Report(peer=peer.name, host=peer.host, mode=mode, dry_run=dry_run)
    started = time.monotonic()
    session = local = listing = None
    try:
        spec = CloudSpec.from_peer(peer)
        report.mode = run_mode(peer, spec, mode)
        session = await open_cloud(ws, peer, spec, cfg)
        if not dry_run:
            await session.request("lock", what=f"sync from {socket.gethostname()}")
        listing = asyncio.create_task(session.list_all())
        async with write_lock:  # one writer on this workspace at a time
            local = LocalSession(ws.root)
            await local.request("selection", selection=cfg.selection.to_wire())
            local_raw = await local.request("scan", save_cache=not dry_run)
            await _sync_locked(ws, cfg, peer, spec, local, session, report, local_raw, await listing,
                               dry_run=dry_run, force=force, policy=policy)
    except PeersyncError as err:
        report.error = str(err)
        report.error_exit = err.exit_code
        report.error_kind = err.kind
    finally:
        if listing is not None and not listing.done():
            listing.cancel()
        for s in (local, session):
            if s is not None:
                await s.close()
        report.seconds = time.monotonic() - started
    if not dry_run:
        record(ws, report)
    return report


async def _sync_locked(ws, cfg, peer, spec, local, session: CloudSession, report: Report, local_raw, listing, *,
                       dry_run: bool, force: bool, policy: Policy) -> None:
    local_entries = parse_manifest(local_raw["entries"], cfg.selection, "this machine")
    for path, message in local_raw.get("problems", []):
        report.problems.append(Problem(path, message, Side.LOCAL))
    if spec.mode == "mailbox":  # its two folders are channels of their own, never part of the push
        local_entries = {p: e for p, e in local_entries.items() if p.split("/", 1)[0] not in MAILBOX_DIRS}
    cloud_entries, problems, outbox, partials = await session.manifest(listing, local_entries)
    for path, message in problems:
        report.problems.append(Problem(path, f"{message} on {peer.name}", Side.REMOTE))
    if not dry_run:
        await session.remove_partials(partials)
    ancestor = read_ancestor(await session.request("ancestor_get")) or {}
    if ancestor and not cloud_entries and report.mode is not Mode.PUSH and not force:
        # A wrong path, a vanished mount or an expired share looks exactly like "everything deleted".
        raise SafetyError(f"stopped: {peer.name} holds none of the {len(ancestor)} files synced with it before "
                          f"(is {peer.host} the right folder?) — nothing was changed",
                          "If the cloud folder was emptied on purpose, run again with --force "
                          "(deleted files go to the trash).")
    local_dead, cloud_dead = await deletion_records(
        local, session, local_entries, cloud_entries, set(local_entries).symmetric_difference(cloud_entries),
        local_has=tombstones.present(ws.state / tombstones.FILE),
        remote_has=tombstones.present(session.dir / tombstones.FILE))
    plan = plan_sync(ancestor, local_entries, cloud_entries, cfg, peer, policy=policy, mode=report.mode,
                     offset_ns=0, local_id=ws.instance_id, remote_id=session.cloud_id, force=force,
                     local_dead=local_dead, remote_dead=cloud_dead)
    if dry_run:
        describe(plan, report, peer)
        if spec.mode == "mailbox":
            cloud_mailbox.describe(outbox, report)
        return
    journal = ws.state / "journal" / f"{session.cloud_id}.json"
    atomic_write_json(journal, {"peer": peer.name, "started": time.time(), "changes": len(plan.changes)})
    run = CloudRun(ws, cfg, peer, local, session, report, policy=policy, local_id=ws.instance_id,
                   remote_id=session.cloud_id)
    run.sides = {Side.LOCAL: SideState(local, local_entries), Side.REMOTE: SideState(session, cloud_entries)}
    await run.execute(list(plan.changes))
    for conflict in report.conflicts:  # a losing cloud version is kept in THIS machine's conflicts/
        if conflict.get("side") == "remote" and conflict.get("saved_as"):
            conflict["saved_here"] = True
    new_ancestor = run.new_ancestor(ancestor)
    buried = run.buried(ancestor, new_ancestor)
    if buried:
        await asyncio.gather(local.request("tombstones_add", items=buried),
                             session.request("tombstones_add", items=buried))
    await session.request("ancestor_put", manifest=manifest_to_wire(new_ancestor))
    journal.unlink()
    logs = logbase_items(ancestor, new_ancestor, log_matcher(cfg.logs))
    if logs:  # log bases (for 3-way insertion merges) are kept here only: the cloud holds no state
        await local.request("logbase_save", items=logs)
    if spec.mode == "mailbox":
        await cloud_mailbox.bootstrap(session, ws.root, outbox)
        await cloud_mailbox.drain(session, ws.root, outbox, report, inbox_command(ws))
    await asyncio.gather(local.request("housekeeping", trash_days=cfg.trash_days, prune_logbases=bool(logs)),
                         session.request("housekeeping", trash_days=cfg.trash_days))


