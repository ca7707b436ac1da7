"""Both SSH clients a session can run on (transport/ssh.py): the system OpenSSH `ssh` (the default:
no Python SSH stack to import on a new connection) and asyncssh (where there is no `ssh`, or with
PEERSYNC_SSH_CLIENT=asyncssh) sync alike and refuse alike: a changed or unknown host key, a key
the peer does not accept, a closed port.  A session on `ssh` leaves no ssh process behind."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from peersync.testing import wire_pair
from peersync.workspace.workspace import Workspace

pytestmark = pytest.mark.timeout(240)
CLIENTS = ("openssh", "asyncssh")


def write(path: Path, data: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    return path


def cli(ws: Workspace, client: str, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PEERSYNC_SSH_CLIENT=client, PEERSYNC_KEEP_CONNECTION="0")
    return subprocess.run([sys.executable, "-m", "peersync", "-w", str(ws.root), *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=180, env=env)


def fingerprint(pubkey_line: str) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=pubkey_line + "\n", capture_output=True,
                         text=True, check=True).stdout
    return out.split()[1]


def use_known_hosts(pair, path: Path) -> None:
    peers = pair.local.load_peers()
    peers["remote"] = dataclasses.replace(peers["remote"], known_hosts=str(path))
    pair.local.save_peers(peers)


def ssh_children_of(pid: int) -> list[int]:
    """ssh processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if comm == "ssh" and ppid == pid:
            found.append(int(entry))
    return found


@pytest.mark.parametrize("client", CLIENTS)
def test_both_clients_sync_both_ways(tmp_path, sshd, client):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    write(pair.local.root / "MEMORY.md", "from the laptop\n")
    write(pair.remote.root / "USER.md", "from the mini\n")
    proc = cli(pair.local, client, "sync")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (pair.remote.root / "MEMORY.md").read_text() == "from the laptop\n"
    assert (pair.local.root / "USER.md").read_text() == "from the mini\n"


def test_a_session_on_openssh_never_imports_asyncssh(tmp_path, sshd):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    write(pair.local.root / "MEMORY.md", "x\n")
    code = ("import sys\nfrom peersync.__main__ import main\n"
            f"sys.argv = ['peersync', '-w', {str(pair.local.root)!r}, 'sync']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('asyncssh' in sys.modules, code)\n")
    env = dict(os.environ, PEERSYNC_KEEP_CONNECTION="0")
    env.pop("PEERSYNC_SSH_CLIENT", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=180)
    assert proc.stdout.split()[-2:] == ["False", "0"], proc.stdout + proc.stderr
    assert (pair.remote.root / "MEMORY.md").read_text() == "x\n"


@pytest.mark.parametrize("client", CLIENTS)
def test_a_changed_host_key_is_refused_by_both(tmp_path, sshd, client):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    real = sshd.known_hosts.read_text().split()
    _, fake = sshd.new_client_key(f"not-the-host-{client}")
    use_known_hosts(pair, write(tmp_path / "known_hosts", f"{real[0]} {' '.join(fake.split()[:2])}\n"))
    write(pair.local.root / "MEMORY.md", "x\n")
    proc = cli(pair.local, client, "sync")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "CHANGED" in text and "man-in-the-middle" in text, text
    assert fingerprint(fake) in text and fingerprint(" ".join(real[1:3])) in text, text
    assert not (pair.remote.root / "MEMORY.md").exists()


@pytest.mark.parametrize("client", CLIENTS)
def test_an_unknown_host_key_is_refused_by_both_with_its_fingerprint(tmp_path, sshd, client):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    use_known_hosts(pair, write(tmp_path / "known_hosts", ""))
    write(pair.local.root / "MEMORY.md", "x\n")
    proc = cli(pair.local, client, "sync")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert fingerprint(" ".join(sshd.known_hosts.read_text().split()[1:3])) in text, text
    assert "CHANGED" not in text
    assert not (pair.remote.root / "MEMORY.md").exists()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_key_the_peer_refuses_is_named_by_both(tmp_path, sshd, client):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    stranger, _ = sshd.new_client_key(f"stranger-{client}")  # never added to authorized_keys
    peers = pair.local.load_peers()
    peers["remote"] = dataclasses.replace(peers["remote"], identity=str(stranger))
    pair.local.save_peers(peers)
    proc = cli(pair.local, client, "sync")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 3, text
    assert "SSH key refused" in text and "ssh-copy-id" in text, text


@pytest.mark.parametrize("client", CLIENTS)
def test_a_closed_port_is_named_by_both(tmp_path, sshd, client):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    peers = pair.local.load_peers()
    peers["remote"] = dataclasses.replace(peers["remote"], port=port)
    pair.local.save_peers(peers)
    proc = cli(pair.local, client, "sync")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 3, text
    assert f"Nothing accepts connections on port {port}" in text, text


def test_an_openssh_session_leaves_no_ssh_behind(tmp_path, sshd):
    """In-process: after each sync (and a failed one) this process has no ssh child left."""
    import asyncio

    from peersync.sync.runner import run_sync

    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    os.environ.pop("PEERSYNC_SSH_CLIENT", None)
    write(pair.local.root / "MEMORY.md", "one\n")
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    assert ssh_children_of(os.getpid()) == []
    peers = pair.local.load_peers()
    stranger, _ = sshd.new_client_key("stranger-in-process")
    peers["remote"] = dataclasses.replace(peers["remote"], identity=str(stranger))
    pair.local.save_peers(peers)
    [failed] = run_sync(pair.local)
    assert not failed.ok
    asyncio.run(asyncio.sleep(0))
    assert ssh_children_of(os.getpid()) == []


@pytest.mark.parametrize("keep", ["0", "600"])
def test_a_new_connection_adopts_the_ssh_started_before_the_imports(tmp_path, sshd, keep):
    """`peersync sync` with no warm keeper starts its ssh first thing (cli/quick.py); the session
    takes that very process (transport/openssh.py) — one ssh, adopted, none left over."""
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    write(pair.local.root / "MEMORY.md", "early\n")
    code = ("import sys\nimport peersync.transport.openssh as o\n"
            "taken, real, started = [], o.adopt, o.spawn\n"
            "o.adopt = lambda args: taken.append(real(args)) or taken[-1]\n"
            "spawned = []\n"
            "o.spawn = lambda args: spawned.append(started(args)) or spawned[-1]\n"
            "from peersync.__main__ import main\n"
            f"sys.argv = ['peersync', '-w', {str(pair.local.root)!r}, 'sync']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print(code, len(spawned), sum(p is not None for p in taken), len(o._EARLY))\n")
    env = dict(os.environ, PEERSYNC_KEEP_CONNECTION=keep)
    env.pop("PEERSYNC_SSH_CLIENT", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=180)
    assert proc.stdout.split()[-4:] == ["0", "1", "1", "0"], proc.stdout + proc.stderr
    assert (pair.remote.root / "MEMORY.md").read_text() == "early\n"
    if keep != "0":  # the keeper it left runs the next sync: nothing is started early then
        import time

        from peersync.transport import keeper

        ws = Workspace(pair.local.root)
        sock = keeper.socket_path(ws, ws.peer("remote"), str(pair.remote.root))
        deadline = time.monotonic() + 60
        while not keeper._alive(sock) and time.monotonic() < deadline:
            time.sleep(0.1)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=180)
        assert proc.stdout.split()[-4:] == ["0", "0", "0", "0"], proc.stdout + proc.stderr
        subprocess.run([sys.executable, "-m", "peersync", "-w", str(pair.local.root), "peers", "remove", "remote"],
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=60)  # its keeper goes too


def test_the_selection_travels_behind_the_lock_without_waiting_a_round_trip(tmp_path, sshd, monkeypatch, wire_events):
    """On a 20-50 ms tailnet every round trip a sync waits for shows (scripts/bench_rtt.py counts
    them): the hello that times the clock offset, the lock, the selection and (once the peer has a
    workspace) the scan are all sent before the first of them is answered, and the agent still
    takes them in order — the offset is timed on a hello answered first."""
    from peersync.sync.runner import run_sync

    monkeypatch.setenv("PEERSYNC_KEEP_CONNECTION", "0")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    write(pair.local.root / "MEMORY.md", "x\n")
    events = wire_events
    report = run_sync(pair.local)[0]
    assert report.ok, report.error
    assert (pair.remote.root / "MEMORY.md").read_text() == "x\n"
    order = [e for e in events if e[1] in ("hello", "lock", "selection", "scan")]
    assert order[:6] == [("sent", "hello"), ("sent", "lock"), ("sent", "selection"), ("answered", "hello"),
                         ("answered", "lock"), ("answered", "selection")], events
    assert order[6:] == [("sent", "scan"), ("answered", "scan")]  # (no instance id in its hello yet: after the lock)
    events.clear()
    write(pair.local.root / "MEMORY.md", "y\n")
    (pair.remote.state / "trash").mkdir(exist_ok=True)
    marker = pair.remote.state / "trash.purged"  # touched by a housekeeping that looked at the trash
    marker.unlink(missing_ok=True)
    report = run_sync(pair.local)[0]
    assert report.ok, report.error
    assert (pair.remote.root / "MEMORY.md").read_text() == "y\n"
    # The peer's housekeeping is done, still under its lock, in the bye's round trip.
    assert marker.exists()
    assert events[-4:] == [("sent", "housekeeping"), ("sent", "bye"), ("answered", "housekeeping"),
                           ("answered", "bye")], events
    order = [e for e in events if e[1] in ("hello", "lock", "selection", "scan")]
    assert order == [("sent", "hello"), ("sent", "lock"), ("sent", "selection"), ("sent", "scan"),
                     ("answered", "hello"), ("answered", "lock"), ("answered", "selection"), ("answered", "scan")], events
    # A peer with no workspace yet is asked to make one first, on the spot: still behind the hello.
    events.clear()
    other = wire_pair(tmp_path / "c", tmp_path / "d", sshd)
    peers = other.local.load_peers()
    peers["remote"] = dataclasses.replace(peers["remote"], path=str(tmp_path / "new"))
    other.local.save_peers(peers)
    write(other.local.root / "MEMORY.md", "z\n")
    assert run_sync(other.local)[0].ok
    assert [e for e in events if e[0] == "sent"][:2] == [("sent", "hello"), ("sent", "init")], events
    assert (tmp_path / "new" / "MEMORY.md").read_text() == "z\n"


def test_a_busy_peers_agent_refuses_the_scan_sent_behind_its_lock(tmp_path, sshd, monkeypatch, wire_events):
    """Another sync holds the peer: the run stops with its busy error; the scan that went behind
    the lock is refused by the agent (nothing walked, no stat cache written there) and its answer
    dropped here; the clock offset of a run that stopped before settling it is unknown, not 0."""
    from peersync.sync import pipeline
    from peersync.sync.runner import run_sync
    from peersync.workspace.lock import state_lock

    monkeypatch.setenv("PEERSYNC_KEEP_CONNECTION", "0")
    monkeypatch.setattr(pipeline, "REMOTE_LOCK_WAIT", 0.3)
    monkeypatch.setattr(pipeline, "REMOTE_LOCK_YIELD", 0.3)
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    old = os.stat(write(pair.local.root / "MEMORY.md", "x\n")).st_mtime - 60
    os.utime(pair.local.root / "MEMORY.md", (old, old))  # (not racy: a scan would cache it)
    assert run_sync(pair.local)[0].ok
    cache = pair.remote.state / "scan-cache.json"
    cache.unlink(missing_ok=True)
    write(pair.local.root / "USER.md", "y\n")
    wire_events.clear()
    with state_lock(pair.remote.state, 10, what="another sync"):
        [report] = run_sync(pair.local)
    assert report.error_kind == "busy" and report.clock_offset is None, report.error
    assert ("sent", "scan") in wire_events and not (pair.remote.root / "USER.md").exists()
    assert not cache.exists()


def hold_answers(monkeypatch, events: list, ops: tuple[str, ...], *, until: str) -> None:
    """This process takes the answers to `ops` only once `until` was sent (or after 2 s), as a
    peer a round trip away would make it: what goes out meanwhile shows on the wire first."""
    from peersync.transport import ssh

    receive = ssh.Session._receive

    async def held(self, op):
        if op in ops:
            for _ in range(200):
                if ("sent", until) in events:
                    break
                await asyncio.sleep(0.01)
        return await receive(self, op)

    monkeypatch.setattr(ssh.Session, "_receive", held)


def test_the_peers_deletion_records_need_no_round_trip_of_their_own(tmp_path, sshd, monkeypatch, wire_events):
    """Files made and deleted on both sides, with deletion records on both: the agent's records of
    what it deleted come with its scan, and those of what we made are asked for while it scans and
    answered right behind it — no tombstones_get waits after the scan.  (The scan's answer is held
    here until that request went out, as a peer slower to scan than this side would make it.)"""
    from peersync.sync.runner import run_sync

    monkeypatch.setenv("PEERSYNC_KEEP_CONNECTION", "0")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    for name in ("MEMORY.md", "memory/a.md", "memory/b.md"):
        write(pair.local.root / name, f"{name}\n")
    assert run_sync(pair.local)[0].ok
    (pair.local.root / "memory/a.md").unlink()
    assert run_sync(pair.local)[0].ok  # a deletion on record on both sides
    write(pair.local.root / "memory/new.md", "made here\n")
    (pair.remote.root / "memory/b.md").unlink()
    write(pair.remote.root / "memory/there.md", "made there\n")
    hold_answers(monkeypatch, wire_events, ("scan",), until="tombstones_get")
    wire_events.clear()
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    assert (pair.remote.root / "memory/new.md").read_text() == "made here\n"
    assert (pair.local.root / "memory/there.md").read_text() == "made there\n"
    assert not (pair.local.root / "memory/b.md").exists()
    sent = [op for what, op in wire_events if what == "sent"]
    assert sent.count("tombstones_get") == 1, wire_events
    assert wire_events.index(("sent", "tombstones_get")) < wire_events.index(("answered", "scan")), wire_events


def test_a_copy_to_the_peer_installs_without_waiting_for_the_questions_asked_of_it(tmp_path, sshd, monkeypatch,
                                                                                   wire_events):
    """Notes edited on each side: the peer is asked what the carries of those mergeable files need
    (merge_bases) and for its note's bytes (read), and our note is installed there in the same
    round trip — not after those answers came back.  (Their answers are held here until the
    install went out, as a tailnet's round trip would; the agent takes all three in order.)"""
    from peersync.replica.handler import Handler
    from peersync.replica.scan import hash_bytes
    from peersync.sync.runner import run_sync

    monkeypatch.setenv("PEERSYNC_KEEP_CONNECTION", "0")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    for name in ("MEMORY.md", "memory/a.md", "memory/b.md"):
        write(pair.local.root / name, f"{name}\n")
    assert run_sync(pair.local)[0].ok
    write(pair.local.root / "memory/a.md", "a, edited here\n")
    write(pair.remote.root / "memory/b.md", "b, edited there\n")
    hold_answers(monkeypatch, wire_events, ("merge_bases", "read"), until="install")
    wire_events.clear()
    [report] = run_sync(pair.local)
    assert report.ok and report.pushed == ["memory/a.md"] and report.pulled == ["memory/b.md"], report.error
    assert (pair.remote.root / "memory/a.md").read_text() == "a, edited here\n"
    assert (pair.local.root / "memory/b.md").read_text() == "b, edited there\n"
    for op in ("merge_bases", "read"):
        assert wire_events.index(("sent", "install")) < wire_events.index(("answered", op)), wire_events
    # Each asked once: the copy from the peer takes the bytes read ahead, the carry the answers.
    sent = [op for what, op in wire_events if what == "sent"]
    assert sent.count("read") == sent.count("merge_bases") == sent.count("install") == 1, wire_events
    # and the note installed there is kept there as the next merge's base, as ever
    digest = hash_bytes(b"a, edited here\n")
    assert Handler(pair.remote.root).op_logbase_get([digest]).get(digest) == b"a, edited here\n"


def test_the_peers_deletion_records_go_out_with_the_saves_behind_them(tmp_path, sshd, monkeypatch, wire_events):
    """A sync that buries a deletion sends the peer its records and, without waiting for their
    answer, the saves behind them; the agent writes the records first, then the ancestor."""
    from peersync.replica import tombstones
    from peersync.sync.runner import run_sync

    monkeypatch.setenv("PEERSYNC_KEEP_CONNECTION", "0")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    for name in ("MEMORY.md", "memory/a.md"):
        write(pair.local.root / name, f"{name}\n")
    assert run_sync(pair.local)[0].ok
    (pair.remote.root / "memory/a.md").unlink()
    wire_events.clear()
    [report] = run_sync(pair.local)
    assert report.ok and not (pair.local.root / "memory/a.md").exists(), report.error
    assert "memory/a.md" in tombstones.lookup(pair.remote.state / tombstones.FILE, ["memory/a.md"])
    assert "memory/a.md" in tombstones.lookup(pair.local.state / tombstones.FILE, ["memory/a.md"])
    assert wire_events.index(("sent", "ancestor_put")) < wire_events.index(("answered", "tombstones_add")), wire_events
    assert wire_events.index(("sent", "tombstones_add")) < wire_events.index(("sent", "ancestor_put"))


def test_deletion_records_the_peer_could_not_write_leave_both_ancestors_as_they_were(tmp_path, sshd, monkeypatch):
    """The peer cannot write its deletion records (here its tombstones file is a folder): the
    ancestor sent behind them is refused there, ours is not saved either, and the run fails
    saying so; once the peer can write again, the next sync records them on both sides."""
    from peersync.replica import tombstones
    from peersync.replica.handler import Handler
    from peersync.sync.runner import run_sync

    monkeypatch.setenv("PEERSYNC_KEEP_CONNECTION", "0")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    for name in ("MEMORY.md", "memory/a.md"):
        write(pair.local.root / name, f"{name}\n")
    assert run_sync(pair.local)[0].ok
    local_id, remote_id = pair.local.instance_id, pair.remote.instance_id
    theirs = Handler(pair.remote.root).op_ancestor_digest(local_id)
    ours = Handler(pair.local.root).op_ancestor_digest(remote_id)
    blocked = pair.remote.state / tombstones.FILE
    blocked.mkdir()
    (pair.remote.root / "memory/a.md").unlink()
    [report] = run_sync(pair.local)
    assert not report.ok and "tombstones_add" in report.error, report.error
    assert Handler(pair.remote.root).op_ancestor_digest(local_id) == theirs
    assert Handler(pair.local.root).op_ancestor_digest(remote_id) == ours
    blocked.rmdir()
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    assert not (pair.local.root / "memory/a.md").exists()
    assert "memory/a.md" in tombstones.lookup(blocked, ["memory/a.md"])


def test_the_merge_bases_a_sync_keeps_on_the_peer_go_out_with_its_commit(tmp_path, sshd, monkeypatch, wire_events):
    """The versions a peer keeps as the next merge's bases (bases_keep) do not wait a round trip of
    their own: they are sent right before the commit's saves, which the agent takes after them."""
    from peersync.sync.runner import run_sync

    monkeypatch.setenv("PEERSYNC_KEEP_CONNECTION", "0")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    write(pair.local.root / "MEMORY.md", "a\nb\n")
    assert run_sync(pair.local)[0].ok
    write(pair.local.root / "MEMORY.md", "a\nb\nlocal\n")
    write(pair.remote.root / "MEMORY.md", "remote\na\nb\n")
    wire_events.clear()
    [report] = run_sync(pair.local)
    assert report.ok and report.merged == ["MEMORY.md"], report.error
    merged = "remote\na\nb\nlocal\n"
    assert (pair.local.root / "MEMORY.md").read_text() == merged == (pair.remote.root / "MEMORY.md").read_text()
    sent = [op for what, op in wire_events if what == "sent"]
    first = sent.index("bases_keep")
    assert sent[first + 1:first + 3] == ["logbase_save", "ancestor_put"], wire_events
    assert wire_events.index(("sent", "ancestor_put")) < wire_events.index(("answered", "bases_keep"))
    # and the peer kept them: the version merged in from this side, which it never held before
    from peersync.replica.handler import Handler
    from peersync.replica.scan import hash_bytes

    ours = hash_bytes(b"a\nb\nlocal\n")
    assert Handler(pair.remote.root).op_logbase_get([ours]).get(ours) == b"a\nb\nlocal\n"
