"""Running the pipeline with one or more peers: open each peer's replica, sync the pairs
concurrently (one writer on the workspace at a time), close, record history, keep connections warm."""

from __future__ import annotations

import asyncio
import errno
import time

from peersync.cloud.config import CloudSpec, is_cloud, run_mode
from peersync.cloud.folder import open_cloud
from peersync.core.types import Mode, Policy, Report
from peersync.errors import DiskFullError, PeersyncError, SafetyError, UsageError
from peersync.replica.handler import Handler
from peersync.sync import journal
from peersync.sync.concurrency import gather_all
from peersync.sync.pipeline import Job, local_scan_job, sync_pair
from peersync.transport import keeper
from peersync.transport.local import LocalSession
from peersync.transport.replica import Replica
from peersync.transport.ssh import attach, open_session
from peersync.workspace.lock import workspace_lock
from peersync.workspace.workspace import Peer, SyncConfig, Workspace


def select_peers(ws: Workspace, names: list[str] | None) -> list[Peer]:
    peers = ws.load_peers()
    if not names:
        if not peers:
            raise UsageError("no peers configured",
                             "Add one: peersync peers add NAME HOST --user U --path /path/to/workspace")
        return [peers[n] for n in sorted(peers)]
    return [ws.peer(n) for n in dict.fromkeys(names)]


async def sync_peers(ws: Workspace, names: list[str] | None = None, *, mode: Mode = Mode.SYNC,
                     dry_run: bool = False, force: bool = False, lock_timeout: float | None = None,
                     time_budget: float | None = None, policy: Policy | None = None,
                     connect_timeout: float = 15.0, session_for=None, progress=None) -> list[Report]:
    """Sync with the named peers (all when None), concurrently; one Report per peer.
    `session_for`: a keeper running this sync lends its own connection (daemons/keeper.py);
    `progress`: a terminal's progress line (sync/progress.py)."""
    cfg = ws.sync_config()  # a malformed config stops the run before anything else
    peers = select_peers(ws, names)
    policy = policy or cfg.policy
    ws.ensure_state()
    with workspace_lock(ws, lock_timeout, what="sync"):
        if not dry_run:
            recover(ws)
        write_lock = asyncio.Lock()

        async def one(peer: Peer) -> Report:
            job = Job(ws, cfg, peer, mode, dry_run, force, policy, write_lock, progress)
            if progress is not None:
                progress.begin(peer.name)
            # With one peer, scan here while the connection and the agent start up.
            prescan = local_scan_job(ws, cfg, dry_run) if len(peers) == 1 and not is_cloud(peer) else None
            run = sync_with(job, prescan=prescan, connect_timeout=connect_timeout, session_for=session_for)
            if time_budget is None:
                return await run
            try:
                return await asyncio.wait_for(run, time_budget)
            except asyncio.TimeoutError:
                report = Report(peer=peer.name, host=peer.host, mode=mode, dry_run=dry_run,
                                error=f"{peer.name}: gave up after {time_budget:g} s; run the sync again")
                report.error_exit = 1
                report.error_kind = "timeout"
                return report

        return list(await gather_all(*(one(p) for p in peers)))


def run_sync(ws: Workspace, names: list[str] | None = None, **kwargs) -> list[Report]:
    return asyncio.run(sync_peers(ws, names, **kwargs))


def recover(ws: Workspace) -> None:
    """Put this side's leftovers of interrupted runs in order before anything new is planned (the
    intent journal's records are cleared per peer once that peer has recovered too: pipeline)."""
    try:
        Handler(ws.root).recover()
        journal.sweep(ws)
    except OSError as err:
        stuck = journal.pending(ws)
        raise SafetyError(f"cannot recover what an interrupted sync left behind: {err.strerror or err}"
                          + (f" (the sync with {stuck[0].get('peer', '?')})" if stuck else ""),
                          f"Nothing was changed. Fix the cause (disk space, permissions in {ws.state}) "
                          "and run the sync again.") from None


async def sync_with(job: Job, *, prescan: asyncio.Future | None = None, connect_timeout: float = 15.0,
                    session_for=None) -> Report:
    """One peer: open its replica, run the pair's pipeline, close; failures end up in the Report."""
    ws, peer = job.ws, job.peer
    report = Report(peer=peer.name, host=peer.host, mode=job.mode, dry_run=job.dry_run)
    started = time.monotonic()
    remote = local = None
    try:
        remote = await open_replica(job, report, connect_timeout=connect_timeout, session_for=session_for)
        local = LocalSession(ws.root)
        job.mode = report.mode
        await sync_pair(job, local, remote, report, prescan=prescan)
    except (PeersyncError, OSError) as err:
        if isinstance(err, OSError):
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            err = DiskFullError.of(err, str(job.ws.root))
        report.error = str(err)
        report.error_exit = err.exit_code
        report.error_kind = err.kind
    finally:
        if prescan is not None and not prescan.done():
            await asyncio.wait([prescan])  # a thread cannot be cancelled: let it finish first
        for replica in (local, remote):
            if replica is not None:
                await replica.close()
        if remote is not None and remote.caps.kind == "ssh" and report.error is None:
            keeper.spawn(ws, peer, peer.path or str(ws.root), keeper.keep_seconds(job.cfg))  # warm for the next sync
        report.seconds = time.monotonic() - started
    if not job.dry_run:
        record(ws, report)
    return report


async def open_replica(job: Job, report: Report, *, connect_timeout: float, session_for=None) -> Replica:
    """The peer's replica: a cloud folder, the keeper's own connection (when a keeper runs this
    sync), a warm keeper, or a new SSH connection to its agent."""
    peer = job.peer
    if is_cloud(peer):
        spec = CloudSpec.from_peer(peer)
        report.mode = run_mode(peer, spec, job.mode)
        return await open_cloud(job.ws, peer, spec, job.cfg)
    if session_for is not None:
        remote = await session_for(peer)
        report.in_keeper = True
    else:
        remote = await connect(job.ws, job.cfg, peer, connect_timeout)
    # (A new connection's offset is measured by the time the run settles it: unknown until then.)
    report.clock_offset = remote.offset if getattr(remote, "settled", True) else None
    report.warm = remote.caps.kind == "kept"
    return remote


async def connect(ws: Workspace, cfg: SyncConfig, peer: Peer, timeout: float) -> Replica:
    """The peer's agent: through its keeper when one is warm, else over a new SSH connection."""
    if keeper.keep_seconds(cfg) > 0:
        session = await attach(ws, peer, peer.path or str(ws.root), timeout)
        if session is not None:
            return session
    # (Its clock offset is settled by the pipeline, after the lock: sync_pair.)
    return await open_session(ws, peer, timeout=timeout, settled=False)


def record(ws: Workspace, report: Report) -> None:
    entry = report.to_json()
    for key in ("pushed", "pulled", "merged", "deleted_local", "deleted_remote"):
        entry[key] = entry[key][:50]
    entry["problems"] = entry["problems"][:20]
    try:
        ws.record(entry)
    except OSError:
        pass  # history is best effort; the sync itself already succeeded or failed
