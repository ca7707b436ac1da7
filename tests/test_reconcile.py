"""Reconcile: one table of named cases, plus properties the table cannot cover."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from peersync.core.reconcile import REASONS, decide_conflict, reconcile
from peersync.core.types import Action, Change, Entry, Mode, Policy, Side

COPY, DELETE, MERGE, CONFLICT, ADOPT = (
    Action.COPY, Action.DELETE, Action.MERGE, Action.CONFLICT, Action.ADOPT,
)
LOCAL, REMOTE = Side.LOCAL, Side.REMOTE


def e(content: str, t: int = 1000, mode: int = 0o644) -> Entry:
    data = content.encode()
    return Entry(len(data), t, mode, xxhash.xxh3_128_hexdigest(data))


@dataclass
class Case:
    id: str
    ancestor: dict
    local: dict
    remote: dict
    expect: list  # (path, action, target, reason, quarantine)
    policy: Policy = Policy.NEWEST
    mode: Mode = Mode.SYNC
    logs: tuple = ()
    offset_ns: int = 0
    ids: tuple = ("a", "b")
    extra: dict = field(default_factory=dict)  # more keyword arguments: local_dead, remote_dead


F = "memory/notes.md"
SEC, MS = 1_000_000_000, 1_000_000
T = 1_700_000_000 * SEC + 123_456  # a sub-second mtime base (not a whole-second one)
LOG = "memory/2024-05-01.md"

CASES = [
    # --- SYNC: the DESIGN 3 table, row by row -------------------------------------------------
    Case("unchanged", {F: e("v1")}, {F: e("v1")}, {F: e("v1")}, []),
    Case("unchanged-content-touched-mtime", {F: e("v1", 1)}, {F: e("v1", 9)}, {F: e("v1", 5)}, []),
    Case("local-changed", {F: e("v1")}, {F: e("v2")}, {F: e("v1")},
         [(F, COPY, REMOTE, "local-changed", False)]),
    # A revert: the peer wrote the ancestor's bytes again (mtime moved) while this side changed
    # the file: both changed, so the conflict policy decides (the later write wins) — never a
    # silent overwrite of the revert.
    Case("remote-reverted-local-changed-is-a-conflict", {F: e("v1", 1_000_000_000_000)},
         {F: e("v2", 2_000_000_000_000)}, {F: e("v1", 3_000_000_000_000)},
         [(F, COPY, LOCAL, "conflict-newest", True)]),
    Case("whole-second-mtime-within-slack-is-not-a-revert", {F: e("v1", 1_000_123_456_789)},
         {F: e("v2", 2_000_000_000_000)}, {F: e("v1", 1_001_000_000_000)},
         [(F, COPY, REMOTE, "local-changed", False)]),
    Case("sub-second-revert-is-a-change", {F: e("v1", 1_000_123_456_789)},
         {F: e("v2", 1_000_200_000_000)}, {F: e("v1", 1_000_300_000_001)},
         [(F, COPY, LOCAL, "conflict-newest", True)]),  # the later write (the revert) wins
    Case("remote-changed", {F: e("v1")}, {F: e("v1")}, {F: e("v2")},
         [(F, COPY, LOCAL, "remote-changed", False)]),
    Case("local-created", {}, {F: e("v1")}, {},
         [(F, COPY, REMOTE, "local-created", False)]),
    Case("remote-created", {}, {}, {F: e("v1")},
         [(F, COPY, LOCAL, "remote-created", False)]),
    Case("local-deleted", {F: e("v1")}, {}, {F: e("v1")},
         [(F, DELETE, REMOTE, "local-deleted", False)]),
    Case("remote-deleted", {F: e("v1")}, {F: e("v1")}, {},
         [(F, DELETE, LOCAL, "remote-deleted", False)]),
    Case("local-deleted-remote-changed-restores", {F: e("v1")}, {}, {F: e("v2")},
         [(F, COPY, LOCAL, "restored", False)]),
    Case("remote-deleted-local-changed-restores", {F: e("v1")}, {F: e("v2")}, {},
         [(F, COPY, REMOTE, "restored", False)]),
    Case("restore-beats-newest-and-policy", {F: e("v1")}, {}, {F: e("v2", 1)},
         [(F, COPY, LOCAL, "restored", False)], policy=Policy.LOCAL),
    Case("both-deleted-adopts", {F: e("v1")}, {}, {},
         [(F, ADOPT, None, "both-deleted", False)]),
    Case("both-changed-equal-adopts", {F: e("v1")}, {F: e("v2", 5)}, {F: e("v2", 7)},
         [(F, ADOPT, None, "same-change", False)]),
    Case("no-ancestor-equal-adopts", {}, {F: e("v1")}, {F: e("v1", 3)},
         [(F, ADOPT, None, "already-equal", False)]),
    Case("log-both-appended-merges", {LOG: e("v1")}, {LOG: e("v1+l")}, {LOG: e("v1+r")},
         [(LOG, MERGE, None, "append-merge", False)], logs=(LOG,)),
    Case("log-one-side-changed-copies", {LOG: e("v1")}, {LOG: e("v1+l")}, {LOG: e("v1")},
         [(LOG, COPY, REMOTE, "local-changed", False)], logs=(LOG,)),
    Case("no-ancestor-log-differs-merges", {}, {LOG: e("x")}, {LOG: e("y")},
         [(LOG, MERGE, None, "append-merge", False)], logs=(LOG,)),
    Case("no-ancestor-differs-conflict", {}, {F: e("x", 2000)}, {F: e("y", 1000)},
         [(F, COPY, REMOTE, "conflict-newest", True)]),
    Case("no-ancestor-union", {},
         {"MEMORY.md": e("m"), "memory/a.md": e("a"), F: e("same")},
         {"USER.md": e("u"), "memory/b.md": e("b"), F: e("same")},
         [("MEMORY.md", COPY, REMOTE, "local-created", False),
          ("USER.md", COPY, LOCAL, "remote-created", False),
          ("memory/a.md", COPY, REMOTE, "local-created", False),
          ("memory/b.md", COPY, LOCAL, "remote-created", False),
          (F, ADOPT, None, "already-equal", False)]),
    # --- conflict policy ------------------------------------------------------------------------
    Case("newest-local-newer", {F: e("v1")}, {F: e("l", 2000)}, {F: e("r", 1000)},
         [(F, COPY, REMOTE, "conflict-newest", True)]),
    Case("newest-remote-newer", {F: e("v1")}, {F: e("l", 1000)}, {F: e("r", 2000)},
         [(F, COPY, LOCAL, "conflict-newest", True)]),
    Case("newest-offset-flips-to-local", {F: e("v1")}, {F: e("l", 1000)}, {F: e("r", 2000)},
         [(F, COPY, REMOTE, "conflict-newest", True)], offset_ns=1500),  # peer clock 1.5 µs ahead
    Case("newest-offset-flips-to-remote", {F: e("v1")}, {F: e("l", 2000)}, {F: e("r", 1000)},
         [(F, COPY, LOCAL, "conflict-newest", True)], offset_ns=-1500),
    Case("newest-tie-smaller-local-id-wins", {F: e("v1")}, {F: e("l", 1000)}, {F: e("r", 1000)},
         [(F, COPY, REMOTE, "conflict-newest", True)], ids=("a", "b")),
    Case("newest-tie-smaller-remote-id-wins", {F: e("v1")}, {F: e("l", 1000)}, {F: e("r", 1000)},
         [(F, COPY, LOCAL, "conflict-newest", True)], ids=("b", "a")),
    # The same pair seen from the other machine: sides swapped, offset negated -> "x" still wins.
    Case("tie-after-offset-from-a", {F: e("v1")}, {F: e("x", 1000)}, {F: e("y", 1300)},
         [(F, COPY, REMOTE, "conflict-newest", True)], offset_ns=300, ids=("a", "b")),
    Case("tie-after-offset-from-b", {F: e("v1")}, {F: e("y", 1300)}, {F: e("x", 1000)},
         [(F, COPY, LOCAL, "conflict-newest", True)], offset_ns=-300, ids=("b", "a")),
    Case("policy-local", {F: e("v1")}, {F: e("l", 1)}, {F: e("r", 9)},
         [(F, COPY, REMOTE, "conflict-local", True)], policy=Policy.LOCAL),
    Case("policy-remote", {F: e("v1")}, {F: e("l", 9)}, {F: e("r", 1)},
         [(F, COPY, LOCAL, "conflict-remote", True)], policy=Policy.REMOTE),
    Case("policy-skip", {F: e("v1")}, {F: e("l")}, {F: e("r")},
         [(F, CONFLICT, None, "skip", False)], policy=Policy.SKIP),
    Case("policy-manual", {F: e("v1")}, {F: e("l")}, {F: e("r")},
         [(F, CONFLICT, None, "manual", False)], policy=Policy.MANUAL),
    Case("policy-does-not-touch-one-sided-change", {F: e("v1")}, {F: e("v2")}, {F: e("v1")},
         [(F, COPY, REMOTE, "local-changed", False)], policy=Policy.REMOTE),
    # --- newest: a one-sided copy never puts an older version over a newer one ----------------
    # (with three or more peers the "move" may be an older version that came through a third one)
    Case("older-move-over-newer-local-is-a-conflict", {F: e("x", T + 5 * MS)}, {F: e("x", T + 5 * MS)},
         {F: e("y", T + 1 * MS)}, [(F, COPY, REMOTE, "conflict-newest", True)]),
    Case("older-move-over-newer-remote-is-a-conflict", {F: e("x", T + 5 * MS)}, {F: e("y", T + 1 * MS)},
         {F: e("x", T + 5 * MS)}, [(F, COPY, LOCAL, "conflict-newest", True)]),
    Case("newer-move-is-a-plain-copy", {F: e("x", T + 1 * MS)}, {F: e("x", T + 1 * MS)},
         {F: e("y", T + 5 * MS)}, [(F, COPY, LOCAL, "remote-changed", False)]),
    # A tie is not "older" (the ids, which would pick local here, play no part).
    Case("equal-mtime-move-is-a-plain-copy", {F: e("x", T + 1 * MS)}, {F: e("x", T + 1 * MS)},
         {F: e("y", T + 1 * MS)}, [(F, COPY, LOCAL, "remote-changed", False)], ids=("a", "b")),
    # offset: the peer's clock is 10 ms behind, so its edit at peer-time T+1 ms was written after
    # local's T+5 ms: a plain copy.  It must be older on both readings (raw and corrected).
    Case("offset-makes-the-move-newer", {F: e("x", T + 5 * MS)}, {F: e("x", T + 5 * MS)},
         {F: e("y", T + 1 * MS)}, [(F, COPY, LOCAL, "remote-changed", False)], offset_ns=-10 * MS),
    # The peer's clock 10 ms ahead: raw the move is older by 4 ms, corrected by 14 ms: a conflict.
    Case("offset-ahead-still-older", {F: e("x", T + 5 * MS)}, {F: e("x", T + 5 * MS)},
         {F: e("y", T + 1 * MS)}, [(F, COPY, REMOTE, "conflict-newest", True)], offset_ns=10 * MS),
    # x was written on the peer and copied here with the peer's mtime; the peer's edit at T+9 ms
    # is newer read as is, older only once "corrected": not older on both readings, a plain copy.
    Case("offset-does-not-revert-a-newer-raw-edit", {F: e("x", T + 5 * MS)}, {F: e("x", T + 5 * MS)},
         {F: e("y", T + 9 * MS)}, [(F, COPY, LOCAL, "remote-changed", False)], offset_ns=10 * MS),
    Case("whole-second-mtimes-within-slack-copy", {F: e("x", 1_000 * SEC + 900 * MS)},
         {F: e("x", 1_000 * SEC + 900 * MS)}, {F: e("y", 1_000 * SEC)},
         [(F, COPY, LOCAL, "remote-changed", False)]),
    Case("whole-second-mtimes-beyond-slack-conflict", {F: e("x", 1_003 * SEC + 900 * MS)},
         {F: e("x", 1_003 * SEC + 900 * MS)}, {F: e("y", 1_000 * SEC)},
         [(F, COPY, REMOTE, "conflict-newest", True)]),
    Case("older-log-move-is-a-conflict-too", {LOG: e("x", T + 5 * MS)}, {LOG: e("x", T + 5 * MS)},
         {LOG: e("x+l", T + 1 * MS)}, [(LOG, COPY, REMOTE, "conflict-newest", True)], logs=(LOG,)),
    Case("older-move-deletion-still-deletes", {F: e("x", T + 5 * MS)}, {F: e("x", T + 5 * MS)}, {},
         [(F, DELETE, LOCAL, "remote-deleted", False)]),
    Case("older-move-created-copies", {}, {}, {F: e("y", T + 1 * MS)},
         [(F, COPY, LOCAL, "remote-created", False)]),
    Case("older-move-under-skip-copies", {F: e("x", T + 5 * MS)}, {F: e("x", T + 5 * MS)},
         {F: e("y", T + 1 * MS)}, [(F, COPY, LOCAL, "remote-changed", False)], policy=Policy.SKIP),
    Case("older-move-under-local-copies", {F: e("x", T + 5 * MS)}, {F: e("y", T + 1 * MS)},
         {F: e("x", T + 5 * MS)}, [(F, COPY, REMOTE, "local-changed", False)], policy=Policy.LOCAL),
    # --- deletion records (tombstones): a copy of a version the other side deleted ---------------
    # With three or more peers it can arrive through a pair whose ancestor never knew the file;
    # the deletion goes on instead of the copy coming back.
    Case("stale-copy-of-locally-deleted-version-is-deleted", {}, {}, {F: e("x", T)},
         [(F, DELETE, REMOTE, "local-deleted", False)], extra={"local_dead": {F: [e("x", T)]}}),
    Case("stale-copy-of-remotely-deleted-version-is-deleted", {}, {F: e("x", T)}, {},
         [(F, DELETE, LOCAL, "remote-deleted", False)], extra={"remote_dead": {F: [e("x", T)]}}),
    Case("stale-older-copy-of-same-bytes-is-deleted", {}, {}, {F: e("x", T - 5 * MS)},
         [(F, DELETE, REMOTE, "local-deleted", False)], extra={"local_dead": {F: [e("y", T), e("x", T)]}}),
    Case("stale-copy-beats-restore", {F: e("v1", T - SEC)}, {}, {F: e("x", T)},
         [(F, DELETE, REMOTE, "local-deleted", False)], extra={"local_dead": {F: [e("x", T)]}}),
    Case("same-bytes-written-after-the-deletion-come-back", {}, {}, {F: e("x", T + 1 * MS)},
         [(F, COPY, LOCAL, "remote-created", False)], extra={"local_dead": {F: [e("x", T)]}}),
    Case("other-bytes-than-the-deleted-come-back", {}, {}, {F: e("y", T - SEC)},
         [(F, COPY, LOCAL, "remote-created", False)], extra={"local_dead": {F: [e("x", T)]}}),
    # Put back where it was deleted (a restore that kept the old mtime, a push): a new write
    # (the engine gives it the current time before it travels).
    Case("deleted-version-put-back-where-it-was-deleted-is-new", {F: e("v1", T - SEC)}, {}, {F: e("x", T)},
         [(F, COPY, LOCAL, "remote-recreated", False)],
         extra={"local_dead": {F: [e("x", T)]}, "remote_dead": {F: [e("x", T)]}}),
    Case("whole-second-copy-within-slack-is-stale", {}, {}, {F: e("x", 1_700_000_001 * SEC)},
         [(F, DELETE, REMOTE, "local-deleted", False)], extra={"local_dead": {F: [e("x", T)]}}),
    Case("record-of-the-holding-side-alone-changes-nothing", {}, {}, {F: e("x", T)},
         [(F, COPY, LOCAL, "remote-created", False)], extra={"remote_dead": {F: [e("x", T)]}}),
    Case("records-ignored-when-both-sides-hold-the-file", {F: e("v1", T - SEC)}, {F: e("v1", T - SEC)},
         {F: e("x", T)}, [(F, COPY, LOCAL, "remote-changed", False)], extra={"local_dead": {F: [e("x", T)]}}),
    Case("records-ignored-by-push", {}, {F: e("x", T)}, {},
         [(F, COPY, REMOTE, "push", False)], mode=Mode.PUSH, extra={"remote_dead": {F: [e("x", T)]}}),
    Case("stale-copy-deleted-under-skip-too", {}, {F: e("x", T)}, {},
         [(F, DELETE, LOCAL, "remote-deleted", False)], policy=Policy.SKIP,
         extra={"remote_dead": {F: [e("x", T)]}}),
    # --- PUSH / PULL ----------------------------------------------------------------------------
    Case("push-local-changed", {F: e("v1")}, {F: e("v2")}, {F: e("v1")},
         [(F, COPY, REMOTE, "push", False)], mode=Mode.PUSH),
    Case("push-overwrites-remote-change-quarantined", {F: e("v1")}, {F: e("v1")}, {F: e("v2")},
         [(F, COPY, REMOTE, "push", True)], mode=Mode.PUSH),
    Case("push-no-ancestor-quarantines", {}, {F: e("x")}, {F: e("y")},
         [(F, COPY, REMOTE, "push", True)], mode=Mode.PUSH),
    Case("push-local-created", {}, {F: e("x")}, {},
         [(F, COPY, REMOTE, "push", False)], mode=Mode.PUSH),
    Case("push-deletes-remote-only", {}, {}, {F: e("y")},
         [(F, DELETE, REMOTE, "push-delete", False)], mode=Mode.PUSH),
    Case("push-log-is-not-merged", {LOG: e("v1")}, {LOG: e("v1+l")}, {LOG: e("v1+r")},
         [(LOG, COPY, REMOTE, "push", True)], mode=Mode.PUSH, logs=(LOG,)),
    Case("push-equal-nothing", {F: e("v1")}, {F: e("v1")}, {F: e("v1")}, [], mode=Mode.PUSH),
    Case("push-equal-adopts", {F: e("v1")}, {F: e("v2")}, {F: e("v2")},
         [(F, ADOPT, None, "same-change", False)], mode=Mode.PUSH),
    Case("push-both-absent-adopts", {F: e("v1")}, {}, {},
         [(F, ADOPT, None, "both-deleted", False)], mode=Mode.PUSH),
    Case("pull-remote-changed", {F: e("v1")}, {F: e("v1")}, {F: e("v2")},
         [(F, COPY, LOCAL, "pull", False)], mode=Mode.PULL),
    Case("pull-overwrites-local-change-quarantined", {F: e("v1")}, {F: e("v2")}, {F: e("v1")},
         [(F, COPY, LOCAL, "pull", True)], mode=Mode.PULL),
    Case("pull-deletes-local-only", {F: e("v1")}, {F: e("v1")}, {},
         [(F, DELETE, LOCAL, "pull-delete", False)], mode=Mode.PULL),
    Case("pull-equal-adopts", {}, {F: e("v1")}, {F: e("v1")},
         [(F, ADOPT, None, "already-equal", False)], mode=Mode.PULL),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reconcile_table(case: Case) -> None:
    plan = reconcile(
        case.ancestor, case.local, case.remote, policy=case.policy, mode=case.mode,
        is_log=lambda p: p in case.logs, offset_ns=case.offset_ns,
        local_id=case.ids[0], remote_id=case.ids[1], **case.extra,
    )
    got = [(c.path, c.action, c.target, c.reason, c.quarantine) for c in plan.changes]
    assert got == case.expect
    for c in plan.changes:
        assert (c.local, c.remote, c.ancestor) == (
            case.local.get(c.path), case.remote.get(c.path), case.ancestor.get(c.path)
        )
        assert c.reason in REASONS


def test_case_ids_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("policy,action,target,reason", [
    (Policy.NEWEST, COPY, REMOTE, "rewritten-log-newest"),
    (Policy.LOCAL, COPY, REMOTE, "rewritten-log-local"),
    (Policy.REMOTE, COPY, LOCAL, "rewritten-log-remote"),
    (Policy.SKIP, CONFLICT, None, "skip"),
    (Policy.MANUAL, CONFLICT, None, "manual"),
])
def test_decide_conflict_for_rewritten_log(policy, action, target, reason) -> None:
    """The engine's fallback when a log was not only appended to: the reason names it."""
    c = decide_conflict(LOG, e("l", 5), e("r", 1), e("v1"), policy=policy, offset_ns=0,
                        local_id="a", remote_id="b", reason="rewritten-log")
    assert (c.action, c.target, c.reason, c.quarantine) == (action, target, reason, target is not None)
    assert c.reason in REASONS


# --- properties -----------------------------------------------------------------------------

PATHS = ("MEMORY.md", "memory/a.md", "memory/log.jsonl")
MIRROR_WORD = {"local": "remote", "remote": "local", "push": "pull", "pull": "push"}
MIRROR_MODE = {Mode.SYNC: Mode.SYNC, Mode.PUSH: Mode.PULL, Mode.PULL: Mode.PUSH}
MIRROR_POLICY = {Policy.LOCAL: Policy.REMOTE, Policy.REMOTE: Policy.LOCAL}


def is_log(path: str) -> bool:
    return path.endswith(".jsonl")


entries = st.one_of(st.none(), st.builds(e, st.sampled_from(["x", "y", "z"]), st.integers(0, 3)))
manifests = st.fixed_dictionaries({p: entries for p in PATHS}).map(
    lambda m: {p: v for p, v in m.items() if v is not None}
)


def mirror(c: Change) -> tuple:
    reason = "-".join(MIRROR_WORD.get(w, w) for w in c.reason.split("-"))
    target = c.target.other if c.target is not None else None
    return (c.path, c.action, target, c.remote, c.local, c.ancestor, reason, c.quarantine)


def plain(c: Change) -> tuple:
    return (c.path, c.action, c.target, c.local, c.remote, c.ancestor, c.reason, c.quarantine)


@settings(max_examples=300, deadline=None)
@given(
    ancestor=manifests, local=manifests, remote=manifests,
    policy=st.sampled_from(list(Policy)), mode=st.sampled_from(list(Mode)),
    offset=st.integers(-3, 3), ids=st.sampled_from([("a", "b"), ("b", "a"), ("host-2", "host-10")]),
)
def test_mirror_image(ancestor, local, remote, policy, mode, offset, ids) -> None:
    """Whichever machine starts the sync, both decide the same thing for every path."""
    one = reconcile(ancestor, local, remote, policy=policy, mode=mode, is_log=is_log,
                    offset_ns=offset, local_id=ids[0], remote_id=ids[1])
    other = reconcile(ancestor, remote, local, policy=MIRROR_POLICY.get(policy, policy),
                      mode=MIRROR_MODE[mode], is_log=is_log, offset_ns=-offset,
                      local_id=ids[1], remote_id=ids[0])
    assert [mirror(c) for c in one.changes] == [plain(c) for c in other.changes]


_sub_second = st.builds(e, st.sampled_from(["x", "y", "z"]), st.integers(0, 3).map(lambda k: T + k * MS))
sub_second_manifests = st.fixed_dictionaries({p: st.one_of(st.none(), _sub_second) for p in PATHS}).map(
    lambda m: {p: v for p, v in m.items() if v is not None})
dead_records = st.fixed_dictionaries({p: st.lists(_sub_second, max_size=2) for p in PATHS})


@settings(max_examples=300, deadline=None)
@given(ancestor=sub_second_manifests, local=sub_second_manifests, remote=sub_second_manifests,
       local_dead=dead_records, remote_dead=dead_records,
       policy=st.sampled_from(list(Policy)), offset=st.integers(-3, 3))
def test_deletion_records_mirror_and_only_remove_what_was_deleted(ancestor, local, remote, local_dead, remote_dead,
                                                                  policy, offset) -> None:
    """With deletion records: both machines still decide alike, and a sync deletes only the
    ancestor's content or a copy of a version the other side deleted (never newer than it)."""
    one = reconcile(ancestor, local, remote, policy=policy, is_log=is_log, offset_ns=offset,
                    local_dead=local_dead, remote_dead=remote_dead)
    other = reconcile(ancestor, remote, local, policy=MIRROR_POLICY.get(policy, policy), is_log=is_log,
                      offset_ns=-offset, local_id="b", remote_id="a", local_dead=remote_dead, remote_dead=local_dead)
    assert [mirror(c) for c in one.changes] == [plain(c) for c in other.changes]
    dead = {LOCAL: local_dead, REMOTE: remote_dead}
    for c in one.of(DELETE):
        old = c.entry(c.target)
        copies = [d for d in dead[c.target.other][c.path] if d.same_content(old) and old.mtime_ns <= d.mtime_ns]
        assert old.same_content(c.ancestor) or copies


def apply(plan, local: dict, remote: dict) -> tuple[dict, dict]:
    """Simulate execute for COPY/DELETE (MERGE and CONFLICT left to their own tests)."""
    local, remote = dict(local), dict(remote)
    sides = {LOCAL: local, REMOTE: remote}
    for c in plan.changes:
        if c.action is COPY:
            sides[c.target][c.path] = c.entry(c.source)
        elif c.action is DELETE:
            del sides[c.target][c.path]
    return local, remote


@settings(max_examples=300, deadline=None)
@given(ancestor=manifests, local=manifests, remote=manifests,
       policy=st.sampled_from([Policy.NEWEST, Policy.LOCAL, Policy.REMOTE]),
       mode=st.sampled_from(list(Mode)))
def test_safety_properties(ancestor, local, remote, policy, mode) -> None:
    """Sides converge; deletions only replace what the ancestor knew; losers are quarantined."""
    plan = reconcile(ancestor, local, remote, policy=policy, mode=mode, is_log=is_log)
    new_local, new_remote = apply(plan, local, remote)
    merged = {c.path for c in plan.of(MERGE)}
    assert {p: v.hash for p, v in new_local.items() if p not in merged} == {
        p: v.hash for p, v in new_remote.items() if p not in merged
    }
    for c in plan.changes:
        old = c.entry(c.target) if c.target is not None else None
        if mode is Mode.SYNC and c.action is DELETE:
            assert old.same_content(c.ancestor)  # deletion never beats content
        if c.action is COPY and old is not None and not old.same_content(c.ancestor):
            assert c.quarantine  # a version the other side never saw is kept
        if c.action is ADOPT:
            assert c.local is None and c.remote is None or c.local.same_content(c.remote)


@settings(max_examples=200, deadline=None)
@given(local=manifests, remote=manifests, policy=st.sampled_from(list(Policy)))
def test_no_ancestor_never_deletes(local, remote, policy) -> None:
    plan = reconcile({}, local, remote, policy=policy, is_log=is_log)
    assert not plan.of(DELETE)
    assert {c.path for c in plan.changes} == set(local) | set(remote)


# -- touched_paths: reconciling only the paths that differ gives the very same plan --------------
_entries = st.builds(Entry, st.integers(0, 3), st.sampled_from([SEC, 2 * SEC + 5, 9 * SEC]),
                     st.sampled_from([0o644, 0o600]), st.sampled_from(["a" * 32, "b" * 32]))
_manifests = st.dictionaries(st.sampled_from([f"memory/{c}.md" for c in "abcdef"]), _entries, max_size=6)


@given(_manifests, _manifests, _manifests, st.sampled_from(list(Policy)), st.sampled_from(list(Mode)))
def test_reconciling_only_the_touched_paths_changes_nothing(ancestor, local, remote, policy, mode):
    from peersync.core.reconcile import touched_paths

    full = reconcile(ancestor, local, remote, policy=policy, mode=mode)
    assert reconcile(ancestor, local, remote, policy=policy, mode=mode,
                     paths=touched_paths(ancestor, local, remote)) == full
    # The peer's delta scan names what moved on its side instead of the whole comparison.
    moved = {p for p in set(ancestor) | set(remote) if ancestor.get(p) != remote.get(p)}
    assert reconcile(ancestor, local, remote, policy=policy, mode=mode,
                     paths=touched_paths(ancestor, local, remote, moved)) == full


@pytest.mark.parametrize("told", [False, True], ids=["by-identity", "scan-says-what-is-new"])
@pytest.mark.parametrize("seed", range(6))
def test_touched_paths_with_a_memo_equals_a_fresh_comparison(seed, told) -> None:
    """A keeper's memo (reconcile.Touched) across syncs: entries that are the very objects of the
    last call, equal copies, changed and removed ones, new paths; the ancestor kept, replaced by one
    that moved only at named paths (`moved`), or replaced outright.  Every call's answer is the
    plain comparison's.  `told`: the scan also says which paths it made anew since the last call
    (as a watch-fed one does), sometimes with a few more, sometimes not (None)."""
    import random

    from peersync.core.reconcile import Touched, touched_paths

    rng = random.Random(seed)
    paths = [f"memory/{i:03}.md" for i in range(60)]

    def entry() -> Entry:
        return Entry(rng.randrange(3), SEC * rng.randrange(1, 4), 0o644, rng.choice("abc") * 32,
                     rng.choice([(), (("w" * 8, rng.randrange(1, 3)),)]))

    ancestor = {p: entry() for p in paths if rng.random() < 0.8}
    local = {p: (ancestor[p] if p in ancestor and rng.random() < 0.7 else entry()) for p in paths if rng.random() < 0.9}
    memo = Touched()
    for _ in range(40):
        roll = rng.random()
        anew = set(rng.sample(paths, rng.randrange(0, 6)))
        for p in anew:  # the scan: what events named is made anew
            what = rng.random()
            if what < 0.3:
                local.pop(p, None)
            elif what < 0.6 and p in local:
                local[p] = Entry(*local[p])  # equal bytes and stat, a new object
            else:
                local[p] = entry()
        local = dict(local)
        fresh = (anew | set(rng.sample(paths, rng.randrange(0, 3)))) if told and rng.random() < 0.85 else None
        got = touched_paths(ancestor, local, {}, moved := set(rng.sample(paths, 3)), memo=memo,
                            fresh=fresh, scanned=object())
        assert got == touched_paths(ancestor, local, {}, moved)
        if roll < 0.4:  # the sync saved a new ancestor, at the paths it looked at
            at = got | set(rng.sample(paths, 2))
            new = dict(ancestor)
            for p in at:
                choice = rng.random()
                if choice < 0.4 and p in local:
                    new[p] = local[p]
                elif choice < 0.7:
                    new.pop(p, None)
                else:
                    new[p] = entry()
            memo.moved(ancestor, new, at)
            ancestor = new
        elif roll < 0.5:  # another process's sync: a new ancestor object, equal entries rebuilt
            ancestor = {p: Entry(*e) for p, e in ancestor.items()}


def test_a_memo_finds_a_deletion_without_looking_up_every_path_of_the_ancestor():
    """With a watch-fed scan's word on what it made anew, the ancestor's paths the side lacks are
    looked for only among the last call's and the paths just named, not among all the ancestor's
    (a keeper's sync of 100k files after one deletion looked up every one).  The answer is the
    plain comparison's, through a deletion, a second one, and a file made again."""
    from peersync.core.reconcile import Touched, touched_paths

    class Counting(dict):
        asked = 0

        def __contains__(self, path):
            Counting.asked += 1
            return super().__contains__(path)

    ancestor = {f"memory/{i:04}.md": e(str(i)) for i in range(2000)}
    ancestor["link.md"] = Entry(3, 1000, 0o120777, xxhash.xxh3_128_hexdigest(b"x.md"))
    local = dict(ancestor)
    memo = Touched()
    scan = object()
    assert touched_paths(ancestor, Counting(local), {}, set(), memo=memo, fresh=None, scanned=scan) == set()
    for step, (gone, back) in enumerate([({"memory/0007.md"}, set()), ({"memory/0100.md"}, set()),
                                         (set(), {"memory/0007.md"})]):
        for p in gone:
            del local[p]
        for p in back:
            local[p] = ancestor[p]
        Counting.asked = 0
        scan = object()
        got = touched_paths(ancestor, Counting(local), {}, set(), memo=memo, fresh=gone | back, scanned=scan)
        assert got == touched_paths(ancestor, dict(local), {}, set())
        assert got == set(ancestor) - set(local), step
        assert Counting.asked < 20, f"looked up {Counting.asked} paths for {len(gone | back)} named"


def test_the_merge_rules_are_asked_only_where_two_file_versions_meet():
    """A path one side lacks, or where a side holds a link, can never merge: the rules (a
    pathspec match per path) are not asked — a first sync of 100k files asks nothing."""
    asked = []

    def rule(path):
        asked.append(path)
        return True

    link = Entry(3, 1000, 0o120777, xxhash.xxh3_128_hexdigest(b"x.md"))
    ancestor = {"both.md": e("base"), "link.md": e("base")}
    local = {"both.md": e("mine", t=2000), "new.md": e("only here"), "link.md": link}
    remote = {"both.md": e("theirs", t=3000), "gone.md": e("only there"), "link.md": e("edited", t=3000)}
    plan = reconcile(ancestor, local, remote, policy=Policy.NEWEST, is_log=rule, mergeable=rule)
    assert asked == ["both.md"]
    actions = {c.path: (c.action, c.target, c.reason) for c in plan.changes}
    assert actions == {"both.md": (MERGE, None, "append-merge"), "gone.md": (COPY, LOCAL, "remote-created"),
                       "new.md": (COPY, REMOTE, "local-created"), "link.md": (COPY, LOCAL, "conflict-newest")}


_vectors = st.lists(st.tuples(st.sampled_from(["aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"]),
                              st.integers(1, 4)), max_size=4)


@settings(max_examples=300, deadline=None)
@given(_vectors, _vectors)
def test_seen_is_what_compare_says_for_every_pair_of_vectors(a, b):
    # seen() answers the empty and the equal vector at once; every answer is still compare()'s.
    from peersync.core import versions

    for x, y in ((versions.make(a), versions.make(b)), (versions.make(a), versions.make(a)),
                 ((), versions.make(b)), (tuple(a), tuple(b))):
        assert versions.seen(x, y) == (versions.compare(x, y) in (versions.EQUAL, versions.BEFORE))


def test_the_other_side_of_each_side():
    assert Side.LOCAL.other is Side.REMOTE and Side.REMOTE.other is Side.LOCAL
    assert {s.other for s in Side} == set(Side)
