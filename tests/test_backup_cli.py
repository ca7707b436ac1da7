"""The `peersync backup …` commands through Typer's CliRunner: JSON shapes, chat text, exit codes."""

from __future__ import annotations

import json

from test_backup import isolated, make_workspace, set_config, write  # noqa: F401
from typer.testing import CliRunner

from peersync.cli.main import app

runner = CliRunner()


def cli(ws, *args, json_out=False):
    argv = ["-w", str(ws.root)] + (["--json"] if json_out else []) + ["backup", *args]
    return runner.invoke(app, argv, catch_exceptions=False)


def test_now_list_status_verify(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    status = json.loads(cli(ws, "status", json_out=True).stdout)
    assert status["initialized"] is False and status["snapshots"] == 0

    first = cli(ws, "now")
    assert first.exit_code == 0
    assert first.stdout.startswith("💾 Backed up 11 files") and "📤 Uploaded 10 new objects" in first.stdout
    write(ws.root, "MEMORY.md", "changed\n")
    now = json.loads(cli(ws, "now", json_out=True).stdout)
    assert now["uploaded_objects"] == 1 and now["snapshot"]["files"] == 11

    listing = json.loads(cli(ws, "list", json_out=True).stdout)
    snaps = listing["snapshots"]
    assert len(snaps) == 2 and {"id", "time", "files", "bytes"} <= set(snaps[0])
    assert [s["id"] for s in snaps] == sorted(s["id"] for s in snaps)
    human = cli(ws, "list").stdout
    assert human.startswith("💾 2 snapshots at ") and snaps[1]["id"] in human

    status = json.loads(cli(ws, "status", json_out=True).stdout)
    assert status["snapshots"] == 2 and status["latest"]["id"] == snaps[1]["id"]
    assert status["last_run"]["last_ok"] is True and status["stored"]["objects"] == 11
    assert "Not scheduled" in cli(ws, "status").stdout

    verified = cli(ws, "verify")
    assert verified.exit_code == 0 and verified.stdout.startswith("✅ Verified 2 snapshots")


def test_restore_and_prune(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    set_config(ws, "backup:\n  keep: 1\n")
    first = json.loads(cli(ws, "now", "--no-prune", json_out=True).stdout)["snapshot"]["id"]
    write(ws.root, "MEMORY.md", "changed\n")
    assert cli(ws, "now", "--no-prune").exit_code == 0

    out = tmp_path / "out"
    restored = cli(ws, "restore", "--snapshot", first[:19], "--to", str(out))  # a unique id prefix will do
    assert restored.exit_code == 0
    assert restored.stdout.startswith("♻️ Restored 11 files") and "1 changed since (MEMORY.md)" in restored.stdout
    assert (out / "MEMORY.md").read_bytes() == b"# Memory\n- likes tea\n"

    dry = json.loads(cli(ws, "prune", "--dry-run", json_out=True).stdout)
    assert dry["removed"] == [first] and dry["dry_run"]
    pruned = cli(ws, "prune")
    assert pruned.exit_code == 0 and pruned.stdout.startswith("🧹 Removed 1 snapshot, kept 1 (keep 1 latest snapshots)")
    assert len(json.loads(cli(ws, "list", json_out=True).stdout)["snapshots"]) == 1


def test_status_shows_schedule(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    set_config(ws, "backup:\n  interval: 86400\n  keep: {daily: 7, weekly: 4}\n")
    cli(ws, "now")
    text = cli(ws, "status").stdout
    assert "⏰ Every 86400 s; next due " in text and "🧹 Retention: keep 7 daily, 4 weekly snapshots" in text
    doc = json.loads(cli(ws, "status", json_out=True).stdout)
    assert doc["due"] is False and doc["interval"] == 86400
