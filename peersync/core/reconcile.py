"""Decide, per path, what a sync must do from the ancestor and both sides' manifests (pure)."""

from __future__ import annotations

from typing import Callable, Iterable

from peersync.core import versions
from peersync.core.deletions import Dead, stale
from peersync.core.types import (
    COARSE_SLACK_NS,
    Action,
    Change,
    Entry,
    Manifest,
    Mode,
    Plan,
    Policy,
    Side,
    coarse,
    gone_paths,
    new_objects,
)

# reason tag -> short human phrase, for reports.  Every Change.reason reconcile emits is a key.
REASONS: dict[str, str] = {
    "local-created": "new here",
    "remote-created": "new on the peer",
    "local-changed": "changed here",
    "remote-changed": "changed on the peer",
    "local-deleted": "deleted here",
    "remote-deleted": "deleted on the peer",
    "restored": "deleted on one side but changed on the other: content kept",
    "local-recreated": "deleted, then put back here: kept as a new version",
    "remote-recreated": "deleted, then put back on the peer: kept as a new version",
    "both-deleted": "deleted on both sides",
    "same-change": "changed the same way on both sides",
    "already-equal": "already identical on both sides",
    "mode-changed": "permission bits changed",
    "append-merge": "log appended on both sides: merged",
    "merge": "changed on both sides: merged",
    "conflict-newest": "changed on both sides: newest kept",
    "conflict-local": "changed on both sides: local kept (policy)",
    "conflict-remote": "changed on both sides: peer's kept (policy)",
    "rewritten-log-newest": "log rewritten on one side: newest kept",
    "rewritten-log-local": "log rewritten on one side: local kept (policy)",
    "rewritten-log-remote": "log rewritten on one side: peer's kept (policy)",
    "skip": "changed on both sides: skipped (policy)",
    "manual": "changed on both sides: left for you to resolve",
    "push": "pushed to the peer",
    "push-delete": "absent here: removed from the peer",
    "pull": "pulled from the peer",
    "pull-delete": "absent on the peer: removed here",
}


def reconcile(
    ancestor: Manifest,
    local: Manifest,
    remote: Manifest,
    *,
    policy: Policy,
    mode: Mode = Mode.SYNC,
    is_log: Callable[[str], bool] = lambda p: False,
    mergeable: Callable[[str], bool] = lambda p: False,
    offset_ns: int = 0,
    local_id: str = "a",
    remote_id: str = "b",
    paths: Iterable[str] | None = None,
    local_dead: Dead | None = None,
    remote_dead: Dead | None = None,
) -> Plan:
    """Return the changes that bring `local` and `remote` together, sorted by path.

    Paths where nothing needs doing (not even an ancestor update) produce no Change.
    `offset_ns` is the remote clock minus the local clock; the ids break exact mtime ties.
    `paths`, when given, are the only paths looked at: the caller vouches that at every other
    path the three manifests hold equal entries (which needs nothing done: see touched_paths).
    `local_dead`/`remote_dead`: each side's deletion records (peersync.replica.tombstones), consulted
    where one side lacks a file the other holds.  `is_log` / `mergeable`: paths whose versions,
    changed on both sides, are merged (Action.MERGE; core.mergefile says how) before any policy.
    """
    dead = {Side.LOCAL: local_dead or {}, Side.REMOTE: remote_dead or {}}
    changes = []
    for path in sorted(set(ancestor) | set(local) | set(remote) if paths is None else paths):
        a, l, r = ancestor.get(path), local.get(path), remote.get(path)
        if mode is Mode.SYNC:
            # Only two versions of a file can merge (a link's target or an empty directory is never
            # merged as text): the rules are asked nothing about the rest, a first sync's all.
            merge = None
            if l is not None and r is not None and l.is_file and r.is_file:
                merge = "append-merge" if is_log(path) else "merge" if mergeable(path) else None
            change = _sync(path, l, r, a, policy, merge, offset_ns, local_id, remote_id, dead)
        else:
            change = _one_way(path, l, r, a, Side.REMOTE if mode is Mode.PUSH else Side.LOCAL)
        if change is not None:
            changes.append(change)
    return Plan(tuple(changes))


def touched_paths(ancestor: Manifest, local: Manifest, remote: Manifest,
                  remote_moved: Iterable[str] | None = None, memo: "Touched | None" = None, *,
                  fresh: set[str] | None = None, scanned: object = None,
                  local_part: set[str] | None = None) -> set[str]:
    """The paths where the three manifests do not all hold equal entries — the only ones
    reconcile can have anything to do for.  `remote_moved`: the peer already said which of its
    paths differ from `ancestor` (a delta scan), so `remote` need not be compared.  `memo`: what
    the last call of a long-lived process found for `local`, with `fresh` and `scanned` (see Touched).
    `local_part`: local_touched's answer for these very `ancestor` and `local`, if already had."""
    out = set(local_part) if local_part is not None else local_touched(ancestor, local, memo, fresh=fresh,
                                                                       scanned=scanned)
    if remote_moved is None:
        differ = _differ(ancestor, remote)
        out.update(differ, gone_paths(ancestor, remote, differ))
    else:
        out.update(remote_moved)
    return out


def local_touched(ancestor: Manifest, local: Manifest, memo: "Touched | None" = None, *,
                  fresh: set[str] | None = None, scanned: object = None) -> set[str]:
    """touched_paths' paths for `local` alone: where it and `ancestor` differ."""
    if memo is not None:
        out = memo.local_paths(ancestor, local, fresh=fresh, scanned=scanned)
        out.update(memo.gone)
    else:
        out = _differ(ancestor, local)
        out.update(gone_paths(ancestor, local, out))
    return out


def _differ(ancestor: Manifest, manifest: Manifest) -> set[str]:
    return {p for p, e in manifest.items() if (a := ancestor.get(p)) is not e and a != e}


class Touched:
    """touched_paths' comparison of one side with the ancestor, remembered between the syncs of a
    long-lived process (a keeper): a watch-fed scan hands back the very entry objects it gave last
    time for what no event named (replica/scan.py), and against the very same ancestor object an
    entry that is the object it was then compares as it did then.  Only entries that are new objects
    are compared; a no-op sync of 100k files then compares none.  After a sync saved a new ancestor
    that differs from the old one only at known paths, `moved` carries the memo over to it.

    Better still, a watch-fed scan can say which paths its manifest may hold another object at
    than the last one's (replica/watched.py, changed_between): `scanned` names the scan that made
    `local`, and `fresh` those paths since the scan of the last call.  Only they (and the paths
    the ancestor moved at) are compared then, and nothing is copied.  The ancestor's paths `local`
    lacks (`gone`) are then looked for among the last call's and the paths just named, and taken
    when they are as many as the counts say are gone (a path can leave a watch-fed scan's
    manifest unnamed): a deletion no longer makes every sync look each of the ancestor's paths up."""

    def __init__(self) -> None:
        self.ancestor: Manifest | None = None
        self.local: dict | None = {}  # None: not kept (the last call had `fresh`)
        self.differ: set[str] = set()
        self.scanned: object = None  # the scan the last call's `local` came from
        self.recheck: set[str] = set()  # paths the ancestor moved at since the last call
        self.gone: set[str] = set()  # the last call's: the ancestor's paths its `local` lacked

    def local_paths(self, ancestor: Manifest, local: Manifest, *, fresh: set[str] | None = None,
                    scanned: object = None) -> set[str]:
        same = self.ancestor is ancestor
        if same and fresh is not None:
            look = fresh | self.recheck
            out = {p for p in look if (e := local.get(p)) is not None and (a := ancestor.get(p)) is not e and a != e}
            out.update(p for p in self.differ if p not in look and p in local)
            # The ancestor's paths `local` lacks: the last call's and those just named, if as many
            # as are gone — a path can leave a watch-fed scan's manifest unnamed (watched.record).
            gone = gone_paths(ancestor, local, out, (self.gone, look))
            kept = None
        else:
            before, was = (self.local, self.differ) if same and self.local is not None else ({}, set())
            out = {p for p in new_objects(before, local) if (a := ancestor.get(p)) is not (e := local[p]) and a != e}
            out.update(p for p in was if (e := local.get(p)) is not None and e is before.get(p))
            kept = dict(local)
            gone = gone_paths(ancestor, local, out)
        self.ancestor, self.local, self.differ, self.scanned, self.recheck = ancestor, kept, set(out), scanned, set()
        self.gone = gone
        return out

    def moved(self, old: Manifest, new: Manifest, paths: Iterable[str]) -> None:
        """The ancestor `old` was replaced by `new`, which differs from it at most at `paths`."""
        if self.ancestor is not old:
            return
        for p in paths:
            if self.local is not None:
                self.local.pop(p, None)
            self.differ.discard(p)
            self.recheck.add(p)
        self.ancestor = new


def _equal(x: Entry | None, y: Entry | None) -> bool:
    """Same content, or both absent."""
    return x.same_content(y) if x is not None else y is None


def _agreement(path, l, r, a) -> Change | None:
    """Both sides already hold the same content (or neither holds the file).  Where they hold it
    with different version vectors, both take the union of the two (execute)."""
    if _equal(a, l) and (l is None or (l.vv, l.seen) == (r.vv, r.seen)):
        return None  # the ancestor already says so
    reason = "both-deleted" if l is None else ("same-change" if a is not None else "already-equal")
    return Change(path, Action.ADOPT, None, l, r, a, reason)




def _unchanged(a: Entry | None, x: Entry | None) -> bool:
    """x is what the ancestor recorded: same content AND not written since.  A file rewritten
    with the ancestor's bytes (a revert) has moved: it is a change, not something to overwrite."""
    if a is None or x is None:
        return a is None and x is None
    if not x.same_content(a):
        return False
    if coarse(x.mtime_ns, a.mtime_ns):
        return abs(x.mtime_ns - a.mtime_ns) < COARSE_SLACK_NS
    return x.mtime_ns == a.mtime_ns


def _newer(x: Entry, y: Entry, skew_ns: int) -> bool:
    """x was written after y on either reading of y's mtime: as y's own clock gave it (y was
    written on its side, `skew_ns` = y's side's clock minus x's) or as is (y was copied there
    with the mtime its writer gave it; a copy keeps it).  A tie is not newer: the side that
    moved is taken to be the later write, so a plain edit stays a plain copy.  Whole-second
    mtimes get the same slack as in _unchanged."""
    margin = x.mtime_ns - y.mtime_ns + min(0, skew_ns)  # the smaller of the two differences
    return margin >= (COARSE_SLACK_NS if coarse(x.mtime_ns, y.mtime_ns) else 1)


def _buried(path: str, l: Entry | None, r: Entry | None, a: Entry | None, dead) -> Change | None:
    """Where one side lacks a file the other holds: the holder's copy may be a version the
    other side deleted (its deletion record matches: same bytes, no newer).  Then the deletion
    goes on.  Unless the holder recorded that very deletion itself and holds the file again: it
    was put back there (a restore that kept the old mtime, a push), which is a new write — the
    copy goes out with the current time (engine), newer than every record of the deletion."""
    if (l is None) == (r is None):
        return None
    holder = Side.LOCAL if r is None else Side.REMOTE
    entry = l if r is None else r
    if entry.vv:
        return None  # a version made since version vectors: _causal_deletion decides
    deleted = [d for d in dead[holder.other].get(path) or () if not d.vv]
    if not deleted or not stale(entry, deleted):
        return None
    if stale(entry, [d for d in dead[holder].get(path) or () if not d.vv]):
        return Change(path, Action.COPY, holder.other, l, r, a, f"{holder.value}-recreated")
    # A copy of a version the other side deleted is not a change that side has not seen: with
    # three or more peers it can arrive through a pair whose ancestor never knew the file.
    return Change(path, Action.DELETE, holder, l, r, a, f"{holder.other.value}-deleted")


def _sync(path, l, r, a, policy, merge, offset_ns, local_id, remote_id, dead) -> Change | None:
    if _equal(l, r):
        return _agreement(path, l, r, a)
    if l is not None and r is not None and (l.vv or r.vv or l.seen or r.seen):
        decided = _causal(path, l, r, a, policy, merge, offset_ns, local_id, remote_id)
        if decided is not None:
            return decided
    gone = _causal_deletion(path, l, r, a, dead)
    if gone is not None:
        return gone
    # A version from before version vectors on either side (an upgrade): decided by the pair's
    # ancestor and the files' times, as before.
    return _by_ancestor(path, l, r, a, policy, merge, offset_ns, local_id, remote_id, dead)


def _causal(path, l, r, a, policy, merge, offset_ns, local_id, remote_id) -> Change | None:
    """Both versions carry vectors: one that descends from the other — or that its holders already
    saw and set aside — is replaced by it, whatever the clocks say; only concurrent versions are
    merged (logs, memory files: `merge` names how) or a conflict (newest then only breaks the tie).  Where one is from before vectors, only a vector
    that records its bytes proves an order; else None: the pair's ancestor decides."""
    order = _order(l, r)
    if not (l.vv and r.vv) and order not in (versions.BEFORE, versions.AFTER):
        return None
    verb = "created" if a is None else "changed"
    if order == versions.BEFORE:
        return Change(path, Action.COPY, Side.LOCAL, l, r, a, f"remote-{verb}")
    if order == versions.AFTER:
        return Change(path, Action.COPY, Side.REMOTE, l, r, a, f"local-{verb}")
    if merge:
        return Change(path, Action.MERGE, None, l, r, a, merge)
    return decide_conflict(path, l, r, a, policy=policy, offset_ns=offset_ns, local_id=local_id,
                           remote_id=remote_id)


def _order(l: Entry, r: Entry) -> str:
    """BEFORE (r supersedes l), AFTER (l supersedes r), or CONCURRENT/EQUAL (neither)."""
    lv, rv = versions.effective(l.vv, l.hash), versions.effective(r.vv, r.hash)
    order = versions.compare(lv, rv)
    if order in (versions.BEFORE, versions.AFTER):
        return order
    l_saw, r_saw = versions.seen(rv, l.history), versions.seen(lv, r.history)
    if l_saw != r_saw:  # one side already set the other's version aside (a conflict it won)
        return versions.AFTER if l_saw else versions.BEFORE
    return order


def _causal_deletion(path, l, r, a, dead) -> Change | None:
    """One side holds a version, the other recorded a deletion with a vector: a held version the
    deletion descends from (or had seen) is deleted, also when it arrives through a fourth
    replica; one made after seeing the deletion, or concurrently with it, comes back — a deletion
    never beats content it did not know."""
    if (l is None) == (r is None):
        return None
    holder = Side.LOCAL if r is None else Side.REMOTE
    held = l if r is None else r
    records = dead[holder.other].get(path)
    record = next((d for d in records if d.vv), None) if records else None
    if record is None:
        return None
    if versions.seen(versions.effective(held.vv, held.hash), record.history):
        return Change(path, Action.DELETE, holder, l, r, a, f"{holder.other.value}-deleted", dead=record)
    if not held.vv:
        return None  # a version from before vectors the deletion did not know: as before
    reason = f"{holder.value}-changed" if versions.seen(record.vv, held.history) else "restored"
    return Change(path, Action.COPY, holder.other, l, r, a, reason, dead=record)


def _by_ancestor(path, l, r, a, policy, merge, offset_ns, local_id, remote_id, dead) -> Change | None:
    buried = _buried(path, l, r, a, dead)
    if buried is not None:
        return buried
    l_same, r_same = _unchanged(a, l), _unchanged(a, r)
    if l_same or r_same:
        # Exactly one side moved away from the ancestor: carry that move to the other side.
        moved, target = (Side.REMOTE, Side.LOCAL) if l_same else (Side.LOCAL, Side.REMOTE)
        moved_entry, target_entry = (r, l) if l_same else (l, r)
        if moved_entry is None:
            return Change(path, Action.DELETE, target, l, r, a, f"{moved.value}-deleted")
        skew = offset_ns if moved is Side.REMOTE else -offset_ns
        if policy is Policy.NEWEST and target_entry is not None and _newer(target_entry, moved_entry, skew):
            # Ancestors are per pair, so with three or more peers the "move" may be an older
            # version arriving through a third peer (a revert in a ring: two versions would chase
            # each other round it for ever).  Under newest a copy never puts an older version over
            # a newer one: the newest write wins, the moved side's version is kept in conflicts/.
            return decide_conflict(path, l, r, a, policy=policy, offset_ns=offset_ns,
                                   local_id=local_id, remote_id=remote_id)
        verb = "created" if a is None else "changed"
        return Change(path, Action.COPY, target, l, r, a, f"{moved.value}-{verb}")
    if l is None or r is None:
        # Deleted on one side, changed on the other: deletion never beats content.
        target = Side.LOCAL if l is None else Side.REMOTE
        return Change(path, Action.COPY, target, l, r, a, "restored")
    if merge:
        return Change(path, Action.MERGE, None, l, r, a, merge)
    return decide_conflict(
        path, l, r, a, policy=policy, offset_ns=offset_ns, local_id=local_id, remote_id=remote_id
    )


def _one_way(path, l, r, a, target: Side) -> Change | None:
    """PUSH (target REMOTE) or PULL (target LOCAL): make `target` match the other side."""
    if _equal(l, r):
        return _agreement(path, l, r, a)
    word = "push" if target is Side.REMOTE else "pull"
    source_entry = l if target is Side.REMOTE else r
    target_entry = r if target is Side.REMOTE else l
    if source_entry is None:
        # The deletion goes to the trash, which keeps the target's version.
        return Change(path, Action.DELETE, target, l, r, a, f"{word}-delete")
    # A target version the source side never saw is kept in conflicts/ before it is replaced.
    if target_entry is not None and source_entry.vv and (
            target_entry.vv or versions.seen(versions.legacy(target_entry.hash), source_entry.history)):
        unseen = not versions.seen(versions.effective(target_entry.vv, target_entry.hash), source_entry.history)
    else:
        unseen = target_entry is not None and not _unchanged(a, target_entry)
    return Change(path, Action.COPY, target, l, r, a, word, quarantine=unseen)


def decide_conflict(
    path: str,
    local: Entry,
    remote: Entry,
    ancestor: Entry | None,
    *,
    policy: Policy,
    offset_ns: int,
    local_id: str,
    remote_id: str,
    reason: str = "conflict",
) -> Change:
    """Apply the conflict policy to a path both sides changed to different content.

    The winner's content is copied over the loser, which execute first saves in conflicts/.
    The outcome depends only on values both machines share, so either may start the sync
    and both reach the same decision.  Decided changes carry the reason `f"{reason}-{how}"`
    (e.g. "conflict-newest", "rewritten-log-local"); unresolved ones "skip" or "manual".
    """
    if policy is Policy.SKIP or policy is Policy.MANUAL:
        return Change(path, Action.CONFLICT, None, local, remote, ancestor, policy.value)
    if policy is Policy.NEWEST:
        local_t, remote_t = local.mtime_ns, remote.mtime_ns - offset_ns  # both on the local clock
        if local_t != remote_t:
            winner = Side.LOCAL if local_t > remote_t else Side.REMOTE
        else:
            winner = Side.LOCAL if local_id < remote_id else Side.REMOTE
    else:
        winner = Side.LOCAL if policy is Policy.LOCAL else Side.REMOTE
    return Change(
        path, Action.COPY, winner.other, local, remote, ancestor, f"{reason}-{policy.value}",
        quarantine=True,
    )
