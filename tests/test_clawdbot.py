"""clawdbot-sync's own state files (history.json, config.json, peers.json) load, display, and
survive a round trip through peersync — and peersync's entries read right in clawdbot-sync's terms."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from peersync.workspace.clawdbot import config_from_json, entry_view, with_clawdbot_keys

# Exactly what clawdbot-sync's handler writes (its add_history, its default config.json, `add`).
HISTORY = {"entries": [
    {"timestamp": "2026-01-26T09:15:02Z", "action": "sync", "peer": "remote", "files": 4, "status": "success"},
    {"timestamp": "2026-01-25T18:00:40Z", "action": "push", "peer": "server", "files": 0, "status": "success"},
]}
CONFIG = {"autoSync": False, "syncSkills": False,
          "excludePatterns": ["*.tmp", "*.log", ".git/", "cache/", "node_modules/"],
          "notifyChannel": "telegram"}  # a key peersync has no use for: kept all the same
PEER_EXTRA = {"addedAt": "2026-01-20T10:00:00Z"}


def cli(ws, *args):
    env = {k: v for k, v in os.environ.items() if k != "WORKSPACE"}
    return subprocess.run([sys.executable, "-m", "peersync", "-w", str(ws.root), *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120, env=env)


@pytest.mark.parametrize("entry, view", [
    (HISTORY["entries"][0], {"time": "2026-01-26T09:15:02Z", "mode": "sync", "peer": "remote", "ok": True,
                             "files": 4, "tool": "clawdbot-sync"}),
    ({"timestamp": "t", "action": "pull", "peer": "p", "files": 1, "status": "error"},
     {"mode": "pull", "ok": False, "error": "status 'error'", "tool": "clawdbot-sync"}),
    ({"time": "t", "mode": "push", "peer": "p", "ok": True, "pushed": ["a", "b"], "pulled": [], "merged": []},
     {"mode": "push", "ok": True, "files": 2, "tool": "peersync"}),
    ({"time": "t", "mode": "sync", "peer": "p", "ok": False, "error": ""},
     {"ok": False, "error": "", "tool": "peersync"}),
], ids=["clawdbot-success", "clawdbot-error", "peersync-push", "peersync-failed-no-message"])
def test_entry_view_reads_either_tool(entry, view):
    got = entry_view(entry)
    assert {k: got[k] for k in view} == view


def test_peersync_entries_carry_clawdbot_keys():
    entry = with_clawdbot_keys({"mode": "pull", "ok": True, "pulled": ["a"], "merged": ["b"], "peer": "p"}, now=0)
    assert entry["timestamp"] == "1970-01-01T00:00:00Z" and entry["action"] == "pull"
    assert entry["files"] == 2 and entry["status"] == "success"


def test_config_json_maps_every_key():
    raw = config_from_json(CONFIG)
    assert raw["sync"] == {"skills": False, "exclude": CONFIG["excludePatterns"]}
    assert raw["auto"] == {"enabled": False}
    assert raw["clawdbot"] == {"notifyChannel": "telegram"}


def test_clawdbot_files_load_display_and_survive_a_round_trip(workspace_pair):
    local, remote = workspace_pair.local, workspace_pair.remote
    local.ensure_state()
    (local.state / "history.json").write_text(json.dumps(HISTORY, indent=2))
    (local.state / "config.json").write_text(json.dumps(CONFIG, indent=2))
    peers = json.loads(local.peers_file.read_text())
    peers["peers"]["remote"].update(PEER_EXTRA)
    local.peers_file.write_text(json.dumps(peers, indent=2))

    # Display: history in peersync's terms (this crashed with IndexError before), status's last sync.
    out = cli(local, "history")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["✅ 2026-01-26T09:15:02Z sync remote 4 files",
                                       "✅ 2026-01-25T18:00:40Z push server no changes"]
    out = cli(local, "status")
    assert "last sync 2026-01-26T09:15:02Z" in out.stdout and "(failed)" not in out.stdout, out.stdout

    # excludePatterns govern the selection: *.log is not synced, as under clawdbot-sync.
    (local.root / "memory").mkdir(exist_ok=True)
    (local.root / "memory" / "debug.log").write_text("noise\n")
    (local.root / "memory" / "2026-01-26.md").write_text("- a note\n")
    out = cli(local, "sync", "remote")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (remote.root / "memory" / "2026-01-26.md").exists()
    assert not (remote.root / "memory" / "debug.log").exists()

    # history.json: clawdbot-sync's entries kept as they were, peersync's new one readable by it.
    entries = json.loads((local.state / "history.json").read_text())["entries"]
    assert entries[1:] == HISTORY["entries"]
    newest = entries[0]
    assert newest["action"] == "sync" and newest["peer"] == "remote" and newest["status"] == "success"
    assert newest["files"] == 1 and newest["timestamp"].endswith("Z")
    assert cli(local, "history").stdout.splitlines()[0].startswith("✅ ")

    # config.json: auto on|off keep its autoSync in step; every other key untouched.
    assert cli(local, "auto", "on").returncode == 0
    kept = json.loads((local.state / "config.json").read_text())
    assert kept == {**CONFIG, "autoSync": True}
    assert cli(local, "auto", "off").returncode == 0
    assert json.loads((local.state / "config.json").read_text()) == CONFIG
    # …and config.yaml, written from it, holds all its keys (excludes and the unknown one too).
    data = yaml.safe_load(local.config_file.read_text())
    assert data["sync"]["exclude"] == CONFIG["excludePatterns"]
    assert data["clawdbot"] == {"notifyChannel": "telegram"}

    # peers.json: clawdbot-sync's keys kept beside peersync's.
    assert json.loads(local.peers_file.read_text())["peers"]["remote"]["addedAt"] == PEER_EXTRA["addedAt"]
