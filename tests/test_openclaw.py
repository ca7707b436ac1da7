"""peersync inside the real OpenClaw (the CLI and Gateway setup.sh installs; no model, no network):
the plugin and the skill load cleanly, `/sync now PEER` typed in chat syncs with a real peer over
the loopback sshd without an LLM turn, `peersync init`/`auto` manage the cron command job, a
silent tick records no output, `doctor --fix` leaves peersync working, the workspace is found
without $WORKSPACE, and OpenClaw's state is snapshotted through its own backup command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peersync.workspace import openclaw
from peersync.testing import wire_pair
from peersync.testing.openclaw import CURRENT, LEGACY, ROOT, OpenClawHome
from peersync.workspace.init import HEARTBEAT_LINE
from peersync.workspace.workspace import Workspace

# Generous: each test drives Node.js processes (a Gateway start alone takes 15-60 s on a busy machine).
pytestmark = [pytest.mark.openclaw, pytest.mark.timeout(900)]
PEERSYNC = f"{sys.executable} -m peersync"


def peersync(home: OpenClawHome, *args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: no -w unless given, no $WORKSPACE, OpenClaw on PATH."""
    return subprocess.run([sys.executable, "-m", "peersync", *args], env=env or home.env, cwd=cwd or home.base,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def handler(home: OpenClawHome, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "handler.sh"), *args], env={**home.env, "PEERSYNC": PEERSYNC},
                          cwd=cwd or home.base, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def our_jobs(home: OpenClawHome, ws: Workspace) -> list[dict]:
    jobs = home.json("cron", "list", "--all", "--json")["jobs"]
    return [j for j in jobs if j.get("declarationKey") == openclaw.declaration_key(ws)]


# -- pure parts and the shim's arguments (no OpenClaw needed) ----------------------------------
@pytest.mark.parametrize("agents, agent, expected", [
    ([{"id": "main", "workspace": "{ws}", "isDefault": True}], None, "{ws}"),
    ([{"id": "main", "workspace": "{ws}"}], None, "{ws}"),  # the only agent
    ([{"id": "a", "workspace": "{other}"}, {"id": "b", "workspace": "{ws}", "isDefault": True}], None, "{ws}"),
    ([{"id": "a", "workspace": "{ws}"}, {"id": "b", "workspace": "{other}"}], None, None),  # no default
    ([{"id": "a", "workspace": "{other}"}, {"id": "b", "workspace": "{ws}"}], "b", "{ws}"),
    ([{"id": "main", "workspace": "{missing}", "isDefault": True}], None, None),  # not a directory
    ({"error": "x"}, None, None),
], ids=["default", "only", "several", "no-default", "named", "missing-dir", "not-a-list"])
def test_pick_workspace(tmp_path, agents, agent, expected):
    paths = {"ws": str(tmp_path), "other": str(tmp_path.parent), "missing": str(tmp_path / "nope")}
    fill = lambda v: v.format(**paths) if isinstance(v, str) else v  # noqa: E731
    agents = [{k: fill(v) for k, v in a.items()} for a in agents] if isinstance(agents, list) else agents
    assert openclaw.pick_workspace(agents, agent) == (fill(expected) if expected else None)


def test_parse_version():
    assert openclaw.parse_version("OpenClaw 2026.9.6 (eb377ac)") == (2026, 9, 6)
    assert openclaw.parse_version("garbage") is None
    assert openclaw.OpenClaw(("x",), (2026, 7, 35)).reads_heartbeat_md
    assert not openclaw.OpenClaw(("x",), (2026, 8, 1)).reads_heartbeat_md


ECHO = "import json, sys; print(json.dumps(sys.argv[1:]))"


@pytest.mark.parametrize("args, expected", [
    (["now", "dead"], ["sync", "dead"]),                                   # a peer, never the workspace
    (["now", "dead", "/ws"], ["-w", "/ws", "sync", "dead"]),
    (["heartbeat", ""], ["heartbeat"]),                                    # "$WORKSPACE" while unset
    (["status"], ["status"]),
    ([], ["status"]),                                                      # `/sync` alone
    (["-w", "/ws", "history", "5"], ["-w", "/ws", "history", "--limit", "5"]),
    (["add", "mini", "10.0.0.2", "bot", "/home/bot/clawd"],               # the peer's path is no workspace
     ["peers", "add", "mini", "10.0.0.2", "--user", "bot", "--path", "/home/bot/clawd"]),
    (["add", "mini", "10.0.0.2", "bot", "/home/bot/clawd", "/ws"],
     ["-w", "/ws", "peers", "add", "mini", "10.0.0.2", "--user", "bot", "--path", "/home/bot/clawd"]),
    (["add", "mini", "10.0.0.2", "/ws"], ["-w", "/ws", "peers", "add", "mini", "10.0.0.2"]),
    (["setup"], ["init"]),
    (["conflicts", "show", "c-7f3a", "./ws"], ["-w", "./ws", "conflicts", "show", "c-7f3a"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_handler_takes_the_workspace_last_only_as_a_path(tmp_path, args, expected):
    script = tmp_path / "echo.py"
    script.write_text(ECHO)
    env = {k: v for k, v in os.environ.items() if k != "WORKSPACE"}
    env["PEERSYNC"] = f"{sys.executable} {script}"
    out = subprocess.run(["bash", str(ROOT / "handler.sh"), *args], env=env, capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected


@pytest.fixture(scope="module")
def claw(tmp_path_factory):
    """OpenClaw 2026.9.6 with peersync's plugin linked from this checkout (as install.sh does),
    the skill in the agent's workspace, and a running Gateway."""
    base = tmp_path_factory.mktemp("openclaw")
    home = OpenClawHome(base, base / "agent")
    home.run("plugins", "install", "--link", "--force", "--accept-capabilities", str(ROOT / "openclaw-plugin"))
    home.run("config", "set", "plugins.entries.peersync.config.peersync", PEERSYNC)
    skill = home.workspace / "skills" / "peersync"
    skill.mkdir(parents=True)
    for name in ("SKILL.md", "handler.sh", "install.sh"):
        shutil.copy2(ROOT / name, skill / name)
    home.start()
    yield home
    home.stop()


def test_plugin_and_skill_load_without_warnings(claw):
    info = claw.json("plugins", "inspect", "peersync", "--runtime", "--json")
    assert info["plugin"]["status"] == "loaded" and info["plugin"]["enabled"]
    assert info["commands"] == ["sync"]
    assert {h["name"] for h in info["typedHooks"]} == {"session_start", "session_end"}
    assert info["diagnostics"] == [] and info["compatibility"] == []
    install = claw.run("plugins", "install", "--link", "--force", "--accept-capabilities",
                       str(ROOT / "openclaw-plugin"))
    assert "differs" not in install.stdout + install.stderr  # package name = manifest id
    noisy = [l for l in claw.log_text().splitlines() if "peersync" in l.lower()
             and any(w in l.lower() for w in ("warn", "error", "fail", "invalid"))]
    assert noisy == []

    skill = claw.json("skills", "info", "peersync", "--json", timeout=120)
    assert skill["eligible"] and skill["source"] == "openclaw-workspace"
    assert skill["missing"]["bins"] == []  # peersync, ssh, rsync all found
    # The only installer names a package its registry holds: restic for backups (issue 20); never
    # peersync (install.sh installs it from the skill's folder).
    assert [(i["kind"], i["bins"]) for i in skill["install"]] == [("brew", ["restic"])]
    assert {"peersync", "ssh", "rsync"} <= set(skill["requirements"]["bins"])


def test_sync_now_peer_typed_in_chat(claw, sshd, remote_command, tmp_path):
    pair = wire_pair(claw.workspace, tmp_path / "mac-mini", sshd, command=remote_command, peer_name="mac-mini")
    (pair.local.root / "MEMORY.md").write_text("- likes tea\n")

    reply = claw.chat("/sync now mac-mini")
    assert reply.startswith("🔄 Synced with mac-mini"), reply
    assert (pair.remote.root / "MEMORY.md").read_text() == "- likes tea\n"
    record = claw.chat_reply_record()
    assert record["usage"]["totalTokens"] == 0 and record["model"] == "gateway-injected"  # no LLM turn

    # A peer name is never taken for the workspace; an unknown one gets a clear answer.
    reply = claw.chat("/sync now ghost")
    assert "unknown peer 'ghost'" in reply and "mac-mini" in reply
    reply = claw.chat("/sync history")
    assert "sync mac-mini" in reply.splitlines()[0]
    reply = claw.chat("/sync")
    assert "🟢 mac-mini" in reply


def test_handler_and_cli_find_the_workspace_without_WORKSPACE(claw, tmp_path):
    ws = Workspace(claw.workspace)
    assert "WORKSPACE" not in claw.env
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    assert peersync(claw, "peers", "add", "ghost", "127.0.0.1", "--no-test", cwd=elsewhere).returncode == 0
    assert "ghost" in ws.load_peers()  # OpenClaw's configured workspace, not the current directory
    out = handler(claw, "peers", cwd=elsewhere)
    assert out.returncode == 0 and "ghost" in out.stdout, out.stderr
    out = handler(claw, "heartbeat", "", cwd=elsewhere)  # `handler.sh heartbeat "$WORKSPACE"`, unset
    assert out.returncode == 0 and out.stdout == "", out.stderr
    out = handler(claw, "now", "ghost", cwd=elsewhere)  # `handler.sh now ghost $WORKSPACE`, unset
    said = out.stdout + out.stderr
    assert out.returncode == 3 and "ghost: cannot" in said and "workspace" not in said, said  # 3: not reached
    out = handler(claw, "remove", "ghost", str(claw.workspace), cwd=elsewhere)  # workspace last, as a path
    assert out.returncode == 0 and "ghost" not in ws.load_peers(), out.stderr
    # No OpenClaw at all: the current directory, as clawdbot-sync did — a directory that is not an
    # agent's workspace yet only with --init (issue 19).
    bare = {k: v for k, v in claw.env.items() if k != "OPENCLAW_STATE_DIR"}
    bare["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    out = peersync(claw, "init", cwd=elsewhere, env=bare)
    assert out.returncode == 2 and "--init" in out.stderr and not (elsewhere / "memory").exists(), out.stderr
    out = peersync(claw, "init", "--init", cwd=elsewhere, env=bare)
    assert out.returncode == 0 and (elsewhere / "memory" / "clawdbot-sync" / "config.yaml").exists(), out.stderr


def test_init_registers_the_cron_job_auto_off_removes_it(claw):
    ws = Workspace(claw.workspace)
    out = peersync(claw, "init")
    assert out.returncode == 0 and "OpenClaw cron job runs `peersync heartbeat`" in out.stdout, out.stdout + out.stderr
    assert peersync(claw, "init").returncode == 0  # again: the same job, not a second one
    [job] = our_jobs(claw, ws)
    assert job["payload"]["kind"] == "command"
    assert job["payload"]["argv"] == openclaw.heartbeat_argv(ws)
    assert job["delivery"]["mode"] == "none" and job["enabled"]

    out = peersync(claw, "auto", "on", "--interval", "120")
    assert out.returncode == 0 and "every 120 s, no LLM turn" in out.stdout, out.stdout + out.stderr
    [job] = our_jobs(claw, ws)
    assert job["schedule"]["everyMs"] == 120_000
    # A tick that has nothing to say (no reachable peer changed anything) records no output.
    ws.save_peers({})
    run = claw.json("cron", "run", job["id"], "--wait", "--wait-timeout", "120s", "--json", timeout=180)
    assert run["status"] == "ok" and not run.get("summary"), run
    assert isinstance(json.loads((ws.state / "auto-state.json").read_text())["last_run"], float)  # it ran

    out = peersync(claw, "auto", "status")
    assert "🔄 Auto-sync is on" in out.stdout and "OpenClaw cron job" in out.stdout
    assert "HEARTBEAT" not in out.stdout
    out = peersync(claw, "auto", "off")
    assert out.returncode == 0 and our_jobs(claw, ws) == []
    out = peersync(claw, "auto", "status")
    assert out.stdout.startswith("⏸️ Auto-sync is off") and "cron" not in out.stdout


def test_a_cron_job_from_before_dash_p_is_registered_again_by_its_next_tick(claw):
    """A job a peersync from before -P registered runs `python -m peersync -w W heartbeat` in the
    workspace (where a planted `peersync/` folder would be imported first): its next tick has it
    registered again, the same job, with this peersync's argv; once, not on every tick."""
    import time

    from peersync.daemons import due

    ws = Workspace(claw.workspace)
    assert peersync(claw, "auto", "on", "--interval", "300").returncode == 0
    old = [sys.executable, "-m", "peersync", "-w", str(ws.root), "heartbeat"]
    claw.json("cron", "add", "--name", f"peersync {ws.root.name}", "--every", "300s",
              "--command-argv", json.dumps(old), "--command-cwd", str(ws.root),
              "--declaration-key", openclaw.declaration_key(ws), "--no-deliver", "--json")
    [job] = our_jobs(claw, ws)
    assert job["payload"]["argv"] == old
    marker = ws.state / due.RENEWED
    marker.unlink(missing_ok=True)
    tick = subprocess.run(old, cwd=ws.root, env=claw.env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert tick.returncode == 0, tick.stderr
    deadline = time.monotonic() + 120
    while [j["payload"]["argv"] for j in our_jobs(claw, ws)] != [openclaw.heartbeat_argv(ws)]:
        assert time.monotonic() < deadline, our_jobs(claw, ws)
        time.sleep(1)
    assert marker.exists()
    assert peersync(claw, "auto", "off").returncode == 0 and our_jobs(claw, ws) == []


def test_session_start_runs_the_heartbeat_through_the_plugin(claw):
    """session_start reaches `peersync heartbeat --reason session-start`, which syncs when
    auto.on_session_start says so (here: no peers, so the sign is auto-state.json)."""
    import time

    ws = Workspace(claw.workspace)
    ws.save_peers({})
    state = ws.state / "auto-state.json"

    def ticked() -> bool:
        deadline = time.monotonic() + 120
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        return state.exists()

    assert peersync(claw, "auto", "--session-start", "--no-session-end").returncode == 0
    state.unlink(missing_ok=True)
    claw.chat("/sync status", session="fresh-session")  # a new session starts
    assert ticked(), "the session_start hook did not run peersync heartbeat"

    # session_end is registered the same way (see typedHooks in the first test); ending a session
    # headlessly (chat.send "/new") did not fire it here, so it is not asserted.
    assert peersync(claw, "auto", "--no-session-start").returncode == 0


def test_openclaw_snapshot_is_its_own_verified_backup(claw, tmp_path, monkeypatch):
    for key in ("HOME", "OPENCLAW_STATE_DIR", "PATH"):
        monkeypatch.setenv(key, claw.env[key])
    archive = openclaw.snapshot(tmp_path / "snap")
    assert archive.parent == tmp_path / "snap" and archive.name.endswith(".tar.gz")
    claw.run("backup", "verify", str(archive))


def test_mailbox_arrivals_wake_the_agent_through_a_system_event(claw, tmp_path):
    """cloud.inbox.notifyOnInbox (off by default): files that arrive run `openclaw system event`,
    which the Gateway accepts (a failure would be a problem line in the sync's report)."""
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    (ws.root / "MEMORY.md").write_text("- hi\n")
    cloud = tmp_path / "cloud"
    assert peersync(claw, "-w", str(ws.root), "cloud", "add", "share", str(cloud), "--mode", "mailbox").returncode == 0
    ws.config_file.write_text("cloud:\n  inbox:\n    notifyOnInbox: true\n")
    assert peersync(claw, "-w", str(ws.root), "sync", "share").returncode == 0  # bootstraps _outbox/
    (cloud / "_outbox" / "report.txt").write_text("quarterly numbers\n")
    out = peersync(claw, "-w", str(ws.root), "--json", "sync", "share")
    assert out.returncode == 0, out.stdout + out.stderr
    [report] = json.loads(out.stdout)["reports"]
    assert report["pulled"] == ["_inbox/report.txt"] and report["problems"] == [], report
    assert (ws.root / "_inbox" / "report.txt").read_text() == "quarterly numbers\n"


def test_doctor_fix_leaves_peersync_working(claw):
    """Doctor retires HEARTBEAT.md (into its database); peersync's cron job and plugin carry on,
    and `auto status` / `init` no longer ask for the HEARTBEAT.md line (no loop with doctor)."""
    ws = Workspace(claw.workspace)
    assert peersync(claw, "auto", "on").returncode == 0
    (ws.root / "HEARTBEAT.md").write_text("# Heartbeat\n" + HEARTBEAT_LINE + "\n")  # an older install's line
    claw.stop()
    doctor = claw.run("doctor", "--fix", "--non-interactive", timeout=300)
    assert "HEARTBEAT.md" in doctor.stdout
    assert not (ws.root / "HEARTBEAT.md").exists()
    claw.start()
    [job] = our_jobs(claw, ws)
    out = peersync(claw, "auto", "status")
    assert "OpenClaw cron job" in out.stdout and "init --heartbeat" not in out.stdout, out.stdout
    out = peersync(claw, "init", "--heartbeat")
    assert "HEARTBEAT.md left alone" in out.stdout and not (ws.root / "HEARTBEAT.md").exists()
    assert len(our_jobs(claw, ws)) == 1
    run = claw.json("cron", "run", job["id"], "--wait", "--wait-timeout", "120s", "--json", timeout=180)
    assert run["status"] == "ok", run
    assert "OpenClaw cron job" in claw.chat("/sync auto")  # the plugin too


@pytest.mark.parametrize("version, line", [(LEGACY, True), (CURRENT, False)])
def test_heartbeat_md_fallback_only_where_it_is_read(tmp_path, version, line):
    """No Gateway running: no cron job can be registered.  2026.7 still reads HEARTBEAT.md, so
    init falls back to the line; 2026.9 does not, so init says what to do instead."""
    home = OpenClawHome(tmp_path, tmp_path / "agent", version=version)
    out = peersync(home, "init")
    assert out.returncode == 0, out.stderr
    heartbeat = home.workspace / "HEARTBEAT.md"
    assert heartbeat.exists() is line
    status = peersync(home, "auto", "on").stdout
    if line:
        assert HEARTBEAT_LINE in heartbeat.read_text()
        assert "HEARTBEAT.md runs the heartbeat" in status and f"OpenClaw {LEGACY}" in status, status
    else:
        assert "Nothing runs" not in status and "⚠️" in status and "Gateway" in status, status
        assert "HEARTBEAT.md" not in status


@pytest.mark.slow
def test_install_sh_from_the_skill_folder(tmp_path):
    """A new user's install: the skill's folder in the agent's workspace, `bash install.sh`
    (no uv or pipx here: the private venv route, dependencies from PyPI), no Gateway running."""
    home = OpenClawHome(tmp_path, tmp_path / "agent")
    skill = home.workspace / "skills" / "peersync"
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (skill / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, skill / name)
    env = {**home.env, "PATH": os.pathsep.join([str(home.bin), "/usr/bin", "/bin"]), "PEERSYNC_PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(skill / "install.sh")], env=env, cwd=tmp_path, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    installed = home.home / ".local" / "bin" / "peersync"
    assert subprocess.run([str(installed), "--version"], capture_output=True, text=True).stdout.startswith("peersync ")
    config = json.loads((home.state / "openclaw.json").read_text())
    assert config["plugins"]["entries"]["peersync"]["config"] == {"peersync": str(installed),
                                                                  "openclaw": str(home.bin / "openclaw")}
    assert str(skill / "openclaw-plugin") in config["plugins"]["load"]["paths"]
    assert (home.workspace / "memory" / "clawdbot-sync" / "config.yaml").exists()  # init found the workspace
    assert "Gateway" in proc.stdout  # …and says the cron job waits for a running Gateway
