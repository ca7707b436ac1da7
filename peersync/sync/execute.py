"""Execute: carry out a plan on both replicas of a pair — quarantine losers, transfer, merge, delete
to the trash, even out mtimes — and record what each side now holds (for the commit step)."""

from __future__ import annotations

import asyncio
import itertools
import operator
import secrets
import socket
import time
from dataclasses import replace

from peersync.core import versions
from peersync.core.commit import SideState, conflict_id, peer_text
from peersync.core.dirfile import REASON
from peersync.core.mergefile import MEMORY_MAX, STREAM_MIN, Merged, MergeRules, merge_base, merge_file
from peersync.core.reconcile import decide_conflict
from peersync.core.textmerge import Version
from peersync.core.types import (
    DIR,
    KIND_BITS,
    Action,
    Change,
    Conflict,
    Entry,
    Policy,
    Problem,
    Report,
    Side,
)
from peersync.errors import PeersyncError, ProtocolError
from peersync.replica.bases import PER_PATH as BASES_PER_PATH
from peersync.replica.scan import hash_bytes
from peersync.sync import chunks, logmerge
from peersync.sync.concurrency import drop, gather_all
from peersync.sync.transfer import INLINE_FIRST_BATCH, INLINE_MAX_FILE, Transfers, _batches
from peersync.transport.replica import Replica


class Run(Transfers):
    """Executes one plan between the local workspace and one other replica."""

    def __init__(self, ws, peer, local: Replica, remote: Replica, report: Report, *, policy: Policy,
                 local_id: str, remote_id: str, local_entries, remote_entries, rules: MergeRules):
        self.ws, self.peer, self.report, self.rules = ws, peer, report, rules
        self.policy, self.local_id, self.remote_id = policy, local_id, remote_id
        self.local_session, self.remote_session = local, remote
        self.batch = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
        self.sides = {Side.LOCAL: SideState(local_entries), Side.REMOTE: SideState(remote_entries)}
        self.deleted: list[tuple[str, Entry]] = []  # (path, version) this run moved to a trash
        # A replica that keeps no conflicts of its own has its losers kept in OUR conflicts/ (and
        # its index), so copies in the two directions run one after the other, not concurrently.
        self._one_direction = asyncio.Lock() if not remote.caps.keeps_conflicts else None
        self.progress = None  # sync/progress.py, set by the pipeline: files installed so far
        self._event: asyncio.Future | None = None  # this run's new event, when it makes new versions
        # What this run learned from each side, asked before anything is installed (Run.prefetch):
        # its merge_bases answers by path (None: it cannot say), kept bases by hash, merge inputs.
        self._known: dict[Side, dict | None] = {Side.LOCAL: {}, Side.REMOTE: {}}
        self._content: dict[Side, dict[str, bytes | None]] = {Side.LOCAL: {}, Side.REMOTE: {}}
        self._inputs: dict[Side, dict[str, bytes]] = {Side.LOCAL: {}, Side.REMOTE: {}}
        self._keep: dict[Side, list[dict]] = {Side.LOCAL: [], Side.REMOTE: []}  # bases_keep items, sent in one go
        self._held: dict[Side, set[str]] = {}  # each side's folders, as its scan found them (delete)
        self._ahead: dict[Side, dict[str, bytes]] = {Side.LOCAL: {}, Side.REMOTE: {}}  # copies' first bytes (prefetch)
        self._reading: dict[Side, asyncio.Future] = {}  # reading them (_read_ahead), while prefetch runs
        self._reading_started: asyncio.Future | None = None  # done once those reads are (or will not be) started
        self._prefetching: asyncio.Future | None = None  # prefetch(), under way beside the installs

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
        try:
            await self._execute(changes)
        finally:
            # A run that failed midway: what prefetch still has in flight is not waited for (it
            # only reads), and its errors are not this run's.
            for task in (self._prefetching, *self._reading.values()):
                drop(task)

    async def _execute(self, changes: list[Change]) -> None:
        if self.progress is not None:
            copies = [c for c in changes if c.action is Action.COPY and c.target is not None]
            sizes = [e.size for c in copies if (e := c.entry(c.source)) is not None]
            self.progress.plan(self.peer.name, len(copies), sum(sizes), [c.path for c in copies])
        recreated = [c for c in changes if c.reason.endswith("-recreated")]
        if recreated:
            changes = [c for c in changes if not c.reason.endswith("-recreated")] + await self.renew(recreated)
        merges = [c for c in changes if c.action is Action.MERGE]
        changes = [c for c in changes if c.action is not Action.MERGE]
        # Deletions ask which folders the other side holds (delete): worked out in a thread while
        # prefetch waits for both sides, not on the event loop after the installs.
        folders = [side.other for side in Side if any(c.action is Action.DELETE and c.target is side for c in changes)]
        # What the merges and the carries of mergeable copies need from each side is asked for
        # first, and not waited for: the copies install meanwhile (an agent takes the questions
        # before its installs, answering in order), each waiting only for its own first bytes
        # (_first_bytes); a merge waits for all of it, and a carry after an install for the answers.
        self._prefetching = self._start_prefetch(merges, changes)
        await gather_all(*(self._hold_folders(side) for side in folders))
        # A file that clashes with the other side's edited folder (core/dirfile.py) is set aside first.
        aside = [c for c in changes if c.reason == REASON]
        await gather_all(*(self.set_aside(side, [c for c in aside if c.target is side]) for side in Side))
        # Where a folder takes a file's place (or the reverse), what goes comes out first: the
        # deletions of a file where files will come below it, before the copies; the copies of a
        # file where a folder goes, after the deletions emptied it.
        first, last = _reordered([c for c in changes if c.reason != REASON])
        early, late = {c.path for c in first}, {c.path for c in last}

        def copies(of: list[Change]):
            return [self.copy(side, [c for c in of if c.action is Action.COPY and c.target is side
                                     and c.path not in late]) for side in Side]

        await gather_all(*(self.delete(side, [c for c in first if c.target is side]) for side in Side))
        # Log merges alongside the plain copies (other paths); a log that cannot merge comes back
        # as a conflict for the policy, copied afterwards.  Deletions last: a rename interrupted
        # midway leaves both names, never neither.
        fallback, *_ = await gather_all(self.merge(merges), *copies(changes))
        await gather_all(*copies(fallback))
        changes += fallback
        await gather_all(*(self.keep_bases(side) for side in Side if not self.keeps_bases_later(side)),
                         *(self.delete(side, [c for c in changes if c.action is Action.DELETE and c.target is side
                                              and c.reason != REASON and c.path not in early])
                           for side in Side))
        await gather_all(*(self.copy(side, [c for c in last if c.target is side]) for side in Side))
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
            # A side that learned history here keeps the versions the other knows its own
            # descends from, as a copy's target does: a later merge of what it holds may need one
            # as its base (the other side's merge of the same bytes, say, that removed a line).
            await gather_all(*(self._carry_bases(side.other, side, [
                (c.path, c.entry(side.other)) for c in agreed if c.entry(side.other).vv
                and not versions.seen(c.entry(side.other).vv, c.entry(side).vv) and self.rules.keeps_base(c.path, c.local)])
                for side in Side))
        # An agent's merge bases go out with the commit's first requests (pipeline.py): it answers
        # in order, so they are kept before anything the commit saves, without a round trip of
        # their own.  (No merge after the copies asks for one: they are best effort, as ever.)
        await gather_all(*(self.keep_bases(side) for side in Side if not self.keeps_bases_later(side)))
        manual = [c for c in changes if c.action is Action.CONFLICT and c.reason == "manual"]
        await self.keep_both(manual)
        for c in changes:
            if c.action is Action.CONFLICT and c.reason != "manual":
                self.report.conflicts.append(Conflict(c.path, kept="both", reason="skipped (policy skip)"))
        await self._prefetched()

    def _start_prefetch(self, merges: list[Change], changes: list[Change]) -> asyncio.Future:
        """prefetch(), started."""
        started = self._reading_started = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(self.prefetch(merges, changes))
        task.add_done_callback(lambda _: started.done() or started.set_result(None))  # (nothing read ahead)
        return task

    async def _prefetched(self) -> None:
        """Wait for what prefetch asked (its failure is the run's)."""
        if self._prefetching is not None:
            await self._prefetching

    async def _first_bytes(self, side: Side) -> dict[str, bytes]:
        """The copies' first bytes read from `side` ahead (_read_ahead; none if not read)."""
        if self._reading_started is not None:
            await self._reading_started
        reading = self._reading.get(side)
        if reading is not None:
            await asyncio.wait([reading])
        return self._ahead[side]

    async def prefetch(self, merges: list[Change], changes: list[Change]) -> None:
        """Ask both sides what the merges and the copies of mergeable files will need, before
        anything is installed: the merges' inputs, each side's merge_bases answer, and the kept
        bases those lead to; and read the copies' first bytes (_read_ahead).  Each side answers
        one request at a time, so asked later these would queue behind the installs; asked
        first they cost two short round trips, beside the installs (execute)."""
        keeps = self.remote_session.caps.keeps_ancestor
        copies = [c for c in changes if c.action is Action.COPY and c.target is not None
                  and (e := c.entry(c.source)) is not None and e.vv and self.rules.keeps_base(c.path, e)
                  and (c.target is Side.LOCAL or keeps)]
        # The same bytes on both sides with different histories: a side whose version the other
        # had not seen passes on what it descends from (as a copy's source does).
        adopted = [(side, c) for c in changes if c.action is Action.ADOPT and c.local is not None
                   and c.remote is not None and self.rules.keeps_base(c.path, c.local) for side in Side
                   if c.entry(side).vv and not versions.seen(c.entry(side).vv, c.entry(side.other).vv)]
        small = [c for c in merges if not self._streamed(c)]
        causal = [c for c in small if c.local.vv and c.remote.vv]
        if not small and not copies and not adopted:
            return
        self._reading = {side: asyncio.ensure_future(self._read_ahead(side, changes)) for side in Side}
        if self._reading_started is not None:
            self._reading_started.set_result(None)
        # Both ends of each carry are asked: what the target lists already is not carried (_carried).
        ask = {side: sorted({c.path for c in causal} | {c.path for c in copies} | {c.path for _, c in adopted})
               for side in Side}
        _, _, local_data, remote_data = await gather_all(
            *(self._answers(side, ask[side]) for side in Side),
            self._read_batched(Side.LOCAL, small), self._read_batched(Side.REMOTE, small))
        self._inputs = {Side.LOCAL: local_data, Side.REMOTE: remote_data}
        want: dict[Side, set[str]] = {side: set() for side in Side}
        for c in copies:
            want[c.source].update(h for h, _ in self._carried(c.source, c.path, c.entry(c.source)))
        for side, c in adopted:
            want[side].update(h for h, _ in self._carried(side, c.path, c.entry(side)))
        for c in causal:  # after the merge, each side keeps what the other knows its input descends from
            for side in Side:
                want[side].update(h for h, _ in self._carried(side, c.path, c.entry(side)))
        common = await self._merge_bases(causal)
        merge_bases = {h for c in small for h in self._base_hashes(c, common)}
        want[Side.LOCAL] |= merge_bases  # a merge's base: ours if we kept it (Run._bases), else theirs
        await gather_all(*(self._bases_of(side, want[side]) for side in Side if want[side]))
        elsewhere = {h for h in merge_bases if self._content[Side.LOCAL].get(h) is None}
        if elsewhere:
            await self._bases_of(Side.REMOTE, elsewhere)

    async def _read_ahead(self, side: Side, changes: list[Change]) -> None:
        """The first inline batch of the copies from `side`, read while prefetch() waits anyway: the
        copies then start installing as soon as it is done (transfer.py takes these bytes).  Any
        trouble: nothing is kept, and the copies read as usual."""
        if self.remote_session.caps.transfer == "rclone":
            return
        paths, keep, size = [], [], 0
        for c in changes:
            entry = c.entry(side) if c.action is Action.COPY and c.source is side and c.target is not None else None
            if entry is None or entry.size > INLINE_MAX_FILE or entry.mode & KIND_BITS == DIR:
                continue
            if size + entry.size > INLINE_FIRST_BATCH and paths:
                break
            size += entry.size
            paths.append(c.path)
            if self.rules.keeps_base(c.path, entry):
                keep.append(c.path)
        try:
            self._ahead[side] = await self._read(side, paths, keep=keep)
        except Exception:  # noqa: BLE001 — only a head start: a file gone or unreadable is the copy's to report
            self._ahead[side] = {}

    def _streamed(self, c: Change) -> bool:
        """A merge of files too large to hold (sync/logmerge.py streams logs; others: the policy)."""
        stream = self.remote_session.caps.transfer == "agent"
        return (stream and self.rules.streams(c.path, c.local.size, c.remote.size)
                or max(c.local.size, c.remote.size) > MEMORY_MAX)

    @staticmethod
    def _base_hashes(c: Change, common: dict) -> set[str]:
        """The kept bases a merge may take: the pair's ancestor's content, the common versions'."""
        own = {c.ancestor.hash} if c.ancestor is not None else set()
        return own | {h for h, _ in common.get(c.path, ())}

    async def _answers(self, side: Side, paths: list[str]) -> dict[str, list] | None:
        """`side`'s merge_bases answer for `paths` — {path: [[hash, vector], …]}, asked once a run
        per path — or None where it cannot say (a cloud folder, an older agent)."""
        known = self._known[side]
        missing = [p for p in paths if known is not None and p not in known]
        if missing:
            try:
                answer = await self.session(side).request("merge_bases", paths=missing)
            except (PeersyncError, LookupError):  # it keeps no ancestors of its own, or predates the op
                self._known[side] = known = None
            else:
                answer = answer if isinstance(answer, dict) else {}
                for path in missing:
                    found = answer.get(path)
                    known[path] = found if isinstance(found, list) else []
        return None if known is None else {p: known[p] for p in paths if p in known}

    def _below(self, side: Side, path: str, entry: Entry) -> list[tuple[str, tuple]]:
        """The versions `side` said `entry` (its version of `path`) descends from, latest last: at
        most the BASES_PER_PATH with the most events (what a copy's target keeps, replica/bases.py)."""
        found = set()
        for item in (self._known[side] or {}).get(path) or ():
            try:
                found.add((item[0], versions.from_wire(item[1])))
            except (ValueError, TypeError, IndexError):
                continue
        below = [(h, vv) for h, vv in found if isinstance(h, str) and h != entry.hash and versions.seen(vv, entry.vv)]
        below.sort(key=lambda hv: (sum(n for _, n in hv[1]), hv[0]))
        return below[-BASES_PER_PATH:]

    def _carried(self, source: Side, path: str, entry: Entry) -> list[tuple[str, tuple]]:
        """What a carry of `entry` from `source` sends the other side: the versions it descends from
        (_below) that the other side's merge_bases answer does not list already.  A version listed
        there is one it keeps with its content (the bases of its ancestors' entries, saved by each
        sync, and those of bases.json): sending it again only costs both ends the bytes.  With two
        machines that is nearly every one (the pair's last synced version)."""
        below = self._below(source, path, entry)
        listed = (self._known[source.other] or {}).get(path)
        if not below or not listed:
            return below
        have = set()
        for item in listed:
            try:
                have.add((item[0], versions.from_wire(item[1])))
            except (ValueError, TypeError, IndexError):
                continue
        return [(h, vv) for h, vv in below if (h, vv) not in have]

    async def _read(self, side: Side, paths: list[str], keep: list[str] = ()) -> dict[str, bytes]:
        """Files' contents (raw bytes on the wire, beside the JSON: protocol.py).  `keep`: those the
        side also keeps as merge bases, as it reads them, where it can (else logbase_save reads them)."""
        if not paths:
            return {}
        keep = keep if self.session(side).hello.get("read_keeps_bases") is True else ()
        raw = await self.session(side).request("read", paths=paths, **({"keep": list(keep)} if keep else {}))
        if not isinstance(raw, dict) or set(raw) != set(paths) or not all(isinstance(v, bytes) for v in raw.values()):
            raise ProtocolError(f"{self.name(side)} answered a read with the wrong files")
        return raw

    async def _read_batched(self, side: Side, changes: list[Change]) -> dict[str, bytes]:
        """Files' contents (each at most MEMORY_MAX bytes), read in requests of bounded size."""
        out: dict[str, bytes] = {}
        for batch in _batches(changes, MERGE_READ_BYTES, size=lambda c: c.entry(side).size):
            out.update(await self._read(side, [c.path for c in batch]))
        return out

    async def merge(self, merges: list[Change]) -> list[Change]:
        """Merge the files changed on both sides (core/mergefile.py decides how) and install the
        same bytes on both; the ones no merge applies to go back to the conflict policy.

        Only concurrent versions get here (reconcile: a version that descends from the other is a
        plain copy), and the merged version descends from both: its vector is the join of both
        histories plus one new event, so neither input is offered as news again and a replica
        that holds either one fast-forwards to it — merges of merges converge without conflicts.
        The merge base is the latest version both sides descend from (`_merge_bases`, mergefile's
        merge_base: of several, their merge), whose content a side kept as a merge base (the pair's
        ancestor's, where nothing better is known)."""
        if not merges:
            return []
        await self._prefetched()  # (its inputs, answers and bases)
        rules = self.rules
        fallback, installs = [], {Side.LOCAL: [], Side.REMOTE: []}
        kept: dict[Side, list] = {Side.LOCAL: [], Side.REMOTE: []}
        already: dict[Side, list] = {Side.LOCAL: [], Side.REMOTE: []}
        looks: dict[str, Merged] = {}

        def policy_for(c: Change) -> Change:
            return decide_conflict(
                c.path, c.local, c.remote, c.ancestor, policy=self.policy,
                offset_ns=int(self.remote_session.offset * 1e9), local_id=self.local_id,
                remote_id=self.remote_id, reason="rewritten-log" if rules.is_log(c.path) else "conflict")

        # A large log merges streamed (sync/logmerge.py: its common part never travels), one at
        # a time, where the peer is an agent; any other merge holds both versions, up to MEMORY_MAX.
        stream = self.remote_session.caps.transfer == "agent"
        large = [c for c in merges if self._streamed(c)]
        merges = [c for c in merges if c not in large]
        for c in large:
            policy = policy_for(c)
            if max(c.local.size, c.remote.size) > MEMORY_MAX and not (stream and rules.is_log(c.path)):
                self.problem(c.path, f"not merged: over the {MEMORY_MAX >> 20} MB peersync merges in memory "
                                     "(only logs merge larger, and only with a peer over SSH); the conflict policy decided")
                fallback.append(policy)
                continue
            try:
                streamed = await logmerge.merge_streamed(
                    {side: self.session(side) for side in Side}, c, local_first=self.local_id < self.remote_id)
            except chunks.FILE_ERRORS as err:
                self.problem(c.path, "log not merged: " + peer_text(getattr(err, "message", None) or str(err)))
                continue
            if not isinstance(streamed, logmerge.Streamed):
                if streamed is not None:
                    self.problem(c.path, streamed)
                fallback.append(policy)
                continue
            vv = versions.to_wire(await self.descendant(c))
            now = next((c.entry(side).mtime_ns for side in Side if side not in streamed.uploads), time.time_ns())
            for side in Side:
                entry = c.entry(side)
                if side in streamed.uploads:
                    installs[side].append({
                        "path": c.path, "upload": streamed.uploads[side], "expect": entry.to_wire(),
                        "new": [streamed.size, now, entry.mode, streamed.digest, vv], "quarantine": None})
                else:
                    already[side].append((c.path, entry.with_vv(tuple(map(tuple, vv)), ())))
        data = {}
        for side in Side:  # read by prefetch(), before the installs
            missing = [c for c in merges if c.path not in self._inputs[side]]
            data[side] = {**self._inputs[side], **await self._read_batched(side, missing)}
        common = await self._merge_bases(merges)
        pair = {c.path: c.ancestor.hash if c.ancestor is not None else None for c in merges}
        bases = await self._bases({h for c in merges for h in self._base_hashes(c, common)})
        # A replica without conflicts/ of its own (a cloud folder) has its pre-merge version kept
        # here by its install (as a copy's loser is), so neither side gets the other's copy too.
        keep_other = self.remote_session.caps.keeps_conflicts
        for c in merges:
            policy = policy_for(c)
            merged = merge_file(
                c.path, rules.strategies(c.path), ancestor=c.ancestor,
                base=_first(merge_base(c.path, rules.strategies(c.path), common[c.path], bases), bases.get(pair[c.path])),
                local=Version(data[Side.LOCAL][c.path], self.machine(Side.LOCAL), c.local.mtime_ns),
                remote=Version(data[Side.REMOTE][c.path], self.machine(Side.REMOTE), c.remote.mtime_ns),
                local_first=self.local_id < self.remote_id, prefer=policy.source if policy.action is Action.COPY else None)
            if merged is None:
                fallback.append(policy)
                continue
            digest = hash_bytes(merged.data)
            vv = versions.to_wire(await self.descendant(c))
            # One mtime on both sides, so the ancestor matches each of them (a side that already
            # holds the merged bytes keeps its own).
            now = next((c.entry(side).mtime_ns for side in Side if data[side][c.path] == merged.data), time.time_ns())
            info = None
            if merged.needs_look:  # both pre-merge versions are kept in conflicts/ too, on both sides
                looks[c.path] = merged
                info = {"reason": _merge_reason(merged, self.machine(policy.source) if policy.source else None)}
            for side in Side:
                mine, theirs = data[side][c.path], data[side.other][c.path]
                entry = c.entry(side)
                if mine != merged.data:
                    installs[side].append({
                        "path": c.path, "data": merged.data, "expect": entry.to_wire(),
                        "new": [len(merged.data), now, entry.mode, digest, vv],
                        "quarantine": info and {**info, "peer": self.machine(side.other)}})
                    if rules.keeps_base(c.path, Entry(len(merged.data), now, entry.mode, digest)):
                        installs[side][-1]["base"] = True  # the next merge's base, kept as it is written
                else:  # this side already holds the merged bytes: it takes the merge's vector
                    already[side].append((c.path, entry.with_vv(tuple(map(tuple, vv)), ())))
                if info and theirs != merged.data and keep_other:
                    kept[side].append({"path": c.path, "data": theirs, "info": {**info, "peer": self.machine(side.other)}})
        if self._one_direction is None:
            outcome = await gather_all(*(self._install(side, installs[side]) for side in Side))
        else:  # the remote's install writes OUR conflicts index too: one after the other
            outcome = [await self._install(side, installs[side]) for side in Side]
        saved = await gather_all(*(self.session(side).request("quarantine", items=kept[side]) if kept[side] else _none()
                                   for side in Side))
        await gather_all(*(self.put_versions(side, already[side]) for side in Side))
        # Both sides keep both inputs and what the other side knows its input descends from: a
        # criss-cross merge's base is made of them (mergefile.merge_base).
        done = {side: {i["path"] for i, res in zip(installs[side], results) if res["ok"]} | {p for p, _ in already[side]}
                for side, results in zip(Side, outcome)}
        made = [c for c in merges if c.path in done[Side.LOCAL] and c.path in done[Side.REMOTE]
                and rules.keeps_base(c.path, c.local) and rules.keeps_base(c.path, c.remote)]
        inputs = [{"path": c.path, "hash": c.entry(s).hash, "vv": versions.to_wire(c.entry(s).vv), "data": data[s][c.path]}
                  for c in made for s in Side if c.entry(s).vv]
        await gather_all(*(self._carry_bases(side.other, side, [(c.path, c.entry(side.other)) for c in made],
                                             inputs=inputs)
                           for side in Side))
        ids: dict[tuple[Side, str], list[str]] = {}
        for side, results, copies in zip(Side, outcome, saved):
            answered = copies.get("results") if isinstance(copies, dict) else None
            for item, res in zip(installs[side] + kept[side], results + (answered if isinstance(answered, list) else [])):
                cid = conflict_id(res.get("conflict")) if isinstance(res, dict) and res.get("ok") else None
                if cid:  # only an id of that shape is kept
                    ids.setdefault((side, item["path"]), []).append(cid)
            for item, res in zip(installs[side], results):
                if res["ok"] and item["path"] not in self.report.merged:
                    self.report.merged.append(item["path"])
        for path, merged in looks.items():
            self.report.conflicts.append(Conflict(
                path, kept="merged", reason=_merge_reason(merged, None), side="both",
                saved_as=", ".join(ids.get((Side.LOCAL, path), [])) or None,
                remote_saved_as=", ".join(ids.get((Side.REMOTE, path), [])) or None,
                passages=merged.kept, keys=tuple(merged.keys)))
        return fallback

    def machine(self, side: Side) -> str:
        """The name a kept passage gives `side`'s version: its machine's own name."""
        name = self.session(side).hello.get("machine")
        if isinstance(name, str) and name.strip():  # written into the file: one short printable line
            return peer_text(name.strip(), 64)
        return socket.gethostname() if side is Side.LOCAL else self.peer.name

    async def _merge_bases(self, merges: list[Change]) -> dict[str, list[tuple[str, tuple]]]:
        """The versions (hash, vector) both sides of each merge descend from, among the versions
        either side has in common with any peer or keeps as a copy's bases (op merge_bases) and
        the pair's own ancestor; core/mergefile.merge_base picks the latest.  In a mesh the pair's
        ancestor can be far older than that: lines one side removed since would look like the
        other side's insertions and come back.  Without vectors (an upgrade), or from a replica
        that cannot say (a cloud folder, an older agent): none (the pair's ancestor is the base)."""
        out: dict[str, list[tuple[str, tuple]]] = {c.path: [] for c in merges}
        causal = [c for c in merges if c.local.vv and c.remote.vv]
        if not causal:
            return out
        paths = [c.path for c in causal]
        answers = [a for a in await gather_all(*(self._answers(side, paths) for side in Side)) if a is not None]
        for c in causal:
            found = {(c.ancestor.hash, c.ancestor.vv)} if c.ancestor is not None and c.ancestor.vv else set()
            for answer in answers:
                for item in answer.get(c.path) or ():
                    try:
                        found.add((item[0], versions.from_wire(item[1])))
                    except (ValueError, TypeError, IndexError):
                        continue
            out[c.path] = [(h, vv) for h, vv in found if versions.seen(vv, c.local.vv) and versions.seen(vv, c.remote.vv)]
        return out

    async def _carry_bases(self, source: Side, target: Side, copied: list[tuple[str, Entry]], *,
                           inputs: list[dict] = ()) -> None:
        """Mergeable files just copied (or merged) to `target`: it keeps the versions the source
        knows each one descends from, with their content (replica/bases.py; the source's
        merge_bases answer and those bases, as prefetch() asked them), and `inputs` (a merge's two versions,
        as bases_keep items), so a later merge on the target finds the latest version both sides
        descend from even when only third machines held it — else an older base brings back lines
        removed since, and criss-cross merges lack the versions their base is made of.  Best
        effort: a side that cannot say or keep (a cloud folder, an older agent) is skipped."""
        copied = [(p, e) for p, e in copied if e.vv]
        if target is Side.REMOTE and not self.remote_session.caps.keeps_ancestor:
            return
        await self._prefetched()  # (the answers and bases it asked for: not asked twice)
        if copied:
            await self._answers(source, [p for p, _ in copied])  # asked by prefetch() already, as a rule
        wanted = [(path, h, vv) for path, entry in copied for h, vv in self._carried(source, path, entry)]
        content = await self._bases_of(source, {h for _, h, _ in wanted}) if wanted else {}
        self._keep[target] += [*inputs, *({"path": p, "hash": h, "vv": versions.to_wire(vv), "data": content[h]}
                                          for p, h, vv in wanted if content.get(h) is not None)]

    def keeps_bases_later(self, side: Side) -> bool:
        """Whether execute() leaves `side`'s last merge bases to the commit (an agent: in order)."""
        return self.session(side).caps.in_order

    async def keep_bases(self, side: Side) -> None:
        """Send what _carry_bases gathered for `side` since the last call, in one request."""
        items, self._keep[side] = self._keep[side], []
        if items:
            try:
                await self.session(side).request("bases_keep", items=items)
            except (PeersyncError, LookupError):
                return

    async def _bases_of(self, side: Side, hashes: set[str]) -> dict[str, bytes | None]:
        """The merge bases `side` kept with these hashes (None: not kept, or not those bytes);
        asked once a run per hash."""
        kept = self._content[side]
        missing = sorted(h for h in hashes if h not in kept)
        if missing:
            raw = await self.session(side).request("logbase_get", hashes=missing)
            for digest in missing:
                value = raw.get(digest) if isinstance(raw, dict) else None
                kept[digest] = value if isinstance(value, bytes) and hash_bytes(value) == digest else None
        return {digest: kept[digest] for digest in hashes}

    async def _bases(self, hashes: set[str]) -> dict[str, bytes | None]:
        """Last synced contents of mergeable files (merge bases), from whichever side kept them."""
        found: dict[str, bytes | None] = {}
        for side in Side:
            missing = {h for h in hashes if found.get(h) is None}
            if not missing:
                break
            found.update(await self._bases_of(side, missing))
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
            if self.rules.keeps_base(c.path, new):  # the next merge's base: kept as it travels (transfer.py)
                items[-1]["base"] = True
        results = await self.transfer(source, target, items)
        # The source side holds the same bytes: it records what the target set aside too.
        await self.put_versions(source, [(c.path, new) for c, new, res in zip(changes, news, results)
                                         if res["ok"] and new.seen != c.entry(source).seen])
        await self._carry_bases(source, target, [(c.path, new) for c, new, res in zip(changes, news, results)
                                                 if res["ok"] and self.rules.keeps_base(c.path, new)])
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
        if self.progress is not None:
            self.progress.advance(self.peer.name, len(items), sum(item["new"][0] for item in items),
                                  [item["path"] for item in items])
        state = self.sides[side]
        for item, res in zip(items, results):
            if not isinstance(res, dict):
                raise ProtocolError(f"{self.name(side)} sent a malformed install result")
            if res.get("ok"):
                state.final[item["path"]] = Entry.from_wire(res["entry"])
                res["conflict"] = conflict_id(res.get("conflict"))  # only an id of that shape is kept
            else:
                self.problem(item["path"], peer_text(res.get("error", "not applied")), side)
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

    async def _hold_folders(self, side: Side) -> None:
        """Every folder `side`'s scan found (_folders), for the deletions on the other side."""
        self._held[side] = await asyncio.to_thread(_folders, self.sides[side].scanned)

    async def delete(self, side: Side, changes: list[Change]) -> None:
        if not changes:
            return
        held = self._held.get(side.other)
        if held is None:  # the other side's scan does not change during the run: once a side
            held = self._held[side.other] = _folders(self.sides[side.other].scanned)
        items = [{"path": c.path, "expect": c.entry(side).to_wire(), **({"dead": c.dead.to_wire()} if c.dead else {}),
                  **({"keep": keep} if (keep := _kept_folder(c.path, held)) else {})}
                 for c in changes]
        results = (await self.session(side).request("delete", items=items, batch=self.batch))["results"]
        for c, res in zip(changes, results):
            if res["ok"] and res.get("kept"):  # an empty folder that holds files now: not a deletion
                self.sides[side].final[c.path] = None
            elif res["ok"]:
                self.sides[side].final[c.path] = None
                self.deleted.append((c.path, c.entry(side)))
                (self.report.deleted_local if side is Side.LOCAL else self.report.deleted_remote).append(c.path)
            else:
                self.problem(c.path, peer_text(res.get("error", "not deleted")), side)

    async def set_aside(self, side: Side, changes: list[Change]) -> None:
        """Files that clash with the other side's edited folder (core/dirfile.py): each is kept in
        conflicts/ (ours, for a replica that keeps none), then moved to the trash, so that the
        folder's files can take its place in this same sync."""
        if not changes:
            return
        data = await self._read(side, [c.path for c in changes])
        keeper = side if side is Side.LOCAL or self.remote_session.caps.keeps_conflicts else Side.LOCAL
        reason = "a file here, a folder with changes on the other side: the folder is kept"
        info = {"peer": self.name(side.other) if side is Side.LOCAL else socket.gethostname(), "reason": reason}
        saved = (await self.session(keeper).request("quarantine", items=[
            {"path": c.path, "data": data[c.path], "info": info} for c in changes]))["results"]
        kept = [(c, res) for c, res in zip(changes, saved) if isinstance(res, dict) and res.get("ok")]
        for c, res in zip(changes, saved):
            if not (isinstance(res, dict) and res.get("ok")):
                self.problem(c.path, "a file clashes with a folder on the other side; not set aside: "
                             + peer_text((res or {}).get("error", "not kept")), side)
        await self.delete(side, [c for c, _ in kept])
        for c, res in kept:
            if self.sides[side].final.get(c.path, "absent") is None:
                self.report.conflicts.append(Conflict(
                    c.path, kept=side.other.value, reason=f"{c.path} was a file on {self.name(side)} and a folder "
                    f"with changes on {self.name(side.other)}: the folder is kept, the file saved as a conflict",
                    winner=self.name(side.other), side=side.value, saved_as=conflict_id(res.get("conflict")),
                    saved_here=keeper is not side))

    async def keep_both(self, changes: list[Change]) -> None:
        """Policy manual: each side keeps its file and gets the other's version in conflicts/."""
        if not changes:
            return
        # Large files travel in ranges where the peer is an agent, never whole in one message.
        whole = STREAM_MIN if self.remote_session.caps.transfer == "agent" else MEMORY_MAX
        local_data, remote_data = await asyncio.gather(
            self._read_batched(Side.LOCAL, [c for c in changes if c.local.size <= whole]),
            self._read_batched(Side.REMOTE, [c for c in changes if c.remote.size <= whole]))
        ids: dict[Side, dict[str, dict]] = {}
        for side, data, other in ((Side.LOCAL, remote_data, self.peer.name),
                                  (Side.REMOTE, local_data, socket.gethostname())):
            info = {"peer": other, "reason": "manual: kept both"}
            items = []
            for c in changes:
                if c.path in data:
                    items.append({"path": c.path, "data": data[c.path], "info": info})
                    continue
                try:  # a large file travels in ranges into this side's staging, never whole
                    upload = await chunks.stage_in_ranges(self.session(side.other), self.session(side), c.path,
                                                          c.entry(side.other).size)
                    items.append({"path": c.path, "upload": upload, "info": info})
                except (*chunks.FILE_ERRORS, LookupError) as err:  # LookupError: a replica without ranges
                    self.problem(c.path, "other version not kept: " + peer_text(getattr(err, "message", None) or str(err)),
                                 side)
            results = (await self.session(side).request("quarantine", items=items))["results"] if items else []
            ids[side] = {item["path"]: res for item, res in zip(items, results)}
        for c in changes:
            mine, theirs = ids[Side.LOCAL].get(c.path, {}), ids[Side.REMOTE].get(c.path, {})
            self.report.conflicts.append(Conflict(
                c.path, kept="both", reason="manual: review with peersync conflicts", side="both",
                saved_as=conflict_id(mine.get("conflict")), remote_saved_as=conflict_id(theirs.get("conflict"))))


MERGE_READ_BYTES = 64 << 20  # merge inputs read per request (a larger file: a request alone)


async def _none():
    return None


def _reordered(changes: list[Change]) -> tuple[list[Change], list[Change]]:
    """(deletions to run before the copies, copies to run after the deletions): a file deleted
    where the same side receives files below it; a file copied where that side holds files below it."""
    # (A first sync comes here with every file of the tree: each folder is added once, and each
    # side's set is looked up by an identity test, not by hashing the Side every time.)
    local, remote = set(), set()
    for c in changes:
        if c.target is not None and (c.action is Action.COPY or c.action is Action.DELETE):
            below = local if c.target is Side.LOCAL else remote
            head = c.path.rpartition("/")[0]
            while head and head not in below:  # a folder there has its own parents there too
                below.add(head)
                head = head.rpartition("/")[0]
    first = [c for c in changes if c.action is Action.DELETE and c.path in (local if c.target is Side.LOCAL else remote)
             and c.entry(c.target) is not None and c.entry(c.target).kind != DIR]
    last = [c for c in changes if c.action is Action.COPY and c.path in (local if c.target is Side.LOCAL else remote)]
    return first, last


_DIR_MODES = frozenset(DIR | bits for bits in range(0o10000))
_MODE = operator.itemgetter(2)  # Entry.mode


def _folders(manifest) -> set[str]:
    """Every folder a manifest holds: the parents of its paths, and its empty directories.  (At
    100k files: the distinct parents first, a few hundred, then their own parents; C-level loops
    where they can be — ten milliseconds, not eighty.)"""
    out = set(itertools.compress(manifest, map(_DIR_MODES.__contains__, map(_MODE, manifest.values()))))
    for head in {path.rpartition("/")[0] for path in manifest}:
        while head and head not in out:
            out.add(head)
            head = head.rpartition("/")[0]
    return out


def _kept_folder(path: str, folders: set[str]) -> str | None:
    """The deepest folder above `path` that the other side still holds: a deletion empties it
    without removing it (it is synced as an empty folder), where the other side has it too."""
    head = path.rpartition("/")[0]
    while head:
        if head in folders:
            return head
        head = head.rpartition("/")[0]
    return None


def _merge_reason(merged: Merged, winner: str | None) -> str:
    """The reason kept with a merge's pre-merge versions (and shown in reports)."""
    if merged.keys:
        keys = ", ".join(merged.keys[:3]) + (f" and {len(merged.keys) - 3} more" if len(merged.keys) > 3 else "")
        return f"merged by key; changed on both sides: {keys} (kept {winner}'s)" if winner else \
            f"merged by key; changed on both sides: {keys}"
    return "merged with both versions kept live"


def _conflict_reason(change: Change) -> str:
    return {"conflict-newest": "conflict: the other side's version was newer",
            "conflict-local": "conflict: policy keeps the initiating side",
            "conflict-remote": "conflict: policy keeps the peer's side",
            "rewritten-log": "log rewritten on both sides"}.get(change.reason, change.reason)


def _first(*values):
    """The first value that is not None (an empty base is a base)."""
    return next((v for v in values if v is not None), None)
