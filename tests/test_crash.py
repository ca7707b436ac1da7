"""Crash recovery and cut connections: a sync killed or cut off at random moments loses nothing.

Each trial: two workspaces synced once (the ancestor), then edits on both sides (large files that
travel through rsync, or hundreds of small ones, log appends, conflicts, deletions); then a real
`python -m peersync -w … sync` is SIGKILLed at a random moment (or its SSH stream cut through a
loopback TCP proxy).  Afterwards:
- no partial or temp file sits at a real path: every file holds a complete version the test wrote
  (logs: only lines the test wrote), and no rsync / peersync temp name exists outside the state dir;
- the workspace lock is free again (the kernel dropped the flock), and the next syncs recover
  staging, holding and journal leftovers by themselves and converge;
- nothing is lost: every version either side held before the killed sync is, after recovery, in a
  selection, in conflicts/ or in the trash (logs, and memory files that merge as text: every line).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from peersync.core.mergefile import MergeRules
from peersync.core.textmerge import KEPT_END
from peersync.sync import journal
from peersync.sync.runner import run_sync
from peersync.testing.pair import wire_pair
from peersync.testing.trees import selection_files
from peersync.workspace.lock import state_lock
from peersync.workspace.workspace import DEFAULT_LOGS, DEFAULT_MERGE

LOGS = ("memory/2026-01-26.md", "memory/agent/events.jsonl")
TEMP_NAME = re.compile(r"^\.peersync-.*|^\.~tmp~$|^\.inline-.*|^\..+\.[A-Za-z0-9]{6}$")
BIG = 3 << 20  # well above engine.INLINE_MAX_FILE: these travel through rsync


# -- oracles ----------------------------------------------------------------------------------


RULES = MergeRules(DEFAULT_LOGS, DEFAULT_MERGE)


def is_log(path: str) -> bool:
    return path in LOGS


def by_lines(path: str, data: bytes) -> bool:
    """Logs, and memory files that merge as text (MEMORY.md, USER.md…): a sync owes their lines."""
    if is_log(path):
        return True
    try:
        return RULES.is_text(path) and bool(data.decode("utf-8"))
    except UnicodeDecodeError:
        return False  # random bytes: merged files fall back to the conflict policy, whole


def marker(line: bytes) -> bool:
    """A line a merge writes around the versions it keeps live."""
    return line.startswith("> ⚠️ **peersync kept ".encode()) or line.startswith("> **▼ ".encode()) \
        or line + b"\n" == KEPT_END.encode()


def lines_of(data: bytes) -> set[bytes]:
    return {line for line in data.split(b"\n") if line and not marker(line)}


def kept_files(ws, places=("conflicts", "trash")) -> list[bytes]:
    """Bytes of every file in conflicts/ and the trash (index.json aside)."""
    out = []
    for place in places:
        top = ws.state / place
        for path in sorted(top.rglob("*")) if top.is_dir() else ():
            if path.is_file() and not (place == "conflicts" and path.parent == top):
                out.append(path.read_bytes())
    return out


class Ledger:
    """Every version the test wrote (to recognise partial files) and what is owed right now."""

    def __init__(self):
        self.versions: set[bytes] = set()
        self.lines: set[bytes] = set()
        self.dropped: set[bytes] = set()  # versions a user replaced or deleted: no longer owed
        self.dropped_lines: set[bytes] = set()  # likewise, lines of files owed by line
        self.counter = 0

    def text(self, tag: str, size: int = 0) -> bytes:
        """A unique version; `size` pads it with random bytes (incompressible, rsync-sized)."""
        self.counter += 1
        head = f"{tag} #{self.counter:05d}\n".encode()
        return head + (os.urandom(size) if size else b"")

    def write(self, ws, rel: str, data: bytes, *, append: bool = False) -> None:
        path = ws.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not append:
            self.dropped.add(path.read_bytes())
            if by_lines(rel, path.read_bytes()):
                self.dropped_lines |= lines_of(path.read_bytes())
        with open(path, "ab" if append else "wb") as f:
            f.write(data)
        if by_lines(rel, data):
            self.lines |= lines_of(data)
        else:
            self.versions.add(data)

    def delete(self, ws, rel: str) -> None:
        data = (ws.root / rel).read_bytes()
        self.dropped.add(data)
        if by_lines(rel, data):
            self.dropped_lines |= lines_of(data)
        (ws.root / rel).unlink()

    def owed(self, *workspaces) -> tuple[set[bytes], set[bytes]]:
        """What the workspaces hold now, but for versions a user replaced on the other side
        (sync carrying that edit over is no loss): all of it must survive the next syncs."""
        versions, lines = set(), set()
        for ws in workspaces:
            for rel, data in selection_files(ws).items():
                if by_lines(rel, data):
                    lines |= lines_of(data)
                else:
                    versions.add(data)
        return versions - self.dropped, lines - self.dropped_lines


def assert_no_partial_files(ledger: Ledger, *workspaces) -> None:
    for ws in workspaces:
        for dirpath, dirnames, filenames in os.walk(ws.root):
            rel_dir = os.path.relpath(dirpath, ws.root)
            if rel_dir == "memory":
                dirnames[:] = [d for d in dirnames if d != "clawdbot-sync"]  # the state dir
            for name in filenames:
                assert not TEMP_NAME.match(name), f"temp file at a real path: {rel_dir}/{name}"
        for rel, data in selection_files(ws).items():
            if by_lines(rel, data):
                unknown = lines_of(data) - ledger.lines
                assert not unknown, f"{rel} holds lines nobody wrote (a torn write?): {sorted(unknown)[:3]}"
            else:
                assert data in ledger.versions, f"{rel} holds a partial or unknown version ({len(data)} bytes)"


def assert_nothing_lost(owed: tuple[set[bytes], set[bytes]], *workspaces, crashed: bool = False) -> None:
    """Every owed version is in a selection, conflicts/ or the trash — or, right after a crash and
    before recovery, in holding/ (recovery then moves it to conflicts/)."""
    places = ("conflicts", "trash", "holding") if crashed else ("conflicts", "trash")
    everything = []
    for ws in workspaces:
        everything += selection_files(ws).values()
        everything += kept_files(ws, places)
    contents = set(everything)
    lines = set().union(*(lines_of(d) for d in everything))
    versions_lost = [v[:60] for v in owed[0] - contents]
    lines_lost = sorted(owed[1] - lines)
    assert not versions_lost, f"{len(versions_lost)} versions lost, e.g. {versions_lost[:3]}"
    assert not lines_lost, f"{len(lines_lost)} log lines lost, e.g. {lines_lost[:3]}"


def assert_recovers_and_converges(pair, first) -> None:
    """The next sync (from `first`) recovers and succeeds; one from the other side then has nothing to do."""
    second = pair.remote if first is pair.local else pair.local
    for ws, again in ((first, False), (second, True)):
        report = run_sync(ws, lock_timeout=60)[0]
        assert report.ok, report.error
        assert not report.problems, report.problems
        if again:
            assert not report.changed, report.to_json()
    assert selection_files(pair.local) == selection_files(pair.remote)
    for ws in (pair.local, pair.remote):
        for leftover in ("staging", "holding", "journal"):
            d = ws.state / leftover
            assert not (d.is_dir() and any(d.iterdir())), f"{leftover}/ not cleared on {ws.root.name}"
        assert_conflicts_indexed(ws)


def assert_conflicts_indexed(ws) -> None:
    """Every version kept in conflicts/ is listed, so `peersync conflicts` can show and restore it."""
    top = ws.state / "conflicts"
    kept = {p.relative_to(top).as_posix() for p in top.glob("c-*/**/*") if p.is_file()} if top.is_dir() else set()
    index = json.loads((top / "index.json").read_text())["conflicts"] if kept else []
    assert kept == {f"{i['id']}/{i['path']}" for i in index}, f"conflicts/ and its index disagree on {ws.root.name}"


# -- scenarios ---------------------------------------------------------------------------------


def baseline(pair, ledger: Ledger, kind: str) -> None:
    L, R = pair.local, pair.remote
    ledger.write(L, "MEMORY.md", ledger.text("memory"))
    ledger.write(L, "USER.md", ledger.text("user"))
    for log in LOGS:
        ledger.write(L, log, ledger.text(f"- base line of {log}"))
    if kind == "large":
        for i in range(2):
            ledger.write(L, f"memory/big/shared-{i}.bin", ledger.text("shared", BIG))
    else:
        for i in range(150):
            ledger.write(L, f"memory/many/old-{i:03d}.md", ledger.text(f"old {i}", 400))
    report = run_sync(L)[0]
    assert report.ok, report.error


def edits(pair, ledger: Ledger, kind: str, rng: random.Random) -> None:
    """Concurrent-looking work on both sides: new files, edits, conflicts, deletions, appends."""
    L, R = pair.local, pair.remote
    n = ledger.counter
    ledger.write(L, "MEMORY.md", ledger.text("memory here"))
    ledger.write(R, "MEMORY.md", ledger.text("memory there"))  # a merge that keeps both versions live
    for log in LOGS:
        for ws in (L, R):
            ledger.write(ws, log, b"".join(ledger.text(f"- {ws.root.name} appended") for _ in range(3)), append=True)
    if kind == "large":
        for i in range(2):
            ledger.write(L, f"memory/big/l-{n}-{i}.bin", ledger.text("local big", BIG))
        ledger.write(R, f"memory/big/r-{n}.bin", ledger.text("remote big", BIG))
        for ws in (L, R):  # both sides rewrite the same big file: a conflict through rsync
            ledger.write(ws, "memory/big/shared-0.bin", ledger.text(f"shared by {ws.root.name}", BIG + 4096))
        ledger.write(R, "memory/big/shared-1.bin", ledger.text("shared-1 edited there", BIG))
    else:
        for i in range(1300):  # over engine.INLINE_BATCH_BYTES in total: several inline batches
            ledger.write(L, f"memory/many/l-{n}-{i:03d}.md", ledger.text("local small", 3500))
        for i in range(150):  # small enough to travel inline over the agent channel
            ledger.write(R, f"memory/many/r-{n}-{i:03d}.md", ledger.text("remote small", 300))
        olds = sorted(p.name for p in (L.root / "memory/many").glob("old-*.md"))
        picked = rng.sample(olds, 30)
        for name in picked[:10]:
            ledger.write(L, f"memory/many/{name}", ledger.text("old edited here", 400))
        for name in picked[5:15]:  # five of them edited on both sides: conflicts
            ledger.write(R, f"memory/many/{name}", ledger.text("old edited there", 400))
        for name in picked[15:22]:  # a few deletions (to the trash on the other side)
            ledger.delete(R, f"memory/many/{name}")


# -- the killed process ------------------------------------------------------------------------


def cli_sync(ws, peer: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "peersync", "-w", str(ws.root), "sync", peer],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def proc_files(name: str):
    """(pid, path of /proc/PID/<name>) for every process.  os.listdir, not Path.glob: glob stats
    each match, and a process exiting in between raises ProcessLookupError (ESRCH)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            yield int(pid), Path(f"/proc/{pid}/{name}")


def group_alive(pgid: int) -> bool:
    """Any non-zombie process left in the group (orphaned rsync/ssh after a pid-only kill)?"""
    for _, stat in proc_files("stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def staged_something(*workspaces) -> bool:
    # os.walk ignores directories that vanish while it runs (the sync removes its staging).
    for ws in workspaces:
        for _, _, files in os.walk(ws.state / "staging"):
            if files:
                return True
    return False


def wait_for(condition, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll until `condition()` or the process ends; True when the condition came first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    return False


def agent_of(ws) -> int | None:
    """The pid of the peersync agent serving `ws` over SSH, if one runs."""
    for pid, cmdline in proc_files("cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"agent" in words and os.fsencode(ws.root) in words:
            return pid
    return None


def wait_agents_gone(*workspaces, timeout: float = 60.0) -> None:
    """An agent whose client died finishes its current operation, then exits: wait for that
    before looking at its workspace."""
    deadline = time.monotonic() + timeout
    while any(agent_of(ws) for ws in workspaces) and time.monotonic() < deadline:
        time.sleep(0.05)


def run_and_kill(pair, initiator, moment: tuple, rng: random.Random, group: bool, victim: str = "client") -> bool:
    """Start the CLI sync from `initiator`, SIGKILL it (or the peer's agent) at `moment`; True when
    the victim was killed mid-run."""
    other = pair.remote if initiator is pair.local else pair.local
    peer = pair.peer_name if initiator is pair.local else pair.back_name
    proc = cli_sync(initiator, peer)
    try:
        what, spread = moment
        if what == "locked":  # the peer's agent holds its lock: scan, plan, transfer, install follow
            ready = wait_for(lambda: (other.state / "lock.info").exists(), proc)
        elif what == "staging":  # rsync or inline data is landing in a staging dir
            ready = wait_for(lambda: staged_something(initiator, other), proc)
        else:  # installs have begun: a conflict was quarantined or a trash batch made
            ready = wait_for(lambda: any((ws.state / d).is_dir() for ws in (initiator, other)
                                         for d in ("conflicts", "trash")), proc)
        if ready:
            time.sleep(rng.uniform(0, spread))
        if victim == "agent":  # the other machine's side dies; the client must fail cleanly
            agent = agent_of(other)
            killed = agent is not None and proc.poll() is None
            if killed:
                os.kill(agent, signal.SIGKILL)
            code = proc.wait(timeout=60)
            out, err = proc.communicate(timeout=30)
            wait_agents_gone(other)
            assert "Traceback" not in out.decode() + err.decode()
            return killed and code in (1, 3)  # 3: the peer went away (a ConnectError), 1: any other failure
        killed = proc.poll() is None
        if killed:
            os.killpg(proc.pid, signal.SIGKILL) if group else os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while group_alive(proc.pid) and time.monotonic() < deadline:  # orphans finish on their own
            time.sleep(0.05)
        wait_agents_gone(other)
        return killed and proc.returncode == -signal.SIGKILL
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


MOMENTS = [("locked", 0.2), ("locked", 0.6), ("locked", 1.5), ("staging", 0.0), ("staging", 0.15), ("installing", 0.02)]
# (kind, direction, moment, victim): the syncing CLI (its process alone, or its whole group with
# rsync and ssh), or the peer's agent.
VICTIMS = ("client-group", "client-pid", "client-group", "client-pid", "agent", "client-pid")
TRIALS = [(kind, direction, moment, VICTIMS[i])
          for kind in ("large", "many") for direction in ("push", "pull") for i, moment in enumerate(MOMENTS)]


@pytest.mark.slow
@pytest.mark.parametrize("kind,direction,moment,victim", TRIALS,
                         ids=[f"{k}-{d}-{m[0]}{m[1]}-{v}" for k, d, m, v in TRIALS])
def test_sigkill_mid_sync_loses_nothing_and_recovers(tmp_path, sshd, kind, direction, moment, victim):
    rng = random.Random(f"{kind}{direction}{moment}{victim}")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    ledger = Ledger()
    baseline(pair, ledger, kind)
    initiator = pair.local if direction == "push" else pair.remote
    killed = False
    for attempt in range(3):  # a run that finished before the kill is a clean sync: edit again, retry
        edits(pair, ledger, kind, rng)
        owed = ledger.owed(pair.local, pair.remote)
        killed = run_and_kill(pair, initiator, moment, rng, victim == "client-group", victim.split("-")[0])
        assert_no_partial_files(ledger, pair.local, pair.remote)
        if victim != "agent":
            with state_lock(initiator.state, timeout=0):  # the dead holder's lock is free at once
                pass
        assert_nothing_lost(owed, pair.local, pair.remote, crashed=True)
        if killed:
            break
        moment = (moment[0], moment[1] / 4)
    assert killed, "the sync always finished before the kill: the trial proved nothing"
    assert_recovers_and_converges(pair, rng.choice([pair.local, pair.remote]))
    assert_nothing_lost(owed, pair.local, pair.remote)
    assert_no_partial_files(ledger, pair.local, pair.remote)


# -- cut connections ---------------------------------------------------------------------------


class CuttingProxy:
    """A TCP forwarder on 127.0.0.1 in front of sshd that can drop streams mid-flight.

    `arm(limit)`: the first connection that has carried more than `limit` bytes (both directions)
    is cut, and so are all connections open at that moment (the control channel and rsync's
    ssh alike); later connections pass untouched, so the next sync can run.
    """

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.lock = threading.Lock()
        self.open: list[list] = []  # [client, upstream, bytes]
        self.limit: int | None = None
        self.only: int | None = None  # cut only when this connection (0 = first) passes the limit
        self.count = 0
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, limit: int, only: int | None = None) -> None:
        with self.lock:
            self.limit, self.only, self.count = limit, only, 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                conn = [client, upstream, 0, self.count]
                self.count += 1
                self.open.append(conn)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(conn, a, b), daemon=True).start()

    def _pump(self, conn, src, dst) -> None:
        try:
            while data := src.recv(65536):
                with self.lock:
                    conn[2] += len(data)
                    cut = self.limit is not None and conn[2] > self.limit and self.only in (None, conn[3])
                    if cut:
                        self.limit = None
                        self.cuts += 1
                        victims, self.open = self.open, []
                if cut:
                    for c in victims:
                        for s in c[:2]:
                            _hang_up(s)
                    return
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()
        with self.lock:
            for c in self.open:
                for s in c[:2]:
                    _hang_up(s)


def _hang_up(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def proxied_pair(tmp_path, sshd):
    """A wired pair whose peers both reach sshd through a CuttingProxy."""
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    proxy = CuttingProxy(sshd.port)
    known = tmp_path / "known_hosts_proxy"
    key = Path(sshd.known_hosts).read_text().split(None, 1)[1]
    known.write_text(f"[127.0.0.1]:{proxy.port} {key}")
    for ws, name in ((pair.local, pair.peer_name), (pair.remote, pair.back_name)):
        peers = ws.load_peers()
        peers[name] = dataclasses.replace(peers[name], port=proxy.port, known_hosts=str(known))
        ws.save_peers(peers)
    yield pair, proxy
    proxy.close()


def cut_run(pair, initiator, peer: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "peersync", "-w", str(initiator.root), "sync", peer],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=180)
    wait_agents_gone(pair.local, pair.remote)
    return out


def assert_clear_failure(out: subprocess.CompletedProcess) -> str:
    text = out.stdout + out.stderr
    assert out.returncode in (1, 3), text  # 3: the connection to the peer was lost (the peer went away)
    assert "Traceback" not in text, text
    assert re.search(r"cut off|interrupted|connection .* lost|lost during", text), text
    assert "run the sync again" in text, text
    return text


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_connection_cut_mid_rsync_is_a_clear_error_and_loses_nothing(proxied_pair, direction):
    pair, proxy = proxied_pair
    ledger = Ledger()
    baseline(pair, ledger, "large")
    edits(pair, ledger, "large", random.Random(direction))
    owed = ledger.owed(pair.local, pair.remote)
    initiator, peer = (pair.local, pair.peer_name) if direction == "push" else (pair.remote, pair.back_name)
    proxy.arm(limit=BIG // 2)  # only the rsync stream carries this much: cut mid-file
    out = cut_run(pair, initiator, peer)
    assert proxy.cuts == 1
    assert_clear_failure(out)
    assert_no_partial_files(ledger, pair.local, pair.remote)
    assert_nothing_lost(owed, pair.local, pair.remote, crashed=True)
    assert_recovers_and_converges(pair, initiator)
    assert_nothing_lost(owed, pair.local, pair.remote)


def test_control_connection_cut_mid_install_is_a_clear_error_and_loses_nothing(proxied_pair):
    pair, proxy = proxied_pair
    ledger = Ledger()
    baseline(pair, ledger, "many")
    edits(pair, ledger, "many", random.Random(7))
    owed = ledger.owed(pair.local, pair.remote)
    # The control channel (the first connection) carries scans, then the inline batch: cut inside it.
    proxy.arm(limit=120_000, only=0)
    out = cut_run(pair, pair.local, pair.peer_name)
    assert proxy.cuts == 1
    # 3: the peer's connection went away (exit status 3, as an unreachable peer); 1: any other failure
    assert out.returncode in (1, 3) and "Traceback" not in out.stdout + out.stderr
    assert_no_partial_files(ledger, pair.local, pair.remote)
    assert_nothing_lost(owed, pair.local, pair.remote, crashed=True)
    assert_recovers_and_converges(pair, pair.remote)
    assert_nothing_lost(owed, pair.local, pair.remote)
    assert_clear_failure(out)


def children(pid: int) -> list[int]:
    out = []
    for child, stat in proc_files("stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(child)
    return out


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize("victim", ["rsync", "ssh"])
def test_killed_transfer_child_is_a_clear_error_and_loses_nothing(tmp_path, sshd, victim):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    ledger = Ledger()
    baseline(pair, ledger, "large")
    edits(pair, ledger, "large", random.Random(victim))
    owed = ledger.owed(pair.local, pair.remote)
    proc = subprocess.Popen([sys.executable, "-m", "peersync", "-w", str(pair.local.root), "sync"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def transfer_child():
        for child in children(proc.pid):
            if command_of(child).startswith("rsync"):
                if victim == "rsync":
                    return child
                return next((g for g in children(child) if command_of(g).startswith("ssh")), None)
        return None

    victims = []

    def transferring() -> bool:
        pid = transfer_child()
        if pid is not None and staged_something(pair.local, pair.remote):
            victims.append(pid)
        return bool(victims)

    assert wait_for(transferring, proc), "the sync never started rsync"
    os.kill(victims[-1], signal.SIGKILL)  # still running: the condition saw it a moment ago
    stdout, stderr = proc.communicate(timeout=120)
    wait_agents_gone(pair.local, pair.remote)
    assert_clear_failure(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    assert_no_partial_files(ledger, pair.local, pair.remote)
    assert_nothing_lost(owed, pair.local, pair.remote, crashed=True)
    assert_recovers_and_converges(pair, pair.local)
    assert_nothing_lost(owed, pair.local, pair.remote)


# -- precise crash points ----------------------------------------------------------------------

# Runs the CLI with one function wrapped so that its n-th call SIGKILLs the process on entry:
# a crash at an exact point of the pipeline, in a process the test does not otherwise touch.
CRASHER = r"""
import os, signal, sys
from importlib import import_module
where, nth = sys.argv[1], int(sys.argv[2])
module, _, attr = where.partition(":")
owner = import_module(module)
*path, name = attr.split(".")
for part in path:
    owner = getattr(owner, part)
real = getattr(owner, name)
calls = []
def crash(*args, **kwargs):
    calls.append(1)
    if len(calls) >= nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
setattr(owner, name, crash)
sys.argv = ["peersync", *sys.argv[3:]]
from peersync.__main__ import main
main()
"""

CRASH_POINTS = [
    # (where, nth call, what has happened by then)
    ("peersync.sync.transfer:rsync_files", 1),  # plan made, journal written, nothing transferred
    ("peersync.replica.store:Store.install", 3),  # mid-batch: some files installed, not the rest
    ("peersync.replica.store:Store._quarantine_file", 1),  # a losing version replaced, not yet in conflicts/
    ("peersync.replica.store:Store._save_conflicts", 1),  # the loser is in conflicts/, not yet indexed
    ("peersync.replica.store:Store.delete", 2),  # one deletion done (to the trash), the next not
    ("peersync.replica.handler:Handler.op_ancestor_put", 1),  # the peer saved the new ancestor, this side did not
]


def mixed_edits(pair, ledger: Ledger) -> None:
    """The peer's edits win everything here, so every write of the sync lands on this (killed) side."""
    L, R = pair.local, pair.remote
    ledger.write(L, "MEMORY.md", ledger.text("memory"))
    ledger.write(L, "USER.md", ledger.text("user"))
    for i in range(6):
        ledger.write(L, f"memory/notes/n{i}.md", ledger.text(f"note {i}"))
    ledger.write(L, "memory/big.bin", ledger.text("big", 600_000))
    ledger.write(L, LOGS[0], ledger.text("- base"))
    assert run_sync(L)[0].ok
    now = time.time()
    for rel in ("MEMORY.md", "USER.md"):  # merges: both versions kept live, the pre-merge ones in conflicts/
        ledger.write(L, rel, ledger.text(f"{rel} here, older"))
        os.utime(L.root / rel, (now - 100, now - 100))
        ledger.write(R, rel, ledger.text(f"{rel} there, newer"))
        os.utime(R.root / rel, (now - 10, now - 10))
    for i in range(3):
        ledger.delete(R, f"memory/notes/n{i}.md")
    for i in range(5):
        ledger.write(R, f"memory/new-{i}.md", ledger.text(f"new {i}"))
    ledger.write(R, "memory/big.bin", ledger.text("big there", 700_000))
    ledger.write(L, LOGS[0], ledger.text("- appended here"), append=True)
    ledger.write(R, LOGS[0], ledger.text("- appended there"), append=True)


@pytest.mark.parametrize("where,nth", CRASH_POINTS, ids=[w.split(":")[1] for w, _ in CRASH_POINTS])
def test_crash_at_each_commit_point_loses_nothing_and_recovers(tmp_path, sshd, where, nth):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    ledger = Ledger()
    mixed_edits(pair, ledger)
    owed = ledger.owed(pair.local, pair.remote)
    out = subprocess.run([sys.executable, "-c", CRASHER, where, str(nth), "-w", str(pair.local.root), "sync"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert out.returncode == -signal.SIGKILL, f"the crash point was never reached: {out.stdout}{out.stderr}"
    wait_agents_gone(pair.remote)
    assert_no_partial_files(ledger, pair.local, pair.remote)
    with state_lock(pair.local.state, timeout=0):
        pass
    assert_recovers_and_converges(pair, pair.local)
    assert_nothing_lost(owed, pair.local, pair.remote)
    assert_no_partial_files(ledger, pair.local, pair.remote)


def test_temp_files_of_killed_writes_are_swept_when_old(tmp_path):
    """A SIGKILL between mkstemp and rename leaves `.peersync-*.tmp` next to a state file; the
    next run's recovery removes those older than an hour, and nothing else."""
    from peersync.replica.handler import Handler
    from peersync.workspace.storage import TEMP_MAX_AGE
    from peersync.workspace.workspace import Workspace

    ws = Workspace(tmp_path)
    old = time.time() - TEMP_MAX_AGE - 60
    places = [ws.state, ws.state / "ancestors", ws.state / "conflicts", ws.state / "trash" / "batch"]
    made = []
    for place in places:
        place.mkdir(parents=True, exist_ok=True)
        for name, when in ((".peersync-old.tmp", old), (".peersync-young.tmp", None), ("keep.tmp", old)):
            path = place / name
            path.write_bytes(b"x")
            if when:
                os.utime(path, (when, when))
            made.append(path)
    Handler(ws.root).recover()
    gone = {p for p in made if not p.exists()}
    assert gone == {place / ".peersync-old.tmp" for place in places[:3]}  # the trash is never walked


def test_a_killed_sync_leaves_an_intent_record_that_the_next_one_recovers_and_reports(tmp_path, sshd):
    """SIGKILL after the plan's intent was recorded (nothing transferred yet): the record stays, and
    the next sync with that peer recovers both sides first, says so, and clears it."""
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    ledger = Ledger()
    mixed_edits(pair, ledger)
    owed = ledger.owed(pair.local, pair.remote)
    out = subprocess.run([sys.executable, "-c", CRASHER, "peersync.sync.transfer:rsync_files", "1",
                          "-w", str(pair.local.root), "sync"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert out.returncode == -signal.SIGKILL, f"the crash point was never reached: {out.stdout}{out.stderr}"
    wait_agents_gone(pair.remote)
    [record] = journal.pending(pair.local)
    assert record["peer"] == "remote" and record["remote_id"] == pair.remote.instance_id and record["changes"] > 0
    report = run_sync(pair.local, lock_timeout=60)[0]
    assert report.ok, report.error
    assert report.notes and report.notes[0].startswith("recovered from an interrupted sync with remote")
    assert journal.pending(pair.local) == []
    assert_nothing_lost(owed, pair.local, pair.remote)
