"""The sync pipeline for a pair of replicas: scan → reconcile → plan → execute → commit.

One function, `sync_pair`, runs every pair: this workspace with an agent over SSH, with the same
agent through a keeper's warm connection, with a cloud folder, or (in the fast engine tests) with
another local workspace.  Where replicas differ, their Capabilities say so (transport/replica.py);
there is no second copy of these steps.

    begin     take the other side's lock (it recovers what an interrupted run left there)
    scan      both sides at once; the peer may answer with only what differs from our ancestor
    ancestor  the last agreed state of the pair (unknown → unions and conflicts, never deletions)
    plan      reconcile + the safety guards (core/plan.py), pure
    journal   an intent record, so an interrupted run is recovered and reported (sync/journal.py)
    execute   quarantine losers, transfer, merge, delete to the trash (sync/execute.py)
    commit    the new ancestor from what each side reported, deletion records, log bases
    finish    the replica's own last step (a mailbox delivers), then housekeeping on both sides
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from peersync.core import deletions, links
from peersync.core.commit import (
    agreed_ancestor,
    ancestor_delta,
    buried,
    check_instance_id,
    merge_base_items,
    new_ancestor,
    parse_manifest,
    parse_paths,
    parse_problems,
    read_ancestor,
)
from peersync.core.paths import valid_instance_id
from peersync.core.plan import describe, plan_sync, vanished
from peersync.core.reconcile import Touched, local_touched, touched_paths
from peersync.core.names import Alignment, Folding, align, foreign_names
from peersync.core.unknown import known_only
from peersync.core.types import (
    LINK,
    Entry,
    Mode,
    Policy,
    Problem,
    Report,
    Side,
    manifest_to_wire,
)
from peersync.replica import watched
from peersync.replica.handler import Handler
from peersync.replica.scan import ScanResult
from peersync.sync import journal
from peersync.sync.concurrency import drop, gather_all
from peersync.sync.execute import Run
from peersync.transport.local import LocalSession
from peersync.transport.replica import Replica
from peersync.workspace.workspace import Peer, SyncConfig, Workspace

REMOTE_LOCK_WAIT = 10.0
REMOTE_LOCK_YIELD = 1.0
AHEAD_PATHS = 2000  # at most this many paths' deletion records asked for while the peer scans


@dataclass
class Ahead:
    """What our side found while the peer was still scanning against `ancestor` (sync_pair): the
    paths where `local` differs from it (local_touched), and the peer's deletion records of
    `asked` — those of them we made or deleted since — on their way."""

    ancestor: dict
    local: dict
    part: set[str]
    asked: set[str]
    dead: asyncio.Future | None


@dataclass
class Job:
    """One pair's run: the workspace and its settings, the peer, and what the command asked for."""

    ws: Workspace
    cfg: SyncConfig
    peer: Peer
    mode: Mode
    dry_run: bool
    force: bool
    policy: Policy
    write_lock: asyncio.Lock  # one writer on this workspace at a time (several peers at once)
    progress: object | None = None  # sync/progress.py: a terminal's progress line (None: silent)


def local_scan_job(ws: Workspace, cfg: SyncConfig, dry_run: bool) -> asyncio.Future:
    """Our own scan, in a thread: it can start while the other side's connection comes up."""
    return asyncio.ensure_future(asyncio.to_thread(Handler(ws.root).scan, cfg.selection, save_cache=not dry_run))


async def sync_pair(job: Job, local: LocalSession, remote: Replica, report: Report, *,
                    prescan: asyncio.Future | None = None) -> None:
    """Bring this workspace (`local`) and `remote` together as `job` says; the outcome — and any
    per-path problem — goes into `report`.  Run-level trouble raises a PeersyncError."""
    ws, cfg = job.ws, job.cfg
    local_id = ws.instance_id
    ours = asyncio.get_running_loop().create_future()  # our manifest, for a replica that needs it
    digests: dict[str | None, str | None] = {}

    def scan(remote_id: str | None) -> Awaitable[dict]:
        """The peer's scan, a delta against the ancestor we share with `remote_id` where it can be."""
        if remote_id not in digests:
            digests[remote_id] = (local.handler.op_ancestor_digest(remote_id)
                                  if remote_id is not None and remote.caps.delta_scan else None)
        return remote.scan(local=ours, save_cache=not job.dry_run, base_peer=local_id, base_digest=digests[remote_id])

    remote_id, theirs = await begin(job, remote, scan)
    # Our own scan: already under way with a single peer (prescan); with several, it waits for the
    # workspace's write lock, so that it never sees a file another pair is still writing.
    scanned = prescan
    ahead: Ahead | None = None
    try:
        settle = getattr(remote, "settle", None)
        if settle is not None:  # a keeper's session: its hello went before the lock, and is answered by now
            await settle()
            report.clock_offset = remote.offset
        if not job.dry_run:  # both sides have now recovered what an interrupted run left: say so
            interrupted = journal.settle(ws, remote_id)
            if interrupted is not None:
                report.notes.append(journal.describe(interrupted))
        if theirs is None:
            theirs = asyncio.ensure_future(scan(remote_id))
        base_digest = digests[remote_id]
        async with job.write_lock:
            await local.request("selection", selection=cfg.selection.to_wire())
            scanned = scanned or local_scan_job(ws, cfg, job.dry_run)
            result: ScanResult = await scanned
            local_entries = remote.local_view(result.manifest)  # (the scan's own dict: only read from here on)
            if not remote.caps.links:
                local_entries = _files_only(local, local_entries, result, job.dry_run)
            ours.set_result(local_entries)
            report.problems.extend(result.problems)
            local_unknown, local_fs = result.unknown, result.fs
            # Our ancestor, read while the peer is still scanning.
            mine_digest, mine = (None, None)
            if remote_id is not None and remote.caps.keeps_ancestor:
                mine_digest, mine = await own_ancestor(local, remote_id, base_digest, local_entries)
            if mine is not None and base_digest is not None and mine_digest == base_digest:
                ahead = _ahead(job, remote, theirs, mine, local_entries, remote_id, result.fresh)
            remote_raw = await theirs
            if remote_raw.get("delta") and (mine is None or mine_digest != base_digest):
                # A delta against an ancestor we cannot read (or that moved): the whole manifest.
                remote_raw = await remote.scan(save_cache=not job.dry_run)
            await _reconcile_and_apply(job, local, remote, report, local_entries, remote_raw, remote_id, mine,
                                       base_digest, local_unknown, local_fs, local_scanned=result.fresh, ahead=ahead)
    finally:
        for task in (theirs, ours):
            if task is not None and not task.done():
                task.cancel()
        if ahead is not None:
            drop(ahead.dead)
        if scanned is not None and not scanned.done():
            await asyncio.wait([scanned])  # a thread cannot be cancelled: let it finish first


async def begin(job: Job, remote: Replica, scan: Callable[[str | None], Awaitable[dict]] | None = None
                ) -> tuple[str | None, asyncio.Future | None]:
    """Lock the other side (it recovers an interrupted run's leftovers as it does) and learn its
    instance id; None on a dry run against a peer that has no workspace yet.  With `scan`
    (`scan(instance_id)` requests the peer's scan): an agent that answers in order gets the scan
    right behind the lock and the selection, for the instance id its hello named — a round trip
    less on every sync (and the lock's wait, if any, is the scan's).  Returned as a task when the
    lock's reply names that same id; otherwise it is dropped and the caller scans."""
    exists = bool(remote.hello.get("workspace"))
    remote_id = remote.hello.get("instance_id") if not remote.caps.keeps_ancestor else None
    if (exists or not job.dry_run) and (remote.caps.lock_in_dry_run or not job.dry_run):
        if not exists:
            await remote.request("init")
        # Two syncs started toward each other each hold their own lock and want the other's:
        # only the side with the smaller instance id waits long, so one of them always wins.
        theirs = remote.hello.get("instance_id")
        if theirs is not None:  # a hostile one is refused before anything is saved
            check_instance_id(theirs, job.peer.name)
        wait = REMOTE_LOCK_WAIT if not theirs or job.ws.instance_id < theirs else REMOTE_LOCK_YIELD
        # (The scan's request is made first, not sent: what it reads here may fail, before anything goes.)
        ahead = scan(theirs) if remote.caps.in_order and scan is not None and theirs is not None else None
        lock = remote.request("lock", timeout=wait, what=f"sync with {socket.gethostname()}")
        scanning = None
        if remote.caps.in_order:
            # The selection goes right behind the lock, not a round trip later, and the scan
            # behind it: the agent answers in order, a selection only names what the session may
            # touch, and an agent whose lock failed refuses the scan (Handler.op_scan).  Tasks
            # made in this order send in this order (Session.request: no await in between).
            sent = [asyncio.ensure_future(lock),
                    asyncio.ensure_future(remote.request("selection", selection=job.cfg.selection.to_wire()))]
            if ahead is not None:
                scanning = asyncio.ensure_future(ahead)
            try:
                locked, _ = await gather_all(*sent)
            except BaseException:
                drop(scanning)
                raise
        else:
            locked = await lock
            await remote.request("selection", selection=job.cfg.selection.to_wire())
        remote_id = (locked.get("instance_id") if isinstance(locked, dict) else None) or remote_id
        try:
            remote_id = check_instance_id(remote_id, job.peer.name)
        except BaseException:
            drop(scanning)
            raise
        if scanning is not None and remote_id != theirs:  # (a workspace made anew since the hello)
            drop(scanning)
            scanning = None
        if remote.caps.keeps_ancestor:
            _remember_instance(job.ws, job.peer, remote_id)
        return remote_id, scanning
    await remote.request("selection", selection=job.cfg.selection.to_wire())
    return remote_id, None


def _ahead(job: Job, remote: Replica, theirs: asyncio.Future, mine: dict, local_entries: dict,
           remote_id: str | None, scanned: object) -> Ahead:
    """Our side's part of touched_paths against `mine`, the ancestor the peer is scanning against
    now; and, to an agent that answers in order and is still scanning, the request for its
    deletion records of the paths we made or deleted since: answered right behind its scan
    instead of a round trip after it (deletion_records)."""
    memo = _touched_memo(job.ws, remote_id)
    part = local_touched(mine, local_entries, memo, fresh=watched.changed_between(memo.scanned, scanned),
                         scanned=scanned)
    asked = {p for p in part if (p in local_entries) != (p in mine)}
    dead = None
    if asked and len(asked) <= AHEAD_PATHS and remote.caps.in_order and not theirs.done():
        dead = asyncio.ensure_future(remote.request("tombstones_get", paths=sorted(asked)))
    return Ahead(mine, local_entries, part, asked if dead is not None else set(), dead)


async def _reconcile_and_apply(job: Job, local: LocalSession, remote: Replica, report: Report, local_entries,
                               remote_raw: dict, remote_id: str | None, mine, base_digest: str | None,
                               local_unknown: list[str], local_fs: dict | None, *,
                               local_scanned: tuple | None = None, ahead: Ahead | None = None) -> None:
    ws, cfg, peer = job.ws, job.cfg, job.peer
    local_id = ws.instance_id
    for path, message in parse_problems(remote_raw.get("problems") or [], peer.name):
        report.problems.append(Problem(path, f"{message} on {peer.name}", Side.REMOTE))
    changed = parse_manifest(remote_raw.get("entries"), cfg.selection, peer.name)
    delta = bool(remote_raw.get("delta")) and mine is not None
    deleted: set[str] = set()
    # -- ancestor ------------------------------------------------------------------------------
    if delta:
        # The peer holds the very same ancestor (equal digests) and sent only what differs from it.
        ancestor = mine
        deleted = set(parse_paths(remote_raw.get("deleted") or [], peer.name))
        remote_entries = mine  # a no-op's (manifests are only read from here on: no copy of 100k entries)
        if deleted or changed:
            remote_entries = dict(mine)
            for p in deleted:
                remote_entries.pop(p, None)
            remote_entries.update(changed)
    else:
        remote_entries = changed
        theirs = read_ancestor(await remote.request("ancestor_get", peer_id=local_id)) if remote_id else None
        # Where the replica keeps its own copy, only what both copies say is known; one that keeps
        # none (a cloud folder) has its only copy kept here, by its replica object.
        ancestor = agreed_ancestor(mine, theirs) if remote.caps.keeps_ancestor else (theirs or {})
    if remote.caps.may_vanish and report.mode is not Mode.PUSH and not job.force:
        held = remote_raw.get("held")  # a cloud folder's own count of what it held (a peer's: ignored if not a count)
        stop = vanished(max(len(ancestor), held if type(held) is int else 0), remote_entries, peer.name, peer.host)
        if stop is not None:
            raise stop
    # -- names: one spelling per file where a side's volume folds case or normalisation ----------
    names = align(ancestor, local_entries, remote_entries, local_folding=Folding.from_wire(local_fs),
                  remote_folding=Folding.from_wire(remote_raw.get("fs")), peer_name=peer.name)
    ancestor, local_entries, remote_entries = names.ancestor, names.local, names.remote
    report.problems.extend(names.clashes)
    foreign, foreign_unknown = foreign_names(
        local_entries, remote_entries, ancestor, local_holds=_holds_raw_names(local_fs),
        remote_holds=remote.caps.raw_names and _holds_raw_names(remote_raw.get("fs")), peer_name=peer.name)
    for side in (Side.LOCAL, Side.REMOTE):  # each direction's names reported once while they stay
        same = [p for p in foreign if p.side is side]
        if same:
            report.problems.extend(same if job.dry_run else local.handler._reported_once(
                same, same[0].message, f"not-utf8:{peer.name}:{side.value}"))
    # -- plan ----------------------------------------------------------------------------------
    moved = set(changed) | deleted if delta and not names.changed else None
    memo = _touched_memo(ws, remote_id)
    # `local_entries` is the watch-fed scan's manifest (or a part of it chosen path by path) unless
    # names were aligned: then the scan's word on what it made anew (watched.changed_between) holds.
    scanned = None if names.changed else local_scanned
    # Our side's part, found while the peer scanned, holds where nothing was respelled since.
    same = ahead is not None and ahead.ancestor is ancestor and ahead.local is local_entries
    touched = touched_paths(ancestor, local_entries, remote_entries, moved, memo=memo,
                            fresh=watched.changed_between(memo.scanned, scanned), scanned=scanned,
                            local_part=ahead.part if same else None)
    # What either scan could not read is left as it is on both sides, its ancestor entry kept.
    touched = known_only(touched, [*local_unknown, *remote_unknown(remote_raw), *names.unknown, *foreign_unknown])
    local_dead, remote_dead = await deletion_records(
        local, remote, local_entries, remote_entries, touched,
        local_has=local.handler.has_dead(), remote_has=bool(remote_raw.get("dead")),
        remote_known=_known_records(remote_raw, delta, deleted, changed, mine, ahead))
    plan = plan_sync(ancestor, local_entries, remote_entries, rules=cfg.rules, roots=cfg.selection.roots,
                     mass_delete_ratio=cfg.mass_delete_ratio, peer_name=peer.name, policy=job.policy,
                     mode=report.mode, offset_ns=int(remote.offset * 1e9), local_id=local_id,
                     remote_id=remote_id or "~", force=job.force, paths=touched, local_dead=local_dead,
                     remote_dead=remote_dead, modes=_keeps_modes(local_fs) and _keeps_modes(remote_raw.get("fs")))
    if job.dry_run:
        describe(plan, report, peer.name)
        await remote.finish(ws, report, dry_run=True)
        return
    # -- execute -------------------------------------------------------------------------------
    intent = journal.begin(ws, remote_id, peer.name, plan)
    await respell(local, remote, names, report)
    run = Run(ws, peer, local, remote, report, policy=job.policy, local_id=local_id, remote_id=remote_id,
              local_entries=local_entries, remote_entries=remote_entries, rules=cfg.rules)
    run.progress = job.progress
    await run.execute(list(plan.changes))
    # -- commit --------------------------------------------------------------------------------
    new = new_ancestor(ancestor, run.sides[Side.LOCAL], run.sides[Side.REMOTE], touched)
    moved_in_ancestor = touched | set(run.sides[Side.LOCAL].final) | set(run.sides[Side.REMOTE].final)
    records = buried(ancestor, new, run.deleted, touched)
    # The merge bases execute() left for the commit go out first (Run.keeps_bases_later).
    bases_later = [side for side in Side if run.keeps_bases_later(side)]
    recording = None  # the peer's records, sent ahead of its saves
    if records and remote.caps.in_order and remote.hello.get("ancestor_after_records") is True:
        # Before either ancestor forgets them, without a round trip of their own: ours first (no
        # wait), then the peer's, which its agent takes before the saves sent behind them — and
        # it applies its ancestor only if they were written (Handler.op_ancestor_put).  Ours is
        # saved once its answer came (save_ancestor).
        await local.request("tombstones_add", items=records)
        recording = asyncio.ensure_future(remote.request("tombstones_add", items=records))
    elif records:  # before the ancestor forgets them
        await gather_all(*(run.keep_bases(side) for side in bases_later),
                         local.request("tombstones_add", items=records), remote.request("tombstones_add", items=records))
        bases_later = []
    # Mergeable files' new synced content, kept as the next merge's base by each side that keeps
    # state (alongside the ancestor: a base missing after a crash only means a union or a
    # conflict, never a loss).
    logs = merge_base_items(ancestor, new, cfg.rules.keeps_base, moved_in_ancestor)
    # The peer's requests start first, ours last: each is encoded on this loop as its turn comes,
    # and our own side's saves run in threads that would hold it up (after a first sync of 100k
    # files the peer waited ~1 s for its first one, then worked while we did).
    saves = [run.keep_bases(side) for side in bases_later] + ([recording] if recording is not None else [])
    if logs and remote.caps.keeps_ancestor:
        saves.append(remote.request("logbase_save", items=logs))
    if not remote.caps.keeps_ancestor:
        saves.append(remote.request("ancestor_put", peer_id=local_id, manifest=manifest_to_wire(new)))
    elif not delta or any(new.get(p) != ancestor.get(p) for p in moved_in_ancestor):
        # (else unchanged, and already identical on both sides: kept.  new_ancestor moved nothing else)
        saves.append(save_ancestor(local, remote, local_id, remote_id, mine, new, base_digest,
                                   remote_delta=delta and ancestor is mine,
                                   moved=moved_in_ancestor if ancestor is mine else None, after=recording))
        memo.moved(ancestor, new, moved_in_ancestor)  # (else the next sync's ancestor is `ancestor` again)
    if logs:
        saves.append(local.request("logbase_save", items=logs))
    try:
        await gather_all(*saves)
    except BaseException:
        drop(recording)
        raise
    journal.end(intent)
    await remote.finish(ws, report, dry_run=False)
    # Last: pruning log bases reads the ancestors just saved.  Each side ages its trash by its own
    # retention (its config.yaml), never by ours — except a replica with no config (a cloud folder).
    theirs_kept = {} if remote.caps.own_retention else {"trash_days": cfg.trash_days}
    theirs = functools.partial(remote.request, "housekeeping", prune_logbases=bool(logs), **theirs_kept)
    later = getattr(remote, "after_report", None)
    if later is not None:  # an agent's: the peer's is made as the session closes, behind it (a keeper's: after the report)
        later(theirs)
        await local.request("housekeeping", prune_logbases=bool(logs))
    else:
        await gather_all(local.request("housekeeping", prune_logbases=bool(logs)), theirs())


async def respell(local: LocalSession, remote: Replica, names: Alignment, report: Report) -> None:
    """Case-only renames made on one side, carried out in place on a side whose volume folds names
    (core/names.py); one that fails is reported (the volume still finds the file under either name)."""
    for side, session in ((Side.LOCAL, local), (Side.REMOTE, remote)):
        if names.respell[side]:
            result = await session.request("respell", items=[list(pair) for pair in names.respell[side]])
            for path, error in result.get("failed") or ():
                report.problems.append(Problem(path, f"not renamed to match the other side: {error}", side))


def _files_only(local: LocalSession, entries: dict, result: ScanResult, dry_run: bool) -> dict:
    """Our manifest for a replica that holds no links or empty folders (a cloud folder through
    rclone): those are left out — where it has them, they stay — and each link is reported once."""
    skipped = [Problem(p, links.CLOUD) for p, e in entries.items() if e.kind == LINK]
    if skipped:
        result.problems.extend(skipped if dry_run else local.handler._reported_once(skipped, links.CLOUD, "cloud"))
        result.unknown.extend(p for p, e in entries.items() if e.kind == LINK)
    return {p: e for p, e in entries.items() if e.is_file}


def _holds_raw_names(fs: dict | None) -> bool:
    """Whether a replica's volume holds names that are not UTF-8 (one not probed is tried: an
    install it refuses is a per-path problem, and nothing is deleted)."""
    return not (isinstance(fs, dict) and fs.get("utf8_only") is True)


def _keeps_modes(fs: dict | None) -> bool:
    """Whether a replica's volume keeps permission bits as set (a cloud folder reports no volume)."""
    return isinstance(fs, dict) and fs.get("permissions") is True


def remote_unknown(raw: dict) -> list[str]:
    """The paths the other side's scan could not read; from a replica that does not list them, every
    path it reported a problem with."""
    unknown = raw.get("unknown")
    if unknown is None:
        unknown = [p for p, _ in raw.get("problems") or ()]
    return [p for p in unknown if isinstance(p, str)]


# -- ancestors ------------------------------------------------------------------------------------

# Our own ancestors as Entries, by the digest of their file's bytes: a keeper syncs again and
# again, and building 100k Entries costs ~0.13 s.  Content-addressed, so never stale.
_ANCESTOR_ENTRIES: dict[str, dict[str, Entry]] = {}
_TOUCHED: dict[tuple, Touched] = {}


def _touched_memo(ws, remote_id: str | None) -> Touched:
    """This process's touched_paths memo for the pair (see reconcile.Touched); a few pairs kept."""
    key = (str(ws.root), remote_id)
    memo = _TOUCHED.pop(key, None) or Touched()
    while len(_TOUCHED) >= 4:
        _TOUCHED.pop(next(iter(_TOUCHED)))
    _TOUCHED[key] = memo
    return memo


def _remember_ancestor(digest: str, entries: dict[str, Entry]) -> None:
    while len(_ANCESTOR_ENTRIES) >= 4:
        _ANCESTOR_ENTRIES.pop(next(iter(_ANCESTOR_ENTRIES)))
    _ANCESTOR_ENTRIES[digest] = entries


async def own_ancestor(local: LocalSession, remote_id: str, digest: str | None,
                       like: dict | None = None) -> tuple[str | None, dict | None]:
    """(digest of its file, entries) of our ancestor with `remote_id`; `digest` is the one we
    expect (then the file is not read again).  `like`: our manifest, whose equal entries the
    ancestor then shares.  Callers never modify the entries."""
    if digest is not None and digest in _ANCESTOR_ENTRIES:
        return digest, _ANCESTOR_ENTRIES[digest]
    found = await asyncio.to_thread(local.handler.ancestor_entries, remote_id, like)
    if found is None:
        return None, None
    if found[1] is not None:
        _remember_ancestor(*found)
    return found


def warm_local(ws: Workspace, selection, remote_id: str | None) -> None:
    """A keeper, right after it connected, in a thread of its own: our side's part of getting ready
    (Handler.warm), and our ancestor with `remote_id` as Entries (own_ancestor finds them)."""
    handler = Handler(ws.root)
    found = handler.ancestor_doc(remote_id) if remote_id is not None else None
    if found is not None and found[0] not in _ANCESTOR_ENTRIES:
        entries = read_ancestor(found[1], trusted=True)
        if entries is not None:
            _remember_ancestor(found[0], entries)
    handler.warm(selection, remote_id, found[0] if found is not None else None)


async def save_ancestor(local, remote, local_id: str, remote_id: str, mine, new_ancestor, base_digest,
                        *, remote_delta: bool, moved: set[str] | None = None,
                        after: asyncio.Future | None = None) -> None:
    """Store the new ancestor on both sides, at once: if we die between the two saves, the sides
    disagree and agreed_ancestor() treats the difference as unknown — which can only cause
    unions, never deletions.  A side that still holds the old one (equal digests) gets only what
    changed; both write the same canonical bytes, checked by digest.  `moved`: where
    `new_ancestor` can differ from `mine` (None: anywhere).  `after`: the peer's deletion records
    on their way — its save goes right behind them (applied only if they were written), ours
    once they were."""
    whole = None

    def manifest() -> dict:
        nonlocal whole
        if whole is None:
            whole = manifest_to_wire(new_ancestor)
        return whole

    # The peer's delta scan proved it holds `ancestor`, which is then `mine`: one delta serves both.
    delta = ancestor_delta(mine, new_ancestor, moved) if mine is not None and base_digest is not None else None

    def put(session, peer_id: str, with_delta: bool, **extra) -> asyncio.Future:
        if with_delta and delta is not None:
            return session.request("ancestor_put", peer_id=peer_id, base_digest=base_digest, delta=delta, **extra)
        return session.request("ancestor_put", peer_id=peer_id, manifest=manifest(), **extra)

    if after is None:
        theirs, ours = await gather_all(put(remote, local_id, remote_delta), put(local, remote_id, True))
    else:
        putting = asyncio.ensure_future(put(remote, local_id, remote_delta, after_records=True))
        try:
            await after
        except BaseException:
            drop(putting)  # (refused there: its records were not written)
            raise
        theirs, ours = await gather_all(putting, put(local, remote_id, True))
    if not ours.get("applied"):
        ours = await local.request("ancestor_put", peer_id=remote_id, manifest=manifest())
    if theirs.get("digest") != ours.get("digest"):  # its copy moved meanwhile: send it all
        await remote.request("ancestor_put", peer_id=local_id, manifest=manifest())
    _remember_ancestor(ours["digest"], new_ancestor)


async def deletion_records(local, remote, local_entries, remote_entries, touched, *, local_has: bool,
                           remote_has: bool, remote_known: Known | None = None) -> tuple[dict, dict]:
    """Both sides' deletion records for the paths only one side holds (none asked when a side
    keeps none, or no such path exists).  `remote_known`: the peer's that came with its scan or
    are on their way (_known_records); only the other paths are asked for."""
    one_sided = [p for p in touched if (p in local_entries) != (p in remote_entries)]
    pending = remote_known.pending if remote_known is not None else None
    try:
        if not one_sided or not (local_has or remote_has):
            return {}, {}

        async def ask(session, has: bool, known: Known | None = None) -> dict:
            if not has:
                return {}
            out, rest = {}, one_sided
            if known is not None:
                rest = [p for p in one_sided if p not in known.paths]
                had = known.records
                if pending is not None and any(p in known.pending_paths for p in one_sided):
                    had = {**had, **deletions.from_wire(await pending)}
                out = {p: had[p] for p in one_sided if p in known.paths and p in had}
            if rest:
                out.update(deletions.from_wire(await session.request("tombstones_get", paths=rest)))
            return out

        return tuple(await gather_all(ask(local, local_has), ask(remote, remote_has, remote_known)))
    finally:
        drop(pending)  # (not needed after all, or failed with the run)


@dataclass
class Known:
    """A peer's deletion records had without asking: `records` for `paths` (complete for them),
    and those for `pending_paths` on their way (`pending`)."""

    paths: set[str]
    records: dict
    pending_paths: set[str]
    pending: asyncio.Future | None


def _known_records(remote_raw: dict, delta: bool, deleted: set[str], changed: dict, mine: dict | None,
                   ahead: Ahead | None) -> Known | None:
    """The peer's deletion records that need no asking: its delta scan's (of the paths it deleted
    or made since the ancestor: Handler.op_scan), and those asked for while it scanned (_ahead)."""
    raw = remote_raw.get("dead_for") if delta else None
    if not isinstance(raw, dict) or mine is None:
        if ahead is not None:
            drop(ahead.dead)
        return None
    paths = deleted | {p for p in changed if p not in mine}
    pending = ahead.dead if ahead is not None and ahead.ancestor is mine else None
    pending_paths = ahead.asked if pending is not None else set()
    return Known(paths | pending_paths, deletions.from_wire(raw), pending_paths, pending)


def _remember_instance(ws: Workspace, peer: Peer, instance_id: str) -> None:
    """Keep the peer's instance id in peers.json, so `peers remove` can drop its ancestor."""
    if peer.extra.get("instanceId") == instance_id or not valid_instance_id(instance_id):
        return
    peers = ws.load_peers()
    if peer.name in peers and peers[peer.name].host == peer.host:
        current = peers[peer.name]
        peers[peer.name] = Peer(**{**current.__dict__, "extra": {**current.extra, "instanceId": instance_id}})
        ws.save_peers(peers)
