"""The watch daemon: which events count, single instance, and two daemons converging over a real sshd."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from peersync.core.selection import Selection
from peersync.daemons.watch import ChangeFeed, Watcher, _LostEvents
from peersync.workspace.workspace import Workspace

PEERSYNC = [sys.executable, "-m", "peersync"]
BOUND = 60.0  # seconds any one wait in these tests may take before it counts as a failure


def wait_for(predicate, what, timeout: float = BOUND):
    """Poll `predicate` until it is true; `what` (text, or a function giving text) explains a timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")


class Daemon:
    """`peersync watch` as a subprocess, its output collected line by line."""

    def __init__(self, ws: Workspace, *args: str):
        self.proc = subprocess.Popen([*PEERSYNC, "-w", str(ws.root), "watch", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self, timeout: float = BOUND) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"watch did not stop within {timeout:g} s of SIGTERM:\n{self.output}")
        self._reader.join(timeout=5)
        return code


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield lambda ws, *args: started.append(Daemon(ws, *args)) or started[-1]
    for d in started:  # a failed test must not leave daemons behind
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


# -- which events count ---------------------------------------------------------------------
@pytest.mark.parametrize("rel, is_dir, relevant", [
    ("MEMORY.md", False, True),
    ("memory/2026-01-26.md", False, True),
    ("memory/streaming-buddy/preferences.json", False, True),
    ("memory", True, True),
    ("memory/streaming-buddy", True, True),
    ("memory/clawdbot-sync/history.json", False, False),     # our own state
    ("memory/clawdbot-sync", True, False),
    ("memory/.peersync-abc.tmp", False, False),              # an atomic write in progress
    ("memory/draft.tmp", False, False),                      # excluded
    ("memory/node_modules/x.js", False, False),
    ("memory/node_modules", True, False),
    ("IDENTITY.md", False, False),                           # never synced
    ("config/settings.json", False, False),
    ("skills/x/SKILL.md", False, False),                     # skills off by default
    ("notes.txt", False, False),                             # outside the selection
    (".", True, False),
])
def test_feed_relevance(tmp_path, rel, is_dir, relevant):
    feed = ChangeFeed(tmp_path, Selection.from_options())
    assert feed.relevant(str(tmp_path / rel), is_dir) is relevant


class RecordingFeed(ChangeFeed):
    def __init__(self, *args):
        super().__init__(*args)
        self.seen: list[str] = []

    def on_any_event(self, event) -> None:
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path and self.relevant(os.fsdecode(path), event.is_directory):
                self.seen.append(os.path.relpath(os.fsdecode(path), self.root))
        super().on_any_event(event)


def test_watches_see_selection_changes_only(tmp_path):
    ws = Workspace(tmp_path)
    ws.ensure_state()
    ws.config_file.write_text("sync:\n  skills: true\n")
    watcher = Watcher(ws, interval=3600, out=lambda _: None)
    watcher.feed = feed = RecordingFeed(ws.root, ws.sync_config().selection)
    watcher.ensure_watches()
    watcher.observer.start()
    try:
        (ws.state / "history.json").write_text("{}")
        (ws.root / "IDENTITY.md").write_text("me")
        (ws.root / "notes.txt").write_text("not synced")
        (ws.root / "skills").mkdir()  # a root that appears after the start
        wait_for(lambda: "skills" in feed.seen, "the new skills/ directory")
        watcher.ensure_watches()  # the daemon does this before every sync
        (ws.root / "skills" / "weather").mkdir()
        (ws.root / "skills" / "weather" / "SKILL.md").write_text("a skill")
        (ws.root / "memory" / "streaming-buddy").mkdir()  # a new directory inside a root
        wait_for(lambda: "memory/streaming-buddy" in feed.seen, "the new memory/streaming-buddy/")
        watcher.ensure_watches()
        (ws.root / "memory" / "streaming-buddy" / "preferences.json").write_text("{}")
        (ws.root / "memory" / "draft.tmp").write_text("excluded")
        (ws.root / "memory" / "2026-01-26.md").write_text("a note")
        (ws.root / "MEMORY.md").write_text("top level")
        wait_for(lambda: "MEMORY.md" in feed.seen, "the MEMORY.md event")
        wait_for(lambda: "memory/2026-01-26.md" in feed.seen, "the note's event")
        wait_for(lambda: "skills/weather/SKILL.md" in feed.seen, "the new skill's event")
        wait_for(lambda: "memory/streaming-buddy/preferences.json" in feed.seen, "the preferences' event")
        assert set(feed.seen) == {"skills", "skills/weather", "skills/weather/SKILL.md", "memory/2026-01-26.md",
                                  "MEMORY.md", "memory/streaming-buddy", "memory/streaming-buddy/preferences.json"}
        # ^ not the state dir, IDENTITY.md, notes.txt or *.tmp.  The state dir is not even watched:
        assert watcher.wanted() == {str(ws.root): False, str(ws.root / "memory"): False,
                                    str(ws.root / "memory/streaming-buddy"): True, str(ws.root / "skills"): True}
        (ws.root / "HEARTBEAT.md").write_text("first sentinel")
        wait_for(lambda: "HEARTBEAT.md" in feed.seen, "the first sentinel")
        first, last, rescan = feed.take()
        assert first is not None and last >= first and not rescan
        assert feed.peek() == (None, None, False)
        mark = len(feed.seen)
        (ws.root / "memory" / "2026-01-26.md").read_text()  # reading is not a change
        (ws.state / "scan-cache.json").write_text("{}")
        (ws.root / "USER.md").write_text("second sentinel")
        wait_for(lambda: "USER.md" in feed.seen[mark:], "the second sentinel")
        # Only the sentinels (the first one's close event may trail): no read, no state write.
        assert set(feed.seen[mark:]) <= {"USER.md", "HEARTBEAT.md"}
    finally:
        watcher.observer.stop()
        watcher.observer.join(timeout=10)


def test_lost_events_ask_for_a_sync_at_once(tmp_path):
    feed = ChangeFeed(tmp_path, Selection.from_options())
    handler = _LostEvents(feed)
    logger = logging.getLogger("watchdog")
    logger.addHandler(handler)
    try:
        logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; filesystem events were lost")
    finally:
        logger.removeHandler(handler)
    assert feed.peek()[2] is True


# -- daemons ----------------------------------------------------------------------------------
def test_one_daemon_per_workspace(workspace_pair, daemons):
    ws = workspace_pair.local
    first = daemons(ws, "--interval", "3600")
    wait_for(lambda: "👀 Watching" in first.output, "the first daemon to start")
    second = subprocess.run([*PEERSYNC, "-w", str(ws.root), "watch"], capture_output=True, text=True,
                            timeout=BOUND, stdin=subprocess.DEVNULL)
    assert second.returncode == 1
    assert f"peersync watch is already running for this workspace (pid {first.proc.pid})" in second.stderr
    assert first.proc.poll() is None
    assert first.stop() == 0
    assert "👋 Stopped watching" in first.output
    # The sync lock was never held while idle, and the watch lock went with the daemon.
    again = daemons(ws, "--interval", "3600")
    wait_for(lambda: "👀 Watching" in again.output, "a new daemon after the first stopped")
    assert again.stop() == 0


@pytest.mark.timeout(300)
def test_two_daemons_converge_on_edits_from_either_side(workspace_pair, daemons):
    local, remote = workspace_pair.local, workspace_pair.remote
    (local.root / "MEMORY.md").write_text("v1 from local\n")
    (remote.root / "memory").mkdir(exist_ok=True)
    (remote.root / "memory" / "2026-01-25.md").write_text("from remote\n")

    def quiet(window: float = 4.0) -> bool:
        before = (len(local.history()), len(remote.history()))
        time.sleep(window)
        return (len(local.history()), len(remote.history())) == before

    a = daemons(local, "--debounce", "0.5", "--interval", "3600")
    # Its first round catches up on what changed while no daemon ran.
    wait_for(lambda: (remote.root / "MEMORY.md").exists() and (local.root / "memory/2026-01-25.md").exists(),
             lambda: f"the first daemon's catch-up sync\n{a.output}")
    # Started while the first one re-syncs after its own writes, the second daemon's catch-up
    # would collide with it (each waits for the other's lock, then both retry at random): that
    # resolves, but slowly, and this test is about edits.  So start it once the first is quiet.
    wait_for(quiet, lambda: f"the first daemon to fall quiet\n{a.output}")
    b = daemons(remote, "--debounce", "0.5", "--interval", "3600")
    wait_for(lambda: any(e.get("peer") == "local" for e in remote.history()),
             lambda: f"the second daemon's first sync\n{b.output}")

    (local.root / "memory" / "2026-01-26.md").write_text("edited on local\n")
    wait_for(lambda: _read(remote.root / "memory/2026-01-26.md") == "edited on local\n",
             lambda: f"local's edit to reach remote\nA:\n{a.output}\nB:\n{b.output}")

    (remote.root / "USER.md").write_text("edited on remote\n")
    wait_for(lambda: _read(local.root / "USER.md") == "edited on remote\n",
             lambda: f"remote's edit to reach local\nA:\n{a.output}\nB:\n{b.output}")

    (local.root / "memory" / "2026-01-25.md").unlink()
    wait_for(lambda: not (remote.root / "memory/2026-01-25.md").exists(),
             lambda: f"local's deletion to reach remote\nA:\n{a.output}\nB:\n{b.output}")

    # Our own sync writes wake the daemons once more; those syncs change nothing and cause no
    # further events, so both fall quiet.  (A feedback loop would keep the history growing.)
    wait_for(quiet, lambda: f"the daemons to fall quiet\nA:\n{a.output}\nB:\n{b.output}")
    assert sorted(_files(local.root)) == sorted(_files(remote.root))

    assert a.stop() == 0 and b.stop() == 0
    assert "👋 Stopped watching" in a.output and "👋 Stopped watching" in b.output
    assert "Traceback" not in a.output + b.output


def test_sigterm_during_a_sync_lets_it_finish(workspace_pair, daemons):
    local, remote = workspace_pair.local, workspace_pair.remote
    for i in range(200):
        path = local.root / "memory" / f"note-{i:03}.md"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"note {i}\n" * 50)
    d = daemons(local, "--interval", "3600")
    wait_for(lambda: "👀 Watching" in d.output, "the daemon to start")
    # One SIGTERM (stop() sends it), most likely during its first (catch-up) sync.  Not two: a
    # second signal ends the daemon at once by design, which is what an earlier version of this
    # test did when the sync was still running at its second look.
    assert d.stop() == 0
    entries = local.history()
    if entries:  # the sync that was running finished properly before the daemon left
        assert entries[0]["ok"], entries[0]
        assert len(_files(remote.root / "memory")) == 200
    assert "👋 Stopped watching" in d.output


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "clawdbot-sync"]
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames]
    return out


def test_a_peer_that_is_down_is_reported_once_and_backed_off(workspace_pair, daemons):
    import dataclasses
    import socket

    ws = workspace_pair.local
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connection refused
    peers = ws.load_peers()
    peers["remote"] = dataclasses.replace(peers["remote"], port=port)
    ws.save_peers(peers)
    (ws.root / "MEMORY.md").write_text("v1\n")
    d = daemons(ws, "--debounce", "0.2", "--interval", "3600")
    wait_for(lambda: "❌ remote:" in d.output, lambda: f"the failure to be reported\n{d.output}")
    assert "(retrying in 30 s, then less often while it stays down)" in d.output
    for i in range(3):  # changes while the peer backs off: no new attempt, no new message
        (ws.root / "MEMORY.md").write_text(f"v{i + 2}\n")
        time.sleep(0.5)
    assert d.proc.poll() is None
    assert d.stop() == 0
    assert d.output.count("❌ remote:") == 1
    assert len([e for e in ws.history() if not e["ok"]]) == 1


def test_watch_starts_a_due_backup_in_the_background(tmp_path, daemons, monkeypatch):
    """backup.interval: the daemon takes backups by the heartbeat's rule (one due rule for both)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("RCLONE_CONFIG", "/dev/null")
    ws = Workspace(tmp_path / "ws")
    ws.ensure_state()
    (ws.root / "MEMORY.md").write_text("watched\n")
    ws.config_file.write_text(f"backup:\n  target: {tmp_path / 'backups'}\n  interval: 3600\n")
    daemon = daemons(ws)
    runs = ws.state / "backup" / "last-run.json"
    wait_for(lambda: runs.exists(), lambda: f"a backup started by watch:\n{daemon.output}", timeout=120)
    assert daemon.stop() == 0
    assert '"last_ok": true' in runs.read_text()
    assert (tmp_path / "backups" / "config").is_file()
