"""Heartbeat ticks against a real loopback sshd: silent and offline when not due, syncing when due."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peersync.core.types import Mode, Report
from peersync.daemons.heartbeat import report_lines
from peersync.workspace import auto
from peersync.workspace.lock import workspace_lock
from peersync.workspace.workspace import Workspace

PEERSYNC = [sys.executable, "-m", "peersync"]


def cli(ws: Workspace, *args, timeout=120, env=None):
    return subprocess.run([*PEERSYNC, "-w", str(ws.root), *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, env=env)


def imported_modules(ws: Workspace, *args) -> set[str]:
    """The modules a `peersync heartbeat` process imported (python -X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "peersync", "-w", str(ws.root), *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
    return {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


# peersync.backup itself is a lazy facade; its stack (restic, the repository) is what must not load.
HEAVY = {"typer", "asyncssh", "rich", "peersync.cli.main", "peersync.sync.runner", "peersync.sync.pipeline",
         "peersync.workspace.workspace", "peersync.backup.repo", "peersync.backup.restic", "peersync.backup.config"}


def write(ws: Workspace, rel: str, text: str) -> Path:
    path = ws.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def set_config(ws: Workspace, text: str) -> None:
    ws.ensure_state()
    ws.config_file.write_text(text)


def make_due(ws: Workspace) -> None:
    state = auto.read_state(ws.state)
    state["last_run"] = None
    auto.write_state(ws.state, state)


def point_peer_at(ws: Workspace, name: str, port: int) -> None:
    peers = ws.load_peers()
    peers[name] = dataclasses.replace(peers[name], port=port)
    ws.save_peers(peers)


class Listener:
    """A loopback TCP port that never answers: any connection attempt completes in the kernel's
    backlog and stays there, so the test can count attempts after the fact (and an SSH client
    that reaches it waits for a banner that never comes — a peer that hangs)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def attempts(self) -> int:
        self.sock.setblocking(False)
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


def test_not_due_is_silent_offline_and_quick(workspace_pair, listener):
    ws = workspace_pair.local
    point_peer_at(ws, "remote", listener.port)
    write(ws, "MEMORY.md", "local change\n")
    set_config(ws, "sync:\n  policy: newest\nauto:\n  enabled: false\n")
    runs = []
    for _ in range(5):  # auto off
        started = time.perf_counter()
        proc = cli(ws, "heartbeat")
        runs.append(time.perf_counter() - started)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert cli(ws, "heartbeat", "--reason", "session-end").stdout == ""  # hook not enabled
    cli(ws, "auto", "on")
    state = auto.read_state(ws.state)
    state["last_run"] = time.time()  # auto on, but the interval has not passed
    auto.write_state(ws.state, state)
    for _ in range(5):
        started = time.perf_counter()
        proc = cli(ws, "heartbeat")
        runs.append(time.perf_counter() - started)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert listener.attempts() == 0  # not one connection: no network at all
    assert not (workspace_pair.remote.root / "MEMORY.md").exists()
    assert not imported_modules(ws, "heartbeat") & HEAVY  # the fast path: none of the CLI stack
    print(f"\nnot-due heartbeat wall time (subprocess, includes interpreter start): "
          f"median {statistics.median(runs) * 1000:.0f} ms, min {min(runs) * 1000:.0f} ms")


def test_due_tick_syncs_and_says_so_then_stays_quiet(workspace_pair):
    """With auto.summary 0 every sync that moved files is told at once (the old behaviour)."""
    ws, remote = workspace_pair.local, workspace_pair.remote
    assert cli(ws, "auto", "on", "--summary", "0").returncode == 0
    write(ws, "MEMORY.md", "from local\n")
    write(remote, "memory/2026-01-25.md", "from remote\n")
    proc = cli(ws, "heartbeat")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    assert lines[0].startswith("🔄 Auto-synced with remote: 📤 1 pushed, 📥 1 pulled")
    assert "MEMORY.md" in lines[0] and "memory/2026-01-25.md" in lines[0]
    assert (remote.root / "MEMORY.md").read_text() == "from local\n"
    assert (ws.root / "memory/2026-01-25.md").read_text() == "from remote\n"
    assert ws.history()[0]["peer"] == "remote" and ws.history()[0]["ok"]
    assert auto.read_state(ws.state)["last_run"] > time.time() - 120

    assert cli(ws, "heartbeat").stdout == ""  # just ran: not due
    make_due(ws)
    entries = len(ws.history())
    proc = cli(ws, "heartbeat")  # due, nothing changed: a sync happens, nothing is said
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert len(ws.history()) == entries + 1


def test_routine_syncs_are_summed_up_once_a_day(workspace_pair):
    """By default a sync that only moved files says nothing; the digest tells it at most daily."""
    ws, remote = workspace_pair.local, workspace_pair.remote
    assert cli(ws, "auto", "on").returncode == 0
    for n in range(3):
        write(ws, f"memory/2026-01-2{n}.md", f"day {n}\n")
        make_due(ws)
        proc = cli(ws, "heartbeat")
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), proc.stdout  # no chat spam
        assert (remote.root / f"memory/2026-01-2{n}.md").read_text() == f"day {n}\n"  # but it synced
    state = auto.read_state(ws.state)
    assert state["digest"]["syncs"] == 3 and state["digest"]["pushed"] == 3
    state["digest"]["since"] -= 86400  # a day later
    auto.write_state(ws.state, state)
    write(remote, "memory/2026-01-23.md", "from the mini\n")
    make_due(ws)
    proc = cli(ws, "heartbeat")
    assert proc.stdout.startswith("🔄 Auto-sync since "), proc.stdout
    assert "4 syncs with remote — 📤 3 pushed, 📥 1 pulled" in proc.stdout and len(proc.stdout.splitlines()) == 1
    make_due(ws)
    assert cli(ws, "heartbeat").stdout == ""  # a new digest began
    assert "digest" in auto.read_state(ws.state)


def test_conflict_gets_a_second_line(workspace_pair):
    ws, remote = workspace_pair.local, workspace_pair.remote
    cli(ws, "auto", "on")
    plan = "memory/notes/plan.txt"  # not merged: a conflict goes to the policy (newest wins)
    write(ws, plan, "base\n")
    assert cli(ws, "heartbeat").returncode == 0
    write(ws, plan, "local edit\n")
    path = write(remote, plan, "remote edit\n")
    os.utime(path, (time.time() + 60, time.time() + 60))  # the remote edit is newer
    make_due(ws)
    proc = cli(ws, "heartbeat")
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # the conflict is told at once; the file that moved goes to the digest
    assert lines[0].startswith(f"⚠️ 1 conflict: {plan} — kept remote's (newer); yours saved as conflict")
    assert (ws.root / plan).read_text() == "remote edit\n"


def test_a_merge_that_kept_both_versions_says_which_file_needs_a_look(workspace_pair):
    ws, remote = workspace_pair.local, workspace_pair.remote
    cli(ws, "auto", "on")
    write(ws, "USER.md", "# User\n- Timezone: Europe/Lisbon\n")
    assert cli(ws, "heartbeat").returncode == 0
    write(ws, "USER.md", "# User\n- Timezone: Europe/Porto\n")
    write(remote, "USER.md", "# User\n- Timezone: Atlantic/Azores\n")
    make_due(ws)
    lines = cli(ws, "heartbeat").stdout.splitlines()
    assert len(lines) == 1, lines  # told at once; the merge itself goes to the daily digest
    assert lines[0].startswith("⚠️ 1 conflict: USER.md — merged, needs a look: both versions of 1 passage kept live")
    text = (ws.root / "USER.md").read_text()
    assert "Europe/Porto" in text and "Atlantic/Azores" in text and text == (remote.root / "USER.md").read_text()


def test_peer_down_is_bounded_backed_off_and_told_once(workspace_pair, listener):
    ws = workspace_pair.local
    set_config(ws, "auto:\n  enabled: true\n  timeout: 5\n")
    real_port = ws.peer("remote").port
    point_peer_at(ws, "remote", listener.port)  # accepts TCP, never speaks SSH: a hung peer
    write(ws, "MEMORY.md", "waiting for the peer\n")
    started = time.monotonic()
    proc = cli(ws, "heartbeat", timeout=90)  # the bound: a hang would fail the test here
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("⚠️ Auto-sync with remote failed:"), proc.stdout
    assert "will retry in" in proc.stdout and len(proc.stdout.splitlines()) == 1
    assert listener.attempts() == 1
    record = auto.read_state(ws.state)["peers"]["remote"]
    assert record["failures"] == 1 and record["retry_at"] > time.time() + 200
    print(f"\nheartbeat with a hung peer returned after {took:.1f} s (auto.timeout 5 s)")

    make_due(ws)  # due again, but the peer is still backing off: skipped without a connection
    proc = cli(ws, "heartbeat")
    assert (proc.returncode, proc.stdout) == (0, "")
    assert listener.attempts() == 0
    assert json.loads(cli(ws, "--json", "heartbeat").stdout)["due"] is False

    state = auto.read_state(ws.state)  # backoff over, still down: quiet, backs off further
    state["last_run"], state["peers"]["remote"]["retry_at"] = None, 0
    auto.write_state(ws.state, state)
    proc = cli(ws, "heartbeat", timeout=90)
    assert (proc.returncode, proc.stdout) == (0, "")
    assert listener.attempts() == 1
    record = auto.read_state(ws.state)["peers"]["remote"]
    assert record["failures"] == 2 and record["retry_at"] > time.time() + 500

    status = cli(ws, "auto", "status").stdout
    assert "⏳ remote failed 2×" in status

    point_peer_at(ws, "remote", real_port)  # the peer is back: the next try succeeds and resets
    state = auto.read_state(ws.state)
    state["last_run"], state["peers"]["remote"]["retry_at"] = None, 0
    auto.write_state(ws.state, state)
    proc = cli(ws, "heartbeat")
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout + proc.stderr  # back: a routine sync again
    assert (workspace_pair.remote.root / "MEMORY.md").read_text() == "waiting for the peer\n"
    assert auto.read_state(ws.state)["peers"] == {}


def test_lock_held_elsewhere_means_silent_success(workspace_pair):
    ws = workspace_pair.local
    cli(ws, "auto", "on")
    write(ws, "MEMORY.md", "x\n")
    with workspace_lock(ws, 0, what="sync"):  # this process holds it; the heartbeat is another
        started = time.monotonic()
        proc = cli(ws, "heartbeat")
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
        assert time.monotonic() - started < 60  # it did not wait for the lock (generous bound)
        make_due(ws)
        doc = json.loads(cli(ws, "--json", "heartbeat").stdout)
        assert doc["due"] is True and doc["busy"] is True and doc["reports"] == []
    assert not (workspace_pair.remote.root / "MEMORY.md").exists()
    assert ws.history() == []


def test_a_peer_busy_with_another_sync_is_not_a_failure(workspace_pair):
    ws, remote = workspace_pair.local, workspace_pair.remote
    cli(ws, "auto", "on")
    write(ws, "MEMORY.md", "x\n")
    with workspace_lock(remote, 0, what="sync with a third machine"):
        proc = cli(ws, "heartbeat")  # the peer's agent waits for its lock a while, then says busy
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout + proc.stderr
    assert "is busy" in ws.history()[0]["error"]
    assert auto.read_state(ws.state)["peers"] == {}  # no backoff: it is not down


def test_session_hooks_force_a_tick_when_enabled(workspace_pair):
    ws, remote = workspace_pair.local, workspace_pair.remote
    set_config(ws, "auto:\n  enabled: false\n  on_session_start: true\n")
    write(ws, "MEMORY.md", "hello\n")
    assert cli(ws, "heartbeat").stdout == ""  # auto off: a plain tick does nothing
    assert cli(ws, "heartbeat", "--reason", "session-end").stdout == ""  # that hook is off
    assert not (remote.root / "MEMORY.md").exists()
    proc = cli(ws, "heartbeat", "--reason", "session-start")
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout + proc.stderr  # routine: the digest tells it
    assert (remote.root / "MEMORY.md").read_text() == "hello\n"
    proc = cli(ws, "heartbeat", "--reason", "session-start")  # forced again, even right after
    assert (proc.returncode, proc.stdout) == (0, "")
    assert len(ws.history()) == 2
    assert cli(ws, "heartbeat", "--reason", "lunch").returncode == 2


def test_handler_shim_runs_the_heartbeat(workspace_pair):
    ws = workspace_pair.local
    handler = Path(__file__).parents[1] / "handler.sh"
    env = {**os.environ, "PEERSYNC": f"{sys.executable} -m peersync"}
    proc = subprocess.run(["bash", str(handler), "heartbeat", str(ws.root)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    subprocess.run(["bash", str(handler), "auto", "on", "--summary", "0", str(ws.root)], env=env, check=True,
                   capture_output=True)
    write(ws, "MEMORY.md", "via the shim\n")
    proc = subprocess.run(["bash", str(handler), "heartbeat", str(ws.root)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.stdout.startswith("🔄 Auto-synced with remote"), proc.stdout + proc.stderr


def test_scheduled_backup_runs_in_the_background(workspace_pair, tmp_path):
    ws = workspace_pair.local
    target = tmp_path / "backups"
    set_config(ws, f"auto:\n  enabled: false\nbackup:\n  target: {target}\n  interval: 3600\n")
    write(ws, "MEMORY.md", "keep me safe\n")
    env = {**os.environ, "RCLONE_CONFIG": "/dev/null", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("PEERSYNC_BACKUP_PASSPHRASE", None)
    proc = cli(ws, "--json", "heartbeat", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["backup_started"] is True
    runs = ws.state / "backup" / "last-run.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not runs.exists():
        time.sleep(0.2)
    log = (ws.state / "backup" / "scheduled.log")
    assert runs.exists(), log.read_text() if log.exists() else "no log"
    assert json.loads(runs.read_text())["last_ok"] is True, log.read_text()
    told = cli(ws, "heartbeat", env=env)  # just backed up: not due; the generated passphrase is told once
    assert "Keep a copy somewhere else" in told.stdout and str(ws.state / "backup" / "passphrase") in told.stdout
    proc = cli(ws, "--json", "heartbeat", env=env)
    assert json.loads(proc.stdout)["backup_started"] is False
    assert not imported_modules(ws, "heartbeat") & HEAVY  # and known so without the backup stack


# -- chat lines (pure) ------------------------------------------------------------------------
def _report(**kw) -> Report:
    return Report(peer="mac-mini", host="100.95.193.55", mode=Mode.SYNC, **kw)


@pytest.mark.parametrize("report, tell, new_problems, expected", [
    (_report(), False, False, []),
    (_report(error="connection refused\nhint"), True, False,
     ["⚠️ Auto-sync with mac-mini failed: connection refused — will retry in 5 min"]),
    (_report(error="connection refused"), False, False, []),
    (_report(pushed=["a.md", "b.md"], pulled=["c.md"], merged=["memory/x.jsonl"], deleted_remote=["d.md"]),
     False, False,
     ["🔄 Auto-synced with mac-mini: 📤 2 pushed, 📥 1 pulled, 🔀 1 merged, 🗑️ 1 deleted — a.md, b.md, c.md …and 2 more"]),
], ids=["nothing", "new-failure", "known-failure", "changes"])
def test_report_lines(report, tell, new_problems, expected):
    assert report_lines(report, tell_failure=tell, retry_in=300, new_problems=new_problems) == expected


def test_only_the_old_cron_jobs_argv_has_the_job_registered_again_once_a_day(workspace_pair, tmp_path):
    """`python -m peersync -w W heartbeat` with no -P is what a cron job from before -P runs (in the
    workspace): its tick starts `auto on` in the background, which registers the job again with
    this peersync's argv (test_openclaw.py checks that against the real Gateway); marked, so once a
    day.  With -P, from the console script, or with auto off: nothing is started."""
    from peersync.daemons import due

    ws = workspace_pair.local
    set_config(ws, "auto:\n  enabled: true\n")
    state = auto.read_state(ws.state)
    state["last_run"] = time.time()  # not due: the fast path
    auto.write_state(ws.state, state)
    marker = ws.state / due.RENEWED
    env = {**os.environ, "PATH": str(tmp_path / "no-openclaw")}  # `auto on` finds no OpenClaw: changes nothing

    def tick(*python_flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *python_flags, "-m", "peersync", "-w", str(ws.root), "heartbeat"],
                              cwd=ws.root, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)

    def renewing() -> bool:  # the background `auto on` of this workspace still runs
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"auto" in argv and str(ws.root).encode() in argv:
                return True
        return False

    def settled() -> None:
        deadline = time.monotonic() + 60
        while renewing():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    assert tick("-P").returncode == 0 and not marker.exists()
    assert tick().returncode == 0 and marker.exists()
    settled()
    assert "enabled: true" in ws.config_file.read_text()
    os.utime(marker, (1, 1))  # a day ago and more
    set_config(ws, "auto:\n  enabled: false\n")
    assert tick().returncode == 0 and marker.stat().st_mtime == 1
    set_config(ws, "auto:\n  enabled: true\n")
    assert tick().returncode == 0 and marker.stat().st_mtime > 1
    settled()
    os.utime(marker, None)  # just now: not again today
    before = marker.stat().st_mtime_ns
    assert tick().returncode == 0 and marker.stat().st_mtime_ns == before
