"""The snapshot of the version records (Versions.keep_snapshot): a new process reads the rows from it
only while it is a snapshot of the database as it stands, and then gets exactly what SQLite gives."""

import os
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peersync.core.types import Entry
from peersync.replica import versions as versions_mod
from peersync.replica.versions import SNAPSHOT, Versions

ME = "a" * 12
NAMES = ["MEMORY.md", "memory/2026-12-07.md", "memory/log.jsonl", "notes/caf\udce9.md", "notes/é.md", "x"]
REPLICAS = ["b" * 12, "c" * 12, "d" * 12]


def from_sqlite(state) -> dict:
    """The rows as SQLite gives them to a process with no snapshot."""
    fresh = Versions(state, ME)
    fresh._read_snapshot = lambda: None
    try:
        return fresh._all()
    finally:
        fresh.close()


def exact(rows: dict) -> str:
    """The rows with every type spelled out (a list is not a tuple, True is not 1)."""
    return repr(sorted(rows.items()))


def new_process(state) -> tuple[Versions, dict, bool]:
    """A new process's records, its first read of them, and whether that read was the snapshot's."""
    fresh = Versions(state, ME)
    rows = fresh._all()
    return fresh, rows, fresh._unsnapped is False


entries = st.builds(Entry, size=st.integers(0, 1 << 40), mtime_ns=st.integers(0, 1 << 62),
                    mode=st.sampled_from([0o644, 0o600, 0o755]), hash=st.sampled_from(["h1", "h2", "h3"]),
                    vv=st.lists(st.tuples(st.sampled_from(REPLICAS), st.integers(1, 99)), max_size=3,
                                unique_by=lambda t: t[0]).map(tuple),
                    seen=st.lists(st.tuples(st.sampled_from(REPLICAS), st.integers(1, 99)), max_size=2,
                                  unique_by=lambda t: t[0]).map(tuple))
steps = st.lists(st.one_of(
    st.tuples(st.just("scan"), st.dictionaries(st.sampled_from(NAMES), entries)),  # new versions, deletions
    st.tuples(st.just("record"), st.lists(st.tuples(st.sampled_from(NAMES), entries, st.booleans()), max_size=4)),
    st.tuples(st.just("prune"), st.just(None)),
    st.tuples(st.just("snapshot"), st.just(None)),
), min_size=1, max_size=12)


@pytest.mark.parametrize("delta_max", [versions_mod.DELTA_MAX, 1.0])  # (1.0: every change a delta)
def test_a_new_process_reads_from_the_snapshot_exactly_what_sqlite_holds(tmp_path_factory, delta_max):
    kept = versions_mod.DELTA_MAX
    versions_mod.DELTA_MAX = delta_max
    try:
        reads_what_sqlite_holds(tmp_path_factory)
    finally:
        versions_mod.DELTA_MAX = kept


@settings(max_examples=60, deadline=None)
@given(ops=steps)
def reads_what_sqlite_holds(tmp_path_factory, ops):
    state = tmp_path_factory.mktemp("state")
    records = Versions(state, ME)
    snapped = False
    for op, arg in ops:
        if op == "scan":
            records.assign(arg, covers=lambda p: True)
            snapped = False
        elif op == "record":
            records.record(arg)
            snapped = snapped and not arg
        elif op == "prune":
            snapped = snapped and not records.prune(0, now=2e9)
        else:
            records.keep_snapshot()
            snapped = records._rows is not None and records._unsnapped is False and (state / SNAPSHOT).exists()
        fresh, rows, from_snapshot = new_process(state)
        assert exact(rows) == exact(from_sqlite(state))
        if snapped:
            assert from_snapshot  # (else this test would prove nothing)
        fresh.close()
    records.close()


def edited(state) -> Versions:
    records = Versions(state, ME)
    records.assign({"a.md": Entry(1, 1, 0o644, "h1"), "b.md": Entry(2, 2, 0o644, "h2")}, covers=lambda p: True)
    records.keep_snapshot()
    records.close()
    assert (state / SNAPSHOT).exists()
    return records


def test_a_write_the_snapshot_did_not_see_is_read_from_sqlite_whoever_made_it(tmp_path):
    edited(tmp_path)
    # Another process of this version…
    other = Versions(tmp_path, ME)
    other.record([("a.md", Entry(9, 9, 0o644, "h9", vv=((REPLICAS[0], 3),)), True)])
    other.close()
    fresh, rows, from_snapshot = new_process(tmp_path)
    assert not from_snapshot and rows["a.md"][4] == "h9"
    fresh.keep_snapshot()  # (no scan recorded here: a reader alone leaves the state dir alone)
    fresh.close()
    # … and a writer that knows nothing of snapshots (an older peersync, the sqlite3 shell), even one
    # that leaves the file's size and time as they were.
    edited(tmp_path)
    before = os.stat(tmp_path / versions_mod.FILE)
    db = sqlite3.connect(tmp_path / versions_mod.FILE, isolation_level=None)
    db.execute("update versions set hash = 'hX' where path = 'b.md'")
    db.close()
    os.utime(tmp_path / versions_mod.FILE, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(tmp_path / versions_mod.FILE).st_size == before.st_size
    fresh, rows, from_snapshot = new_process(tmp_path)
    assert not from_snapshot and rows["b.md"][4] == "hX"
    fresh.close()


def test_a_snapshot_that_is_damaged_not_ours_a_link_or_beside_a_journal_is_not_read(tmp_path):
    edited(tmp_path)
    snapshot = tmp_path / SNAPSHOT
    good = snapshot.read_bytes()
    expected = exact(from_sqlite(tmp_path))

    def read_back() -> bool:
        fresh, rows, from_snapshot = new_process(tmp_path)
        assert exact(rows) == expected
        fresh.close()
        return from_snapshot

    assert read_back()
    snapshot.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # damaged
    assert not read_back()
    snapshot.write_bytes(good)
    try:
        os.chown(snapshot, os.getuid() + 4321, -1)  # another user's file (only root can make one)
    except PermissionError:
        pass
    else:
        assert not read_back()
    snapshot.unlink()
    (tmp_path / "elsewhere").write_bytes(good)
    snapshot.symlink_to(tmp_path / "elsewhere")  # a link
    assert not read_back()
    snapshot.unlink()
    snapshot.write_bytes(good)
    journal = tmp_path / (versions_mod.FILE + "-journal")
    journal.write_bytes(b"")  # a write under way, or cut short
    assert not read_back()
    journal.unlink()
    assert read_back()


def test_a_dry_run_writes_no_snapshot_and_a_recording_scan_does(tmp_path):
    records = Versions(tmp_path, ME)
    records.assign({"a.md": Entry(1, 1, 0o644, "h1")}, covers=lambda p: True)
    records.close()
    dry = Versions(tmp_path, ME)
    dry.assign({"a.md": Entry(1, 1, 0o644, "h1")}, covers=lambda p: True, save=False)
    dry.keep_snapshot()
    assert not (tmp_path / SNAPSHOT).exists()
    dry.close()
    recording = Versions(tmp_path, ME)
    recording.assign({"a.md": Entry(1, 1, 0o644, "h1")}, covers=lambda p: True)  # nothing new
    recording.keep_snapshot()
    assert (tmp_path / SNAPSHOT).exists()
    recording.close()
    assert new_process(tmp_path)[2]


def test_a_sync_writes_the_rows_it_changed_as_a_delta_until_they_are_many(tmp_path):
    records = Versions(tmp_path, ME)
    names = [f"memory/{i}.md" for i in range(64)]
    records.assign({n: Entry(1, 1, 0o644, "h1") for n in names}, covers=lambda p: True)
    records.keep_snapshot()
    whole = (tmp_path / SNAPSHOT).read_bytes()
    # An edit, a deletion, and a deletion record forgotten (pruned): three rows of 64.
    records.assign({n: Entry(2, 2, 0o644, "h2") if n == names[0] else Entry(1, 1, 0o644, "h1")
                    for n in names[:-1]}, covers=lambda p: True)
    records.record([(names[1], Entry(0, 0, 0, "gone"), False)])
    assert records.prune(0, now=2e9) == 2
    records.keep_snapshot()
    assert (tmp_path / SNAPSHOT).read_bytes() == whole  # untouched: the delta says what changed
    assert (tmp_path / versions_mod.SNAPSHOT_DELTA).stat().st_size < len(whole) / 4
    fresh, rows, from_snapshot = new_process(tmp_path)
    assert from_snapshot and exact(rows) == exact(from_sqlite(tmp_path)) and names[1] not in rows
    # The next process's own changes go into one delta with the first's, until too many for one.
    fresh.assign({n: Entry(3, 3, 0o644, "h3") if n == names[2] else Entry(1, 1, 0o644, "h1")
                  for n in names[2:-1]} | {names[0]: Entry(2, 2, 0o644, "h2")}, covers=lambda p: True)
    fresh.keep_snapshot()
    fresh.close()
    again, rows, from_snapshot = new_process(tmp_path)
    assert from_snapshot and exact(rows) == exact(from_sqlite(tmp_path)) and rows[names[2]][4] == "h3"
    again.assign({n: Entry(4, 4, 0o644, "h4") for n in names}, covers=lambda p: True)  # every file
    again.keep_snapshot()
    again.close()
    assert not (tmp_path / versions_mod.SNAPSHOT_DELTA).exists() and (tmp_path / SNAPSHOT).read_bytes() != whole
    last, rows, from_snapshot = new_process(tmp_path)
    assert from_snapshot and exact(rows) == exact(from_sqlite(tmp_path))
    last.close()
    # A delta on another snapshot than the one there (a process wrote the whole anew meanwhile).
    records.assign({n: Entry(5, 5, 0o644, "h5") for n in names[:1]} | {n: Entry(4, 4, 0o644, "h4") for n in names[1:]},
                   covers=lambda p: True)
    records.keep_snapshot()  # (its rows are no longer the database's: another process wrote since)
    fresh, rows, from_snapshot = new_process(tmp_path)
    assert exact(rows) == exact(from_sqlite(tmp_path)) and rows[names[0]][4] == "h5"
    fresh.close()
    records.close()
