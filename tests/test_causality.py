"""Causality: version vectors decide what descends from what (core/versions.py, reconcile's causal
rows), in tables, properties and in-process scenarios across three machines."""

from __future__ import annotations

import json
import os
import time

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from peersync.core import versions
from peersync.core.reconcile import REASONS, reconcile
from peersync.core.types import Action, Entry, Mode, Policy, Side
from peersync.testing.inprocess import sync_local
from peersync.testing.trees import selection_files
from peersync.workspace.workspace import Workspace

COPY, DELETE, MERGE, CONFLICT, ADOPT = Action.COPY, Action.DELETE, Action.MERGE, Action.CONFLICT, Action.ADOPT
LOCAL, REMOTE = Side.LOCAL, Side.REMOTE
A, B, C = "a" * 12, "b" * 12, "c" * 12
F, LOG, MEMORY = "memory/plan.txt", "memory/2026-03-01.md", "MEMORY.md"  # F: a whole file (not in sync.merge)
HOUR = 3600 * 1_000_000_000


def e(content: str, vv=(), t: int = 1_000 * HOUR) -> Entry:
    data = content.encode()
    return Entry(len(data), t, 0o644, xxhash.xxh3_128_hexdigest(data), versions.make(vv))


# -- the vectors themselves ------------------------------------------------------------------------

def test_compare_join_bump():
    assert versions.compare(((A, 1),), ((A, 2),)) == versions.BEFORE
    assert versions.compare(((A, 2), (B, 1)), ((A, 2),)) == versions.AFTER
    assert versions.compare(((A, 2),), ((B, 1),)) == versions.CONCURRENT
    assert versions.compare((), ()) == versions.EQUAL
    assert versions.compare((), ((A, 1),)) == versions.BEFORE
    assert versions.join(((A, 2), (B, 1)), ((A, 1), (C, 4))) == ((A, 2), (B, 1), (C, 4))
    assert versions.bump(((A, 2),), B, 7) == ((A, 2), (B, 7))
    assert versions.seen(((A, 1),), ((A, 1), (B, 1))) and not versions.seen(((B, 2),), ((B, 1),))


def test_wire_round_trip_and_hostile_vectors_are_refused():
    vv = ((A, 3), (B, 1))
    assert versions.from_wire(versions.to_wire(vv)) == vv
    assert Entry.from_wire(e("x", vv).to_wire()) == e("x", vv)
    assert len(e("x").to_wire()) == 4  # a version from before vectors travels as before
    for bad in ("a1:1", [["zz", 1]], [[A, 0]], [[A, "1"]], [[A + "0", 1]], [[A]]):
        with pytest.raises(ValueError):
            versions.from_wire(bad)


# -- reconcile with vectors: one row per rule ----------------------------------------------------

ROWS = [
    # (id, ancestor, local, remote, expected (action, target, reason, quarantine), extra kwargs)
    ("remote-descends-fast-forward", e("v0", [(A, 1)]), e("v1", [(A, 2)], t=9 * HOUR), e("v2", [(A, 2), (B, 1)], t=1 * HOUR),
     (COPY, LOCAL, "remote-changed", False), {}),
    ("local-descends-fast-forward", e("v0", [(A, 1)]), e("v2", [(A, 2), (B, 1)]), e("v1", [(A, 2)], t=9 * HOUR),
     (COPY, REMOTE, "local-changed", False), {}),
    ("descendant-wins-even-with-a-slow-clock", None, e("old", [(B, 1)], t=10 * HOUR), e("edit", [(B, 1), (C, 1)], t=7 * HOUR),
     (COPY, LOCAL, "remote-created", False), {"offset_ns": 3 * HOUR}),
    ("concurrent-is-a-conflict-newest-breaks-the-tie", e("v0", [(A, 1)]), e("l", [(A, 1), (B, 1)], t=2 * HOUR),
     e("r", [(A, 1), (C, 1)], t=3 * HOUR), (COPY, LOCAL, "conflict-newest", True), {}),
    ("concurrent-logs-merge", e("v0", [(A, 1)]), e("v0+l", [(A, 1), (B, 1)]), e("v0+r", [(A, 1), (C, 1)]),
     (MERGE, None, "append-merge", False), {"logs": True}),
    ("concurrent-memory-files-merge", e("v0", [(A, 1)]), e("v0 l", [(A, 1), (B, 1)]), e("v0 r", [(A, 1), (C, 1)]),
     (MERGE, None, "merge", False), {"merge": True}),
    ("a-memory-file-that-descends-is-a-copy-not-a-merge", e("v0", [(A, 1)]), e("v0 l", [(A, 1), (B, 1)]),
     e("v0 l r", [(A, 1), (B, 1), (C, 1)], t=1), (COPY, LOCAL, "remote-changed", False), {"merge": True}),
    ("a-merged-memory-file-replaces-both-inputs", e("v0", [(A, 1)]), e("v0 l", [(A, 1), (B, 1)], t=9 * HOUR),
     e("merged", [(A, 1), (B, 1), (C, 2)], t=1), (COPY, LOCAL, "remote-changed", False), {"merge": True}),
    ("concurrent-under-skip", e("v0", [(A, 1)]), e("l", [(B, 1)]), e("r", [(C, 1)]),
     (CONFLICT, None, "skip", False), {"policy": Policy.SKIP}),
    ("same-bytes-different-histories-take-the-union", e("v0", [(A, 1)]), e("v1", [(B, 1)]), e("v1", [(C, 1)]),
     (ADOPT, None, "same-change", False), {}),
    ("deletion-descends-from-the-copy", None, e("v1", [(A, 2)]), None,
     (DELETE, LOCAL, "remote-deleted", False), {"remote_dead": {F: [e("v1", [(A, 2), (B, 1)])]}}),
    ("stale-copy-through-a-fourth-replica-is-deleted", e("v1", [(A, 1)]), e("v1", [(A, 1)], t=1), None,
     (DELETE, LOCAL, "remote-deleted", False), {"remote_dead": {F: [e("v1", [(A, 1), (C, 3)])]}}),
    ("edit-concurrent-with-a-deletion-comes-back", e("v1", [(A, 1)]), e("v2", [(A, 1), (B, 1)]), None,
     (COPY, REMOTE, "restored", False), {"remote_dead": {F: [e("v1", [(A, 1), (C, 1)])]}}),
    ("re-created-after-the-deletion-comes-back", None, e("again", [(A, 1), (C, 1), (B, 2)]), None,
     (COPY, REMOTE, "local-changed", False), {"remote_dead": {F: [e("v1", [(A, 1), (C, 1)])]}}),
    ("no-deletion-record-means-new", None, e("new", [(B, 1)]), None, (COPY, REMOTE, "local-created", False), {}),
    ("legacy-side-is-decided-by-the-ancestor", e("v0"), e("v0"), e("v1", [(B, 1)]),
     (COPY, LOCAL, "remote-changed", False), {}),
    ("legacy-both-changed-is-a-conflict", e("v0"), e("l", t=2 * HOUR), e("r", [(B, 1)], t=3 * HOUR),
     (COPY, LOCAL, "conflict-newest", True), {}),
    ("push-replaces-a-seen-version-without-keeping-it", e("v0", [(A, 1)]), e("v1", [(A, 2)]), e("v0", [(A, 1)]),
     (COPY, REMOTE, "push", False), {"mode": Mode.PUSH}),
    ("push-keeps-an-unseen-version", e("v0", [(A, 1)]), e("v1", [(A, 2)]), e("r", [(A, 1), (B, 1)]),
     (COPY, REMOTE, "push", True), {"mode": Mode.PUSH}),
]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_causal_rows(row):
    _, ancestor, local, remote, expected, extra = row
    extra = dict(extra)
    logs, merge = extra.pop("logs", False), extra.pop("merge", False)
    path = LOG if logs else MEMORY if merge else F
    for key in ("local_dead", "remote_dead"):
        if key in extra:
            extra[key] = {path: extra[key][F]}
    plan = reconcile({path: ancestor} if ancestor else {}, {path: local} if local else {},
                     {path: remote} if remote else {}, policy=extra.pop("policy", Policy.NEWEST),
                     mode=extra.pop("mode", Mode.SYNC), is_log=lambda p: logs, mergeable=lambda p: merge,
                     local_id="a", remote_id="b", **extra)
    [change] = plan.changes
    assert (change.action, change.target, change.reason, change.quarantine) == expected
    assert change.reason in REASONS


vvs = st.lists(st.tuples(st.sampled_from([A, B, C]), st.integers(1, 3)), max_size=3).map(versions.make)
entries = st.one_of(st.none(), st.builds(e, st.sampled_from(["x", "y"]), vvs, st.sampled_from([HOUR, 2 * HOUR])))


@settings(max_examples=400, deadline=None)
@given(local=entries, remote=entries, ancestor=entries, dead=st.lists(st.builds(e, st.sampled_from(["x", "y"]), vvs), max_size=1),
       policy=st.sampled_from(list(Policy)), offset=st.integers(-2, 2).map(lambda k: k * HOUR))
def test_only_concurrent_versions_conflict_and_a_descendant_is_never_replaced(local, remote, ancestor, dead, policy, offset):
    """Where both sides carry vectors: a conflict is declared only between concurrent versions, a
    copy always goes from the later version to the earlier one, and both machines agree."""
    if local is None or remote is None or not local.vv or not remote.vv:
        return
    plan = reconcile({F: ancestor} if ancestor else {}, {F: local}, {F: remote}, policy=policy, offset_ns=offset)
    mirrored = reconcile({F: ancestor} if ancestor else {}, {F: remote}, {F: local}, offset_ns=-offset,
                         policy={Policy.LOCAL: Policy.REMOTE, Policy.REMOTE: Policy.LOCAL}.get(policy, policy),
                         local_id="b", remote_id="a")
    assert [(c.action, c.target and c.target.other) for c in plan.changes] == \
           [(c.action, c.target) for c in mirrored.changes]
    order = versions.compare(local.vv, remote.vv)
    for c in plan.changes:
        if c.quarantine or c.action is CONFLICT:
            assert order in (versions.CONCURRENT, versions.EQUAL), (local, remote, c)
        if c.action is COPY and not c.quarantine:
            source, target = c.entry(c.source), c.entry(c.target)
            assert versions.seen(target.vv, source.vv)


# -- three machines, in-process ------------------------------------------------------------------

@pytest.fixture
def abc(tmp_path) -> list[Workspace]:
    out = []
    for name in "abc":
        (tmp_path / name / "memory").mkdir(parents=True)
        out.append(Workspace(tmp_path / name))
    return out


def write(ws: Workspace, rel: str, text: str, when: float | None = None) -> None:
    path = ws.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if when is not None:
        os.utime(path, (when, when))


def read(ws: Workspace, rel: str) -> str | None:
    path = ws.root / rel
    return path.read_text() if path.exists() else None


def test_the_minimal_case_is_a_fast_forward_not_a_conflict(abc):
    a, b, c = abc
    write(a, F, "v0\n")
    sync_local(a, b)
    sync_local(a, c)
    write(a, F, "v1\n")
    sync_local(a, b)
    write(b, F, "v1 + b's edit\n")
    assert not sync_local(b, c).conflicts  # c's v0 was seen by v2's writer: a fast-forward
    report = sync_local(a, c)  # ancestor v0; a has v1, c has v2 made from v1
    assert not report.conflicts and report.pulled == [F]
    assert read(a, F) == read(b, F) == read(c, F) == "v1 + b's edit\n"
    assert not any((ws.state / "conflicts").exists() and any((ws.state / "conflicts").rglob("plan.txt")) for ws in abc)


@pytest.mark.parametrize("skew", [3 * 3600, -3 * 3600])
def test_a_skewed_clock_never_reverts_an_edit_through_a_third_machine(abc, skew):
    """b's clock is `skew` seconds off: its writes carry skewed mtimes.  Its plan reaches c through
    a, c edits it (the only change), then a syncs with c: c's edit wins everywhere, no conflict."""
    a, b, c = abc
    write(b, F, "b's plan\n", when=time.time() + skew)
    sync_local(b, a)
    sync_local(a, c)
    write(c, F, "b's plan, edited on c\n")
    report = sync_local(a, c)
    assert not report.conflicts and report.pulled == [F]
    assert sync_local(a, b).ok
    assert read(a, F) == read(b, F) == read(c, F) == "b's plan, edited on c\n"


def test_a_fast_clock_corrected_later_does_not_lose_the_next_edit(abc):
    a, b, c = abc
    write(b, F, "written with a fast clock\n", when=time.time() + 3 * 3600)
    sync_local(b, a)
    write(b, F, "written after the clock was fixed\n", when=time.time())  # older mtime than before
    report = sync_local(b, a)
    assert not report.conflicts and report.pushed == [F]
    assert read(a, F) == "written after the clock was fixed\n"


def test_truly_concurrent_edits_still_conflict_and_the_loser_is_kept(abc):
    a, b, c = abc
    write(a, F, "base\n")
    sync_local(a, b)
    write(a, F, "a's edit\n", when=time.time() - 60)
    write(b, F, "b's edit\n")
    report = sync_local(a, b)
    [conflict] = report.conflicts
    assert conflict.kept == "remote" and read(a, F) == "b's edit\n"
    # The resolution descends from both: a third machine holding a's version is fast-forwarded,
    # never asked again (its loser was already seen by the winner).
    sync_local(c, a)
    assert not sync_local(b, c).conflicts


def ancestor_vv(ws: Workspace, other: Workspace, rel: str) -> tuple:
    """The vector the pair (ws, other) agreed `rel` has (their ancestor's entry)."""
    doc = json.loads((ws.state / "ancestors" / f"{other.instance_id}.json").read_text())
    wire = doc["entries"][rel]
    return versions.from_wire(wire[4]) if len(wire) > 4 else ()


def test_memory_file_edits_merge_only_when_concurrent_and_a_merge_descends_from_both(abc):
    """MEMORY.md (sync.merge): an edit made from what the other side holds is a plain copy, never a
    merge; only concurrent edits merge; the merged version carries the join of both vectors plus one
    new event, so every machine holding either input fast-forwards to it — no second merge."""
    a, b, c = abc
    write(a, MEMORY, "# Memory\n- base\n")
    for other in (b, c):
        sync_local(a, other)
    write(a, MEMORY, "# Memory\n- base\n- from a\n")
    report = sync_local(a, b)
    assert report.pushed == [MEMORY] and not report.merged
    write(b, MEMORY, "# Memory\n- base\n- from a\n- from b\n")
    report = sync_local(b, c)  # c holds the base version: b's descends from it
    assert report.pushed == [MEMORY] and not report.merged and not report.conflicts
    write(a, MEMORY, "# Memory\n- base\n- from a\n- a again\n")  # concurrent with b's edit
    report = sync_local(c, a)
    assert report.merged == [MEMORY] and not report.conflicts
    merged = read(a, MEMORY)
    assert merged == read(c, MEMORY) and all(line in merged for line in ("- from a\n", "- from b\n", "- a again\n"))
    vv, b_vv = ancestor_vv(a, c, MEMORY), ancestor_vv(b, c, MEMORY)
    assert versions.compare(b_vv, vv) == versions.BEFORE  # b's input is in it
    assert versions.short_id(c.instance_id) in dict(vv)  # the merge's own event (c ran it)
    # b still holds its own edit, an input of the merge: a fast-forward, not a second merge.
    report = sync_local(b, a)
    assert report.pulled == [MEMORY] and not report.merged and read(b, MEMORY) == merged
    # An edit made from the merged version beats a stale input through any machine.
    write(b, MEMORY, merged + "- from b, later\n")
    sync_local(b, c)
    report = sync_local(a, c)
    assert report.pulled == [MEMORY] and not report.merged and not report.conflicts
    assert read(a, MEMORY) == read(b, MEMORY) == read(c, MEMORY) == merged + "- from b, later\n"
    assert not any((ws.state / "conflicts").exists() and any((ws.state / "conflicts").rglob("MEMORY.md")) for ws in abc)


def test_a_merge_takes_the_latest_common_version_as_its_base_not_a_stale_pair_ancestor(abc):
    """b and c last met when MEMORY.md held one line; both have since taken a's new line X through
    a.  b removes X while c adds Y.  Against the pair's own ancestor, b's removal would look like c
    adding X and X would come back; the latest version both descend from ([L1, X], which b's and
    c's ancestors with a record with its vector) is the base: X stays removed, Y lands."""
    a, b, c = abc
    write(a, MEMORY, "- L1\n")
    for x, y in ((a, b), (a, c), (b, c)):
        sync_local(x, y)
    write(a, MEMORY, "- L1\n- X\n")
    sync_local(a, b)
    sync_local(a, c)
    write(b, MEMORY, "- L1\n")
    write(c, MEMORY, "- L1\n- X\n- Y\n")
    report = sync_local(b, c)
    assert report.merged == [MEMORY] and not report.conflicts
    assert read(b, MEMORY) == read(c, MEMORY) == "- L1\n- Y\n"


def test_a_deletion_reaching_a_stale_copy_through_another_machine_wins(abc):
    a, b, c = abc
    write(a, F, "v1\n")
    sync_local(a, b)
    sync_local(b, c)
    (a.root / F).unlink()
    sync_local(a, b)  # b deletes; c still holds v1
    report = sync_local(c, a)
    assert report.deleted_local == [F] and not report.conflicts
    assert read(c, F) is None and read(a, F) is None


def test_an_edit_made_while_another_machine_deleted_the_file_comes_back(abc):
    a, b, c = abc
    write(a, F, "v1\n")
    sync_local(a, b)
    (a.root / F).unlink()
    write(b, F, "v2, edited on b\n")
    report = sync_local(a, b)
    assert report.pulled == [F] and read(a, F) == "v2, edited on b\n"


def test_an_upgraded_workspace_syncs_without_a_conflict_storm(abc, monkeypatch):
    """A pair synced by a peersync without version vectors (format-1 ancestors, no version
    records): after the upgrade, files changed on one side fast-forward, equal ones stay quiet, and
    only a file changed on both sides since the last sync is a conflict."""
    a, b, _ = abc
    for i in range(20):
        write(a, f"memory/n{i}.txt", f"note {i}\n")
    sync_local(a, b)
    for ws in (a, b):  # back to the old world: no version records, ancestors in format 1
        (ws.state / "versions.sqlite").unlink()
        for extra in ("versions.sqlite-wal", "versions.sqlite-shm"):
            (ws.state / extra).unlink(missing_ok=True)
        for path in (ws.state / "ancestors").glob("*.json"):
            doc = json.loads(path.read_text())
            doc["format"] = 1
            doc["entries"] = {p: w[:4] for p, w in doc["entries"].items()}
            path.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
    write(a, "memory/n1.txt", "note 1, edited on a\n")
    write(b, "memory/n2.txt", "note 2, edited on b\n")
    write(a, "memory/n3.txt", "note 3, a\n", when=time.time() - 60)
    write(b, "memory/n3.txt", "note 3, b\n")
    report = sync_local(a, b)
    assert report.ok and report.pushed == ["memory/n1.txt"]
    assert sorted(report.pulled) == ["memory/n2.txt", "memory/n3.txt"]
    assert [c.path for c in report.conflicts] == ["memory/n3.txt"]
    assert selection_files(a) == selection_files(b)
    assert not sync_local(b, a).changed
    doc = json.loads(next((a.state / "ancestors").glob("*.json")).read_text())
    assert doc["format"] == 2


# -- a peer that runs an older peersync ----------------------------------------------------------

OLD_AGENT = '''
import json, sys
sys.stdin.buffer.readline()
print(json.dumps({"id": 0, "ok": True, "result": {"version": "0.0.9", "protocol": 3, "time": 0, "root": "/x",
                  "workspace": True, "instance_id": "ab" * 16}}), flush=True)
sys.stdin.buffer.readline()
'''


def test_a_peer_on_the_old_protocol_is_told_to_upgrade_and_nothing_changes(tmp_path, sshd):
    import shlex
    import sys

    from peersync.sync.runner import run_sync
    from peersync.testing.pair import wire_pair

    script = tmp_path / "old_agent.py"
    script.write_text(OLD_AGENT)
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd,
                     command=f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}")
    write(pair.local, F, "mine\n")
    [report] = run_sync(pair.local)
    assert not report.ok and report.error_kind == "protocol"
    assert "runs peersync 0.0.9 (protocol 3)" in report.error and "upgrade peersync on remote" in report.error
    assert not (pair.remote.root / F).exists()


# -- a scan that matches its files against the records as it goes (Versions.known) ----------------

def test_a_scan_matched_against_the_records_gives_every_file_the_history_a_full_assign_gives(tmp_path):
    """Handler.scan gives each file whose record holds its content that record's history while it
    walks, and assign then looks only at the rest.  Over rounds of edits, new files, deletions,
    a link and an empty folder, it must agree with assign over the whole manifest — and a record
    written between the scan and its assign (another thread of a keeper) is never missed."""
    import random

    from peersync.replica.handler import Handler
    from peersync.replica.scan import scan

    ws = Workspace(tmp_path)
    ws.ensure_state()
    (tmp_path / "memory" / "empty").mkdir(parents=True)
    files = [f"memory/f{i}.md" for i in range(60)]
    for p in files:
        (tmp_path / p).write_text(f"{p}\n")
    os.symlink("f1.md", tmp_path / "memory" / "link.md")
    handler = Handler(tmp_path)
    handler.scan()
    rng = random.Random(7)
    for round_ in range(8):
        for p in rng.sample(files, 12):
            target = tmp_path / p
            if rng.random() < 0.3 and target.exists():
                target.unlink()
            else:
                target.write_text(f"{p} round {round_} {rng.random()}\n")
        known = handler.versions.known()
        assert known is not None
        walked = scan(tmp_path, handler.scan_selection, None, save_cache=False, known=known)
        full = scan(tmp_path, handler.scan_selection, None, save_cache=False)
        assert set(walked.manifest) == set(full.manifest)
        assert {p: e[:4] for p, e in walked.manifest.items()} == {p: e[:4] for p, e in full.manifest.items()}
        assert set(walked.unmatched) >= {"memory/link.md", "memory/empty"}
        cover = dict(covers=lambda path: True, save=False)
        expected = handler.versions.assign(full.manifest, **cover)
        assert handler.versions.assign(walked.manifest, scanned=(*walked.known, walked.unmatched), **cover) == expected
        given = dict(walked.manifest)  # a manifest given up (Handler.scan's): changed in place, not copied
        out, rest_only = handler.versions.assign_scanned(given, scanned=(*walked.known, walked.unmatched), own=True,
                                                         **cover)
        assert rest_only and out is given and out == expected
        if round_ == 3:  # a record changes between the scan and its assign: the whole manifest is looked at
            changed = files[0] if files[0] in full.manifest else next(iter(full.manifest))
            entry = expected[changed]
            handler.versions.record([(changed, entry.with_vv(versions.bump(entry.vv, "f" * 12, 99), ()), True)])
            fresh = handler.versions.assign(full.manifest, **cover)
            assert fresh[changed].vv == versions.bump(entry.vv, "f" * 12, 99)
            assert handler.versions.assign(walked.manifest, scanned=(*walked.known, walked.unmatched), **cover) == fresh
        handler.scan()  # record this round's versions
        # The count of present records is kept up to date as records change, not counted again.
        store = handler.versions
        assert store._present[0] == store._gen and store._present_count(store._all()) == store.present_count()
    # Unchanged since the last scan: every file matched (only the link and the folder are looked at).
    again = scan(tmp_path, handler.scan_selection, None, save_cache=False, known=handler.versions.known())
    assert sorted(again.unmatched) == ["memory/empty", "memory/link.md"]
    records = {p: handler.versions.current(p) for p in again.manifest}
    assert all((e.vv, e.seen) == (records[p].vv, records[p].seen) for p, e in again.manifest.items() if p not in again.unmatched)
    assert sum(1 for e in again.manifest.values() if e.vv) >= 30  # the files edited since the first scan
