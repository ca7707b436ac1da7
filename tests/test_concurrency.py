"""Concurrent runs on one workspace serialize (or say busy), and edits made during a sync are never overwritten.

Edits during a sync are made from inside the real pipeline: a step of `engine.Run` (or the
rename at the heart of an install) is wrapped so that the user's edit lands after both sides
were scanned and before or while the sync writes that very file.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from peersync.core.paths import flat_rel
from peersync.core.types import Side
from peersync.errors import BusyError, ConnectError
from peersync.replica import store as transition
from peersync.sync.execute import Run
from peersync.sync.runner import run_sync
from peersync.testing.pair import wire_pair
from peersync.testing.trees import selection_files
from peersync.workspace.lock import state_lock


WHOLE = "memory/notes/plan.txt"  # not in sync.merge: the newest whole file wins a conflict


@pytest.fixture
def pair(tmp_path, sshd):
    return wire_pair(tmp_path / "local", tmp_path / "remote", sshd)


def write(ws, rel, data, mtime=None):
    path = ws.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def save_atomically(path, data: bytes) -> None:
    """How editors and agents save: a new file renamed over the old one (a new inode)."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def sync_ok(ws, *names, **kw):
    report = run_sync(ws, list(names) or None, **kw)[0]
    assert report.ok, report.error
    return report


def everywhere(*workspaces) -> list[bytes]:
    """Every file's bytes in the selections, conflicts/ and trash of the workspaces."""
    out = []
    for ws in workspaces:
        out += selection_files(ws).values()
        for place in ("conflicts", "trash"):
            top = ws.state / place
            out += [p.read_bytes() for p in top.rglob("*") if p.is_file()] if top.is_dir() else []
    return out


def assert_converged_and_clean(pair) -> None:
    report = sync_ok(pair.local)
    again = sync_ok(pair.remote)
    assert not again.changed and not again.problems, again.to_json()
    assert selection_files(pair.local) == selection_files(pair.remote)
    for ws in (pair.local, pair.remote):
        for leftover in ("staging", "holding"):
            d = ws.state / leftover
            assert not (d.is_dir() and any(d.iterdir())), f"{leftover}/ left on {ws.root.name}"
    return report


# -- concurrent runs on one workspace ----------------------------------------------------------


def cli(ws, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "peersync", "-w", str(ws.root), "--json", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def watch_lock_holders(ws, stop: threading.Event, seen: list) -> None:
    """Record which pid holds the workspace lock, as lock.info says, while the runs go on."""
    while not stop.is_set():
        try:
            pid = json.loads((ws.state / "lock.info").read_text())["pid"]
            if not seen or seen[-1] != pid:
                seen.append(pid)
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.005)


def test_heartbeat_and_two_manual_syncs_at_once_serialize(pair):
    L, R = pair.local, pair.remote
    versions = []
    for i in range(150):
        for ws in (L, R):
            data = f"{ws.root.name} note {i}\n".encode() * 40
            write(ws, f"memory/{ws.root.name}/n{i:03d}.md", data)
            versions.append(data)
    big = os.urandom(3 << 20)
    write(L, "memory/big.bin", big)
    versions.append(big)
    auto = subprocess.run([sys.executable, "-m", "peersync", "-w", str(L.root), "auto", "on", "--interval", "60"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert auto.returncode == 0, auto.stdout + auto.stderr
    stop, holders = threading.Event(), []
    watcher = threading.Thread(target=watch_lock_holders, args=(L, stop, holders), daemon=True)
    watcher.start()
    procs = {"heartbeat": cli(L, "heartbeat"), "sync-1": cli(L, "sync"), "sync-2": cli(L, "sync")}
    results = {name: (p.wait(timeout=240), *p.communicate()) for name, p in procs.items()}
    stop.set()
    watcher.join()
    for name, (code, out, err) in results.items():
        assert "Traceback" not in out + err, (name, out, err)
        assert code == 0, (name, out, err)
    beat = json.loads(results["heartbeat"][1])
    assert beat["due"] and (beat["busy"] or beat["ok"]), beat  # did the job, or left it to a running sync
    ran = [name for name in ("sync-1", "sync-2") if json.loads(results[name][1])["ok"]]
    assert ran == ["sync-1", "sync-2"]  # manual syncs wait for the lock instead of failing
    syncs = 2 + (not beat["busy"])
    assert len(set(holders)) >= 2, holders  # they did overlap: different processes took turns
    history = L.history()  # one complete entry per run that synced: nothing torn or lost
    assert len(history) == syncs and all(e["ok"] for e in history), history
    files = everywhere(L, R)
    assert all(v in files for v in versions)
    assert_converged_and_clean(pair)


def test_syncs_started_from_both_sides_at_once_never_corrupt(pair):
    """L syncs with R while R syncs with L: each holds its own lock and asks for the other's."""
    L, R = pair.local, pair.remote
    for i in range(50):
        write(L, f"memory/l/{i}.md", f"l {i}\n")
        write(R, f"memory/r/{i}.md", f"r {i}\n")
    procs = [cli(L, "sync"), cli(R, "sync")]
    outs = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    for code, out, err in outs:
        assert "Traceback" not in out + err
        doc = json.loads(out)
        assert code == 0 or "busy" in doc["reports"][0]["error"]["message"], doc
    assert_converged_and_clean(pair)
    assert len(selection_files(L)) == 100


# -- edits while a sync is under way ------------------------------------------------------------


def before_step(monkeypatch, step: str, action, *, side: Side | None = None) -> list:
    """Run `action()` once, right before the first call of Run.<step> (for `side` if given)."""
    real = getattr(Run, step)
    fired = []

    async def hooked(self, *args, **kwargs):
        target = args[0] if args and isinstance(args[0], Side) else None
        if not fired and (side is None or target is side) and (len(args) < 2 or args[-1]):
            fired.append(step)
            action()
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Run, step, hooked)
    return fired


@pytest.mark.parametrize("target_side", [Side.LOCAL, Side.REMOTE])
def test_target_edited_between_scan_and_install_is_kept(pair, monkeypatch, target_side):
    L, R = pair.local, pair.remote
    write(L, WHOLE, "base\n", mtime=time.time() - 120)
    sync_ok(L)
    source, target = (R, L) if target_side is Side.LOCAL else (L, R)
    # Newer than the base (a plain one-sided change), older than the user's fresh edit below.
    write(source, WHOLE, "sync brings this older edit\n", mtime=time.time() - 60)
    fresh = b"the user's fresh edit, made while the sync ran\n"
    fired = before_step(monkeypatch, "_install", lambda: save_atomically(target.root / WHOLE, fresh),
                        side=target_side)
    report = sync_ok(L)
    assert fired
    assert (target.root / WHOLE).read_bytes() == fresh  # not overwritten
    assert any("edited during the sync" in p.message for p in report.problems), report.problems
    monkeypatch.undo()
    assert_converged_and_clean(pair)
    assert (L.root / WHOLE).read_bytes() == fresh  # the newest edit wins the next sync
    assert b"sync brings this older edit\n" in everywhere(L, R)  # the loser is kept


@pytest.mark.parametrize("target_side", [Side.LOCAL, Side.REMOTE])
def test_memory_file_edited_between_scan_and_merge_is_kept(pair, monkeypatch, target_side):
    """Both sides changed MEMORY.md (a merge); the user saves it again while the merged version
    is being installed: the fresh edit stays, and the next sync merges it in."""
    L, R = pair.local, pair.remote
    write(L, "MEMORY.md", "# Memory\n- base\n")
    sync_ok(L)
    write(L, "MEMORY.md", "# Memory\n- base\n- from local\n")
    write(R, "MEMORY.md", "# Memory\n- base\n- from remote\n")
    target = L if target_side is Side.LOCAL else R
    fresh = (target.root / "MEMORY.md").read_bytes() + b"- fresh, during the sync\n"
    fired = before_step(monkeypatch, "_install", lambda: save_atomically(target.root / "MEMORY.md", fresh),
                        side=target_side)
    report = sync_ok(L)
    assert fired and (target.root / "MEMORY.md").read_bytes() == fresh  # not overwritten
    assert any("edited during the sync" in p.message for p in report.problems), report.problems
    monkeypatch.undo()
    assert_converged_and_clean(pair)
    merged = (L.root / "MEMORY.md").read_text()
    for line in ("- base\n", "- from local\n", "- from remote\n", "- fresh, during the sync\n"):
        assert merged.count(line) == 1


@pytest.mark.parametrize("step", ["prefetch", "transfer"])
def test_source_edited_between_scan_and_transfer_is_not_undone(pair, monkeypatch, step):
    """The sending side changes after its scan: inline (small) and rsync (large) transfers alike.
    Before any bytes are read (prefetch), each transfer finds the change and leaves it for the next
    sync; just before the copies (transfer), a small file whose bytes prefetch already read (Run._read_ahead)
    goes as scanned — either way the edit stays, and the next sync carries it."""
    L, R = pair.local, pair.remote
    write(L, "USER.md", "user v1\n")
    write(L, "memory/big.bin", os.urandom(1 << 20))
    sync_ok(L)
    write(L, "USER.md", "user v2\n")
    write(L, "memory/big.bin", os.urandom(1 << 20))
    newest = {"USER.md": b"user v3, written during the sync\n", "memory/big.bin": os.urandom(1 << 20)}

    def edit_sources():
        for rel, data in newest.items():
            save_atomically(L.root / rel, data)

    fired = before_step(monkeypatch, step, edit_sources)
    report = sync_ok(L)
    assert fired
    for rel, data in newest.items():
        assert (L.root / rel).read_bytes() == data
        if step == "prefetch" or rel == "memory/big.bin":
            assert any(p.path == rel for p in report.problems), report.problems  # left for the next sync
    monkeypatch.undo()
    assert_converged_and_clean(pair)
    for rel, data in newest.items():
        assert (R.root / rel).read_bytes() == data


def test_log_appended_during_its_merge_keeps_the_new_line(pair, monkeypatch):
    L, R = pair.local, pair.remote
    log = "memory/2026-01-26.md"
    write(L, log, "# day\n")
    sync_ok(L)
    write(L, log, "# day\n- here\n")
    write(R, log, "# day\n- there\n")

    def append_late():
        with open(L.root / log, "a") as f:
            f.write("- appended during the merge\n")

    fired = before_step(monkeypatch, "_install", append_late)
    sync_ok(L)
    assert fired
    assert "- appended during the merge\n" in (L.root / log).read_text()
    monkeypatch.undo()
    assert_converged_and_clean(pair)
    for ws in (L, R):
        text = (ws.root / log).read_text()
        assert all(line in text for line in ("- here\n", "- there\n", "- appended during the merge\n")), text


def test_file_edited_before_its_deletion_is_not_deleted(pair, monkeypatch):
    L, R = pair.local, pair.remote
    write(L, "memory/notes/x.md", "x v1\n")
    sync_ok(L)
    (R.root / "memory/notes/x.md").unlink()
    fresh = b"x edited while its deletion was on its way\n"
    fired = before_step(monkeypatch, "delete", lambda: save_atomically(L.root / "memory/notes/x.md", fresh),
                        side=Side.LOCAL)
    sync_ok(L)
    assert fired
    assert (L.root / "memory/notes/x.md").read_bytes() == fresh
    monkeypatch.undo()
    assert_converged_and_clean(pair)
    assert (R.root / "memory/notes/x.md").read_bytes() == fresh  # deletion never beats content


# -- edits racing the install itself (inside Store, between its check and its rename) -------------


def after_check(monkeypatch, rel: str, edit) -> list:
    """Run `edit()` once, right after the sync's last check of `rel` (the hash of the very inode
    it is about to replace or trash) and before its rename: the narrowest race there is."""
    real = transition.hash_file
    fired = []

    def hash_file(path):
        digest = real(path)
        if not fired and "/holding/" in os.fspath(path) and os.fspath(path).endswith("/" + flat_rel(rel)):
            fired.append(path)
            edit()
        return digest

    monkeypatch.setattr(transition, "hash_file", hash_file)
    return fired


@pytest.mark.parametrize("how", ["in-place", "atomic-save"])
def test_edit_racing_the_replace_is_kept(pair, monkeypatch, how):
    L, R = pair.local, pair.remote
    write(L, "MEMORY.md", "base\n")
    sync_ok(L)
    write(R, "MEMORY.md", "the peer's edit\n")
    fresh = b"the user's edit, saved between the sync's check and its rename\n"
    path = L.root / "MEMORY.md"
    edit = (lambda: path.write_bytes(fresh)) if how == "in-place" else (lambda: save_atomically(path, fresh))
    fired = after_check(monkeypatch, path.relative_to(L.root).as_posix(), edit)
    sync_ok(L)
    assert fired
    monkeypatch.undo()
    assert fresh in everywhere(L, R)  # at its path or, at worst, in conflicts/
    assert_converged_and_clean(pair)
    assert fresh in everywhere(L, R)


@pytest.mark.parametrize("how", ["in-place", "atomic-save"])
def test_edit_racing_the_move_to_trash_is_not_deleted(pair, monkeypatch, how):
    L, R = pair.local, pair.remote
    write(L, "memory/notes/x.md", "x v1\n")
    sync_ok(L)
    (R.root / "memory/notes/x.md").unlink()
    fresh = b"x saved between the sync's check and its move to the trash\n"
    path = L.root / "memory/notes/x.md"
    edit = (lambda: path.write_bytes(fresh)) if how == "in-place" else (lambda: save_atomically(path, fresh))
    fired = after_check(monkeypatch, path.relative_to(L.root).as_posix(), edit)
    sync_ok(L)
    assert fired
    monkeypatch.undo()
    assert_converged_and_clean(pair)
    for ws in (L, R):
        assert (ws.root / "memory/notes/x.md").read_bytes() == fresh  # deletion never beats content


def test_a_failing_side_never_cuts_off_the_other_mid_write(pair, monkeypatch):
    """The peer's half of the copy fails while this side is still installing: the sync must wait
    for that install to finish before closing sessions and letting go of the workspace lock."""
    L, R = pair.local, pair.remote
    write(L, "MEMORY.md", "base\n")
    write(L, "USER.md", "user\n")
    sync_ok(L)
    now = time.time()
    write(L, "MEMORY.md", "mine, older: replaced and kept in conflicts/\n", mtime=now - 100)
    write(R, "MEMORY.md", "theirs, newer\n", mtime=now - 10)
    write(L, "USER.md", "to be pushed\n")
    installing, lock_lost = threading.Event(), []
    real_transfer, real_quarantine = Run.transfer, transition.Store._quarantine_file

    async def failing_transfer(self, source, target, items):
        if target is Side.REMOTE:  # the connection drops while this side is mid-install
            await asyncio.to_thread(installing.wait, 30)
            raise ConnectError("connection to remote lost during 'install' (simulated)")
        return await real_transfer(self, source, target, items)

    def slow_quarantine(store, held, path, info):
        if store.root == L.root:  # MEMORY.md was just swapped in; its loser is being kept
            installing.set()
            time.sleep(0.5)
            try:
                with state_lock(L.state, timeout=0):
                    lock_lost.append("the workspace lock was released during an install")
            except BusyError:
                pass
        return real_quarantine(store, held, path, info)

    monkeypatch.setattr(Run, "transfer", failing_transfer)
    monkeypatch.setattr(transition.Store, "_quarantine_file", slow_quarantine)
    report = run_sync(L)[0]
    monkeypatch.undo()
    assert not report.ok and "simulated" in report.error
    assert installing.is_set() and not lock_lost
    assert b"mine, older: replaced and kept in conflicts/\n" in everywhere(L, R)
    assert_converged_and_clean(pair)
    assert b"mine, older: replaced and kept in conflicts/\n" in everywhere(L, R)
