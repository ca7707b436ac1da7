"""Execute: carry out a plan on both replicas of a pair — quarantine losers, transfer, merge, delete
to the trash, even out mtimes — and record what each side now holds (for the commit step)."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from dataclasses import replace

from peersync.core import versions
from peersync.core.commit import SideState
from peersync.core.merge import append_merge, insertion_merge
from peersync.core.reconcile import decide_conflict
from peersync.core.types import (
    Action,
    Change,
    Conflict,
    Entry,
    Policy,
    Problem,
    Report,
    Side,
)
from peersync.errors import ProtocolError
from peersync.replica.scan import hash_bytes
from peersync.sync.concurrency import gather_all
from peersync.sync.transfer import Transfers
from peersync.transport.replica import Replica


class Run(Transfers):
    """Executes one plan between the local workspace and one other replica."""

    def __init__(self, ws, peer, local: Replica, remote: Replica, report: Report, *, policy: Policy,
                 local_id: str, remote_id: str, local_entries, remote_entries):
        self.ws, self.peer, self.report = ws, peer, report
        self.policy, self.local_id, self.remote_id = policy, local_id, remote_id
        self.local_session, self.remote_session = local, remote
        self.batch = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
        self.sides = {Side.LOCAL: SideState(local_entries), Side.REMOTE: SideState(remote_entries)}
        self.deleted: list[tuple[str, Entry]] = []  # (path, version) this run moved to a trash
        # A replica that keeps no conflicts of its own has its losers kept in OUR conflicts/ (and
        # its index), so copies in the two directions run one after the other, not concurrently.
        self._one_direction = asyncio.Lock() if not remote.caps.keeps_conflicts else None
        self._event: asyncio.Future | None = None  # this run's new event, when it makes new versions

    # -- versions --------------------------------------------------------------------------
    async def descendant(self, c: Change) -> tuple:
        """The vector of a new version this run makes from both sides' (a merge): it contains both,
        plus one new event of this replica, so a replica holding either input fast-forwards to it."""
        if self._event is None:  # one counter serves the whole run (vectors are per path)
            self._event = asyncio.ensure_future(asyncio.to_thread(self.local_session.handler.versions.reserve))
        counter = await self._event
        vv = versions.join(*(e.history for e in (c.local, c.remote) if e is not None))
        return versions.bump(vv, versions.short_id(self.local_id), counter)

    async def put_versions(self, side: Side, items: list[tuple[str, Entry]]) -> None:
        """`side` already holds these bytes: only its record of their vector changes."""
        items = [(p, e) for p, e in items if self.sides[side].current(p) is not None]
        if not items:
            return
        await self.session(side).request("versions_put", items=[[p, e.to_wire()] for p, e in items])
        for path, entry in items:
            now = self.sides[side].current(path)
            self.sides[side].final[path] = now.with_vv(entry.vv, entry.seen)

    @property
    def equalize_mtimes(self) -> bool:
        return self.remote_session.caps.takes_mtimes

    def session(self, side: Side) -> Replica:
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
        moded = [c for c in changes if c.mode is not None]
        if moded:  # permission bits merged from both sides (core/modes.py): each side that differs takes them
            await gather_all(*(self.chmod(side, [c for c in moded if (e := self.sides[side].current(c.path)) is not None
                                                 and e.mode != c.mode]) for side in Side))
        agreed = [c for c in changes if c.action is Action.ADOPT and c.local is not None and c.remote is not None
                  and (c.local.vv, c.local.seen) != (c.remote.vv, c.remote.seen)]
        if agreed:  # the same bytes on both sides with different histories: both take the union
            union = {c.path: (versions.join(c.local.vv, c.remote.vv), versions.join(c.local.seen, c.remote.seen))
                     for c in agreed}
            await gather_all(*(self.put_versions(side, [(c.path, c.entry(side).with_vv(*union[c.path]))
                                                        for c in agreed if (c.entry(side).vv, c.entry(side).seen) != union[c.path]])
                               for side in Side))
        manual = [c for c in changes if c.action is Action.CONFLICT and c.reason == "manual"]
        await self.keep_both(manual)
        for c in changes:
            if c.action is Action.CONFLICT and c.reason != "manual":
                self.report.conflicts.append(Conflict(c.path, kept="both", reason="skipped (policy skip)"))

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
        already: dict[Side, list] = {Side.LOCAL: [], Side.REMOTE: []}
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
            vv = versions.to_wire(await self.descendant(c))
            # One mtime on both sides, so the ancestor matches each of them (a side that already
            # holds the merged bytes keeps its own).
            now = next((c.entry(side).mtime_ns for side, data in ((Side.LOCAL, local_data[c.path]),
                        (Side.REMOTE, remote_data[c.path])) if data == merged), time.time_ns())
            for side, data in ((Side.LOCAL, local_data[c.path]), (Side.REMOTE, remote_data[c.path])):
                base = c.entry(side)
                if data != merged:
                    installs[side].append({
                        "path": c.path, "data": merged,
                        "expect": base.to_wire(), "new": [len(merged), now, base.mode, digest, vv]})
                else:  # this side already holds the merged bytes: it takes the merge's vector
                    already[side].append((c.path, base.with_vv(tuple(map(tuple, vv)), ())))
        outcome = await gather_all(*(self._install(side, installs[side]) for side in Side))
        await gather_all(*(self.put_versions(side, already[side]) for side in Side))
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
        if self._one_direction is not None:
            async with self._one_direction:
                return await self._copy(target, changes)
        return await self._copy(target, changes)

    async def _copy(self, target: Side, changes: list[Change]) -> None:
        source = target.other
        items, news = [], []
        for c in changes:
            info = None
            if c.quarantine:  # "peer" names the side whose version won, as the loser's side knows it
                info = {"peer": self.peer.name if target is Side.LOCAL else socket.gethostname(),
                        "reason": _conflict_reason(c)}
            expect = c.entry(target)
            new = c.entry(source)
            # A version keeps its own lineage (an edit already made from it elsewhere stays a
            # fast-forward over it); both sides remember what it replaced — a conflict's loser, a
            # deletion it outlived, what the target had already set aside — so no replica offers
            # any of that as news again.
            replaced = expect.history if expect is not None else (c.dead.history if c.dead is not None else ())
            if not versions.seen(replaced, new.history):
                new = new.with_vv(new.vv, versions.join(new.seen, replaced))
            news.append(new)
            items.append({"path": c.path, "expect": expect.to_wire() if expect else None,
                          "new": new.to_wire(), "quarantine": info})
        results = await self.transfer(source, target, items)
        # The source side holds the same bytes: it records what the target set aside too.
        await self.put_versions(source, [(c.path, new) for c, new, res in zip(changes, news, results)
                                         if res["ok"] and new.seen != c.entry(source).seen])
        for c, res in zip(changes, results):
            if not res["ok"]:
                continue
            (self.report.pushed if target is Side.REMOTE else self.report.pulled).append(c.path)
            if c.quarantine:
                self.report.conflicts.append(Conflict(
                    c.path, kept="local" if source is Side.LOCAL else "remote", reason=c.reason,
                    winner=self.name(source), side=target.value, saved_as=res.get("conflict"),
                    saved_here=target is Side.REMOTE and not self.remote_session.caps.keeps_conflicts
                    and bool(res.get("conflict"))))

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

    async def chmod(self, side: Side, changes: list[Change]) -> None:
        if not changes:
            return
        items = [{"path": c.path, "expect": self.sides[side].current(c.path).to_wire(), "mode": c.mode} for c in changes]
        results = (await self.session(side).request("chmod", items=items))["results"]
        for item, res in zip(items, results):
            if res.get("ok"):
                self.sides[side].final[item["path"]] = Entry.from_wire(res["entry"])
            else:
                self.problem(item["path"], f"permission bits not set: {res.get('error', 'not applied')}", side)

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
        items = [{"path": c.path, "expect": c.entry(side).to_wire(), **({"dead": c.dead.to_wire()} if c.dead else {})}
                 for c in changes]
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
            self.report.conflicts.append(Conflict(
                c.path, kept="both", reason="manual: review with peersync conflicts", side="both",
                saved_as=mine.get("conflict"), remote_saved_as=theirs.get("conflict")))


def _conflict_reason(change: Change) -> str:
    return {"conflict-newest": "conflict: the other side's version was newer",
            "conflict-local": "conflict: policy keeps the initiating side",
            "conflict-remote": "conflict: policy keeps the peer's side",
            "rewritten-log": "log rewritten on both sides"}.get(change.reason, change.reason)
