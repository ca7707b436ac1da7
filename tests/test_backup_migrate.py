"""Old-format peersync backups keep restoring: `backup migrate` copies them into the restic repository
beside them — authenticated when they were encrypted, only on the user's word when they were not."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timezone

import pytest

from peersync.backup import WrongPassphrase, list_snapshots, migrate, restore, status, take_snapshot
from peersync.errors import UsageError
from legacy_format import write_legacy
from test_backup import files_under, isolated, make_workspace, run_cli  # noqa: F401

T1 = datetime(2026, 1, 10, 8, 30, tzinfo=timezone.utc)
T2 = datetime(2026, 1, 11, 21, 5, tzinfo=timezone.utc)
NS = 1_767_000_000_123_456_789


def old_files(version: str) -> dict[str, tuple[bytes, int, int]]:
    return {"MEMORY.md": (f"# Memory {version}\n".encode(), 0o644, NS),
            "memory/2026-01-10.md": (b"# 2026-01-10\n- walked\n", 0o600, NS + 1),
            "memory/logs/events.jsonl": (f'{{"v": "{version}"}}\n'.encode(), 0o640, NS + 2),
            "IDENTITY.md": (b"# Identity\nold laptop\n", 0o644, NS + 3)}


def test_unencrypted_old_snapshots_migrate_on_the_users_word_and_restore_exactly(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    olds = write_legacy(target, [(T1, old_files("one")), (T2, old_files("two"))], instance=ws.instance_id)

    proc = run_cli("-w", str(ws.root), "backup", "migrate", "--target", str(target))
    assert proc.returncode == 2 and "not encrypted" in proc.stderr and "--trust-unencrypted" in proc.stderr
    doc = status(ws, target=str(target))
    assert "backup migrate" in doc["legacy"]["hint"] and doc["legacy"]["encrypted"] is False

    result = migrate(ws, target=str(target), trust_unencrypted=True)
    assert [m["old"] for m in result.migrated] == olds and result.ok and not result.problems
    assert (target / "restic" / "config").is_file() and (target / "peersync-backup.json").is_file()  # old data kept
    snaps = list_snapshots(ws, target=str(target))["snapshots"]
    assert [s["time"] for s in snaps] == ["2026-01-10T08:30:00Z", "2026-01-11T21:05:00Z"]
    assert {s["host"] for s in snaps} == {"old-laptop"} and {s["instance"] for s in snaps} == {ws.instance_id}
    for snap, version in zip(snaps, ("one", "two")):
        out = tmp_path / f"out-{version}"
        assert restore(ws, target=str(target), snapshot=snap["id"], to=out).ok
        expected = old_files(version)
        assert files_under(out) == {p: d for p, (d, _, _) in expected.items()}
        for path, (_, mode, mtime_ns) in expected.items():
            st = (out / path).stat()
            assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (mode, mtime_ns), path

    again = migrate(ws, target=str(target), trust_unencrypted=True)
    assert again.migrated == [] and again.already == olds  # safe to run again (an interrupted migrate too)
    take_snapshot(ws, target=str(target))  # new backups go to the same repository, beside the old data
    assert len(list_snapshots(ws, target=str(target))["snapshots"]) == 3


def test_encrypted_old_snapshots_are_authenticated(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    monkeypatch.setenv("PEERSYNC_BACKUP_PASSPHRASE", "old passphrase")
    olds = write_legacy(target, [(T1, old_files("one")), (T2, old_files("two"))], instance="0" * 32,
                        passphrase="old passphrase")
    monkeypatch.setenv("PEERSYNC_BACKUP_PASSPHRASE", "not the old one")
    with pytest.raises(WrongPassphrase):
        migrate(ws, target=str(target))
    assert not (target / "restic").exists()  # nothing made before the old backups opened
    monkeypatch.setenv("PEERSYNC_BACKUP_PASSPHRASE", "old passphrase")

    # Swap the two encrypted manifests: crypt still decrypts each, but a manifest must name its file.
    snaps_dir = next(p for p in target.iterdir() if p.is_dir() and len(list(p.iterdir())) == 2
                     and all(q.is_file() for q in p.iterdir()))
    a, b = sorted(snaps_dir.iterdir())
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    swapped = migrate(ws, target=str(target))
    assert swapped.migrated == [] and set(swapped.unreadable) == set(olds)
    assert all("names snapshot" in why for why in swapped.unreadable.values())
    a.write_bytes(data_a)
    b.write_bytes(data_b[:-1] + bytes([data_b[-1] ^ 1]))  # and one bit of the other: crypt refuses it
    result = migrate(ws, target=str(target))
    assert len(result.migrated) == 1 and len(result.unreadable) == 1
    proc = run_cli("-w", str(ws.root), "--json", "backup", "migrate", "--target", str(target))
    assert proc.returncode == 1 and json.loads(proc.stdout)["already"] == [result.migrated[0]["old"]]
    # A new machine (another instance id) restores the migrated snapshot of the old one.
    restored = restore(ws, target=str(target), to=tmp_path / "out")
    assert files_under(tmp_path / "out")["IDENTITY.md"] == b"# Identity\nold laptop\n"


def test_forged_old_entries_are_left_out(tmp_path):
    """Even on the user's word, an old manifest cannot escape the restore directory, plant special
    mode bits, or reach outside the selection at restore time."""
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    files = old_files("one")
    files["memory/run-me.sh"] = (b"#!/bin/sh\nid\n", 0o4755, NS)
    files["AGENTS.md"] = (b"planted\n", 0o644, NS)
    sha = "0" * 64
    write_legacy(target, [(T1, files)], instance=ws.instance_id,
                 entries_extra=[{"path": "../escaped.md", "size": 1, "mtime_ns": NS, "mode": 0o644, "sha256": sha},
                                {"path": "/etc/evil", "size": 1, "mtime_ns": NS, "mode": 0o644, "sha256": sha}])
    result = migrate(ws, target=str(target), trust_unencrypted=True)
    assert {p.path.split(": ")[0] for p in result.problems} == {"../escaped.md", "/etc/evil"}
    assert not (tmp_path / "escaped.md").exists()
    out = tmp_path / "out"
    restored = restore(ws, target=str(target), to=out)
    assert stat.S_IMODE((out / "memory" / "run-me.sh").stat().st_mode) == 0o755
    assert not (out / "AGENTS.md").exists() and "AGENTS.md" in {p.path for p in restored.not_restored}


def test_nothing_to_migrate(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws)
    with pytest.raises(UsageError, match="no old-format backups"):
        migrate(ws)
