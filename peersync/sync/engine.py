"""One sync run with one or more peers: scan → reconcile → safety → execute → commit."""

from __future__ import annotations

import asyncio
import collections
import fnmatch
import re
import secrets
import socket
import time
from dataclasses import dataclass, field, replace

from peersync.core import deletions
from peersync.core.merge import append_merge, insertion_merge
from peersync.core.paths import BadPath, check_relpath
from peersync.core.reconcile import decide_conflict, reconcile, touched_paths
from peersync.core.safety import mass_delete_violations
from peersync.core.types import (
    MANIFEST_FORMAT,
    Action,
    Change,
    Entry,
    Mode,
    Policy,
    Problem,
    Report,
    Side,
    manifest_to_wire,
)
from peersync.errors import PeersyncError, ProtocolError, SafetyError, UsageError
from peersync.replica import tombstones
from peersync.replica.handler import Handler
from peersync.replica.scan import hash_bytes, scan
from peersync.transport import keeper
from peersync.transport.local import LocalSession
from peersync.transport.rsync import rsync_files
from peersync.transport.ssh import Session, attach, open_session
from peersync.workspace.lock import workspace_lock
from peersync.workspace.storage import atomic_write_json
from peersync.workspace.workspace import Peer, SyncConfig, Workspace

# Files up to INLINE_MAX_FILE travel inline over the agent channel, INLINE_BATCH_BYTES per request:
# no second SSH connection, and faster than rsync for many small files.  Larger files go through
# rsync, whose delta transfer pays off there.
INLINE_MAX_FILE = 256 << 10
INLINE_BATCH_BYTES = 8 << 20
INLINE_FIRST_BATCH = 512 << 10  # batches grow from this: the target starts writing at once
REMOTE_LOCK_WAIT = 10.0
REMOTE_LOCK_YIELD = 1.0
LOGBASE_MAX = 16 << 20  # log files up to this size keep their synced content for 3-way merges


async def gather_all(*aws):
    """asyncio.gather, except that when one fails the others still run to their end before the
    error propagates: a side is never left writing while the sessions close and the lock goes."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:  # the clearest one: a PeersyncError carries a message meant for the user
        raise next((e for e in errors if isinstance(e, PeersyncError)), errors[0])
    return results


def log_matcher(patterns: tuple[str, ...]):
    """Log-file patterns: a pattern with '/' matches the whole path, else the file name."""
    by_path = [fnmatch.translate(p) for p in patterns if "/" in p]
    by_name = [fnmatch.translate(p) for p in patterns if "/" not in p]
    path_re = re.compile("|".join(by_path)) if by_path else None
    name_re = re.compile("|".join(by_name)) if by_name else None

    def is_log(path: str) -> bool:
        if name_re is not None and name_re.match(path.rsplit("/", 1)[-1]):
            return True
        return path_re is not None and path_re.match(path) is not None

    return is_log


def parse_manifest(raw, selection, who: str) -> dict[str, Entry]:
    """A peer's manifest, with every path validated; one bad path refuses the whole sync."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"{who} sent a malformed manifest")
    out = {}
    for path, wire in raw.items():
        try:
            check_relpath(path)
        except BadPath as err:
            raise ProtocolError(f"{who} sent a hostile path ({err}); refusing to sync with it",
                                "Nothing was written. Check the peer's peersync installation.") from None
        if not selection.contains(path):
            raise ProtocolError(f"{who} sent a path outside the synced selection: {path!r}; refusing to sync",
                                "Nothing was written. Check the peer's peersync installation.")
        try:
            out[path] = Entry.from_wire(wire)
        except (ValueError, TypeError) as err:
            raise ProtocolError(f"{who} sent a malformed entry for {path!r}: {err}") from None
    return out


# Our own ancestors as Entries, by the digest of their file's bytes: a keeper syncs again and
# again, and building 100k Entries costs ~0.13 s.  Content-addressed, so never stale.
_ANCESTOR_ENTRIES: dict[str, dict[str, Entry]] = {}


def _remember_ancestor(digest: str, entries: dict[str, Entry]) -> None:
    while len(_ANCESTOR_ENTRIES) >= 4:
        _ANCESTOR_ENTRIES.pop(next(iter(_ANCESTOR_ENTRIES)))
    _ANCESTOR_ENTRIES[digest] = entries


async def own_ancestor(local: LocalSession, remote_id: str, digest: str | None) -> tuple[str | None, dict | None]:
    """(digest of its file, entries) of our ancestor with `remote_id`; `digest` is the one we
    expect (then the file is not read again).  Callers never modify the entries."""
    if digest is not None and digest in _ANCESTOR_ENTRIES:
        return digest, _ANCESTOR_ENTRIES[digest]
    found = await asyncio.to_thread(local.handler.ancestor_doc, remote_id)
    if found is None:
        return None, None
    entries = read_ancestor(found[1], trusted=True)
    if entries is not None:
        _remember_ancestor(found[0], entries)
    return found[0], entries


def read_ancestor(raw, *, trusted: bool = False) -> dict[str, Entry] | None:
    """An ancestor as stored; paths are validated unless it is our own file (`trusted`)."""
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
        return None
    try:
        if trusted:
            return {p: Entry(*w) for p, w in raw["entries"].items()}
        return {check_relpath(p): Entry.from_wire(w) for p, w in raw["entries"].items()}
    except (BadPath, ValueError, TypeError, KeyError, AttributeError):
        return None  # an unreadable ancestor means "nothing known": union, never deletions


def agreed_ancestor(mine, theirs) -> dict[str, Entry]:
    """Entries both sides recorded alike.  A crash between the two saves leaves them different;
    any disagreement counts as unknown, which can only produce unions and conflicts."""
    if mine is None or theirs is None:
        return {}
    return {p: e for p, e in mine.items() if p in theirs and theirs[p].same_content(e)}


@dataclass
class SideState:
    """Per-side execution state: scanned entries, then what actually ended up on disk."""

    session: object
    scanned: dict[str, Entry]
    final: dict[str, Entry | None] = field(default_factory=dict)

    def now(self, path: str) -> Entry | None:
        return self.final[path] if path in self.final else self.scanned.get(path)


class Run:
    """Executes one plan between the local workspace and one peer, and commits the result."""

    def __init__(self, ws: Workspace, cfg: SyncConfig, peer: Peer, local: LocalSession, remote: Session,
                 report: Report, *, policy: Policy, local_id: str, remote_id: str):
        self.ws, self.cfg, self.peer, self.report = ws, cfg, peer, report
        self.policy, self.local_id, self.remote_id = policy, local_id, remote_id
        self.local_session, self.remote_session = local, remote
        self.batch = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
        self.equalize_mtimes = True  # see execute(); a cloud folder does not take mtimes
        self.sides: dict[Side, SideState] = {}
        self.deleted: list[tuple[str, Entry]] = []  # (path, version) this run moved to a trash

    def session(self, side: Side):
        return self.local_session if side is Side.LOCAL else self.remote_session

    def name(self, side: Side) -> str:
        return "this machine" if side is Side.LOCAL else self.peer.name

    def problem(self, path: str, message: str, side: Side | None = None) -> None:
        where = f" on {self.name(side)}" if side else ""
        self.report.problems.append(Problem(path, message + where, side))

    # -- execute ---------------------------------------------------------------------------
    async def execute(self, changes: list[Change]) -> None:
        recreated = [c for c in changes if c.reason.endswith("-recreated")]
        if recreated:
            changes = [c for c in changes if not c.reason.endswith("-recreated")] + await self.renew(recreated)
        merges = [c for c in changes if c.action is Action.MERGE]
        changes = [c for c in changes if c.action is not Action.MERGE]

        def copies(of: list[Change]):
            return [self.copy(side, [c for c in of if c.action is Action.COPY and c.target is side]) for side in Side]

        # Log merges alongside the plain copies (other paths); a log that cannot merge comes back
        # as a conflict for the policy, copied afterwards.  Deletions last: a rename interrupted
        # midway leaves both names, never neither.
        fallback, *_ = await gather_all(self.merge(merges), *copies(changes))
        await gather_all(*copies(fallback))
        changes += fallback
        await gather_all(*(self.delete(side, [c for c in changes if c.action is Action.DELETE and c.target is side])
                           for side in Side))
        if self.equalize_mtimes:
            # Equal bytes, different mtimes (e.g. written on both sides, or a first sync): the
            # older copy takes the newer mtime, so the ancestor matches both sides exactly.
            # Otherwise one side would look changed for ever after (spurious conflicts), and with
            # three or more peers a deletion and a copy can chase each other round a ring.
            adopt = [c for c in changes if c.action is Action.ADOPT and c.local is not None
                     and c.remote is not None and c.local.mtime_ns != c.remote.mtime_ns]
            await gather_all(*(self.touch(side, [c for c in adopt if c.entry(side).mtime_ns < c.entry(side.other).mtime_ns])
                               for side in Side))
        manual = [c for c in changes if c.action is Action.CONFLICT and c.reason == "manual"]
        await self.keep_both(manual)
        for c in changes:
            if c.action is Action.CONFLICT and c.reason != "manual":
                self.report.conflicts.append({"path": c.path, "kept": "both", "saved_as": None,
                                              "side": None, "reason": "skipped (policy skip)"})

    async def _read(self, side: Side, paths: list[str]) -> dict[str, bytes]:
        """Files' contents (raw bytes on the wire, beside the JSON: protocol.py)."""
        if not paths:
            return {}
        raw = await self.session(side).request("read", paths=paths)
        if not isinstance(raw, dict) or set(raw) != set(paths) or not all(isinstance(v, bytes) for v in raw.values()):
            raise ProtocolError(f"{self.name(side)} answered a read with the wrong files")
        return raw

    async def merge(self, merges: list[Change]) -> list[Change]:
        """Append-merge log files; the ones that cannot merge go back to the conflict policy."""
        if not merges:
            return []
        paths = [c.path for c in merges]
        local_data, remote_data = await asyncio.gather(self._read(Side.LOCAL, paths), self._read(Side.REMOTE, paths))
        fallback, installs = [], {Side.LOCAL: [], Side.REMOTE: []}
        bases = await self._logbases({c.ancestor.hash for c in merges if c.ancestor is not None})
        for c in merges:
            local_first = self.local_id < self.remote_id
            merged = append_merge(local_data[c.path], remote_data[c.path], c.ancestor, local_first=local_first)
            if merged is None and c.ancestor is not None and bases.get(c.ancestor.hash) is not None:
                # Not a pure append on both sides; if both only inserted lines (a third peer's
                # lines landed mid-file), a three-way insertion merge still loses nothing.
                merged = insertion_merge(bases[c.ancestor.hash], local_data[c.path], remote_data[c.path],
                                         local_first=local_first)
            if merged is None:
                fallback.append(decide_conflict(
                    c.path, c.local, c.remote, c.ancestor, policy=self.policy,
                    offset_ns=int((self.report.clock_offset or 0) * 1e9),
                    local_id=self.local_id, remote_id=self.remote_id, reason="rewritten-log"))
                continue
            digest = hash_bytes(merged)
            # One mtime on both sides, so the ancestor matches each of them (a side that already
            # holds the merged bytes keeps its own).
            now = next((c.entry(side).mtime_ns for side, data in ((Side.LOCAL, local_data[c.path]),
                        (Side.REMOTE, remote_data[c.path])) if data == merged), time.time_ns())
            for side, data in ((Side.LOCAL, local_data[c.path]), (Side.REMOTE, remote_data[c.path])):
                if data != merged:
                    base = c.entry(side)
                    installs[side].append({
                        "path": c.path, "data": merged,
                        "expect": base.to_wire(), "new": [len(merged), now, base.mode, digest]})
        outcome = await gather_all(*(self._install(side, installs[side]) for side in Side))
        for side, results in zip(Side, outcome):
            for item, res in zip(installs[side], results):
                if res["ok"] and item["path"] not in self.report.merged:
                    self.report.merged.append(item["path"])
        return fallback

    async def _logbases(self, hashes: set[str]) -> dict[str, bytes | None]:
        """Ancestor contents of log files, from whichever side kept them."""
        found: dict[str, bytes | None] = {}
        for side in Side:
            missing = sorted(h for h in hashes if found.get(h) is None)
            if not missing:
                break
            raw = await self.session(side).request("logbase_get", hashes=missing)
            for digest in missing:
                value = raw.get(digest) if isinstance(raw, dict) else None
                data = value if isinstance(value, bytes) else None
                found[digest] = data if data is not None and hash_bytes(data) == digest else None
        return found

    async def copy(self, target: Side, changes: list[Change]) -> None:
        if not changes:
            return
        source = target.other
        items = []
        for c in changes:
            info = None
            if c.quarantine:  # "peer" names the side whose version won, as the loser's side knows it
                info = {"peer": self.peer.name if target is Side.LOCAL else socket.gethostname(),
                        "reason": _conflict_reason(c)}
            expect = c.entry(target)
            items.append({"path": c.path, "expect": expect.to_wire() if expect else None,
                          "new": c.entry(source).to_wire(), "quarantine": info})
        for c, res in zip(changes, await self.transfer(source, target, items)):
            if not res["ok"]:
                continue
            (self.report.pushed if target is Side.REMOTE else self.report.pulled).append(c.path)
            if c.quarantine:
                self.report.conflicts.append({
                    "path": c.path, "kept": "local" if source is Side.LOCAL else "remote",
                    "winner": self.name(source), "saved_as": res.get("conflict"),
                    "side": target.value, "reason": c.reason})

    async def transfer(self, source: Side, target: Side, items: list[dict]) -> list[dict]:
        """Get `items` from source to target and install them there; results in `items` order.

        Small files travel inline over the agent channel, in batches (reading the next batch
        while the target installs this one); appended large files as their new bytes; other
        large files through rsync, whose delta transfer pays off there.  All at once.
        """
        small = [i for i in items if i["new"][0] <= INLINE_MAX_FILE]
        big = [i for i in items if i["new"][0] > INLINE_MAX_FILE]
        grown, big = await self._tails(source, big)
        outcome = await gather_all(self._copy_inline(source, target, small), self._copy_rsync(source, target, big),
                                   self._install(target, grown))
        results = dict(zip((id(i) for i in small + big + grown), outcome[0] + outcome[1] + outcome[2]))
        return [results[id(i)] for i in items]

    async def _tails(self, source: Side, items: list[dict]) -> tuple[list[dict], list[dict]]:
        """Split large files into (grown, rest): a file the target holds a prefix of (a log that
        was appended to) travels as its new bytes only; the target rebuilds it and checks it."""
        asked = [i for i in items if i["expect"] is not None and i["expect"][0] < i["new"][0]
                 and i["new"][0] - i["expect"][0] <= INLINE_BATCH_BYTES]
        if not asked:
            return [], items
        raw = await self.session(source).request("read_tail", items=[
            {"path": i["path"], "offset": i["expect"][0], "prefix": i["expect"][3]} for i in asked])
        grown = []
        for item in asked:
            data = raw.get(item["path"]) if isinstance(raw, dict) else None
            if isinstance(data, bytes):
                item["tail"] = {"size": item["expect"][0], "prefix": item["expect"][3], "data": data}
                grown.append(item)
        return grown, [i for i in items if "tail" not in i]

    async def _copy_inline(self, source: Side, target: Side, items: list[dict]) -> list[dict]:
        """Read a batch from the source while the target installs earlier ones: requests are
        pipelined, so the target's agent always has the next batch waiting (two at most)."""
        results: list[dict] = []
        installing: collections.deque = collections.deque()
        try:
            for batch in _batches(items, INLINE_BATCH_BYTES, min(INLINE_FIRST_BATCH, INLINE_BATCH_BYTES)):
                data = await self._read(source, [i["path"] for i in batch])
                for item in batch:
                    item["data"] = data[item["path"]]
                installing.append(asyncio.ensure_future(self._install_inline(target, batch)))
                if len(installing) >= 2:
                    results += await installing.popleft()
            while installing:
                results += await installing.popleft()
        finally:
            # On failure a batch may still be in flight: let it end (and its error be collected)
            # before the error goes up — a side is never left writing while the run winds up.
            if installing:
                await asyncio.gather(*installing, return_exceptions=True)
        return results

    async def _install_inline(self, side: Side, batch: list[dict]) -> list[dict]:
        try:
            return await self._install(side, batch)
        finally:
            for item in batch:  # the bytes are written: do not hold a whole transfer in memory
                item.pop("data", None)

    async def _copy_rsync(self, source: Side, target: Side, items: list[dict]) -> list[dict]:
        if not items:
            return []
        local_stage = (await self.local_session.request("stage"))["dir"]
        remote_stage = (await self.remote_session.request("stage"))["dir"]
        push = target is Side.REMOTE
        await rsync_files(self.peer, [i["path"] for i in items], push=push,
                          local_dir=str(self.ws.root) if push else local_stage,
                          remote_dir=remote_stage if push else self.remote_session.hello["root"],
                          basis_dir=self.remote_session.hello["root"] if push else str(self.ws.root))
        return await self._install(target, items)

    async def _install(self, side: Side, items: list[dict]) -> list[dict]:
        if not items:
            return []
        results = (await self.session(side).request("install", items=items))["results"]
        if len(results) != len(items):
            raise ProtocolError(f"{self.name(side)} answered an install with {len(results)} results for {len(items)} files")
        state = self.sides[side]
        for item, res in zip(items, results):
            if res["ok"]:
                state.final[item["path"]] = Entry.from_wire(res["entry"])
            else:
                self.problem(item["path"], res.get("error", "not applied"), side)
        return results

    async def touch(self, side: Side, changes: list[Change]) -> None:
        await self._touch(side, changes, [c.entry(side.other).mtime_ns for c in changes])

    async def _touch(self, side: Side, changes: list[Change], mtimes: list[int]) -> list[Entry | None]:
        """Set mtimes on `side`, each only while its file still is what was scanned (a file
        changed meanwhile is left for the next sync: None)."""
        if not changes:
            return []
        items = [{"path": c.path, "expect": c.entry(side).to_wire(), "mtime_ns": t} for c, t in zip(changes, mtimes)]
        results = (await self.session(side).request("touch", items=items))["results"]
        out = []
        for item, res in zip(items, results):
            entry = Entry.from_wire(res["entry"]) if res.get("ok") else None
            if entry is not None:
                self.sides[side].final[item["path"]] = entry
            out.append(entry)
        return out

    async def renew(self, changes: list[Change]) -> list[Change]:
        """A deleted version put back where it was deleted (reconcile: "-recreated") is a new
        write: it takes the current time before it travels, so that no record of the deletion,
        on any peer, matches it (tombstones.py).  A cloud folder takes no mtimes: as is."""
        out = []
        for side in Side:
            mine = [c for c in changes if c.source is side]
            if side is Side.REMOTE and not self.equalize_mtimes:
                out += mine
                continue
            now = time.time_ns()
            for c, entry in zip(mine, await self._touch(side, mine, [now] * len(mine))):
                if entry is not None:
                    out.append(replace(c, **{side.value: entry}))
        return out

    async def delete(self, side: Side, changes: list[Change]) -> None:
        if not changes:
            return
        items = [{"path": c.path, "expect": c.entry(side).to_wire()} for c in changes]
        results = (await self.session(side).request("delete", items=items, batch=self.batch))["results"]
        for c, res in zip(changes, results):
            if res["ok"]:
                self.sides[side].final[c.path] = None
                self.deleted.append((c.path, c.entry(side)))
                (self.report.deleted_local if side is Side.LOCAL else self.report.deleted_remote).append(c.path)
            else:
                self.problem(c.path, res.get("error", "not deleted"), side)

    async def keep_both(self, changes: list[Change]) -> None:
        """Policy manual: each side keeps its file and gets the other's version in conflicts/."""
        if not changes:
            return
        paths = [c.path for c in changes]
        local_data, remote_data = await asyncio.gather(self._read(Side.LOCAL, paths), self._read(Side.REMOTE, paths))
        ids: dict[Side, list] = {}
        for side, data, other in ((Side.LOCAL, remote_data, self.peer.name),
                                  (Side.REMOTE, local_data, socket.gethostname())):
            items = [{"path": p, "data": data[p],
                      "info": {"peer": other, "reason": "manual: kept both"}} for p in paths]
            ids[side] = (await self.session(side).request("quarantine", items=items))["results"]
        for c, mine, theirs in zip(changes, ids[Side.LOCAL], ids[Side.REMOTE]):
            self.report.conflicts.append({"path": c.path, "kept": "both", "side": "both",
                                          "saved_as": mine.get("conflict"), "remote_saved_as": theirs.get("conflict"),
                                          "reason": "manual: review with peersync conflicts"})

    # -- commit ----------------------------------------------------------------------------
    def new_ancestor(self, old: dict[str, Entry], touched: set[str] | None = None) -> dict[str, Entry]:
        """From what actually happened: a path enters the ancestor only where both sides now agree.
        `touched`: the paths reconcile looked at; every other one is `old`'s entry on both sides."""
        local, remote = self.sides[Side.LOCAL], self.sides[Side.REMOTE]
        if touched is None:
            paths = set(old) | set(local.scanned) | set(remote.scanned) | set(local.final) | set(remote.final)
            result = {}
        else:
            paths = touched | set(local.final) | set(remote.final)
            result = {p: e for p, e in old.items() if p not in paths}
        for path in paths:
            mine, theirs = local.now(path), remote.now(path)
            if mine is not None and mine.same_content(theirs):
                result[path] = mine
            elif mine is None and theirs is None:
                continue
            elif path in old:
                result[path] = old[path]
        return result

    def buried(self, old: dict[str, Entry], new: dict[str, Entry], touched: set[str] | None = None) -> list:
        """Deletion records for both sides (tombstones.py): the versions this run deleted, and
        ancestor entries dropped because neither side holds the file any more."""
        dropped = [(p, old[p]) for p in (old if touched is None else touched) if p in old and p not in new]
        return [[p, e.to_wire()] for p, e in dict([*dropped, *self.deleted]).items()]


async def deletion_records(local, remote, local_entries, remote_entries, touched, *, local_has: bool,
                           remote_has: bool) -> tuple[dict, dict]:
    """Both sides' deletion records for the paths only one side holds (none asked when a side
    keeps none, or no such path exists)."""
    one_sided = [p for p in touched if (p in local_entries) != (p in remote_entries)]
    if not one_sided or not (local_has or remote_has):
        return {}, {}

    async def ask(session, has: bool) -> dict:
        return deletions.from_wire(await session.request("tombstones_get", paths=one_sided)) if has else {}

    return tuple(await gather_all(ask(local, local_has), ask(remote, remote_has)))


def _conflict_reason(change: Change) -> str:
    return {"conflict-newest": "conflict: the other side's version was newer",
            "conflict-local": "conflict: policy keeps the initiating side",
            "conflict-remote": "conflict: policy keeps the peer's side",
            "rewritten-log": "log rewritten on both sides"}.get(change.reason, change.reason)


async def connect(ws: Workspace, cfg: SyncConfig, peer: Peer, timeout: float) -> Session:
    """The peer's agent: through its keeper when one is warm, else over a new SSH connection."""
    if keeper.keep_seconds(cfg) > 0:
        session = await attach(ws, peer, peer.path or str(ws.root), timeout)
        if session is not None:
            return session
    return await open_session(ws, peer, timeout=timeout)


def local_scan_job(ws: Workspace, cfg: SyncConfig, dry_run: bool) -> asyncio.Future:
    return asyncio.ensure_future(asyncio.to_thread(scan, ws.root, cfg.selection, ws.state / "scan-cache.json",
                                                   save_cache=not dry_run))


async def sync_one(ws: Workspace, cfg: SyncConfig, peer: Peer, *, mode: Mode, dry_run: bool, force: bool,
                   policy: Policy, write_lock: asyncio.Lock, connect_timeout: float = 15.0,
                   prescan: asyncio.Future | None = None, session_for=None) -> Report:
    """One peer.  `prescan`: the local scan, already started while we connect (single-peer runs)."""
    report = Report(peer=peer.name, host=peer.host, mode=mode, dry_run=dry_run)
    started = time.monotonic()
    remote = local = None
    try:
        # session_for: a keeper running this sync lends its own connection (keeper.py).
        remote = await (session_for(peer) if session_for else connect(ws, cfg, peer, connect_timeout))
        report.clock_offset = remote.offset
        report.warm = getattr(remote, "kept", False)
        report.in_keeper = session_for is not None
        remote_exists = bool(remote.hello.get("workspace"))
        if remote_exists or not dry_run:
            if not remote_exists:
                await remote.request("init")
            # Two syncs started toward each other each hold their own lock and want the other's:
            # only the side with the smaller instance id waits long, so one of them always wins.
            theirs = remote.hello.get("instance_id")
            wait = REMOTE_LOCK_WAIT if not theirs or ws.instance_id < theirs else REMOTE_LOCK_YIELD
            locked = await remote.request("lock", timeout=wait, what=f"sync with {socket.gethostname()}")
            remote_id = locked["instance_id"]
            _remember_instance(ws, peer, remote_id)
        else:
            remote_id = None
        await remote.request("selection", selection=cfg.selection.to_wire())
        local_id = ws.instance_id
        base_digest = Handler(ws.root).op_ancestor_digest(remote_id) if remote_id else None
        remote_scan = asyncio.create_task(remote.request("scan", save_cache=not dry_run, base_peer=local_id,
                                                         base_digest=base_digest))
        try:
            async with write_lock:  # several peers at once: one writer on this workspace at a time
                local = LocalSession(ws.root)
                await local.request("selection", selection=cfg.selection.to_wire())
                local_scan = await (prescan or local_scan_job(ws, cfg, dry_run))
                # Our ancestor, read while the peer is still scanning.
                mine_digest, mine = await own_ancestor(local, remote_id, base_digest) if remote_id else (None, None)
                remote_raw = await remote_scan
                if remote_raw.get("delta") and (mine is None or mine_digest != base_digest):
                    # A delta against an ancestor we cannot read (or that moved): the whole manifest.
                    remote_raw = await remote.request("scan", save_cache=not dry_run)
                await _sync_locked(ws, cfg, peer, local, remote, report, local_scan, remote_raw, remote_id, mine,
                                   mode=mode, dry_run=dry_run, force=force, policy=policy, base_digest=base_digest)
        finally:
            if not remote_scan.done():
                remote_scan.cancel()
    except PeersyncError as err:
        report.error = str(err)
        report.error_exit = err.exit_code
        report.error_kind = err.kind
    finally:
        if prescan is not None and not prescan.done():
            await asyncio.wait([prescan])  # a thread cannot be cancelled: let it finish first
        for session in (local, remote):
            if session is not None:
                await session.close()
        if remote is not None and not getattr(remote, "kept", False) and report.error is None:
            keeper.spawn(ws, peer, peer.path or str(ws.root), keeper.keep_seconds(cfg))  # warm for the next sync
        report.seconds = time.monotonic() - started
    if not dry_run:
        record(ws, report)
    return report


async def _sync_locked(ws, cfg, peer, local, remote, report, local_scan, remote_raw, remote_id, mine, *,
                       mode, dry_run, force, policy, base_digest: str | None = None) -> None:
    local_id = ws.instance_id
    local_entries = local_scan.manifest  # our own walk of our own disk: nothing to validate
    report.problems.extend(local_scan.problems)
    for path, message in remote_raw.get("problems", []):
        report.problems.append(Problem(path, f"{message} on {peer.name}", Side.REMOTE))
    changed = parse_manifest(remote_raw["entries"], cfg.selection, peer.name)
    if remote_raw.get("delta") and mine is not None:
        # The peer holds the very same ancestor (equal digests) and sent only what differs from it.
        ancestor = mine
        deleted = set(remote_raw.get("deleted") or ())
        remote_entries = {p: e for p, e in mine.items() if p not in deleted}
        remote_entries.update(changed)
    else:
        remote_entries = changed
        theirs = read_ancestor(await remote.request("ancestor_get", peer_id=local_id)) if remote_id else None
        ancestor = agreed_ancestor(mine, theirs)
    touched = touched_paths(ancestor, local_entries, remote_entries,
                            set(changed) | deleted if remote_raw.get("delta") and mine is not None else None)
    local_dead, remote_dead = await deletion_records(
        local, remote, local_entries, remote_entries, touched,
        local_has=tombstones.present(ws.state / tombstones.FILE), remote_has=bool(remote_raw.get("dead")))
    plan = plan_sync(ancestor, local_entries, remote_entries, cfg, peer, policy=policy, mode=mode,
                     offset_ns=int(remote.offset * 1e9), local_id=local_id, remote_id=remote_id or "~",
                     force=force, paths=touched, local_dead=local_dead, remote_dead=remote_dead)
    if dry_run:
        describe(plan, report, peer)
        return
    journal = ws.state / "journal" / f"{remote_id}.json"
    atomic_write_json(journal, {"peer": peer.name, "started": time.time(), "changes": len(plan.changes)})
    run = Run(ws, cfg, peer, local, remote, report, policy=policy, local_id=local_id, remote_id=remote_id)
    run.sides = {Side.LOCAL: SideState(local, local_entries), Side.REMOTE: SideState(remote, remote_entries)}
    await run.execute(list(plan.changes))
    new_ancestor = run.new_ancestor(ancestor, touched)
    buried = run.buried(ancestor, new_ancestor, touched)
    if buried:  # before the ancestor forgets them
        await gather_all(local.request("tombstones_add", items=buried), remote.request("tombstones_add", items=buried))
    saves = []
    if new_ancestor != ancestor or not remote_raw.get("delta"):  # unchanged and already identical: keep
        saves.append(save_ancestor(local, remote, local_id, remote_id, mine, new_ancestor, base_digest,
                                   remote_delta=bool(remote_raw.get("delta")) and ancestor is mine))
    # Log files' new synced content, kept on both sides as the next merge's base (alongside the
    # ancestor: a base that is missing after a crash only means a log conflict, never a loss).
    logs = logbase_items(ancestor, new_ancestor, log_matcher(cfg.logs))
    if logs:
        saves += [local.request("logbase_save", items=logs), remote.request("logbase_save", items=logs)]
    await gather_all(*saves)
    journal.unlink()
    # Last: pruning log bases reads the ancestors just saved.
    await gather_all(local.request("housekeeping", trash_days=cfg.trash_days, prune_logbases=bool(logs)),
                     remote.request("housekeeping", trash_days=cfg.trash_days, prune_logbases=bool(logs)))


async def save_ancestor(local, remote, local_id: str, remote_id: str, mine, new_ancestor, base_digest,
                        *, remote_delta: bool) -> None:
    """Store the new ancestor on both sides, at once: if we die between the two saves, the sides
    disagree and agreed_ancestor() treats the difference as unknown — which can only cause
    unions, never deletions.  A side that still holds the old one (equal digests) gets only what
    changed; both write the same canonical bytes, checked by digest."""
    whole = None

    def manifest() -> dict:
        nonlocal whole
        if whole is None:
            whole = manifest_to_wire(new_ancestor)
        return whole

    # The peer's delta scan proved it holds `ancestor`, which is then `mine`: one delta serves both.
    delta = ancestor_delta(mine, new_ancestor) if mine is not None and base_digest is not None else None

    def put(session, peer_id: str, with_delta: bool) -> asyncio.Future:
        if with_delta and delta is not None:
            return session.request("ancestor_put", peer_id=peer_id, base_digest=base_digest, delta=delta)
        return session.request("ancestor_put", peer_id=peer_id, manifest=manifest())

    theirs, ours = await gather_all(put(remote, local_id, remote_delta), put(local, remote_id, True))
    if not ours.get("applied"):
        ours = await local.request("ancestor_put", peer_id=remote_id, manifest=manifest())
    if theirs.get("digest") != ours.get("digest"):  # its copy moved meanwhile: send it all
        await remote.request("ancestor_put", peer_id=local_id, manifest=manifest())
    _remember_ancestor(ours["digest"], new_ancestor)


def plan_sync(ancestor, local_entries, remote_entries, cfg: SyncConfig, peer: Peer, *, policy: Policy,
              mode: Mode, offset_ns: int, local_id: str, remote_id: str, force: bool, paths=None,
              local_dead=None, remote_dead=None):
    """reconcile, then the safety checks: a plan, or SafetyError before anything is changed."""
    plan = reconcile(ancestor, local_entries, remote_entries, policy=policy, mode=mode,
                     is_log=log_matcher(cfg.logs), offset_ns=offset_ns, local_id=local_id, remote_id=remote_id,
                     paths=paths, local_dead=local_dead, remote_dead=remote_dead)
    violations = mass_delete_violations(plan.changes, len(local_entries), len(remote_entries),
                                        ratio=cfg.mass_delete_ratio, roots=cfg.selection.roots,
                                        local_paths=local_entries, remote_paths=remote_entries)
    if violations and not force:
        raise SafetyError(f"stopped: {'; '.join(violations).replace('the peer', peer.name)} — nothing was changed",
                          "If that is intended, run again with --force (deleted files go to the trash).")
    return plan


def _batches(items: list[dict], limit: int, first: int | None = None):
    """Consecutive runs of `items` of at most `limit` bytes (a bigger file makes a batch alone).
    `first`: the first batch's limit, doubling for each next one up to `limit` — the pipeline
    fills fast (the target writes while the next batch is read), then runs in large batches."""
    batch, size, cap = [], 0, first or limit
    for item in items:
        if batch and size + item["new"][0] > cap:
            yield batch
            batch, size, cap = [], 0, min(cap * 2, limit)
        batch.append(item)
        size += item["new"][0]
    if batch:
        yield batch


def ancestor_delta(old: dict[str, Entry], new: dict[str, Entry]) -> dict:
    """What turns ancestor `old` into `new` (for ancestor_put)."""
    return {"set": {p: e.to_wire() for p, e in new.items() if old.get(p) != e},
            "drop": [p for p in old if p not in new]}


def logbase_items(old: dict[str, Entry], new: dict[str, Entry], is_log) -> list[list[str]]:
    """Log files whose synced content changed: both sides keep it as the next merge's base."""
    return [[p, e.hash] for p, e in new.items()
            if ((o := old.get(p)) is None or o.hash != e.hash) and e.size <= LOGBASE_MAX and is_log(p)]


def describe(plan, report: Report, peer: Peer) -> None:
    """Fill a dry-run report with what the plan would do."""
    for c in plan.changes:
        if c.action is Action.COPY:
            (report.pushed if c.target is Side.REMOTE else report.pulled).append(c.path)
            if c.quarantine:
                report.conflicts.append({"path": c.path, "kept": "local" if c.target is Side.REMOTE else "remote",
                                         "winner": "this machine" if c.target is Side.REMOTE else peer.name,
                                         "saved_as": None, "side": c.target.value, "reason": c.reason})
        elif c.action is Action.DELETE:
            (report.deleted_remote if c.target is Side.REMOTE else report.deleted_local).append(c.path)
        elif c.action is Action.MERGE:
            report.merged.append(c.path)
        elif c.action is Action.CONFLICT:
            report.conflicts.append({"path": c.path, "kept": "both", "saved_as": None, "side": None,
                                     "reason": c.reason})


def _remember_instance(ws: Workspace, peer: Peer, instance_id: str) -> None:
    """Keep the peer's instance id in peers.json, so `peers remove` can drop its ancestor."""
    if peer.extra.get("instanceId") == instance_id:
        return
    peers = ws.load_peers()
    if peer.name in peers and peers[peer.name].host == peer.host:
        current = peers[peer.name]
        peers[peer.name] = Peer(**{**current.__dict__, "extra": {**current.extra, "instanceId": instance_id}})
        ws.save_peers(peers)


def record(ws: Workspace, report: Report) -> None:
    entry = report.to_json()
    for key in ("pushed", "pulled", "merged", "deleted_local", "deleted_remote"):
        entry[key] = entry[key][:50]
    entry["problems"] = entry["problems"][:20]
    try:
        ws.record(entry)
    except OSError:
        pass  # history is best effort; the sync itself already succeeded or failed


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
                     connect_timeout: float = 15.0, session_for=None) -> list[Report]:
    """Sync with the named peers (all when None), concurrently; one Report per peer."""
    cfg = ws.sync_config()  # a malformed config stops the run before anything else
    peers = select_peers(ws, names)
    policy = policy or cfg.policy
    ws.ensure_state()
    with workspace_lock(ws, lock_timeout, what="sync"):
        if not dry_run:
            Handler(ws.root).recover()  # leftovers of an interrupted run, before anything new starts
            for leftover in (ws.state / "journal").glob("*.json"):
                leftover.unlink()
        write_lock = asyncio.Lock()

        async def one(peer: Peer) -> Report:
            if peer.extra.get("type") == "cloud":  # a cloud folder through rclone (DESIGN 7)
                from peersync.sync.cloud import sync_cloud

                job = sync_cloud(ws, cfg, peer, mode=mode, dry_run=dry_run, force=force, policy=policy,
                                 write_lock=write_lock)
            else:
                # With one peer, scan here while the SSH connection and the agent start up.
                prescan = local_scan_job(ws, cfg, dry_run) if len(peers) == 1 else None
                job = sync_one(ws, cfg, peer, mode=mode, dry_run=dry_run, force=force, policy=policy,
                               write_lock=write_lock, connect_timeout=connect_timeout, prescan=prescan,
                               session_for=session_for)
            if time_budget is None:
                return await job
            try:
                return await asyncio.wait_for(job, time_budget)
            except asyncio.TimeoutError:
                report = Report(peer=peer.name, host=peer.host, mode=mode, dry_run=dry_run,
                                error=f"{peer.name}: gave up after {time_budget:g} s; run the sync again")
                report.error_exit = 1
                report.error_kind = "timeout"
                return report

        return list(await gather_all(*(one(p) for p in peers)))


def run_sync(ws: Workspace, names: list[str] | None = None, **kwargs) -> list[Report]:
    return asyncio.run(sync_peers(ws, names, **kwargs))
