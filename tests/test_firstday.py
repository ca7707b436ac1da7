"""Issue 19's first-day traps, each as a test of the fixed behaviour, through the CLI: SSH as OpenSSH reads
it (a non-default port written only in an ssh config file), paths checked, peers edited without
being wiped, options anywhere, exit codes, history and trash, swap files, durations, topology, progress."""

from __future__ import annotations

import json
import os
import pty
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firstday_env import ROOT, FirstDay, agent_workspace, first_day  # noqa: F401  (fixture)
from peersync.core.render import elapsed, milliseconds
from peersync.peers.manage import path_problem, split_host
from peersync.workspace.workspace import Peer, Workspace

pytestmark = pytest.mark.timeout(300)


def peers_json(ws: Path) -> dict:
    path = ws / "memory/clawdbot-sync/peers.json"
    return json.loads(path.read_text())["peers"] if path.exists() else {}


def out(proc) -> str:
    return proc.stdout + proc.stderr


# -- SSH like OpenSSH ------------------------------------------------------------------------------
def test_a_host_alias_is_reached_on_the_port_its_ssh_config_gives(first_day: FirstDay):
    f = first_day
    added = f.add_mini()
    assert added.returncode == 0, out(added)
    assert "connected in" in added.stdout and "mac-mini" in added.stdout
    entry = peers_json(f.laptop)["mac-mini"]
    assert entry["host"] == "mini" and "port" not in entry and entry["user"] is None  # all from the config
    assert str(f.sshd.port) in f.config.read_text()
    big = os.urandom(1 << 20)  # large: it travels through rsync, whose ssh must read the same config
    (f.laptop / "memory" / "big.bin").write_bytes(big)
    (f.laptop / "memory" / "2026-01-26.md").write_text("a note\n")
    synced = f.cli("sync", "mac-mini", ws=f.laptop)
    assert synced.returncode == 0, out(synced)
    assert (f.mini / "memory" / "big.bin").read_bytes() == big
    assert (f.mini / "memory" / "2026-01-26.md").read_text() == "a note\n"
    assert f.cli("status", ws=f.laptop).returncode == 0

    # The config is where the port comes from: point it elsewhere and peersync follows, as ssh would.
    f.config.write_text(f.config.read_text().replace(f"Port {f.sshd.port}", "Port 1"))
    down = f.cli("status", "mac-mini", ws=f.laptop)
    assert down.returncode == 3, out(down)
    assert "mini → 127.0.0.1 port 1" in down.stdout and str(f.config) in down.stdout


def test_host_colon_port_in_peers_add_and_in_the_chat_shim(first_day: FirstDay):
    f = first_day
    added = f.cli("peers", "add", "pi", f"127.0.0.1:{f.sshd.port}", "--path", str(f.mini),
                  "--remote-command", f.command, ws=f.laptop)
    assert added.returncode == 0, out(added)
    assert peers_json(f.laptop)["pi"]["host"] == "127.0.0.1" and peers_json(f.laptop)["pi"]["port"] == f.sshd.port
    shim = subprocess.run(["bash", str(ROOT / "handler.sh"), "add", "pi2", f"127.0.0.1:{f.sshd.port}", f.sshd.user,
                           str(f.mini), "--remote-command", f.command, str(f.laptop)],
                          capture_output=True, text=True, env={**f.env, "PEERSYNC": f"{sys.executable} -m peersync"},
                          timeout=120)
    assert shim.returncode == 0, out(shim)
    assert peers_json(f.laptop)["pi2"]["port"] == f.sshd.port and peers_json(f.laptop)["pi2"]["user"] == f.sshd.user
    assert split_host("agent@[fd7a:115c::1]:2222", None, None) == ("fd7a:115c::1", "agent", 2222)
    assert split_host("fd7a:115c::1", None, None) == ("fd7a:115c::1", None, None)  # a bare IPv6 address


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_port_is_named_and_tailscale_is_not_blamed(first_day: FirstDay, tmp_path):
    f = first_day
    port = closed_port()
    added = f.cli("peers", "add", "down", f"127.0.0.1:{port}", "--path", str(f.mini), ws=f.laptop)
    assert added.returncode == 3, out(added)  # 3: saved, but the connection test failed
    assert f"Nothing accepts connections on port {port}" in added.stdout
    assert "tailscale" not in out(added).lower()
    assert "down" in peers_json(f.laptop)
    assert f.cli("status", "down", ws=f.laptop).returncode == 3
    assert f.cli("sync", "down", ws=f.laptop).returncode == 3

    # A machine that does not answer at all (timed out): Tailscale is suggested where it is installed.
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(5)
    f.cli("peers", "add", "mute", f"127.0.0.1:{mute.getsockname()[1]}", "--no-test", ws=f.laptop)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "tailscale").write_text("#!/bin/sh\nexit 0\n")
    (fake / "tailscale").chmod(0o755)
    with_ts = f.cli("status", "mute", "--timeout", "1", ws=f.laptop, env={"PATH": f"{fake}:{f.env['PATH']}"})
    assert with_ts.returncode == 3 and "timed out" in with_ts.stdout and "tailscale status" in with_ts.stdout
    if shutil.which("tailscale") is None and not any(os.path.exists(p) for p in ("/var/run/tailscale/tailscaled.sock",
                                                                                "/run/tailscale/tailscaled.sock")):
        without = f.cli("status", "mute", "--timeout", "1", ws=f.laptop)
        assert without.returncode == 3 and "tailscale" not in without.stdout.lower()
    mute.close()


# -- paths checked ---------------------------------------------------------------------------------
def test_a_remote_path_must_exist_and_look_like_a_workspace(first_day: FirstDay):
    f = first_day
    typo = f.cli("peers", "add", "mac-mini", "mini", "--path", str(f.tmp / "mnii"), "--remote-command", f.command,
                 ws=f.laptop)
    assert typo.returncode == 2 and "does not exist" in typo.stderr and "--create" in typo.stderr
    assert not (f.tmp / "mnii").exists() and "mac-mini" not in peers_json(f.laptop)  # nothing saved, nothing made

    stranger = f.tmp / "downloads"
    stranger.mkdir()
    (stranger / "film.mkv").write_text("x")
    odd = f.cli("peers", "add", "mac-mini", "mini", "--path", str(stranger), "--remote-command", f.command,
                ws=f.laptop)
    assert odd.returncode == 2 and "does not look like an agent workspace" in odd.stderr

    new = f.cli("peers", "add", "mac-mini", "mini", "--path", str(f.tmp / "fresh"), "--remote-command", f.command,
                "--create", ws=f.laptop)
    assert new.returncode == 0, out(new)
    assert "created the workspace there" in new.stdout and (f.tmp / "fresh" / "memory" / "clawdbot-sync").is_dir()


def test_a_tilde_this_shell_expanded_is_explained(first_day: FirstDay):
    f = first_day  # HOME is f.home here; on the peer (sshd) it is the account's own home
    typed = f.home / "clawd"  # what an unquoted --path ~/clawd becomes
    proc = f.cli("peers", "add", "mac-mini", "mini", "--path", str(typed), "--remote-command", f.command, ws=f.laptop)
    assert proc.returncode == 2
    assert "shell expanded ~" in proc.stderr and "--path '~/clawd'" in proc.stderr
    assert "mac-mini" not in peers_json(f.laptop)


def test_the_home_directory_is_never_a_workspace(first_day: FirstDay):
    f = first_day
    (f.home / "MEMORY.md").write_text("looks like one\n")
    for args, cwd in ((["-w", str(f.home)], f.tmp), ([], f.home)):
        proc = f.cli(*args, "status", cwd=cwd)
        assert proc.returncode == 2 and "it is your home directory" in proc.stderr, out(proc)
    assert not (f.home / "memory").exists()
    problem = path_problem(Peer("mini", "mini", path="~"), {"root": "/home/a", "home": "/home/a", "workspace": True},
                           local_home="/home/b")
    assert problem is not None and "home directory there" in problem.message


def test_which_workspace_is_said_and_a_stranger_directory_needs_init(first_day: FirstDay):
    f = first_day
    plain = f.tmp / "projects"
    (plain / "src").mkdir(parents=True)
    refused = f.cli("init", cwd=plain)
    assert refused.returncode == 2
    assert f"{plain} (from the current directory) does not look like an agent workspace" in refused.stderr
    assert "--init" in refused.stderr and not (plain / "memory").exists()
    made = f.cli("init", "--init", cwd=plain)
    assert made.returncode == 0, out(made)
    assert f"Workspace ready: {plain}" in made.stdout and "from the current directory" in made.stdout
    below = f.cli("status", cwd=plain / "src")  # found from a subdirectory, as git finds its repository
    assert below.returncode == 0 and f"no peers yet in {plain}" in below.stdout
    unknown = f.cli("sync", "mac-mini", cwd=plain)
    assert unknown.returncode == 2 and f"unknown peer 'mac-mini' in workspace {plain}" in unknown.stderr
    from_env = f.cli("peers", "list", cwd=f.tmp, env={"WORKSPACE": str(f.laptop)})
    assert from_env.returncode == 0 and str(f.laptop) in from_env.stdout


# -- peers edited, not wiped -----------------------------------------------------------------------
def test_peers_set_changes_one_setting_and_keeps_the_others(first_day: FirstDay):
    f = first_day
    assert f.add_mini().returncode == 0
    again = f.add_mini()
    assert again.returncode == 2 and "already exists" in again.stderr and "peers set mac-mini" in again.stderr
    moved = f.cli("peers", "set", "mac-mini", "--port", "1", "--no-test", ws=f.laptop)
    assert moved.returncode == 0, out(moved)
    entry = peers_json(f.laptop)["mac-mini"]
    assert (entry["port"], entry["path"], entry["command"], entry["host"]) == (1, str(f.mini), f.command, "mini")
    assert f.cli("status", ws=f.laptop).returncode == 3  # --port overrides the config's Port, as ssh -p does
    back = f.cli("peers", "set", "mac-mini", "--unset", "port", ws=f.laptop)
    assert back.returncode == 0 and "connected" in back.stdout, out(back)
    assert "port" not in peers_json(f.laptop)["mac-mini"] and peers_json(f.laptop)["mac-mini"]["path"] == str(f.mini)

    # peersync missing on the peer: the hint says how to fix it without wiping the peer, and names
    # a real directory to install from (this checkout), not a registry that does not hold peersync.
    missing = f.cli("peers", "set", "mac-mini", "--remote-command", "/nonexistent/peersync", ws=f.laptop)
    assert missing.returncode == 3
    assert "peersync is not installed on mac-mini" in missing.stdout
    assert f"peers set mac-mini --remote-command" in missing.stdout and str(ROOT) in missing.stdout
    assert "pipx install peersync" not in missing.stdout
    assert peers_json(f.laptop)["mac-mini"]["path"] == str(f.mini)
    replaced = f.add_mini("mac-mini", "mini", "--replace")
    assert replaced.returncode == 0 and peers_json(f.laptop)["mac-mini"]["command"] == f.command


# -- options anywhere, exit codes ------------------------------------------------------------------
def test_global_options_go_anywhere_on_the_command_line(first_day: FirstDay):
    f = first_day
    assert f.add_mini().returncode == 0
    L = str(f.laptop)
    for argv in (["--json", "-w", L, "sync", "mac-mini"], ["sync", "mac-mini", "--json", "-w", L],
                 ["sync", "-w", L, "--json", "mac-mini"], [f"--workspace={L}", "sync", "--json"],
                 ["peers", "list", "--json", "-w", L], ["peers", "-w", L, "list", "--json"],
                 ["conflicts", "list", "-w", L, "--json"], ["trash", "--json", "-w", L],
                 ["history", "-n", "3", "--json", "--workspace", L]):
        proc = f.cli(*argv)
        assert proc.returncode == 0, (argv, out(proc))
        assert json.loads(proc.stdout)["workspace"] == L, argv
    bad = f.cli("sync", "mac-mini", "--nope", "--json", ws=f.laptop)
    doc = json.loads(bad.stdout)
    assert bad.returncode == 2 and doc["ok"] is False and doc["error"]["kind"] == "usage" and "--nope" in doc["error"]["message"]


def test_exit_status_3_when_a_connection_test_fails_or_a_peer_is_down(first_day: FirstDay):
    f = first_day
    assert f.add_mini().returncode == 0
    assert f.cli("status", ws=f.laptop).returncode == 0
    f.cli("peers", "add", "pi", f"127.0.0.1:{closed_port()}", "--no-test", ws=f.laptop)
    status = f.cli("status", ws=f.laptop)
    assert status.returncode == 3 and "🟢 mac-mini" in status.stdout and "🔴 pi" in status.stdout
    cloud = f.cli("cloud", "add", "box", "nosuchremote:agent", "--mode", "mirror", ws=f.laptop)
    assert cloud.returncode == 3 and "could not be reached" in cloud.stdout, out(cloud)
    assert "peersync rclone config" in cloud.stdout  # the bundled rclone, reachable through peersync
    assert f.cli("cloud", "remove", "box", ws=f.laptop).returncode == 0
    both = f.cli("sync", ws=f.laptop)
    assert both.returncode == 3 and "Synced with mac-mini" in both.stdout  # mac-mini synced; pi did not answer


# -- history and trash -----------------------------------------------------------------------------
def test_history_shows_deletions_and_the_trash_gives_files_back(first_day: FirstDay):
    f = first_day
    assert f.add_mini().returncode == 0
    note = f.laptop / "memory" / "2026-01-20.md"
    note.write_text("an old note\n")
    assert f.cli("sync", ws=f.laptop).returncode == 0
    (f.mini / "memory" / "2026-01-20.md").unlink()  # deleted on the mini…
    synced = f.cli("sync", ws=f.laptop)  # …so the sync deletes it here, to the trash
    assert synced.returncode == 0 and not note.exists()
    history = f.cli("history", ws=f.laptop).stdout.splitlines()
    assert "🗑️ 1" in history[0] and "deleted to the trash: 1 here" in history[0], history
    listed = f.cli("trash", "list", ws=f.laptop)
    assert "memory/2026-01-20.md" in listed.stdout and "mac-mini" in listed.stdout

    before = time.time()
    restored = f.cli("trash", "restore", "memory/2026-01-20.md", ws=f.laptop)
    assert restored.returncode == 0, out(restored)
    assert note.read_text() == "an old note\n" and note.stat().st_mtime >= before - 1  # a new edit
    assert f.cli("sync", ws=f.laptop).returncode == 0
    assert (f.mini / "memory" / "2026-01-20.md").read_text() == "an old note\n"  # back everywhere
    assert f.cli("trash", "list", ws=f.laptop).stdout.startswith("✅ The trash is empty")
    assert f.cli("sync", ws=f.laptop).returncode == 0 and note.exists()  # and it stays

    note.unlink()
    assert f.cli("sync", ws=f.laptop).returncode == 0  # deleted here: the mini's copy goes to ITS trash
    assert f.cli("trash", "list", ws=f.mini).stdout.count("memory/2026-01-20.md") == 1
    (f.mini / "memory" / "2026-01-20.md").write_text("written again meanwhile\n")
    swap = f.cli("trash", "restore", "memory/2026-01-20.md", ws=f.mini)
    assert swap.returncode == 0 and "saved as conflict" in swap.stdout  # the newer file is kept, not lost
    assert (f.mini / "memory" / "2026-01-20.md").read_text() == "an old note\n"
    conflicts = json.loads(f.cli("conflicts", "list", "--json", ws=f.mini).stdout)["conflicts"]
    assert any(c["path"] == "memory/2026-01-20.md" for c in conflicts)

    other = f.laptop / "memory" / "2026-01-21.md"
    other.write_text("another note\n")
    assert f.cli("sync", ws=f.laptop).returncode == 0
    (f.mini / "memory" / "2026-01-21.md").unlink()
    assert f.cli("sync", ws=f.laptop).returncode == 0 and not other.exists()
    dry = f.cli("trash", "empty", ws=f.laptop)
    assert "Would delete 1 file" in dry.stdout and "--yes" in dry.stdout
    assert f.cli("trash", "list", ws=f.laptop).stdout.count("memory/2026-01-21.md") == 1
    gone = f.cli("trash", "empty", "--yes", ws=f.laptop)
    assert gone.returncode == 0 and "Deleted 1 file" in gone.stdout
    assert f.cli("trash", "list", ws=f.laptop).stdout.startswith("✅ The trash is empty")


# -- noise, defaults, durations, topology, progress ------------------------------------------------
def test_editor_swap_files_are_not_synced(first_day: FirstDay):
    f = first_day
    assert f.add_mini().returncode == 0
    names = ["memory/.2026-01-26.md.swp", "memory/2026-01-26.md~", "memory/.#2026-01-26.md", "memory/#notes.md#",
             "memory/.x.swo"]
    for name in names:
        (f.laptop / name).write_text("editor state\n")
    (f.laptop / "memory" / "2026-01-26.md").write_text("the note\n")
    assert f.cli("sync", ws=f.laptop).returncode == 0
    assert (f.mini / "memory" / "2026-01-26.md").exists()
    assert not [n for n in names if (f.mini / n).exists()]


def test_durations_are_never_zero():
    assert elapsed(0.004) == "4 ms" and elapsed(0.00004) == "<1 ms" and elapsed(0.04) == "40 ms"
    assert elapsed(2.34) == "2.3 s" and elapsed(125) == "2 min 5 s"
    assert milliseconds(0.3) == "0.3 ms" and milliseconds(0.01) == "<1 ms" and milliseconds(3.25) == "3.2 ms"
    assert milliseconds(42.4) == "42 ms"


def test_a_sync_report_never_says_zero_seconds(first_day: FirstDay):
    f = first_day
    assert f.add_mini().returncode == 0
    (f.laptop / "USER.md").write_text("me\n")
    text = f.cli("sync", ws=f.laptop).stdout
    assert "🔄 Synced with mac-mini" in text and " 0.0 s" not in text and " 0 ms" not in text


def test_watch_warns_on_a_machine_without_peers(first_day: FirstDay):
    f = first_day
    proc = subprocess.Popen([sys.executable, "-m", "peersync", "-w", str(f.mini), "watch"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=f.env)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "(0 peers)" in lines[0]
    assert "no peers" in lines[1] and "each machine syncs only with the peers it lists" in lines[1]


def test_progress_shows_on_a_terminal_and_nowhere_else(first_day: FirstDay):
    f = first_day
    assert f.add_mini().returncode == 0
    for i in range(400):
        (f.laptop / "memory" / f"n{i:03}.md").write_text(f"note {i}\n" * 50)
    for i in range(40):  # a second folder: the line names the one being written
        (f.laptop / "memory" / "2026").mkdir(exist_ok=True)
        (f.laptop / "memory" / "2026" / f"d{i:02}.md").write_text(f"day {i}\n" * 50)
    env = {**f.env, "PEERSYNC_PROGRESS_DELAY": "0"}

    def on_a_terminal(*args: str) -> tuple[str, str]:
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "peersync", "-w", str(f.laptop), *args], env=env,
                                stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, text=True)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        stdout = proc.communicate(timeout=120)[0]
        os.close(master)
        return stdout, seen.decode(errors="replace")

    stdout, terminal = on_a_terminal("sync", "--dry-run")
    assert "⇅" in terminal and ("files" in terminal or "comparing" in terminal), terminal
    assert "⇅" not in stdout and "Dry run" in stdout
    stdout, terminal = on_a_terminal("sync")
    assert "files ·" in terminal and "MB/s" in terminal, terminal
    assert "MB/s · memory" in terminal, terminal
    assert "⇅" not in stdout and "Synced with mac-mini" in stdout
    (f.laptop / "memory" / "n000.md").write_text("changed\n")
    stdout, terminal = on_a_terminal("sync", "--json")
    assert "⇅" not in terminal and json.loads(stdout)["ok"]
    piped = f.cli("sync", ws=f.laptop, env={"PEERSYNC_PROGRESS_DELAY": "0"})
    assert "⇅" not in piped.stdout + piped.stderr


def test_the_progress_line_names_the_folder_being_written_and_how_far_it_is():
    """Syncthing shows each folder's completion: the line adds the folder last written to (its
    first two levels), or once that one is complete, one still under way; with one folder only
    the totals, which say it all."""
    import io

    from peersync.sync.progress import Progress, folder_of

    assert [folder_of(p) for p in ("MEMORY.md", "memory/a.md", "memory/2024/b.md", "memory/2024/x/c.md")] == \
        [".", "memory", "memory/2024", "memory/2024"]
    now = [0.0]
    progress = Progress(io.StringIO(), clock=lambda: now[0])
    paths = [f"memory/2024/{i}.md" for i in range(3)] + [f"memory/2025/{i}.md" for i in range(1000)]
    progress.plan("mini", len(paths), 2_000_000, paths)
    assert progress.line().endswith("· memory/2024 0/3")  # before the first write: the first planned
    now[0] = 2.0
    progress.advance("mini", 2, 4000, paths[:2])
    assert progress.line() == "⇅ 2/1,003 files · 0.0/2.0 MB · 0.0 MB/s · memory/2024 2/3"
    progress.advance("mini", 500, 1_000_000, [paths[2], *paths[3:502]])
    assert progress.line().endswith("· memory/2025 499/1,000")
    progress.advance("mini", 1, 4000, paths[2:3])  # (a count past the plan's is not shown)
    assert progress.line().endswith("· memory/2025 499/1,000")
    single = Progress(io.StringIO(), clock=lambda: now[0])
    single.plan("mini", 2, 10, ["memory/a.md", "memory/b.md"])
    single.advance("mini", 1, 5, ["memory/a.md"])
    assert single.line().endswith("MB/s")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()  # a 40-column terminal: the line is cut, never wrapped
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))
    with os.fdopen(slave, "w") as out:
        Progress(out, clock=lambda: now[0])._draw(progress.line())
    drawn = os.read(master, 4096).decode()
    os.close(master)
    assert drawn == "\r⇅ 503/1,003 files · 1.0/2.0 MB · 0.5 MB"  # (39 columns and the carriage return)


def test_a_failed_manual_backup_is_not_reported_as_a_scheduled_one(first_day: FirstDay):
    f = first_day
    ws = Workspace(f.laptop)
    ws.ensure_state()
    ws.config_file.write_text("backup:\n  target: nosuchremote:agent\n  interval: 3600\n")
    tick = f.cli("heartbeat", ws=f.laptop)  # starts a scheduled backup in the background (none succeeded yet)
    assert tick.returncode == 0 and tick.stdout == "", out(tick)
    record = f.laptop / "memory" / "clawdbot-sync" / "backup" / "scheduled.json"
    deadline = time.monotonic() + 120
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert json.loads(record.read_text())["ok"] is False
    told = f.cli("heartbeat", ws=f.laptop)
    assert told.stdout.startswith("⚠️ Scheduled backup failed:") and "nosuchremote" in told.stdout, out(told)
    assert f.cli("heartbeat", ws=f.laptop).stdout == ""  # told once

    ws.config_file.write_text("backup:\n  target: othermissing:agent\n  interval: 3600\n")
    manual = f.cli("backup", "now", ws=f.laptop)  # a person's own run fails: they saw it
    assert manual.returncode != 0 and "othermissing" in manual.stderr
    quiet = f.cli("heartbeat", ws=f.laptop)
    assert quiet.returncode == 0 and quiet.stdout == "", out(quiet)  # not "Scheduled backup failed"
