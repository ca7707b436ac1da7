"""`peersync init`, the agent skill (SKILL.md) and the service files in scripts/."""

from __future__ import annotations

import json
import os
import plistlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from peersync.core.selection import Selection
from peersync.workspace.auto import AutoConfig, load_auto
from peersync.workspace.init import HEARTBEAT_LINE, check_tools, render_config
from peersync.workspace.workspace import SyncConfig, Workspace

ROOT = Path(__file__).parents[1]


def cli(root: Path, *args, env=None):
    return subprocess.run([sys.executable, "-m", "peersync", "-w", str(root), *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60, env=env)


def test_init_prepares_a_workspace(tmp_path):
    (tmp_path / "AGENTS.md").write_text("# an OpenClaw workspace\n")
    proc = cli(tmp_path, "init")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ws = Workspace(tmp_path)
    assert oct(ws.state.stat().st_mode & 0o777) == "0o700"
    assert (ws.state / "instance-id").read_text().strip()
    text = ws.config_file.read_text()
    assert text.startswith("# peersync settings")
    assert sum(1 for line in text.splitlines() if line.strip().startswith("#")) >= 20
    for section in ("sync:", "auto:", "# backup:"):
        assert f"\n{section}\n" in text
    for key in ("target:", "passphrase: ${PEERSYNC_BACKUP_PASSPHRASE}", "interval: 86400", "keep:"):
        assert key in text
    # The commented defaults are the real defaults.
    assert ws.sync_config() == SyncConfig(selection=Selection.from_options())
    assert load_auto(ws) == AutoConfig()
    assert not (tmp_path / "HEARTBEAT.md").exists()  # only with --heartbeat
    assert "✅ ssh" in proc.stdout and "✅ rsync" in proc.stdout and "peersync 0.1" in proc.stdout


def test_commented_backup_section_parses_once_uncommented():
    text = render_config()
    backup = "\n".join(line.replace("# ", "", 1) for line in text.splitlines()
                       if line.startswith("# backup:") or line.startswith("#   ") and not line.startswith("#   #"))
    assert yaml.safe_load(backup) == {"backup": {"target": "r2:my-bucket/agent",
                                                 "passphrase": "${PEERSYNC_BACKUP_PASSPHRASE}",
                                                 "interval": 86400,
                                                 "keep": {"last": 7, "daily": 14, "weekly": 8, "monthly": 12}}}


def test_init_is_idempotent_and_keeps_user_edits(tmp_path):
    (tmp_path / "HEARTBEAT.md").write_text("# HEARTBEAT.md\n- check the inbox")  # no final newline
    assert cli(tmp_path, "init", "--heartbeat").returncode == 0
    ws = Workspace(tmp_path)
    edited = ws.config_file.read_text().replace("policy: newest", "policy: local")
    ws.config_file.write_text(edited)
    proc = cli(tmp_path, "init", "--heartbeat")
    assert proc.returncode == 0
    assert "config.yaml already exists" in proc.stdout and "already runs the peersync heartbeat" in proc.stdout
    assert ws.config_file.read_text() == edited
    assert (tmp_path / "HEARTBEAT.md").read_text() == f"# HEARTBEAT.md\n- check the inbox\n{HEARTBEAT_LINE}\n"
    assert "HEARTBEAT_OK" in HEARTBEAT_LINE and "handler.sh heartbeat $WORKSPACE" in HEARTBEAT_LINE


def test_init_carries_a_clawdbot_config_over(tmp_path):
    ws = Workspace(tmp_path)
    ws.ensure_state()
    (ws.state / "config.json").write_text(json.dumps({"syncSkills": True, "autoSync": True, "syncInterval": 600}))
    assert cli(tmp_path, "init").returncode == 0
    assert "skills" in ws.sync_config().selection.roots
    assert load_auto(ws) == AutoConfig(enabled=True, interval=600)
    assert "# Also sync skills/" in ws.config_file.read_text()


def test_init_names_the_fix_for_a_missing_tool(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").symlink_to(subprocess.run(["which", "ssh"], capture_output=True, text=True).stdout.strip())
    ws_root = tmp_path / "ws"
    proc = cli(ws_root, "init", "--init", env={**os.environ, "PATH": str(bin_dir)})  # a new, empty workspace
    assert proc.returncode == 1
    assert "❌ rsync missing" in proc.stdout
    assert "❌ rsync: install rsync: sudo apt-get install rsync" in proc.stdout
    assert "`peersync` is not on PATH" in proc.stdout
    assert Workspace(ws_root).config_file.exists()  # the workspace is prepared all the same


@pytest.mark.parametrize("platform, rsync_out, ok, fix", [
    ("linux", "rsync  version 3.2.7  protocol version 31", True, None),
    ("darwin", "rsync  version 2.6.9  protocol version 29", True, "brew install rsync"),
    ("darwin", "openrsync: protocol version 29", True, "brew install rsync"),
    ("linux", None, False, "sudo apt-get install rsync"),
], ids=["current", "old-mac", "openrsync", "missing"])
def test_check_tools(platform, rsync_out, ok, fix):
    outputs = {"ssh": "OpenSSH_9.6p1, LibreSSL 3.3.6", "rsync": rsync_out}
    which = lambda name: f"/usr/bin/{name}" if outputs.get(name) or name == "peersync" else None  # noqa: E731
    checks = {c.name: c for c in check_tools(which=which, run=lambda cmd: outputs[cmd[0]], platform=platform)}
    assert checks["ssh"].ok and checks["ssh"].version == "OpenSSH_9.6p1"
    assert checks["rsync"].ok is ok
    assert (fix is None and checks["rsync"].fix is None) or fix in checks["rsync"].fix
    assert checks["peersync"].ok and checks["peersync"].fix is None


@pytest.mark.parametrize("platform, restic_out, ok, fix", [
    ("linux", "restic 0.14.0 compiled with go1.19.8 on linux/amd64", True, None),
    ("linux", "restic 0.12.1 compiled with go1.16 on linux/amd64", False, "sudo apt install restic"),
    ("darwin", None, False, "brew install restic"),
    ("linux", None, False, "backups (peersync backup) need restic: sudo apt install restic"),
], ids=["debian12", "too-old", "missing-mac", "missing"])
def test_check_tools_restic(platform, restic_out, ok, fix):
    outputs = {"ssh": "OpenSSH_9.6p1", "rsync": "rsync  version 3.2.7  protocol version 31", "restic": restic_out}
    which = lambda name: f"/usr/bin/{name}" if outputs.get(name) or name == "peersync" else None  # noqa: E731
    checks = {c.name: c for c in check_tools(which=which, run=lambda cmd: outputs[cmd[0]], platform=platform)}
    assert checks["restic"].ok is ok and not checks["restic"].required  # backups only: sync works without it
    assert (fix is None and checks["restic"].fix is None) or fix in checks["restic"].fix


def test_skill_metadata_offers_restic():
    meta, body = skill()
    installs = meta["metadata"]["openclaw"]["install"]
    assert any(i.get("formula") == "restic" and i["kind"] == "brew" for i in installs)
    assert "sudo apt install restic" in body and "brew install restic" in body


def test_handler_shim_runs_init(tmp_path):
    (tmp_path / "SOUL.md").write_text("# an OpenClaw workspace\n")
    env = {**os.environ, "PEERSYNC": f"{sys.executable} -m peersync"}
    proc = subprocess.run(["bash", str(ROOT / "handler.sh"), "init", "--heartbeat", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "HEARTBEAT.md").read_text().count("handler.sh heartbeat") == 1


# -- the agent's side -------------------------------------------------------------------------
def skill() -> tuple[dict, str]:
    text = (ROOT / "SKILL.md").read_text()
    m = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert m, "SKILL.md must open with YAML front matter"
    return yaml.safe_load(m.group(1)), m.group(2)


def test_skill_front_matter():
    meta, _ = skill()
    assert meta["name"] == "peersync"
    # OpenClaw's compact skill list keeps 220 characters of a description: /sync must be in them.
    assert 40 < len(meta["description"]) <= 220 and "/sync" in meta["description"]
    openclaw = meta["metadata"]["openclaw"]
    assert openclaw["emoji"]
    assert set(openclaw["requires"]["bins"]) >= {"peersync", "ssh", "rsync"}
    # No installer naming a package no registry holds: install.sh installs from the skill's folder.
    assert not any("peersync" in (i.get("package") or i.get("formula") or "") for i in openclaw.get("install", []))
    # OpenClaw reads `metadata` as one line of JSON.
    line = next(l for l in (ROOT / "SKILL.md").read_text().splitlines() if l.startswith("metadata:"))
    assert json.loads(line.split(":", 1)[1])["openclaw"] == openclaw


@pytest.mark.parametrize("chat", ["`/sync`", "`/sync status`", "`/sync now [peer]`", "`/sync push [peer]`",
                                  "`/sync pull [peer]`", "`/sync diff [peer]`",
                                  "`/sync add <name> <host[:port]> [user] [path]`", "`/sync remove <name>`",
                                  "`/sync history`", "`/sync conflicts`", "`/sync auto on|off`",
                                  "`/sync discover`", "`/sync setup`"])
def test_skill_lists_each_chat_command(chat):
    _, body = skill()
    assert any(l.startswith("| ") and chat in l for l in body.splitlines()), chat


def test_skill_explains_setup_shim_and_heartbeat():
    _, body = skill()
    steps = [body.index(s) for s in ("bash {baseDir}/install.sh", "openclaw gateway restart", "ssh-copy-id",
                                     "/sync add mac-mini", "/sync auto on`.")]
    assert steps == sorted(steps)  # the order a new user follows
    assert "{baseDir}/handler.sh now mac-mini" in body
    assert HEARTBEAT_LINE in body
    assert "NO_REPLY" in body and "HEARTBEAT_OK" in body and "{baseDir}/handler.sh heartbeat" in body
    assert "--session-start --session-end" in body


def test_service_files_run_the_watch_daemon():
    unit = (ROOT / "scripts" / "peersync-watch.service").read_text()
    assert re.search(r"^ExecStart=\S*peersync watch$", unit, re.M)
    assert "KillMode=mixed" in unit and "WantedBy=default.target" in unit
    plist = plistlib.loads((ROOT / "scripts" / "com.peersync.watch.plist").read_bytes())
    assert plist["Label"] == "com.peersync.watch"
    assert plist["ProgramArguments"][-1] == "watch" and plist["RunAtLoad"] is True
