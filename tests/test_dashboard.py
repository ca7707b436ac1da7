"""The dashboard's document and command without a browser: what is gathered from a real workspace,
damaged inputs, where the page goes, secrets, and the refresh after heartbeat and watch syncs.
(tests/test_dashboard_browser.py loads the page in Chromium.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peersync.dashboard import DEFAULT_OUT, SEED_OUT, settings
from peersync.dashboard.data import (
    auto_sync_modes,
    backup_overview,
    gather,
    history_section,
    text_diff,
)
from peersync.dashboard.page import render
from peersync.errors import ConfigError
from peersync.sync.runner import run_sync
from peersync.workspace.workspace import Workspace


def cli(ws: Workspace, *args, env=None, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peersync", "-w", str(ws.root), *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout, env={**os.environ, **(env or {})})


def write(ws: Workspace, rel: str, text: str, mtime: float | None = None) -> Path:
    path = ws.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def with_conflict(pair) -> str:
    """One real sync, then edits on both sides: ours (older) is kept aside here.  Returns its id."""
    L, R = pair.local, pair.remote
    L.config_file.write_text("sync:\n  merge: []\n")  # MEMORY.md would merge three-way: a conflict here
    write(L, "MEMORY.md", "one\ntwo\nthree\n")
    assert run_sync(L)[0].ok
    now = time.time()
    write(L, "MEMORY.md", "one\ntwo (ours)\nthree\n", mtime=now - 100)
    write(R, "MEMORY.md", "one\ntwo (theirs)\nthree\n", mtime=now - 10)
    report = run_sync(L)[0]
    assert report.ok
    return report.conflicts[0].saved_as


def test_document_from_a_real_sync(workspace_pair):
    L = workspace_pair.local
    cid = with_conflict(workspace_pair)
    write(L, "memory/new.md", "not synced yet\n")
    doc = json.loads(json.dumps(gather(L, backups_online=False)))  # plain JSON all through
    peer = doc["peers"]["items"][0]
    assert peer["name"] == "remote" and peer["kind"] == "ssh"
    assert peer["seen"]["source"] == "sync" and peer["seen"]["reachable"]
    assert peer["last_sync"]["ok"] and peer["last_sync"]["conflicts"] == 1
    assert peer["pending"] == 1  # memory/new.md, from the ancestor: no network
    assert [e["conflicts"] for e in doc["history"]["entries"]] == [1, 0]
    item = doc["conflicts"]["items"][0]
    assert item["id"] == cid and item["path"] == "MEMORY.md" and item["peer"] == "remote"
    assert item["diff"] == [["@", "@@ -1,3 +1,3 @@"], [" ", "one"], ["-", "two (theirs)"], ["+", "two (ours)"],
                            [" ", "three"]]
    assert item["commands"]["restore"].endswith(f"conflicts restore {cid}")
    assert doc["contents"] is True


def test_damaged_history_variants_become_notices(tmp_path):
    ws = Workspace(tmp_path)
    ws.ensure_state()
    ws.history_file.write_text('{"entries": {"not": "a list"}}')
    assert "does not hold a list" in history_section(ws)["notice"]
    ws.history_file.write_text(json.dumps({"entries": [
        {"peer": "a", "time": "2026-01-26T10:00:00+0100", "ok": True, "pushed": ["x"]}, "garbage", {"peer": 3}]}))
    section = history_section(ws)
    assert section["entries"][0]["time"] == "2026-01-26T09:00:00Z" and section["entries"][0]["pushed"] == 1
    assert section["notice"] == "2 damaged entries of memory/clawdbot-sync/history.json skipped."
    ws.history_file.write_bytes(b"\xff\xfe")
    assert "not UTF-8" in history_section(ws)["notice"]
    assert render(gather(ws, backups_online=False))  # and the page still renders


def test_diff_only_for_text_that_is_not_huge():
    assert text_diff(b"a\n", b"\x00\x01", "x", "c-1") == (None, "binary file: not diffed")
    assert text_diff(b"a\n", b"\xff\xfe", "x", "c-1") == (None, "binary file: not diffed")
    assert text_diff(b"a\n", b"a" * (300 * 1024), "x", "c-1")[1] == "larger than 256 kB: not diffed"
    rows, note = text_diff(None, b"back\n", "x", "c-1")
    assert rows[-1] == ["+", "back"] and note == "no live file: everything would come back"
    rows, _ = text_diff(b"", "".join(f"{i}\n" for i in range(1000)).encode(), "x", "c-1")
    assert len(rows) == 401 and rows[-1] == ["…", "601 more diff lines not shown"]


def test_settings_are_validated(tmp_path):
    ws = Workspace(tmp_path)
    ws.ensure_state()
    assert settings(ws).refresh is False and settings(ws).out == DEFAULT_OUT
    for bad in ("dashboard: yes", "dashboard: {refresh: 1}", "dashboard: {out: 3}", "dashboard: {colour: red}"):
        ws.config_file.write_text(bad + "\n")
        with pytest.raises(ConfigError):
            settings(ws)
    ws.config_file.write_text("dashboard: {refresh: true, out: memory/sync-dashboard.html}\n")
    assert settings(ws).refresh and settings(ws).out == SEED_OUT


def test_seed_name_is_honoured_without_contents_and_open_uses_the_browser(workspace_pair, tmp_path):
    L = workspace_pair.local
    with_conflict(workspace_pair)
    opened = tmp_path / "opened.txt"
    opener = tmp_path / "open.sh"
    opener.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {opened}\n')
    opener.chmod(0o755)
    done = cli(L, "dashboard", "--out", SEED_OUT, "--open", "--no-probe", env={"BROWSER": f"{opener} %s"})
    assert done.returncode == 0, done.stderr
    page = L.root / SEED_OUT
    assert "synced to your peers" in done.stdout and "sync.exclude" in done.stdout
    html = page.read_text()
    assert "two (ours)" not in html and "contents are not shown" in html  # it will reach other machines
    assert opened.read_text() == page.resolve().as_uri()
    # excluded from the sync, the same name keeps the contents
    L.config_file.write_text(f"sync:\n  exclude: [\"{SEED_OUT}\"]\n")
    assert cli(L, "dashboard", "--out", SEED_OUT, "--no-probe").returncode == 0
    assert "two (ours)" in page.read_text()


def test_bad_usage_exits_2(tmp_path):
    ws = Workspace(tmp_path)
    for args in (["dashboard", "--port", "8080"], ["dashboard", "--serve", "--out", "x.html"]):
        done = cli(ws, *args)
        assert done.returncode == 2 and "❌" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "memory" / "clawdbot-sync").mkdir(parents=True)
    (tmp_path / "memory" / "clawdbot-sync" / "config.yaml").write_text("dashboard: [1]\n")
    done = cli(ws, "dashboard", "--no-probe")
    assert done.returncode == 2 and "dashboard must be a mapping" in done.stderr


def test_secrets_never_reach_the_page(workspace_pair, tmp_path, monkeypatch):
    from peersync import backup

    L = workspace_pair.local
    passphrase = "correct horse battery staple"
    monkeypatch.setenv("PEERSYNC_BACKUP_PASSPHRASE", passphrase)
    monkeypatch.setenv("R2_SECRET_ACCESS_KEY", "s3cr3t-v4lue-0123")
    L.ensure_state()
    L.config_file.write_text(f"backup:\n  target: {tmp_path / 'backups'}\n  passphrase: ${{PEERSYNC_BACKUP_PASSPHRASE}}\n")
    write(L, "MEMORY.md", "key: s3cr3t-v4lue-0123\n")
    backup.take_snapshot(L)
    doc = gather(L)
    assert doc["backups"]["encrypted"] is True and len(doc["backups"]["snapshots"]) == 1
    html = render(doc)
    assert passphrase not in html and "s3cr3t-v4lue-0123" not in html


def test_backup_overview_online_and_from_the_local_cache(workspace_pair, tmp_path):
    from datetime import datetime, timedelta, timezone

    from peersync import backup

    L = workspace_pair.local
    L.ensure_state()
    L.config_file.write_text(f"backup:\n  target: {tmp_path / 'backups'}\n  keep: {{last: 1}}\n")
    write(L, "MEMORY.md", "a" * 1000)
    start = datetime.now(timezone.utc) - timedelta(days=1)
    backup.take_snapshot(L, now=start, prune_after=False)
    write(L, "USER.md", "b" * 500)
    backup.take_snapshot(L, now=start + timedelta(hours=1), prune_after=False)
    online = backup_overview(L)
    offline = backup_overview(L, online=False)
    assert online["source"] == "target" and offline["source"] == "local cache"
    assert [s["id"] for s in online["snapshots"]] == [s["id"] for s in offline["snapshots"]]
    first, second = online["snapshots"]
    # restic counts what it stored (compressed data and its own tree metadata), not file sizes.
    assert first["bytes"] == 1000 and first["added_bytes"] > 0 and first["added_files"] == 1
    assert second["bytes"] == 1500 and 0 < second["added_bytes"] and second["added_files"] == 1
    assert (first["kept"], second["kept"]) == (False, True) and second["reasons"] == ["last"]
    assert online["retention"] == {"policy": "keep 1 latest snapshots", "kept": 1, "removed": 1}
    assert online["repository"]["objects"] > 0 and online["content_bytes"] == online["repository"]["bytes"] > 0
    assert online["passphrase"]["source"] == "file" and online["encrypted"] is True
    assert online["last_run"]["ok"] is True and online["last_verify"] is None
    backup.verify(L)
    assert backup_overview(L, online=False)["last_verify"]["ok"] is True


def test_heartbeat_refreshes_the_page_only_when_asked(workspace_pair):
    L = workspace_pair.local
    page = L.root / DEFAULT_OUT
    write(L, "MEMORY.md", "hello\n")
    L.ensure_state()
    L.config_file.write_text("auto:\n  enabled: true\n")
    done = cli(L, "heartbeat")
    assert done.returncode == 0 and not page.exists()  # off by default
    L.config_file.write_text("auto:\n  enabled: true\ndashboard:\n  refresh: true\n")
    (L.state / "auto-state.json").unlink()  # due again
    write(L, "USER.md", "new\n")
    done = cli(L, "heartbeat")
    assert done.returncode == 0, done.stderr
    assert "USER.md" in page.read_text() and "⚠️" not in done.stdout
    # a page inside the synced selection is not rewritten after syncs (it would sync for ever)
    L.config_file.write_text(f"auto:\n  enabled: true\ndashboard:\n  refresh: true\n  out: {SEED_OUT}\n")
    (L.state / "auto-state.json").unlink()
    write(L, "USER.md", "newer\n")
    done = cli(L, "heartbeat")
    assert done.returncode == 0 and "Dashboard not refreshed" in done.stdout and not (L.root / SEED_OUT).exists()


def test_watch_refreshes_the_page_and_is_seen_running(workspace_pair):
    from peersync.daemons.watch import Watcher

    L = workspace_pair.local
    L.ensure_state()
    L.config_file.write_text("dashboard:\n  refresh: true\n")
    write(L, "MEMORY.md", "watched\n")
    Watcher(L, interval=3600, out=lambda _: None).round()
    assert "MEMORY.md" in (L.root / DEFAULT_OUT).read_text()
    assert auto_sync_modes(L)["watch"] == {"running": False, "pid": None}
    daemon = subprocess.Popen([sys.executable, "-m", "peersync", "-w", str(L.root), "watch", "--interval", "3600"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    try:
        assert "Watching" in daemon.stdout.readline()
        modes = auto_sync_modes(L)
        assert modes["mode"] == "watch" and modes["watch"] == {"running": True, "pid": daemon.pid}
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=60)
    assert auto_sync_modes(L)["watch"]["running"] is False
