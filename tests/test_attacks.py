"""Attacks by a compromised peer, a second local user or a wedged network, each against the real CLI
or agent over a real sshd: a directory swapped for a link mid-install, retention sent by the
peer, lines without end, a hostile instance id, changed host keys, keepers that outlive their
peer entry, child processes left behind by a heartbeat, and the state dir as another user sees it."""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from peersync.replica.scan import hash_bytes
from peersync.sync.runner import run_sync
from peersync.testing import selection_files, wire_pair
from peersync.testing.wire import AgentWire
from peersync.workspace.workspace import Workspace

pytestmark = pytest.mark.timeout(240)
EVIL_AGENT = Path(__file__).with_name("evil_agent.py")


def write(path: Path, data: bytes | str, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def cli(ws: Workspace, *args, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peersync", "-w", str(ws.root), *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)


def evil_pair(tmp_path, sshd, *options: str):
    command = shlex.join([sys.executable, str(EVIL_AGENT), *options])
    return wire_pair(tmp_path / "local", tmp_path / "remote", sshd, command=command)


def fingerprint(pubkey_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of one public key line."""
    out = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=pubkey_line + "\n", capture_output=True,
                         text=True, check=True).stdout
    return out.split()[1]


# -- hole 3: a directory swapped for a link while files are installed into it ----------------------
def test_a_directory_swapped_for_a_link_mid_batch_writes_nothing_outside(tmp_path, monkeypatch):
    from peersync.replica.handler import Handler
    from peersync.replica.store import Store

    root, outside = tmp_path / "ws", tmp_path / "outside"
    (root / "memory/sub").mkdir(parents=True)
    outside.mkdir()
    items = []
    for i in range(50):
        data = b"file %d\n" % i
        items.append({"path": f"memory/sub/f{i}.md", "data": data, "expect": None,
                      "new": [len(data), 1_700_000_000_000_000_000, 0o644, hash_bytes(data)]})
    real_install, swapped = Store.install, []

    def install(self, path, *args, **kwargs):
        result = real_install(self, path, *args, **kwargs)
        if not swapped:  # after the first file: the directory is moved away, a link takes its name
            os.rename(root / "memory/sub", root / "memory/sub-moved")
            os.symlink(outside, root / "memory/sub")
            swapped.append(path)
        return result

    monkeypatch.setattr(Store, "install", install)
    results = Handler(root).op_install(items)["results"]
    assert swapped
    assert not list(outside.iterdir())
    landed = {p.name for p in (root / "memory/sub-moved").iterdir()}
    assert {f"f{i}.md" for i, r in enumerate(results) if r["ok"]} <= landed


def test_a_pull_racing_a_link_swapper_writes_nothing_outside(tmp_path, sshd):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    outside = tmp_path / "outside"
    outside.mkdir()
    for i in range(2000):
        write(pair.remote.root / f"memory/sub/n{i:04}.md", f"note {i}\n")
    sub = pair.local.root / "memory/sub"
    sub.mkdir(parents=True)
    stop = threading.Event()

    def swapper():
        n = 0
        while not stop.is_set():
            n += 1
            try:
                os.rename(sub, sub.with_name(f"sub-{n}"))
                os.symlink(outside, sub)
                time.sleep(0.002)
                os.unlink(sub)
                os.rename(sub.with_name(f"sub-{n}"), sub)
            except OSError:
                pass
            time.sleep(0.001)

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        run_sync(pair.local)
    finally:
        stop.set()
        thread.join()
    assert not list(outside.iterdir())


# -- hole 4: each side keeps its own trash retention ----------------------------------------------------
def test_the_peer_cannot_set_this_sides_trash_retention(tmp_path, sshd):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    write(pair.local.state / "config.yaml", "sync:\n  trash_days: 0\n")
    two_days_ago = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() - 2 * 86400))
    kept = write(pair.remote.state / f"trash/{two_days_ago}-abcdef/memory/old.md", "deleted two days ago\n")
    write(pair.local.root / "MEMORY.md", "x\n")
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    assert kept.exists()  # the remote keeps 30 days, its own setting


# -- hole 6: lines without end ----------------------------------------------------------------------------
# A child's peak RSS counts the memory of the process it was spawned from (Linux keeps the high
# mark across exec, also after vfork), and pytest's own grows with the tests run before: each
# measured process is started by a small launcher that reports the peak of its child alone.
_LAUNCHER = ("import os, subprocess, sys\n"
             "child = subprocess.Popen(sys.argv[2:])\n"
             "_, status, usage = os.wait4(child.pid, 0)\n"
             "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
             "sys.exit(os.waitstatus_to_exitcode(status) & 0xff)\n")


def measured(argv: list[str], **popen) -> subprocess.Popen:
    report = Path(popen.pop("report"))
    proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(report), *argv], **popen)
    proc.report = report
    return proc


def agent_process(root: Path) -> subprocess.Popen:
    return measured([sys.executable, "-m", "peersync", "agent", "--root", str(root)], report=root.parent / "rss",
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def feed(proc: subprocess.Popen, chunks) -> threading.Thread:
    def run():
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
            proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_rss(proc: subprocess.Popen) -> tuple[int, int]:
    """(exit status, peak RSS in MB) of a process started by `measured`."""
    code = proc.wait()
    return code, int(proc.report.read_text()) // 1024


def test_the_agent_stops_reading_an_endless_request(tmp_path):
    (tmp_path / "ws").mkdir()
    proc = agent_process(tmp_path / "ws")
    head = b'{"id":1,"op":"lock","args":{"what":"'
    feed(proc, [head] + [b"a" * (1 << 20)] * 96 + [b'"}}\n'])  # a 96 MB line for a small request
    reply = proc.stdout.readline()
    code, rss = wait_rss(proc)
    from peersync.transport.protocol import decode

    answer = decode(reply)
    assert answer["ok"] is False and answer["kind"] == "protocol", answer
    assert "too large" in answer["error"] and "\n" not in answer["error"]
    assert code != 0
    assert rss < 80, f"the agent buffered the line: {rss} MB"


def test_a_large_request_is_bounded_too(tmp_path, monkeypatch):
    """The bound for the few requests that may be large (an install, an ancestor), lowered here
    so that the test need not send hundreds of megabytes."""
    import io

    from peersync.replica.handler import Handler
    from peersync.transport import protocol
    from peersync.transport.agent import serve

    monkeypatch.setattr(protocol, "LARGE_LINE", 1 << 20)
    line = b'{"id":1,"op":"ancestor_put","args":{"peer_id":"ab","manifest":{"x":"' + b"a" * (2 << 20) + b'"}}}\n'
    out = io.BytesIO()
    assert serve(Handler(tmp_path), io.BytesIO(line), out) != 0
    answer = protocol.decode(out.getvalue())
    assert answer["kind"] == "protocol" and "too large" in answer["error"]
    assert not (tmp_path / "memory/clawdbot-sync/ancestors").exists()


def test_the_client_stops_reading_an_endless_reply(tmp_path, sshd):
    pair = evil_pair(tmp_path, sshd, "--huge", f"lock:{96 << 20}")
    write(pair.local.root / "MEMORY.md", "x\n")
    proc = subprocess.Popen([sys.executable, "-m", "peersync", "-w", str(pair.local.root), "sync"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    out, err = proc.communicate(timeout=120)
    code = proc.returncode
    text = out + err
    assert code == 1, text
    assert "too large" in text and "unexpected error" not in text, text
    assert len(text.strip().splitlines()) <= 2, text
    assert not (pair.remote.root / "MEMORY.md").exists()


def test_the_client_reading_a_long_reply_stays_small(tmp_path, sshd):
    pair = evil_pair(tmp_path, sshd, "--huge", f"lock:{96 << 20}")
    write(pair.local.root / "MEMORY.md", "x\n")
    proc = measured([sys.executable, "-m", "peersync", "-w", str(pair.local.root), "sync"], report=tmp_path / "rss",
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    _, rss = wait_rss(proc)
    assert rss < 150, f"the client buffered the reply: {rss} MB"


# -- a hostile instance id ------------------------------------------------------------------------------
@pytest.mark.parametrize("evil_id", ["../../../../tmp/peersync-pwned", "x" * 5000, "ABC\ndef", ""])
def test_a_hostile_instance_id_is_refused_and_not_saved(tmp_path, sshd, evil_id):
    pair = evil_pair(tmp_path, sshd, "--evil-id", evil_id.encode().hex())
    write(pair.local.root / "MEMORY.md", "x\n")
    peers_before = pair.local.peers_file.read_bytes()
    proc = cli(pair.local, "sync")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    assert "instance id" in text and "unexpected error" not in text, text
    assert len(text.strip().splitlines()) <= 2
    assert pair.local.peers_file.read_bytes() == peers_before
    for leftover in ("journal", "ancestors"):
        assert not list((pair.local.state / leftover).glob("*")) if (pair.local.state / leftover).exists() else True
    assert not Path("/tmp/peersync-pwned.json").exists()
    assert not (pair.remote.root / "MEMORY.md").exists()
    if evil_id:  # peers add (which probes) does not save it either
        cli(pair.local, "peers", "add", "again", "127.0.0.1", *sshd.make_peer_args(path=pair.remote.root,
                                                                                    command=pair.command))
        assert "instanceId" not in pair.local.load_peers()["again"].extra


# -- hole 9: changed and unknown host keys -------------------------------------------------------------
def test_a_changed_host_key_is_refused_as_a_possible_attack(tmp_path, sshd):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    real = sshd.known_hosts.read_text().split()
    _, fake = sshd.new_client_key("not-the-host")
    fake_line = f"{real[0]} {' '.join(fake.split()[:2])}"
    known = write(tmp_path / "known_hosts", fake_line + "\n")
    peers = pair.local.load_peers()
    peers["remote"] = dataclasses.replace(peers["remote"], known_hosts=str(known))
    pair.local.save_peers(peers)
    write(pair.local.root / "MEMORY.md", "x\n")
    proc = cli(pair.local, "sync")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "CHANGED" in text and "man-in-the-middle" in text, text
    assert fingerprint(fake) in text and fingerprint(" ".join(real[1:3])) in text, text
    assert ">>" not in text and "ssh-keyscan" not in text, text
    assert known.read_text() == fake_line + "\n"
    assert not (pair.remote.root / "MEMORY.md").exists()


def test_an_unknown_host_key_shows_the_fingerprint_to_check(tmp_path, sshd):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    known = write(tmp_path / "known_hosts", "")
    peers = pair.local.load_peers()
    peers["remote"] = dataclasses.replace(peers["remote"], known_hosts=str(known))
    pair.local.save_peers(peers)
    proc = cli(pair.local, "sync")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1
    real = sshd.known_hosts.read_text().split()
    assert fingerprint(" ".join(real[1:3])) in text, text
    assert "CHANGED" not in text


def test_a_host_key_changed_before_rsync_runs_is_refused_too(tmp_path, sshd, monkeypatch):
    """The control connection verified the host; by the time rsync's ssh connects, another key
    answers (or the known_hosts entry changed): OpenSSH's warning becomes the same refusal."""
    import peersync.sync.transfer as engine

    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    known = write(tmp_path / "known_hosts", sshd.known_hosts.read_text())
    peers = pair.local.load_peers()
    peers["remote"] = dataclasses.replace(peers["remote"], known_hosts=str(known))
    pair.local.save_peers(peers)
    real = sshd.known_hosts.read_text().split()
    _, fake = sshd.new_client_key("not-the-host-either")
    real_rsync = engine.rsync_files

    async def swapped_key_then_rsync(*args, **kwargs):
        known.write_text(f"{real[0]} {' '.join(fake.split()[:2])}\n")
        return await real_rsync(*args, **kwargs)

    monkeypatch.setattr(engine, "rsync_files", swapped_key_then_rsync)
    write(pair.local.root / "memory/big.bin", os.urandom(1 << 20))
    [report] = run_sync(pair.local)
    assert not report.ok
    assert "CHANGED" in report.error and "man-in-the-middle" in report.error, report.error
    assert fingerprint(fake) in report.error and fingerprint(" ".join(real[1:3])) in report.error
    assert ">>" not in report.error


# -- hole 10: a keeper never outlives its peer entry ----------------------------------------------------
def keepers_of(ws: Workspace) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"keeper" in argv and str(ws.root).encode() in argv:
            out.append(int(entry))
    return out


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def keeper_socket(ws: Workspace, peer) -> Path:
    from peersync.transport import keeper

    return keeper.socket_path(ws, peer, peer.path)


@pytest.fixture
def kept_pair(tmp_path, sshd, monkeypatch):
    from peersync.transport.keeper import ENV_KEEP

    monkeypatch.setenv(ENV_KEEP, "120")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    write(pair.local.root / "MEMORY.md", "x\n")
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    peer = pair.peer()  # the keeper is up once it listens (it read peers.json before that)
    assert wait_until(lambda: keeper_socket(pair.local, peer).exists(), 20)
    yield pair
    for pid in keepers_of(pair.local):
        os.kill(pid, 15)


def test_removing_a_peer_ends_its_keeper(kept_pair):
    """…and drops the ancestor shared with it, and that ancestor's marshal copy."""
    ancestors = kept_pair.local.state / "ancestors"
    assert sorted(p.suffix for p in ancestors.iterdir()) == [".json", ".marshal"]
    proc = cli(kept_pair.local, "peers", "remove", "remote")
    assert proc.returncode == 0, proc.stderr
    assert wait_until(lambda: not keepers_of(kept_pair.local), 10), "the keeper outlived its peer"
    assert not list(ancestors.iterdir())


def test_changing_a_peer_ends_its_keeper(kept_pair, sshd):
    key, pub = sshd.new_client_key(f"other-{secrets.token_hex(3)}")
    sshd.add_key(pub)
    proc = cli(kept_pair.local, "peers", "add", "remote", "127.0.0.1",
               *sshd.make_peer_args(path=kept_pair.remote.root, command=kept_pair.command, identity=key),
               "--replace")  # an existing peer is replaced only on request (issue 19)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert wait_until(lambda: not keepers_of(kept_pair.local), 10), "the keeper outlived its peer entry"


def test_a_keeper_whose_peer_entry_changed_serves_no_one(kept_pair):
    import asyncio

    from peersync.transport.ssh import attach

    old = kept_pair.peer()
    peers = kept_pair.local.load_peers()
    peers["remote"] = dataclasses.replace(old, command=f"env PEERSYNC_X=1 {old.command}")
    kept_pair.local.save_peers(peers)  # by hand, behind the CLI's back

    async def stale_client():  # a process that read peers.json before the change
        session = await attach(kept_pair.local, old, old.path, 10)
        if session is not None:
            await session.close()
        return session

    assert asyncio.run(stale_client()) is None
    assert wait_until(lambda: not keepers_of(kept_pair.local), 10)


# -- hole 11: a wedged peer leaves no process behind -----------------------------------------------------
class WedgingProxy:
    """A loopback TCP proxy to sshd that forwards the first connection (peersync's control
    connection) faithfully and stops forwarding every later one (rsync's ssh) after a few bytes,
    keeping it open: a peer that wedges mid-transfer."""

    def __init__(self, port: int, wedge_after: int = 64 << 10):
        self.target, self.wedge_after = port, wedge_after
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.count = 0
        self.sockets: list[socket.socket] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.count += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            limit = None if self.count == 1 else self.wedge_after
            moved = [0]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, limit, moved), daemon=True).start()

    def _pump(self, a, b, limit, moved):
        while not self.stop.is_set():
            if limit is not None and moved[0] >= limit:
                time.sleep(0.1)  # wedged: read nothing, send nothing, close nothing
                continue
            try:
                data = a.recv(16384)
            except OSError:
                return
            if not data:
                return
            moved[0] += len(data)
            try:
                b.sendall(data)
            except OSError:
                return

    def close(self):
        self.stop.set()
        for s in [self.server, *self.sockets]:
            try:
                s.close()
            except OSError:
                pass


def processes_mentioning(marker: str) -> list[str]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in argv:
            out.append(f"{entry}: {argv[:200]}")
    return out


def test_a_wedged_peer_leaves_no_process_behind_the_heartbeat(tmp_path, sshd):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    proxy = WedgingProxy(sshd.port)
    try:
        real = sshd.known_hosts.read_text().split()
        known = write(tmp_path / "known_hosts", f"[127.0.0.1]:{proxy.port} {real[1]} {real[2]}\n")
        peers = pair.local.load_peers()
        peers["remote"] = dataclasses.replace(peers["remote"], port=proxy.port, known_hosts=str(known))
        pair.local.save_peers(peers)
        write(pair.local.state / "config.yaml", "auto:\n  enabled: true\n  timeout: 5\n")
        write(pair.local.root / "memory/big.bin", os.urandom(8 << 20))  # through rsync: a second connection
        started = time.monotonic()
        proc = cli(pair.local, "heartbeat", timeout=120)
        took = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr
        assert "failed" in proc.stdout, proc.stdout
        assert proxy.count >= 2, "rsync never started"
        left = processes_mentioning(f"-p {proxy.port}")
        assert not left, f"left behind after the heartbeat ({took:.1f} s):\n" + "\n".join(left)
    finally:
        proxy.close()


# -- a second local user ---------------------------------------------------------------------------------
def test_the_state_dir_becomes_private(tmp_path, sshd):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    for ws in (pair.local, pair.remote):
        os.chmod(ws.state, 0o755)  # as an older install, or a umask 022 mkdir, left it
    write(pair.local.root / "MEMORY.md", "x\n")
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    for ws in (pair.local, pair.remote):
        assert ws.state.stat().st_mode & 0o777 == 0o700


@pytest.fixture
def other_user():
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv"):
        pytest.skip("needs root, useradd and setpriv to act as a second local user")
    name = f"psync{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def request_cleanup():
    paths: list[Path] = []
    yield paths
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def as_user(user, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=30)


def test_a_second_local_user_cannot_steer_the_state_dir(sshd, other_user, request_cleanup):
    """A workspace in a shared folder (memory/ writable by others): another user replaces the
    state dir by one of theirs whose `staging` leads to a private directory of ours.  The next
    sync refuses the foreign state dir instead of clearing what it leads to."""
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="peersync-shared-"))
    request_cleanup.append(shared)
    os.chmod(shared, 0o711)  # traversable by others, as a home directory often is
    pair = wire_pair(shared / "local", shared / "remote", sshd)
    write(pair.local.root / "MEMORY.md", "x\n")
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    private = write(shared / "private/projects/plan.md", "mine only\n").parent.parent
    os.chmod(private, 0o700)
    os.chmod(pair.local.root / "memory", 0o777)
    state = pair.local.state
    script = (f"import os; os.rename({str(state)!r}, {str(state) + '-theirs'!r}); os.mkdir({str(state)!r}, 0o777); "
              f"os.symlink({str(private)!r}, {str(state / 'staging')!r})")
    got = as_user(other_user, sys.executable, "-c", script)
    assert got.returncode == 0, got.stderr
    proc = cli(pair.local, "sync")
    assert (private / "projects/plan.md").read_text() == "mine only\n"
    assert proc.returncode == 1 and "will not use it" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "unexpected error" not in proc.stdout + proc.stderr


def test_a_second_local_user_cannot_reach_keeper_sockets_or_state(tmp_path, sshd, other_user, monkeypatch):
    from peersync.transport.keeper import ENV_KEEP, runtime_dir

    monkeypatch.setenv(ENV_KEEP, "60")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    write(pair.local.root / "MEMORY.md", "x\n")
    [report] = run_sync(pair.local)
    assert report.ok
    try:
        assert wait_until(lambda: keepers_of(pair.local), 20)
        where = runtime_dir()
        assert wait_until(lambda: list(where.glob("*.sock")), 20)
        sockets = list(where.glob("*.sock"))
        for target in [where, *sockets]:
            probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX); "
                     f"s.connect({str(target)!r}); print('connected')")
            got = as_user(other_user, sys.executable, "-c", probe)
            assert "connected" not in got.stdout
        got = as_user(other_user, "ls", str(where))
        assert got.returncode != 0
    finally:
        for pid in keepers_of(pair.local):
            os.kill(pid, 15)


def test_a_peersync_folder_where_peersync_starts_is_never_run(tmp_path):
    """`python -m` imports from the current directory first.  The OpenClaw job runs the heartbeat
    in the workspace, and the peer's login shell starts the agent in the home folder: a
    `peersync/` folder planted in either (by anything that writes there) must not be what runs."""
    from peersync.transport.openssh import agent_command
    from peersync.workspace.openclaw import heartbeat_argv
    from peersync.workspace.peer import Peer

    ws = Workspace(tmp_path / "ws")
    ws.ensure_state()
    marker = tmp_path / "planted-code-ran"
    for folder in (ws.root / "peersync", tmp_path / "home" / "peersync"):
        folder.mkdir(parents=True)
        for name in ("__init__.py", "__main__.py"):
            (folder / name).write_text(f"open({str(marker)!r}, 'a').write('{folder.parent.name}\\n')\n")
    job = subprocess.run(heartbeat_argv(ws), cwd=ws.root, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=120)
    assert job.returncode == 0, job.stderr  # the installed peersync answered
    assert not marker.exists(), marker.read_text()
    # The agent's command line as the peer's login shell runs it, with no peersync on its PATH:
    # the last try is `python3 -m peersync`, which must not take the planted one.
    home = tmp_path / "home"
    shell = subprocess.run(["sh", "-c", agent_command(Peer(name="p", host="h"), "/srv/ws")], cwd=home,
                           env={"PATH": "/usr/bin:/bin", "HOME": str(home)}, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=60)
    assert not marker.exists(), marker.read_text()
    assert shell.returncode == 127, shell.stderr  # peersync is not installed there: said so
