"""The pair pipeline in-process (peersync.testing.inprocess): every step of a real sync between two
local workspaces — no sshd, no rsync — so engine bugs are caught in seconds.  The same function
runs SSH, keeper and cloud pairs (tests/test_sync_e2e.py, test_keeper.py, test_cloud.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time

import pytest

from peersync.core.render import report_text
from peersync.core.types import Mode, Policy, Report
from peersync.errors import BusyError, PeersyncError
from peersync.replica.handler import Handler
from peersync.sync import execute, journal
from peersync.sync.pipeline import Job, sync_pair
from peersync.testing.inprocess import sync_local
from peersync.testing.trees import selection_files
from peersync.transport.local import LocalSession
from peersync.workspace.lock import state_lock, workspace_lock
from peersync.workspace.workspace import Peer, Workspace

WHOLE = "memory/notes/plan.txt"  # a whole file (not in sync.merge): conflicts are decided, not merged


@pytest.fixture
def a(tmp_path) -> Workspace:
    (tmp_path / "a" / "memory").mkdir(parents=True)
    return Workspace(tmp_path / "a")


@pytest.fixture
def b(tmp_path) -> Workspace:
    (tmp_path / "b" / "memory").mkdir(parents=True)
    return Workspace(tmp_path / "b")


def write(ws: Workspace, rel: str, text: str | bytes, age: float = 0.0) -> None:
    path = ws.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    if age:
        when = time.time() - age
        os.utime(path, (when, when))


def read(ws: Workspace, rel: str) -> str:
    return (ws.root / rel).read_text()


def kept_conflicts(ws: Workspace, rel: str) -> list[str]:
    return sorted(p.read_text() for p in (ws.state / "conflicts").rglob(rel.rsplit("/", 1)[-1]) if p.is_file())


def test_files_travel_both_ways_and_a_second_sync_has_nothing_to_do(a, b):
    write(a, "MEMORY.md", "from a\n")
    write(b, "memory/2026-01-01.md", "from b\n")
    report = sync_local(a, b)
    assert report.ok, report.error
    assert report.pushed == ["MEMORY.md"] and report.pulled == ["memory/2026-01-01.md"]
    assert selection_files(a) == selection_files(b)
    again = sync_local(a, b)
    assert again.ok and not again.changed
    # The ancestor is kept on both sides, byte for byte (either side may start the next sync).
    ours = a.state / "ancestors" / f"{b.instance_id}.json"
    theirs = b.state / "ancestors" / f"{a.instance_id}.json"
    assert ours.read_bytes() == theirs.read_bytes()
    assert sync_local(b, a).changed is False


def test_both_sides_edited_newest_wins_and_the_loser_is_kept(a, b):
    write(a, WHOLE, "base\n")
    sync_local(a, b)
    write(a, WHOLE, "older edit here\n", age=100)
    write(b, WHOLE, "newer edit there\n", age=10)
    report = sync_local(a, b)
    [conflict] = report.conflicts
    assert conflict.kept == "remote" and conflict.side == "local" and conflict.saved_as
    assert read(a, WHOLE) == read(b, WHOLE) == "newer edit there\n"
    assert kept_conflicts(a, WHOLE) == ["older edit here\n"]
    assert report.to_json()["conflicts"][0]["saved_as"] == conflict.saved_as


@pytest.mark.parametrize("policy,live", [(Policy.LOCAL, "mine\n"), (Policy.REMOTE, "theirs\n")])
def test_policies_decide_conflicts(a, b, policy, live):
    write(a, WHOLE, "base\n")
    sync_local(a, b)
    write(a, WHOLE, "mine\n")
    write(b, WHOLE, "theirs\n")
    report = sync_local(a, b, policy=policy)
    assert report.ok and read(a, WHOLE) == read(b, WHOLE) == live
    assert report.conflicts[0].reason == f"conflict-{policy.value}"


def test_policy_skip_leaves_both_and_manual_keeps_both_copies(a, b):
    write(a, WHOLE, "base\n")
    sync_local(a, b)
    write(a, WHOLE, "mine\n")
    write(b, WHOLE, "theirs\n")
    skipped = sync_local(a, b, policy=Policy.SKIP)
    assert skipped.conflicts[0].kept == "both" and read(a, WHOLE) == "mine\n" and read(b, WHOLE) == "theirs\n"
    manual = sync_local(a, b, policy=Policy.MANUAL)
    assert manual.conflicts[0].side == "both" and manual.conflicts[0].remote_saved_as
    assert kept_conflicts(a, WHOLE) == ["theirs\n"] and kept_conflicts(b, WHOLE) == ["mine\n"]


def test_a_deletion_goes_to_the_trash_and_never_beats_an_edit(a, b):
    write(a, "memory/gone.md", "bye\n")
    write(a, "memory/kept.md", "v1\n")
    write(a, "memory/one.md", "1\n")
    write(a, "memory/two.md", "2\n")
    sync_local(a, b)
    (a.root / "memory/gone.md").unlink()
    (a.root / "memory/kept.md").unlink()
    write(b, "memory/kept.md", "v2, edited there\n")
    report = sync_local(a, b)
    assert report.deleted_remote == ["memory/gone.md"] and report.pulled == ["memory/kept.md"]
    assert not (b.root / "memory/gone.md").exists() and read(a, "memory/kept.md") == "v2, edited there\n"
    assert [p.read_text() for p in (b.state / "trash").rglob("gone.md")] == ["bye\n"]


def test_logs_appended_on_both_sides_merge(a, b):
    write(a, "memory/2026-02-01.md", "- base\n")
    sync_local(a, b)
    write(a, "memory/2026-02-01.md", "- base\n- here\n")
    write(b, "memory/2026-02-01.md", "- base\n- there\n")
    report = sync_local(a, b)
    assert report.merged == ["memory/2026-02-01.md"] and not report.conflicts
    merged = read(a, "memory/2026-02-01.md")
    assert merged == read(b, "memory/2026-02-01.md") and {"- here", "- there"} <= set(merged.splitlines())


def test_a_dry_run_changes_nothing(a, b):
    write(a, "MEMORY.md", "x\n")
    report = sync_local(a, b, dry_run=True)
    assert report.pushed == ["MEMORY.md"] and not (b.root / "MEMORY.md").exists()
    assert not (a.state / "ancestors").exists()


def test_the_mass_delete_guard_stops_until_forced(a, b):
    for i in range(10):
        write(a, f"memory/n{i}.md", f"{i}\n")
    sync_local(a, b)
    for i in range(8):
        (a.root / f"memory/n{i}.md").unlink()
    stopped = sync_local(a, b)
    assert stopped.error_kind == "safety" and "nothing was changed" in stopped.error
    assert len(list((b.root / "memory").glob("n*.md"))) == 10
    assert sync_local(a, b, force=True).ok and len(list((b.root / "memory").glob("n*.md"))) == 2


@pytest.mark.parametrize("mode", [Mode.PUSH, Mode.PULL])
def test_one_way_runs_keep_the_replaced_unseen_version(a, b, mode):
    write(a, "USER.md", "a's\n")
    write(b, "USER.md", "b's\n")
    report = sync_local(a, b, mode=mode)
    source, target = (a, b) if mode is Mode.PUSH else (b, a)
    assert report.ok and read(target, "USER.md") == read(source, "USER.md")
    assert kept_conflicts(target, "USER.md") == [("b's\n" if mode is Mode.PUSH else "a's\n")]


def test_a_large_file_travels_inline_where_rsync_does_not_reach(a, b):
    blob = os.urandom(3 << 20)
    write(a, "memory/big.bin", blob)
    assert sync_local(a, b).pushed == ["memory/big.bin"]
    assert (b.root / "memory/big.bin").read_bytes() == blob


def test_a_ring_of_four_converges_and_a_deleted_file_stays_deleted(tmp_path):
    ring = [Workspace(tmp_path / n) for n in "abcd"]
    for ws in ring:
        (ws.root / "memory").mkdir(parents=True)
    write(ring[0], "memory/x.md", "x\n")
    for i in range(3):
        sync_local(ring[i], ring[i + 1])
    (ring[0].root / "memory/x.md").unlink()
    sync_local(ring[0], ring[1])  # the deletion reaches b; c and d still hold the copy
    for _ in range(2):
        for i in range(4):
            report = sync_local(ring[i], ring[(i + 1) % 4])
            assert report.ok, report.error
    assert all(not (ws.root / "memory/x.md").exists() for ws in ring)
    assert len({json.dumps(selection_files(ws), sort_keys=True) for ws in ring}) == 1


def test_an_interrupted_run_is_recovered_and_reported_by_the_next(a, b, monkeypatch):
    for i in range(3):
        write(a, f"memory/n{i}.md", f"{i}\n")
    sync_local(a, b)
    (a.root / "memory/n0.md").unlink()
    write(a, "MEMORY.md", "new\n")

    async def dies(self, side, changes):
        raise RuntimeError("killed mid-run")

    monkeypatch.setattr(execute.Run, "delete", dies)
    with pytest.raises(RuntimeError):
        sync_local(a, b)
    [left] = journal.pending(a)
    assert left["peer"] == "b" and left["remote_id"] == b.instance_id and left["changes"] == 2
    monkeypatch.undo()
    report = sync_local(a, b)
    assert report.ok and report.notes and report.notes[0].startswith("recovered from an interrupted sync with b")
    assert journal.pending(a) == [] and selection_files(a) == selection_files(b)
    assert "♻️ Recovered from an interrupted sync with b" in report_text(report)


def test_a_recovery_that_fails_stops_the_run_with_a_clear_error(a, b, monkeypatch):
    write(a, "MEMORY.md", "x\n")

    def full(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Handler, "recover", full)
    from peersync.errors import SafetyError

    with pytest.raises(SafetyError) as caught:
        sync_local(a, b)
    assert "cannot recover what an interrupted sync left behind: No space left on device" in str(caught.value)
    assert not (b.root / "MEMORY.md").exists()


def test_a_peer_that_sends_a_hostile_path_is_refused_and_nothing_is_written(a, b, monkeypatch):
    from peersync.transport.local import LocalSession

    write(a, "MEMORY.md", "x\n")
    real = LocalSession.scan

    async def hostile(self, **kwargs):
        reply = await real(self, **kwargs)
        if self.handler.ws.root == b.root:
            reply["entries"]["../../etc/evil"] = [1, 1, 0o644, "0" * 32]
        return reply

    monkeypatch.setattr(LocalSession, "scan", hostile)
    report = sync_local(a, b)
    assert report.error_kind == "protocol" and "hostile path" in report.error
    assert not (b.root / "MEMORY.md").exists() and not (a.state / "ancestors").exists()


def test_a_malformed_request_fails_whole_and_is_never_a_per_path_problem(b):
    handler = Handler(b.root)
    with pytest.raises(ValueError, match="malformed request"):
        handler.call("install", {"items": [{"path": "MEMORY.md"}]})  # no "new"
    with pytest.raises(ValueError, match="malformed request"):
        handler.call("delete", {"items": ["MEMORY.md"], "batch": "20260101T000000-abc"})


def test_folders_are_every_parent_and_every_empty_directory() -> None:
    """execute._folders (which folders a side holds, for deletions that keep a folder) against
    its definition, over random trees with files, links and empty directories."""
    import random

    from peersync.core.types import DIR, LINK, Entry
    from peersync.sync.execute import _folders

    rng = random.Random(7)
    for _ in range(300):
        manifest = {}
        for _ in range(rng.randrange(0, 30)):
            path = "/".join(rng.choice(["a", "b", "c", "d.md"]) for _ in range(rng.randrange(1, 5)))
            kind = rng.choice([0, 0, DIR, LINK])
            manifest[path] = Entry(0, 0, kind | rng.choice([0o644, 0o755, 0o700]), "0" * 32)
        expected = {p for p, e in manifest.items() if e.kind == DIR}
        for path in manifest:
            parts = path.split("/")
            expected.update("/".join(parts[:i]) for i in range(1, len(parts)))
        assert _folders(manifest) == expected


def test_the_files_a_sync_installed_are_not_read_again_by_the_next_scan(a, b):
    """After an initial sync the receiving side's stat cache already holds every installed file
    (its bytes were checked as it was installed): the next scan reads none of them (it read them
    all: 1.3 s of a first no-op at 100k files).  Only a row for the file as installed is kept."""
    for i in range(300):  # more than a few (Handler._save_installed), old mtimes (not racy)
        write(a, f"memory/day{i:03}.md", f"note {i}\n", age=3600)
    write(a, "memory/just-now.md", "written a moment ago\n")  # racy: its mtime may not change on a rewrite
    assert sync_local(a, b).ok
    first = Handler(b.root).scan()
    assert first.hashed == 1  # the racy one only
    # A later rewrite that puts back size and mtime still changes the ctime: read again.
    target = b.root / "memory/day007.md"
    st = target.stat()
    target.write_text("NOTE 7\n")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = Handler(b.root).scan()
    assert again.hashed == 2  # that one, and the racy one again (still within the racy window)
    assert again.manifest["memory/day007.md"].hash != first.manifest["memory/day007.md"].hash


def test_a_process_that_installed_few_files_for_its_stat_cache_leaves_them_to_the_next_scan(a, b, monkeypatch):
    """Reloading and rewriting a large stat cache costs more than reading a few files again: a
    process that no longer holds it adds the files it installed only when they are more than one
    in a hundred of its rows (a 100k-file cache: 1,000), as StatCache.save would write it."""
    from peersync.replica import handler as handler_module

    for i in range(300):
        write(a, f"memory/day{i:03}.md", f"note {i}\n", age=3600)
    assert sync_local(a, b).ok
    for i in range(300):
        write(a, f"memory/more{i:03}.md", f"more {i}\n", age=3600)
    monkeypatch.setattr(handler_module, "cache_kept", lambda path: False)  # a process that scanned once
    monkeypatch.setattr(handler_module, "CACHE_ROW_BYTES", 0.25)  # and b's cache (~30 kB) reads as ~100k rows
    assert sync_local(a, b).ok
    assert Handler(b.root).scan().hashed == 300


class InOrder(LocalSession):
    """A replica that answers one request at a time in the order they were made, as an agent does
    (caps.in_order), and records when each was made and answered.  Its lock is answered only once
    a scan was asked for, or after a second."""

    caps = dataclasses.replace(LocalSession.caps, in_order=True)

    def __init__(self, root):
        super().__init__(root)
        self.events: list[tuple[str, str]] = []
        self.scans: list[dict] = []
        self.requests: list[tuple[str, dict]] = []
        self.hold_scan = False  # answer a scan only once deletion records were asked for (or after a second)
        self._line = asyncio.Lock()  # (FIFO: requests are answered in the order they were made)

    async def request(self, op: str, **args):
        self.events.append(("asked", op))
        self.requests.append((op, args))
        if op == "scan":
            self.scans.append(args)
        try:
            async with self._line:
                awaited = {"lock": "scan", "scan": "tombstones_get" if self.hold_scan else None}.get(op)
                for _ in range(100 if awaited else 0):
                    if ("asked", awaited) in self.events:
                        break
                    await asyncio.sleep(0.01)
                reply = await super().request(op, **args)
        except asyncio.CancelledError:
            self.events.append(("dropped", op))
            raise
        self.events.append(("answered", op))
        return reply

    async def close(self) -> None:
        self.events.append(("closed", ""))
        await super().close()


def sync_in_order(ws: Workspace, other: Workspace, hello: dict | None = None,
                  hold_scan: bool = False) -> tuple[Report, InOrder]:
    """sync_local with `other` as an InOrder replica (`hello`: what its hello said instead)."""
    cfg = ws.sync_config()
    peer = Peer(name=other.root.name, host="in-process", path=str(other.root))
    report = Report(peer=peer.name, host=peer.host, mode=Mode.SYNC, dry_run=False)
    remote = None

    async def run() -> None:
        nonlocal remote
        job = Job(ws, cfg, peer, Mode.SYNC, False, False, cfg.policy, asyncio.Lock())
        local, remote = LocalSession(ws.root), InOrder(other.root)
        remote.hello = {**remote.hello, **(hello or {})}
        remote.hold_scan = hold_scan
        try:
            await sync_pair(job, local, remote, report)
        except PeersyncError as err:
            report.error, report.error_kind = str(err), err.kind
        finally:
            await local.close()
            await remote.close()

    ws.ensure_state()
    with workspace_lock(ws, 30, what="sync"):
        asyncio.run(run())
    return report, remote


def test_an_agent_that_answers_in_order_gets_the_scan_right_behind_the_lock(a, b):
    """A round trip less per sync: the scan is asked for before the lock is answered, with the
    digest of the ancestor shared with the instance the hello named (a delta scan)."""
    write(a, "MEMORY.md", "one\n")
    sync_local(a, b)  # (an ancestor, and b's instance id known)
    write(a, "memory/n.md", "two\n")
    shared = Handler(a.root).op_ancestor_digest(b.instance_id)
    report, remote = sync_in_order(a, b)
    assert report.ok and read(b, "memory/n.md") == "two\n"
    ops = [(what, op) for what, op in remote.events if op in ("lock", "selection", "scan")]
    assert ops[:4] == [("asked", "lock"), ("asked", "selection"), ("asked", "scan"), ("answered", "lock")]
    [scan] = remote.scans
    assert scan["base_peer"] == a.instance_id
    assert scan["base_digest"] == shared is not None


def test_a_scan_sent_ahead_for_another_instance_is_dropped_and_asked_again(a, b):
    """A hello that named another instance (a keeper's, from before the peer's workspace was made
    anew): the scan sent behind the lock is dropped, and the peer is scanned for the instance the
    lock's reply names, against the ancestor shared with that one."""
    write(a, "MEMORY.md", "one\n")
    sync_local(a, b)
    write(b, "memory/n.md", "two\n")
    shared = Handler(a.root).op_ancestor_digest(b.instance_id)
    report, remote = sync_in_order(a, b, hello={"instance_id": "0" * 32})
    assert report.ok and read(a, "memory/n.md") == "two\n"
    assert [s["base_digest"] for s in remote.scans] == [None, shared] and shared is not None


@pytest.mark.parametrize("ahead", [True, False], ids=["asked-ahead", "asked-after"])
def test_the_peers_deletion_records_come_with_its_scan_or_right_behind_it(tmp_path, monkeypatch, a, b, ahead):
    """No round trip of their own for the deletion records of paths one side holds: the peer's
    delta scan carries its records of what it deleted or made since the ancestor, and its records
    of what we made or deleted are asked for while it still scans (answered right behind it).
    They decide as before: here a file this side got from a third machine, which the peer had
    deleted through that machine, is deleted here instead of coming back to the peer.  Too many
    paths to ask for ahead: they are asked for after the scan, as before."""
    from peersync.sync import pipeline

    if not ahead:
        monkeypatch.setattr(pipeline, "AHEAD_PATHS", 1)
    (tmp_path / "c" / "memory").mkdir(parents=True)
    c = Workspace(tmp_path / "c")
    write(a, "MEMORY.md", "m\n")
    write(a, "memory/d.md", "d\n")
    sync_local(a, c)  # a and c share an ancestor that never knew f.md
    write(b, "memory/f.md", "f\n")
    sync_local(a, b)  # a gets f.md from b
    sync_local(b, c)  # and so does c
    (c.root / "memory/f.md").unlink()
    sync_local(b, c)  # c deleted it, and b with it: both keep the deletion on record
    assert not (b.root / "memory/f.md").exists()
    (c.root / "memory/d.md").unlink()  # c's own deletion since the ancestor it shares with a
    write(a, "memory/n.md", "new\n")  # and a new file of a's
    report, remote = sync_in_order(a, c, hold_scan=ahead)
    assert report.ok, report.error
    assert not (a.root / "memory/f.md").exists() and not (c.root / "memory/f.md").exists()
    assert not (a.root / "memory/d.md").exists() and read(c, "memory/n.md") == "new\n"
    asked = [(what, op) for what, op in remote.events if op in ("scan", "tombstones_get")]
    assert asked == [("asked", "scan"), ("asked", "tombstones_get"), ("answered", "scan"),
                     ("answered", "tombstones_get")] if ahead else [
        ("asked", "scan"), ("answered", "scan"), ("asked", "tombstones_get"), ("answered", "tombstones_get")], asked
    [records] = [args for op, args in remote.requests if op == "tombstones_get"]
    assert sorted(records["paths"]) == ["memory/f.md", "memory/n.md"]  # (d.md's came with the scan)


def test_a_delta_scan_carries_the_deletion_records_of_what_it_deleted_or_made(a, b):
    """Handler.op_scan's `dead_for`: exactly what tombstones_get answers for the paths the scan
    reports deleted and those it reports that the ancestor did not hold."""
    write(a, "MEMORY.md", "m\n")
    write(a, "memory/d.md", "d\n")
    write(a, "memory/e.md", "e\n")
    sync_local(a, b)
    (b.root / "memory/e.md").unlink()
    sync_local(a, b)  # records of e.md on both sides
    write(b, "memory/e.md", "back\n")  # made anew since
    (b.root / "memory/d.md").unlink()
    handler = Handler(b.root)
    digest = handler.op_ancestor_digest(a.instance_id)
    scan = handler.op_scan(base_peer=a.instance_id, base_digest=digest)
    assert scan["delta"] and scan["deleted"] == ["memory/d.md"] and "memory/e.md" in scan["entries"]
    expected = handler.op_tombstones_get(["memory/d.md", "memory/e.md"])
    assert set(expected) == {"memory/d.md", "memory/e.md"}
    assert scan["dead_for"] == expected


def test_an_ancestor_sent_behind_deletion_records_that_failed_is_not_saved(a, b):
    """A client sends the peer's deletion records and, right behind them, the ancestor that forgets
    those paths (pipeline.py commit): the agent applies that ancestor only if the records were
    written; a failed tombstones_add refuses it, a later one that succeeds lets it through."""
    write(a, "MEMORY.md", "m\n")
    sync_local(a, b)
    handler = Handler(b.root)
    before = handler.op_ancestor_digest(a.instance_id)
    entries = json.loads(handler._ancestor_file(a.instance_id).read_bytes())["entries"]
    assert handler.op_hello()["ancestor_after_records"] is True
    with pytest.raises(ValueError):
        handler.op_tombstones_add([["../outside", entries["MEMORY.md"]]])  # refused: nothing recorded
    with pytest.raises(PeersyncError, match="deletion records"):
        handler.op_ancestor_put(a.instance_id, manifest={"entries": {}}, after_records=True)
    assert handler.op_ancestor_digest(a.instance_id) == before
    handler.op_tombstones_add([["memory/gone.md", entries["MEMORY.md"]]])
    handler.op_ancestor_put(a.instance_id, manifest={"entries": {}}, after_records=True)
    assert handler.op_ancestor_digest(a.instance_id) != before


def test_a_session_whose_lock_was_refused_is_not_scanned(b):
    """The scan that follows a lock request is refused when the lock was (another sync holds it):
    nothing walks or writes a busy workspace for a run that stops."""
    write(b, "MEMORY.md", "x\n")
    handler = Handler(b.root)
    with state_lock(b.state, 10, what="another sync"):
        with pytest.raises(BusyError):
            handler.op_lock(timeout=0)
        with pytest.raises(BusyError, match="not scanned"):
            handler.op_scan()
    assert not handler._scan_cache.exists()
    handler.op_lock(timeout=0)  # granted now: the session scans
    assert "MEMORY.md" in handler.op_scan()["entries"]
    handler.release()


def test_a_peer_busy_with_another_sync_is_neither_scanned_nor_left_with_a_request(a, b, monkeypatch, caplog):
    """The lock is refused (another sync holds the peer): the run stops with the peer's busy error,
    and the scan sent behind the lock is dropped before the session closes (an agent refuses it
    too: test_a_session_whose_lock_was_refused_is_not_scanned) — nothing scanned there, no reply
    left unretrieved."""
    from peersync.sync import pipeline

    monkeypatch.setattr(pipeline, "REMOTE_LOCK_WAIT", 0.2)
    monkeypatch.setattr(pipeline, "REMOTE_LOCK_YIELD", 0.2)
    write(a, "MEMORY.md", "one\n", age=60)
    sync_local(a, b)
    Handler(b.root)._scan_cache.unlink(missing_ok=True)
    write(a, "memory/n.md", "two\n", age=60)
    with state_lock(b.state, 10, what="another sync"):
        report, remote = sync_in_order(a, b)
    assert report.error_kind == "busy" and not (b.root / "memory/n.md").exists()
    assert ("asked", "scan") in remote.events and ("answered", "scan") not in remote.events
    assert not Handler(b.root)._scan_cache.exists()
    assert "never retrieved" not in caplog.text


def test_a_scan_that_cannot_be_asked_for_sends_nothing_ahead_of_it(a, b, monkeypatch):
    """What the scan sent behind the lock reads here first (the digest of the ancestor we share)
    can fail — a state dir that is a link, say: the run stops with that error before the lock or
    the selection went out, so no request is left behind with nobody to take its answer."""
    from peersync.errors import StateDirError

    write(a, "MEMORY.md", "one\n")
    sync_local(a, b)

    def planted(self, peer_id):
        raise StateDirError("peersync's state dir is a link: not used")

    monkeypatch.setattr(Handler, "op_ancestor_digest", planted)
    report, remote = sync_in_order(a, b)
    assert report.error_kind == StateDirError.kind and "is a link" in report.error
    assert remote.events == [("closed", "")]
