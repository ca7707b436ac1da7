"""Backups to S3: a real `rclone serve s3` on loopback, behind a proxy that counts every request and byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from peersync.backup import list_snapshots, restore, take_snapshot, verify
from peersync.errors import PeersyncError
from peersync.testing import CountingProxy, S3Server, generate, session_log
from peersync.workspace.workspace import Workspace
from test_backup import backup_files, files_under, isolated, make_workspace, repo_bytes, write  # noqa: F401

RCLONE = str(Path(sys.executable).parent / "rclone")
KEY, SECRET = "PEERSYNCKEY", "peersync-test-secret-0123456789"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """`rclone serve s3` on 127.0.0.1 over a directory whose top-level dirs are buckets, and a
    counting proxy in front of it (its port is what clients use)."""
    root = tmp_path_factory.mktemp("s3")
    (root / "bucket").mkdir()
    server = S3Server(RCLONE, root, KEY, SECRET).start()
    proxy = CountingProxy(server.port).start()
    yield root, proxy.port, proxy, server
    proxy.stop()
    server.stop()


def connection_string(port: int, secret: str = SECRET, path: str = "bucket/ws") -> str:
    return (f":s3,provider=Rclone,endpoint='http://127.0.0.1:{port}',access_key_id={KEY},"
            f"secret_access_key={secret}:{path}")


def test_round_trip_through_a_connection_string(tmp_path, s3):
    root, port, *_ = s3
    ws = make_workspace(tmp_path / "ws")
    target = connection_string(port, path="bucket/conn")
    first = take_snapshot(ws, target=target)
    assert SECRET not in first.target["target"] and "secret_access_key=***" in first.target["target"]
    before = backup_files(ws)
    write(ws.root, "MEMORY.md", "# Memory\n- likes coffee now\n")
    second = take_snapshot(ws, target=target)
    assert second.files_changed == 1
    assert (root / "bucket" / "conn" / "config").is_file()

    snaps = list_snapshots(ws, target=target)["snapshots"]
    assert [s["id"] for s in snaps] == [first.snapshot.short_id, second.snapshot.short_id]
    restore(ws, target=target, snapshot=first.snapshot.short_id, to=tmp_path / "r1")
    restore(ws, target=target, snapshot=second.snapshot.short_id, to=tmp_path / "r2")
    assert files_under(tmp_path / "r1") == before
    assert files_under(tmp_path / "r2") == backup_files(ws)
    assert verify(ws, target=target).ok


def test_round_trip_through_an_env_var_remote(tmp_path, s3, monkeypatch):
    root, port, *_ = s3
    for key, value in {"TYPE": "s3", "PROVIDER": "Rclone", "ENDPOINT": f"http://127.0.0.1:{port}",
                       "ACCESS_KEY_ID": KEY, "SECRET_ACCESS_KEY": SECRET}.items():
        monkeypatch.setenv(f"RCLONE_CONFIG_MYS3_{key}", value)
    ws = make_workspace(tmp_path / "ws")
    ws.config_file.write_text("backup:\n  target: mys3:bucket/env\n")
    take_snapshot(ws)
    restore(ws, to=tmp_path / "out")
    assert files_under(tmp_path / "out") == backup_files(ws)


def test_named_remote_with_an_inline_secret(tmp_path, s3, monkeypatch):
    """`name,secret_access_key=…:path`: the inline option overrides rclone.conf's (wrong) one."""
    root, port, *_ = s3
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"[store]\ntype = s3\nprovider = Rclone\nendpoint = http://127.0.0.1:{port}\n"
                    f"access_key_id = {KEY}\nsecret_access_key = stale-secret\n")
    monkeypatch.setenv("RCLONE_CONFIG", str(conf))
    ws = make_workspace(tmp_path / "ws")
    target = f"store,secret_access_key={SECRET}:bucket/named"
    result = take_snapshot(ws, target=target)
    assert result.target["target"] == "store,secret_access_key=***:bucket/named"
    assert (root / "bucket" / "named" / "config").is_file()
    restore(ws, target=target, to=tmp_path / "out")
    assert files_under(tmp_path / "out") == backup_files(ws)


def test_wrong_secret_is_a_readable_error(tmp_path, s3):
    root, port, *_ = s3
    ws = make_workspace(tmp_path / "ws")
    take_snapshot(ws, target=connection_string(port, path="bucket/auth"))
    for action in (lambda t: take_snapshot(ws, target=t), lambda t: list_snapshots(ws, target=t)):
        with pytest.raises(PeersyncError) as err:
            action(connection_string(port, secret="not-the-secret", path="bucket/auth"))
        text = str(err.value)
        assert "SignatureDoesNotMatch" in text and "Check the access key and secret" in text
        assert "not-the-secret" not in text and "not-the-secret" not in getattr(err.value, "stderr", "")
        assert len(text.splitlines()) == 2


CHUNKER_REPO = Path(__file__).parent / "data" / "chunker-repo"  # an empty restic repository, password below
CHUNKER_PASSWORD = "chunker-fixture"


def init_with_fixed_chunker(remote: str, passphrase: str, env: dict) -> None:
    """Create the restic repository at `remote` ourselves, with the chunker polynomial of
    tests/data/chunker-repo, so the appends scenario is deterministic.

    restic draws a random polynomial per repository, and the part of an appended log each
    backup stores again (from the last content-defined cut to the end of the file) depends on
    it: over 15 fresh repositories this scenario gave a median of about 2× the appended bytes,
    and about 1 in 8 above 5× (scripts/bench_backup.py --trials N measures it).  The fixture's
    polynomial was the median one of 7."""
    subprocess.run(["restic", "-r", f"rclone:{remote}", "-o", f"rclone.program={RCLONE}", "init",
                    "--from-repo", f"rclone:{CHUNKER_REPO}", "--copy-chunker-params"], check=True,
                   capture_output=True, env={**os.environ, **env, "RESTIC_PASSWORD": passphrase,
                                             "RESTIC_FROM_PASSWORD": CHUNKER_PASSWORD})


def test_backups_cost_what_changed(tmp_path, s3, monkeypatch):
    """Issue 20's measurements as assertions: 10,000 files and a 50 MB session log; the first
    backup to S3 takes fewer than 100 requests; ten backups, each after a 100 KB append to the
    log, upload less than 5× the appended bytes in all — to S3 and to a local target."""
    root, port, proxy, server = s3
    ws_root = tmp_path / "ws"
    generate(ws_root, files=10_000, seed=0)
    ws = Workspace(ws_root)
    for n in range(10_000 - len(backup_files(ws))):  # the generator leaves some files out of the selection
        write(ws_root, f"memory/notes/extra-{n:05d}.md", f"# Note {n}\n- something to remember\n")
    log = "memory/sessions/main.jsonl"
    session_log(ws_root, log, 50_000_000)

    proxy.reset()
    first = take_snapshot(ws, target=connection_string(port, path="bucket/first"))
    counted = proxy.snapshot()
    assert first.files == 10_001  # 10,000 files and the log
    assert counted["requests"] < 100, counted

    passphrase = "appends scenario"
    monkeypatch.setenv("PEERSYNC_BACKUP_PASSPHRASE", passphrase)
    remote_env = server.env("appends", proxy.port)
    for key, value in remote_env.items():
        monkeypatch.setenv(key, value)
    s3_target, local_target = "appends:bucket/appends", tmp_path / "local"
    init_with_fixed_chunker(s3_target, passphrase, remote_env)
    init_with_fixed_chunker(str(local_target), passphrase, {})
    take_snapshot(ws, target=s3_target)
    take_snapshot(ws, target=str(local_target))
    proxy.reset()
    local_before = repo_bytes(local_target)
    appended = 0
    for n in range(10):
        appended += session_log(ws_root, log, 100_000, seed=n + 1)
        assert take_snapshot(ws, target=s3_target).files_changed == 1
        take_snapshot(ws, target=str(local_target))
    uploaded = proxy.snapshot()["bytes_up"]
    stored = repo_bytes(local_target) - local_before
    print(f"appended {appended} bytes; uploaded to S3 {uploaded} ({uploaded / appended:.2f}x), "
          f"stored locally {stored} ({stored / appended:.2f}x)")
    assert uploaded < 5 * appended and stored < 5 * appended
    out = tmp_path / "out"
    restore(ws, target=s3_target, to=out)
    assert (out / log).read_bytes() == (ws_root / log).read_bytes()
