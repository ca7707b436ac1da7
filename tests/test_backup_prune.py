"""Retention and crash safety against the real restic: `keep:` applied per instance by restic's forget,
explained the same way by peersync.retention, and no killed backup ever blocking the next backup or prune."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from peersync.backup import list_snapshots, prune, restore, retention, take_snapshot, verify
from peersync.backup.config import load_config
from peersync.backup.repo import open_repo
from peersync.errors import UsageError
from peersync.core.retention import KeepPolicy
from peersync.workspace.workspace import Workspace
from test_backup import PEERSYNC, files_under, isolated, make_workspace, set_config, write  # noqa: F401

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # a Monday


def snapshot_versions(ws: Workspace, target: Path, times: list[datetime]) -> list[str]:
    """One snapshot per time, each with its own version of MEMORY.md."""
    ids = []
    for n, moment in enumerate(times):
        write(ws.root, "MEMORY.md", f"version {n}\n")
        ids.append(take_snapshot(ws, target=str(target), now=moment, prune_after=False).snapshot.short_id)
    return ids


def test_prune_applies_the_policy_and_restic_agrees_with_peersync_retention(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    # Two snapshots on each of three days (in local time: these are 9:00 and 15:00 UTC), one a week before.
    times = [T0 - timedelta(days=7)] + [T0 + timedelta(days=d, hours=h) for d in range(3) for h in (0, 6)]
    ids = snapshot_versions(ws, target, times)
    set_config(ws, f"backup:\n  target: {target}\n  keep: {{daily: 2, weekly: 2}}\n")

    explained = {d["id"]: d for d in retention(ws)}  # peersync.retention's view: no lock, no change
    dry = prune(ws, dry_run=True)
    assert dry.removed and len(list_snapshots(ws)["snapshots"]) == 7  # nothing changed
    assert sorted(dry.kept) == sorted(i for i, d in explained.items() if d["keep"])  # the same decisions
    assert sorted(dry.removed) == sorted(i for i, d in explained.items() if not d["keep"])
    newest = ids[-1]
    assert explained[newest]["reasons"] == ["daily", "weekly"] and dry.reasons[newest] == ["daily snapshot",
                                                                                        "weekly snapshot"]

    result = prune(ws)
    by_day: dict = {}  # restic's days are calendar days: local time
    for sid, moment in zip(ids, times):
        by_day.setdefault(moment.astimezone().date(), []).append(sid)
    days = sorted(by_day)
    expected = {by_day[days[-1]][-1], by_day[days[-2]][-1], ids[0]}  # 2 newest days; the week before
    assert sorted(result.kept) == sorted(expected) and sorted(result.removed) == sorted(set(ids) - expected)
    assert result.freed is not None
    assert sorted(s["id"] for s in list_snapshots(ws)["snapshots"]) == sorted(expected)
    assert verify(ws).ok
    for n, sid in enumerate(ids):
        if sid in expected:
            out = tmp_path / f"out-{sid}"
            assert restore(ws, snapshot=sid, to=out).ok
            assert (out / "MEMORY.md").read_bytes() == f"version {n}\n".encode()


def test_keep_n_and_backup_now_prunes_after(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    set_config(ws, "backup:\n  keep: 2\n")
    for n in range(4):
        write(ws.root, "MEMORY.md", f"v{n}\n")
        result = take_snapshot(ws, now=T0 + timedelta(hours=n))
    assert result.pruned is not None and len(result.pruned.removed) == 1
    assert len(list_snapshots(ws)["snapshots"]) == 2


def test_prune_groups_by_instance(tmp_path):
    """Two instances back up to one target; `keep: 1` keeps one snapshot of EACH."""
    target = tmp_path / "shared"
    a = make_workspace(tmp_path / "a")
    b = make_workspace(tmp_path / "b")
    for ws in (a, b):
        set_config(ws, f"backup:\n  target: {target}\n  keep: 1\n  passphrase: ${{SHARED_PASS}}\n")
    os.environ["SHARED_PASS"] = "one passphrase for both"
    try:
        for n in range(2):
            for ws in (a, b):
                take_snapshot(ws, now=T0 + timedelta(hours=n), prune_after=False)
        result = prune(a)
        assert len(result.removed) == 2 and len(result.kept) == 2
        left = list_snapshots(b)["snapshots"]
        assert sorted(s["instance"] for s in left) == sorted([a.instance_id, b.instance_id])
    finally:
        del os.environ["SHARED_PASS"]


def test_unlimited_keeps_all_on_restic_0_14_too(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    snapshot_versions(ws, target, [T0 + timedelta(days=d) for d in range(3)])
    set_config(ws, f"backup:\n  target: {target}\n  keep: {{daily: unlimited}}\n")
    assert prune(ws).removed == []  # restic < 0.16 reads -1 as "none": peersync passes a huge count


def test_prune_without_a_policy_is_refused(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws)
    with pytest.raises(UsageError, match="no retention policy"):
        prune(ws)


def test_prune_with_a_concurrent_backup_loses_nothing(tmp_path):
    """restic's locks serialise them: the prune waits for the backup (or the reverse); every
    snapshot that remains restores."""
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    set_config(ws, f"backup:\n  target: {target}\n  keep: 1\n")
    for n in range(3):
        write(ws.root, "memory/big.bin", os.urandom(2_000_000))
        take_snapshot(ws, prune_after=False)
    other = make_workspace(tmp_path / "other")  # a second instance backing up at the same moment
    set_config(other, f"backup:\n  target: {target}\n  passphrase: ${{P}}\n")
    os.environ["P"] = (ws.state / "backup" / "passphrase").read_text().strip()
    try:
        write(other.root, "memory/big.bin", os.urandom(8_000_000))
        errors: list = []
        thread = threading.Thread(target=lambda: errors.append(None) if take_snapshot(other, prune_after=False)
                                  else None)
        thread.start()
        time.sleep(0.5)
        pruned = prune(ws)
        thread.join()
        assert errors == [None]
        assert len(pruned.removed) == 2
        assert verify(ws).ok
        for snap in list_snapshots(ws)["snapshots"]:
            assert restore(ws, snapshot=snap["id"], to=tmp_path / f"r-{snap['id']}").ok
    finally:
        del os.environ["P"]


# -- crash safety ---------------------------------------------------------------------------------

def test_a_killed_backup_never_blocks_the_next_backup_or_prune(tmp_path):
    """SIGKILL `peersync backup now` (and its restic and rclone) at random moments; then a
    backup and a prune succeed with no manual step, and everything kept restores."""
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    set_config(ws, f"backup:\n  target: {target}\n  keep: 2\n")
    take_snapshot(ws)
    rng = random.Random(20)
    env = {**os.environ}
    stale_locks_seen = 0
    for trial in range(6):
        write(ws.root, "memory/big.bin", os.urandom(6_000_000 + trial))
        write(ws.root, f"memory/trial-{trial}.md", f"trial {trial}\n")
        proc = subprocess.Popen([*PEERSYNC, "-w", str(ws.root), "backup", "now", "--no-prune"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if trial % 2:
            time.sleep(rng.uniform(0.3, 2.5))  # any moment
        else:  # while restic holds its lock (how long a backup takes depends on the machine's load)
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline and not (
                    (target / "locks").is_dir() and any((target / "locks").iterdir())):
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.1))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        locks = list((target / "locks").iterdir()) if (target / "locks").is_dir() else []
        stale_locks_seen += bool(locks)
        result = take_snapshot(ws, prune_after=False)
        assert result.snapshot.short_id
        pruned = prune(ws)
        assert len(pruned.kept) == 2
        assert not list((target / "locks").iterdir())
    assert stale_locks_seen >= 1, "no kill landed while restic held its lock: the trials proved nothing"
    assert verify(ws).ok
    out = tmp_path / "out"
    assert restore(ws, to=out).ok
    assert (out / "memory" / "trial-5.md").read_bytes() == b"trial 5\n"


def _holding_a_lock(ws: Workspace, target: Path) -> subprocess.Popen:
    """A real restic holding the repository's (non-exclusive) lock for as long as its stdin is open."""
    repo = open_repo(ws, load_config(ws), str(target))
    proc = subprocess.Popen(repo.restic.argv(["backup", "--stdin", "--stdin-filename", "held.txt"]),
                            env=repo.restic.env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any((target / "locks").iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None, "restic never took its lock"
        time.sleep(0.02)
    return proc


def test_a_lock_held_by_a_live_process_is_waited_for_never_removed(tmp_path):
    from peersync.errors import BusyError

    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    set_config(ws, f"backup:\n  target: {target}\n  keep: 1\n")
    take_snapshot(ws, prune_after=False)
    take_snapshot(ws, prune_after=False)
    holder = _holding_a_lock(ws, target)
    lock = list((target / "locks").iterdir())
    repo = open_repo(ws, load_config(ws), str(target))
    with pytest.raises(BusyError, match=f"in use by restic PID {holder.pid} on"):
        repo.with_lock_recovery(lambda: repo.restic.run(["prune"]), wait=1.0)
    assert list((target / "locks").iterdir()) == lock and holder.poll() is None  # left alone
    holder.stdin.write(b"held\n")
    holder.stdin.close()
    assert holder.wait(60) == 0
    assert len(prune(ws).removed) == 1  # the lock went with its process; the prune now runs
    # Only peersync's snapshots are ever forgotten: the one restic made from stdin (no tags) stays.
    assert [s["instance"] for s in list_snapshots(ws)["snapshots"]].count(None) == 1


def test_a_dead_processes_lock_is_removed_and_said(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    set_config(ws, f"backup:\n  target: {target}\n  keep: 1\n")
    take_snapshot(ws, prune_after=False)
    take_snapshot(ws, prune_after=False)
    holder = _holding_a_lock(ws, target)
    holder.kill()  # SIGKILL: restic cannot remove its lock
    holder.wait()
    assert list((target / "locks").iterdir())
    result = prune(ws)
    assert result.removed and any(f"stale lock of restic PID {holder.pid}" in n for n in result.notices)
    assert not list((target / "locks").iterdir())
    proc = subprocess.run([*PEERSYNC, "-w", str(ws.root), "backup", "now"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
