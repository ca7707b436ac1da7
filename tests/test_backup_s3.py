"""Backups to S3: a real `rclone serve s3` on loopback with access keys (Must show 2)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_backup import files_under, isolated, make_workspace, write  # noqa: F401

from peersync.backup import list_snapshots, restore, take_snapshot, verify
from peersync.testing import selection_files
from peersync.transport.rclone import RcloneError

RCLONE = str(Path(sys.executable).parent / "rclone")
KEY, SECRET = "PEERSYNCKEY", "peersync-test-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """`rclone serve s3` on 127.0.0.1 over a directory whose top-level dirs are buckets."""
    root = tmp_path_factory.mktemp("s3")
    (root / "bucket").mkdir()
    port = free_port()
    log = open(root.parent / "serve-s3.log", "wb")
    proc = subprocess.Popen([RCLONE, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{KEY},{SECRET}",
                             str(root)], stdout=log, stderr=subprocess.STDOUT, env={"RCLONE_CONFIG": "/dev/null",
                                                                                      "PATH": "/usr/bin:/bin"})
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"rclone serve s3 did not start: {(root.parent / 'serve-s3.log').read_text()}")
            time.sleep(0.1)
    yield root, port
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def connection_string(port: int, secret: str = SECRET, path: str = "bucket/ws") -> str:
    return (f":s3,provider=Rclone,endpoint='http://127.0.0.1:{port}',access_key_id={KEY},"
            f"secret_access_key={secret}:{path}")


def test_round_trip_through_a_connection_string(tmp_path, s3):
    root, port = s3
    ws = make_workspace(tmp_path / "ws")
    target = connection_string(port, path="bucket/conn")
    first = take_snapshot(ws, target=target)
    assert SECRET not in first.target["target"] and "secret_access_key=***" in first.target["target"]
    before = selection_files(ws)
    write(ws.root, "MEMORY.md", "# Memory\n- likes coffee now\n")
    second = take_snapshot(ws, target=target)
    assert second.uploaded_objects == 1
    assert (root / "bucket" / "conn" / "snapshots" / f"{second.snapshot.id}.json.gz").is_file()

    assert [s["id"] for s in list_snapshots(ws, target=target)["snapshots"]] == [first.snapshot.id, second.snapshot.id]
    restore(ws, target=target, snapshot=first.snapshot.id, to=tmp_path / "r1")
    restore(ws, target=target, snapshot=second.snapshot.id, to=tmp_path / "r2")
    assert files_under(tmp_path / "r1") == before
    assert files_under(tmp_path / "r2") == selection_files(ws)
    assert verify(ws, target=target).ok


def test_round_trip_through_an_env_var_remote(tmp_path, s3, monkeypatch):
    root, port = s3
    for key, value in {"TYPE": "s3", "PROVIDER": "Rclone", "ENDPOINT": f"http://127.0.0.1:{port}",
                       "ACCESS_KEY_ID": KEY, "SECRET_ACCESS_KEY": SECRET}.items():
        monkeypatch.setenv(f"RCLONE_CONFIG_MYS3_{key}", value)
    ws = make_workspace(tmp_path / "ws")
    ws.config_file.write_text("backup:\n  target: mys3:bucket/env\n")
    take_snapshot(ws)
    restore(ws, to=tmp_path / "out")
    assert files_under(tmp_path / "out") == selection_files(ws)


def test_encrypted_on_s3(tmp_path, s3, monkeypatch):
    root, port = s3
    monkeypatch.setenv("PEERSYNC_BACKUP_PASSPHRASE", "s3 passphrase")
    ws = make_workspace(tmp_path / "ws")
    target = connection_string(port, path="bucket/enc")
    take_snapshot(ws, target=target)
    stored = root / "bucket" / "enc"
    names = [p.relative_to(stored).as_posix() for p in stored.rglob("*")]
    assert not any(part in name for name in names for part in ("objects", "snapshots", "MEMORY", "memory"))
    assert b"likes tea" not in b"".join(p.read_bytes() for p in stored.rglob("*") if p.is_file())
    restore(ws, target=target, to=tmp_path / "out")
    assert files_under(tmp_path / "out") == selection_files(ws)


def test_wrong_secret_is_a_readable_error(tmp_path, s3):
    root, port = s3
    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws, target=connection_string(port, path="bucket/auth"))
    for action in (lambda t: take_snapshot(ws, target=t), lambda t: list_snapshots(ws, target=t)):
        with pytest.raises(RcloneError) as err:
            action(connection_string(port, secret="not-the-secret", path="bucket/auth"))
        text = str(err.value)
        assert "SignatureDoesNotMatch" in text and "Check the access key and secret" in text
        assert "not-the-secret" not in text and "not-the-secret" not in err.value.stderr
        assert len(text.splitlines()) == 2
