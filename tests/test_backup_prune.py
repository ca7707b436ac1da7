"""`backup prune` against the real rclone: retention applied per instance, garbage collected, and
nothing lost when a backup runs at the same time (Must show 5; the policy itself is in test_retention)."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from test_backup import isolated, make_workspace, set_config, sha, stored_objects, write  # noqa: F401

from peersync.backup import (
    BackupRun,
    list_snapshots,
    prune,
    restore,
    take_snapshot,
    verify,
)
from peersync.core.retention import KeepPolicy
from peersync.errors import BusyError, UsageError
from peersync.workspace.workspace import Workspace

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # a Monday


def snapshot_versions(ws: Workspace, target: Path, times: list[datetime]) -> list[str]:
    """One snapshot per time, each with its own version of MEMORY.md."""
    ids = []
    for n, moment in enumerate(times):
        write(ws.root, "MEMORY.md", f"version {n}\n")
        ids.append(take_snapshot(ws, target=str(target), now=moment).snapshot.id)
    return ids


def test_prune_applies_the_policy_and_collects_garbage(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    # Two snapshots on each of three days (in local time: these are 9:00 and 15:00 UTC).
    times = [T0 + timedelta(days=d, hours=h) for d in range(3) for h in (0, 6)]
    ids = snapshot_versions(ws, target, times)
    set_config(ws, f"backup:\n  target: {target}\n  keep: {{daily: 2}}\n")

    dry = prune(ws, dry_run=True)
    assert dry.removed and dry.deleted_objects and len(list_snapshots(ws)["snapshots"]) == 6  # nothing changed

    result = prune(ws)
    by_day: dict = {}  # restic's days are calendar days: local time
    for sid, moment in zip(ids, times):
        by_day.setdefault(moment.astimezone().date(), []).append(sid)
    expected_kept = sorted(sids[-1] for _, sids in sorted(by_day.items())[-2:])  # newest of the last 2 days
    assert result.kept == expected_kept
    assert sorted(result.removed) == sorted(set(ids) - set(expected_kept))
    assert [s["id"] for s in list_snapshots(ws)["snapshots"]] == expected_kept
    # Exactly the objects of forgotten MEMORY.md versions are gone; everything kept still restores.
    kept_memory = {sha(f"version {ids.index(i)}\n".encode()) for i in expected_kept}
    all_memory = {sha(f"version {n}\n".encode()) for n in range(6)}
    assert result.deleted_objects == len(all_memory - kept_memory)
    assert not (all_memory - kept_memory) & stored_objects(target)
    assert verify(ws).ok
    for sid in expected_kept:
        out = tmp_path / f"out-{sid}"
        assert restore(ws, snapshot=sid, to=out).ok
        assert (out / "MEMORY.md").read_bytes() == f"version {ids.index(sid)}\n".encode()


def test_keep_n_and_backup_now_prunes_after(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    set_config(ws, "backup:\n  keep: 2\n")
    for n in range(3):
        write(ws.root, "MEMORY.md", f"v{n}\n")
        result = take_snapshot(ws, now=T0 + timedelta(minutes=n))
    assert len(result.pruned.removed) == 1
    assert len(list_snapshots(ws)["snapshots"]) == 2


def test_prune_groups_by_instance(tmp_path):
    """Two instances sharing one target: each keeps its own newest, and shared objects stay."""
    target = tmp_path / "shared"
    a, b = make_workspace(tmp_path / "a"), make_workspace(tmp_path / "b")
    snapshot_versions(a, target, [T0, T0 + timedelta(hours=1)])
    b_ids = snapshot_versions(b, target, [T0 + timedelta(minutes=30)])
    result = prune(a, target=str(target), policy=KeepPolicy(last=1))
    assert len(result.removed) == 1 and b_ids[0] in result.kept
    assert verify(a, target=str(target)).ok


def test_prune_without_a_policy_is_refused(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws)
    with pytest.raises(UsageError, match="no retention policy"):
        prune(ws)


def test_prune_with_a_concurrent_backup_loses_nothing(tmp_path):
    """The dangerous interleaving, step by step: a backup lists the objects and finds the content
    it needs already stored (so it will not upload it) — but only a snapshot that prune is about
    to forget references that object.  Prune must not collect it while the backup runs."""
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    write(ws.root, "MEMORY.md", "precious\n")
    old = take_snapshot(ws, target=str(target), now=T0).snapshot.id
    write(ws.root, "MEMORY.md", "interim\n")
    take_snapshot(ws, target=str(target), now=T0 + timedelta(hours=1))
    write(ws.root, "MEMORY.md", "precious\n")  # back to content only the old snapshot holds

    with BackupRun(ws, target=str(target), now=T0 + timedelta(hours=2)) as run:
        run.prepare()  # lock written, objects listed: "precious" is there, no upload needed
        assert sha(b"precious\n") not in run.missing()
        result = prune(ws, target=str(target), policy=KeepPolicy(last=1))  # forgets `old`
        assert old in result.removed
        assert result.objects_held and "backup is running" in result.objects_held
        assert sha(b"precious\n") in stored_objects(target)
        run.upload()
        new = run.commit().snapshot.id

    out = tmp_path / "out"
    assert restore(ws, target=str(target), snapshot=new, to=out).ok
    assert (out / "MEMORY.md").read_bytes() == b"precious\n"
    assert verify(ws, target=str(target)).ok
    later = prune(ws, target=str(target), policy=KeepPolicy(last=1))  # now garbage may go…
    assert later.objects_held is None and later.deleted_objects == 1  # …only "interim"
    assert verify(ws, target=str(target)).ok


def test_a_backup_waits_for_a_running_prune(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    take_snapshot(ws, target=str(target))
    lock = target / "locks" / "prune-20260302T090000Z-abcd.json"
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"kind": "prune", "host": "elsewhere", "refreshed": time.time()}))
    with pytest.raises(BusyError, match="a prune of .* is running \\(on elsewhere\\)"):
        with BackupRun(ws, target=str(target), lock_wait=0) as run:
            run.prepare()
    assert not list((target / "locks").glob("backup-*"))  # our own lock went away with the failure

    # A prune that ends while the backup waits lets it through.
    threading.Timer(1.5, lock.unlink).start()
    with BackupRun(ws, target=str(target), lock_wait=30) as run:
        run.prepare()
        run.upload()
        run.commit()

    # A stale lock (a crashed prune) is ignored.
    lock.write_text(json.dumps({"kind": "prune", "host": "elsewhere", "refreshed": time.time() - 3 * 3600}))
    old = time.time() - 3 * 3600
    os.utime(lock, (old, old))
    take_snapshot(ws, target=str(target))


def test_stale_backup_lock_does_not_block_garbage_collection(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    snapshot_versions(ws, target, [T0, T0 + timedelta(hours=1)])
    lock = target / "locks" / "backup-20260302T080000Z-dead.json"
    lock.write_text(json.dumps({"kind": "backup", "host": "crashed", "refreshed": time.time() - 3 * 3600}))
    old = time.time() - 3 * 3600
    os.utime(lock, (old, old))
    result = prune(ws, target=str(target), policy=KeepPolicy(last=1))
    assert result.objects_held is None and result.deleted_objects == 1
    assert lock.exists()  # stale, ignored, but not someone else's to delete yet (only after a day)


def test_prune_and_backups_racing_freely(tmp_path):
    """No choreography: prunes and backups of changing content in two threads.  Whatever the
    interleaving, every snapshot that remains restores and verifies."""
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    take_snapshot(ws, target=str(target))
    errors: list[BaseException] = []

    def backups():
        try:
            for n in range(4):
                write(ws.root, "MEMORY.md", f"round {n}\n")
                write(ws.root, f"memory/round-{n}.md", f"{n}\n" * 50)
                take_snapshot(ws, target=str(target), prune_after=False)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    thread = threading.Thread(target=backups)
    thread.start()
    while thread.is_alive():
        try:
            prune(ws, target=str(target), policy=KeepPolicy(last=1))
        except BusyError:
            pass
    thread.join()
    assert not errors
    assert verify(ws, target=str(target)).ok
    latest = list_snapshots(ws, target=str(target))["snapshots"][-1]["id"]
    out = tmp_path / "out"
    assert restore(ws, target=str(target), snapshot=latest, to=out).ok
    assert (out / "MEMORY.md").read_bytes() == b"round 3\n"
