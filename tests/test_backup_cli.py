"""The `peersync backup …` commands through Typer's CliRunner: JSON shapes, chat text, exit codes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from peersync.cli.main import app
from test_backup import backup_files, isolated, make_workspace, set_config, write  # noqa: F401

runner = CliRunner()


def cli(ws, *args, json_out=False):
    argv = ["-w", str(ws.root)] + (["--json"] if json_out else []) + ["backup", *args]
    return runner.invoke(app, argv, catch_exceptions=False)


def test_now_list_status_verify(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    status = json.loads(cli(ws, "status", json_out=True).stdout)
    assert status["initialized"] is False and status["snapshots"] == [] and status["restic"]["ok"]
    assert status["passphrase"]["source"] is None and "generates one" in status["passphrase"]["note"]

    files = len(backup_files(ws))
    first = cli(ws, "now")
    assert first.exit_code == 0
    assert first.stdout.startswith(f"💾 Backed up {files} files") and f"📤 {files} new, 0 changed" in first.stdout
    assert "🔑 Backups are encrypted with a passphrase peersync generated" in first.stdout
    assert "⚠️ 1 file not backed up: memory/link.md (symbolic link not backed up)" in first.stdout
    write(ws.root, "MEMORY.md", "changed\n")
    now = json.loads(cli(ws, "now", json_out=True).stdout)
    assert (now["files_new"], now["files_changed"], now["files"]) == (0, 1, files)
    assert now["notices"] == []  # the passphrase notice was said once

    listing = json.loads(cli(ws, "list", json_out=True).stdout)
    snaps = listing["snapshots"]
    assert len(snaps) == 2 and {"id", "full_id", "time", "host", "instance", "tags", "files", "bytes",
                                "bytes_added"} <= set(snaps[0])
    assert snaps[0]["files"] == files and snaps[1]["bytes_added"] > 0
    human = cli(ws, "list").stdout
    assert human.startswith("💾 2 snapshots at ") and snaps[1]["id"] in human

    status = json.loads(cli(ws, "status", json_out=True).stdout)
    assert [s["id"] for s in status["snapshots"]] == [s["id"] for s in snaps]
    assert status["latest"]["id"] == snaps[1]["id"] and status["repository"]["bytes"] > 0
    assert status["last_run"]["last_ok"] is True and status["passphrase"]["source"] == "file"
    assert status["last_verify"] is None and status["legacy"] is None
    text = cli(ws, "status").stdout
    assert "Not scheduled" in text and "🔑 Passphrase: generated, in " in text

    verified = cli(ws, "verify")
    assert verified.exit_code == 0 and verified.stdout.startswith("✅ Verified 2 snapshots")
    assert json.loads(cli(ws, "status", json_out=True).stdout)["last_verify"]["ok"] is True
    assert "🔍 Last verify" in cli(ws, "status").stdout


def test_restore_and_prune(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    set_config(ws, "backup:\n  keep: 1\n")
    first = json.loads(cli(ws, "now", "--no-prune", json_out=True).stdout)["snapshot"]["id"]
    write(ws.root, "MEMORY.md", "changed\n")
    assert cli(ws, "now", "--no-prune").exit_code == 0

    out = tmp_path / "out"
    restored = cli(ws, "restore", "--snapshot", first[:6], "--to", str(out))  # a unique id prefix will do
    assert restored.exit_code == 0
    files = len(backup_files(ws))
    assert restored.stdout.startswith(f"♻️ Restored {files} files") and "1 changed since (MEMORY.md)" in restored.stdout
    assert (out / "MEMORY.md").read_bytes() == b"# Memory\n- likes tea\n"

    dry = json.loads(cli(ws, "prune", "--dry-run", json_out=True).stdout)
    assert dry["removed"] == [first] and dry["dry_run"]
    pruned = cli(ws, "prune")
    assert pruned.exit_code == 0 and pruned.stdout.startswith("🧹 Removed 1 snapshot, kept 1 (keep 1 latest snapshots)")
    assert len(json.loads(cli(ws, "list", json_out=True).stdout)["snapshots"]) == 1


def test_status_shows_schedule_and_retention(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    set_config(ws, "backup:\n  interval: 86400\n  keep: {daily: 7, weekly: 4}\n")
    cli(ws, "now")
    text = cli(ws, "status").stdout
    assert "⏰ Every 86400 s; next due " in text and "🧹 Retention: keep 7 daily, 4 weekly snapshots (1 of 1 kept)" in text
    doc = json.loads(cli(ws, "status", json_out=True).stdout)
    assert doc["due"] is False and doc["interval"] == 86400
    assert doc["retention"][0]["keep"] is True and doc["retention"][0]["reasons"] == ["daily", "weekly"]
