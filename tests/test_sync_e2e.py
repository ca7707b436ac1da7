"""End-to-end sync between two workspaces over a real loopback sshd with real rsync."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peersync.core.types import Mode, Policy
from peersync.sync.runner import run_sync
from peersync.testing.pair import wire_pair
from peersync.testing.trees import selection_files, tree_digest
from peersync.testing.workspace_gen import generate
from peersync.transport.protocol import encode
from peersync.workspace.workspace import Workspace

EVIL_AGENT = Path(__file__).with_name("evil_agent.py")
WHOLE = "memory/notes/plan.txt"  # not in sync.merge: a conflict there goes to the policy (whole file)


def cli(ws, *args, check=False):
    proc = subprocess.run([sys.executable, "-m", "peersync", "-w", str(Workspace(ws).root if not isinstance(ws, Workspace) else ws.root), *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=180)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def sync(ws, *names, **kw):
    reports = run_sync(ws, list(names) or None, **kw)
    for r in reports:
        assert r.ok, r.error
    return reports[0] if len(reports) == 1 else reports


@pytest.fixture
def pair(tmp_path, sshd):
    return wire_pair(tmp_path / "local", tmp_path / "remote", sshd)


def write(ws, rel, text, mtime=None):
    path = ws.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def read(ws, rel):
    return (ws.root / rel).read_text()


def record_requests(monkeypatch) -> list[tuple[str, dict, object]]:
    """(op, args, result) of every request to the peer's agent from now on."""
    from peersync.transport import ssh as remote_mod

    seen = []
    original = remote_mod.Session.request

    async def spy(self, op, **args):
        result = await original(self, op, **args)
        seen.append((op, args, result))
        return result

    monkeypatch.setattr(remote_mod.Session, "request", spy)
    return seen


def forbid_rsync(monkeypatch, why: str) -> None:
    from peersync.sync import transfer

    async def no_rsync(*args, **kwargs):
        raise AssertionError(why)

    monkeypatch.setattr(transfer, "rsync_files", no_rsync)


def test_generated_workspaces_converge_and_private_files_stay_home(pair):
    generate(pair.local.root, files=1500, seed=1)
    generate(pair.remote.root, files=1500, seed=2)
    identity = {w: (w.root / "IDENTITY.md").read_bytes() for w in (pair.local, pair.remote)}
    config = {w: selection_files_of(w.root / "config") for w in (pair.local, pair.remote)}
    before_union = set(selection_files(pair.local)) | set(selection_files(pair.remote))
    report = sync(pair.local)
    assert report.pushed and report.pulled
    local, remote = selection_files(pair.local), selection_files(pair.remote)
    assert local == remote
    assert set(local) == before_union  # a union: nothing was deleted without an ancestor
    for w in (pair.local, pair.remote):  # never synced: identity, config, state
        assert (w.root / "IDENTITY.md").read_bytes() == identity[w]
        assert selection_files_of(w.root / "config") == config[w]
    local_peers = json.loads((pair.local.state / "peers.json").read_text())
    remote_peers = json.loads((pair.remote.state / "peers.json").read_text())
    assert set(local_peers["peers"]) == {"remote"} and set(remote_peers["peers"]) == {"local"}
    again = sync(pair.local)
    assert not again.changed


def selection_files_of(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def test_edits_creations_deletions_propagate_both_ways(pair):
    L, R = pair.local, pair.remote
    for rel in ("memory/a.md", "memory/b.md", "memory/c.md", "memory/d.md", "USER.md"):
        write(L, rel, f"{rel} v1\n")
    sync(L)
    assert selection_files(L) == selection_files(R)
    write(L, "memory/a.md", "a edited locally\n")
    write(R, "memory/b.md", "b edited remotely\n")
    write(L, "memory/new-local.md", "new here\n")
    write(R, "memory/sub/new-remote.md", "new there\n")
    (L.root / "memory/c.md").unlink()
    (R.root / "memory/d.md").unlink()
    (R.root / "USER.md").unlink()  # deleted there …
    write(L, "USER.md", "… but edited here: the edit wins\n")
    report = sync(L)
    assert selection_files(L) == selection_files(R)
    files = selection_files(L)
    assert files["memory/a.md"] == b"a edited locally\n"
    assert files["memory/b.md"] == b"b edited remotely\n"
    assert "memory/c.md" not in files and "memory/d.md" not in files
    assert files["USER.md"] == b"\xe2\x80\xa6 but edited here: the edit wins\n"
    assert "memory/sub/new-remote.md" in files and "memory/new-local.md" in files
    assert report.deleted_remote == ["memory/c.md"] and report.deleted_local == ["memory/d.md"]
    # deletions went to the trash, not away
    assert list((R.state / "trash").rglob("c.md")) and list((L.state / "trash").rglob("d.md"))
    second = sync(L)
    assert not second.changed
    # the other side can start the next sync too (ancestor stored on both sides)
    write(R, "memory/a.md", "edited there after\n")
    third = sync(R, "local")
    assert third.pushed == ["memory/a.md"]
    assert read(L, "memory/a.md") == "edited there after\n"


def test_conflict_newest_wins_and_loser_is_quarantined(pair):
    L, R = pair.local, pair.remote
    write(L, WHOLE, "base\n")
    sync(L)
    now = time.time()
    write(L, WHOLE, "local edit (older)\n", mtime=now - 100)
    write(R, WHOLE, "remote edit (newer)\n", mtime=now - 10)
    report = sync(L)
    assert read(L, WHOLE) == read(R, WHOLE) == "remote edit (newer)\n"
    assert [c.path for c in report.conflicts] == [WHOLE]
    cid = report.conflicts[0].saved_as
    assert cid and report.conflicts[0].side == "local"
    listed = json.loads(cli(L, "--json", "conflicts", "list", check=True).stdout)["conflicts"]
    assert [c["id"] for c in listed] == [cid]
    shown = cli(L, "conflicts", "show", cid, check=True).stdout
    assert shown == "local edit (older)\n"
    text = cli(L, "history").stdout
    assert "⚠️" in text
    # restore swaps: the quarantined version comes back, the current one is quarantined
    cli(L, "conflicts", "restore", cid, check=True)
    assert read(L, WHOLE) == "local edit (older)\n"
    listed = json.loads(cli(L, "--json", "conflicts", "list", check=True).stdout)["conflicts"]
    assert [c["path"] for c in listed] == [WHOLE] and listed[0]["id"] != cid
    cli(L, "conflicts", "drop", listed[0]["id"], check=True)
    assert json.loads(cli(L, "--json", "conflicts", "list", check=True).stdout)["conflicts"] == []


@pytest.mark.skipif(not Path("/usr/bin/faketime").exists(), reason="needs Debian's faketime")
def test_newest_follows_clock_offset_corrected_times(tmp_path, sshd):
    # The peer's clock runs 600 s ahead.  Its edit was made 60 s before ours in real time, but
    # its raw mtime says "540 s in the future": the corrected comparison must pick ours.
    skewed = f"faketime -f +600s {shlex.quote(sys.executable)} -m peersync"
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd, command=skewed)
    L, R = pair.local, pair.remote
    write(L, WHOLE, "base\n")
    sync(L)
    now = time.time()
    write(R, WHOLE, "peer edit, really older\n", mtime=now + 600 - 60)
    write(L, WHOLE, "our edit, really newer\n", mtime=now)
    report = sync(L)
    assert 590 < report.clock_offset < 610
    assert read(L, WHOLE) == read(R, WHOLE) == "our edit, really newer\n"
    assert report.conflicts[0].side == "remote" and report.conflicts[0].kept == "local"
    quarantined = list((R.state / "conflicts").rglob(WHOLE))
    assert [p.read_text() for p in quarantined] == ["peer edit, really older\n"]


def test_logs_append_merge_on_both_sides(pair):
    L, R = pair.local, pair.remote
    write(L, "memory/2026-01-26.md", "# 2026-01-26\n- morning\n")
    write(L, "memory/agent/events.jsonl", '{"n":1}\n')
    sync(L)
    write(L, "memory/2026-01-26.md", "# 2026-01-26\n- morning\n- laptop noon\n")
    write(R, "memory/2026-01-26.md", "# 2026-01-26\n- morning\n- mac-mini evening\n")
    write(L, "memory/agent/events.jsonl", '{"n":1}\n{"n":2,"from":"laptop"}\n')
    write(R, "memory/agent/events.jsonl", '{"n":1}\n{"n":3,"from":"mini"}\n{"n":4,"from":"mini"}\n')
    report = sync(L)
    assert sorted(report.merged) == ["memory/2026-01-26.md", "memory/agent/events.jsonl"]
    assert not report.conflicts
    for rel in report.merged:
        assert (L.root / rel).read_bytes() == (R.root / rel).read_bytes()
    note = read(L, "memory/2026-01-26.md")
    assert note.startswith("# 2026-01-26\n- morning\n")
    assert "- laptop noon\n" in note and "- mac-mini evening\n" in note
    events = [json.loads(line) for line in read(L, "memory/agent/events.jsonl").splitlines()]
    assert sorted(e["n"] for e in events) == [1, 2, 3, 4]
    # fast-forward: only one side appended → a plain copy, no merge
    write(R, "memory/agent/events.jsonl", read(R, "memory/agent/events.jsonl") + '{"n":5}\n')
    report = sync(L)
    assert report.pulled == ["memory/agent/events.jsonl"] and not report.merged
    assert not sync(L).changed


def test_large_files_go_through_rsync_and_verify(pair):
    L, R = pair.local, pair.remote
    big = os.urandom(3 << 20)
    write(L, "memory/big.bin", big)
    write(R, "memory/other.bin", os.urandom(2 << 20))
    sync(L)
    assert (R.root / "memory/big.bin").read_bytes() == big
    assert selection_files(L) == selection_files(R)
    write(L, "memory/big.bin", big + b"appended")
    report = sync(L)
    assert report.pushed == ["memory/big.bin"]
    assert (R.root / "memory/big.bin").read_bytes() == big + b"appended"
    assert not list((R.state / "staging").iterdir())


def test_dry_run_and_diff_change_nothing(pair):
    L, R = pair.local, pair.remote
    generate(L.root, files=300, seed=3)
    generate(R.root, files=300, seed=4)
    sync(L)
    write(L, "MEMORY.md", "changed here\n")
    write(R, "memory/2026-01-26.md", "changed there\n")
    (R.root / "USER.md").unlink()
    before = (tree_digest(L.root, mtimes=True), tree_digest(R.root, mtimes=True))
    out = cli(L, "diff")
    assert out.returncode == 0, out.stderr
    assert "Dry run" in out.stdout and "MEMORY.md" in out.stdout
    doc = json.loads(cli(L, "--json", "sync", "--dry-run").stdout)
    assert doc["reports"][0]["dry_run"] and doc["reports"][0]["pushed"]
    after = (tree_digest(L.root, mtimes=True), tree_digest(R.root, mtimes=True))
    assert before == after


def test_push_and_pull_are_one_way_and_keep_the_unseen(pair):
    L, R = pair.local, pair.remote
    write(L, "memory/a.md", "a\n")
    sync(L)
    write(L, "memory/a.md", "a from local\n")
    write(R, "memory/a.md", "a from remote, never seen here\n")
    write(R, "memory/only-remote.md", "x\n")
    report = run_sync(L, mode=Mode.PUSH)[0]
    assert report.ok, report.error
    assert read(R, "memory/a.md") == "a from local\n"
    assert not (R.root / "memory/only-remote.md").exists()
    kept = [p.read_text() for p in (R.state / "conflicts").rglob("a.md")]
    assert kept == ["a from remote, never seen here\n"]
    assert list((R.state / "trash").rglob("only-remote.md"))
    write(R, "memory/b.md", "b\n")
    report = run_sync(L, mode=Mode.PULL)[0]
    assert report.ok and report.pulled == ["memory/b.md"]


def test_skip_and_manual_policies_keep_both(pair):
    L, R = pair.local, pair.remote
    write(L, WHOLE, "base\n")
    sync(L)
    write(L, WHOLE, "mine\n")
    write(R, WHOLE, "theirs\n")
    report = sync(L, policy=Policy.SKIP)
    assert read(L, WHOLE) == "mine\n" and read(R, WHOLE) == "theirs\n"
    assert report.conflicts and report.conflicts[0].kept == "both"
    report = sync(L, policy=Policy.MANUAL)
    assert read(L, WHOLE) == "mine\n" and read(R, WHOLE) == "theirs\n"
    assert [p.read_text() for p in (L.state / "conflicts").rglob(WHOLE)] == ["theirs\n"]
    assert [p.read_text() for p in (R.state / "conflicts").rglob(WHOLE)] == ["mine\n"]
    sync(L, policy=Policy.MANUAL)  # the same versions are not quarantined twice
    assert len(list((L.state / "conflicts").rglob(WHOLE))) == 1


def test_mass_delete_guard_stops_then_force_allows(pair):
    L, R = pair.local, pair.remote
    for i in range(20):
        write(L, f"memory/notes/n{i}.md", f"{i}\n")
    sync(L)
    for i in range(15):
        (R.root / f"memory/notes/n{i}.md").unlink()
    before = (selection_files(L), selection_files(R))
    report = run_sync(L)[0]
    assert not report.ok and "--force" in report.error
    assert (selection_files(L), selection_files(R)) == before
    assert not (L.state / "trash").exists() and not (R.state / "trash").exists()
    out = cli(L, "sync")
    assert out.returncode == 1 and "--force" in out.stderr + out.stdout
    report = sync(L, force=True)
    assert len(report.deleted_local) == 15


# -- bad input --------------------------------------------------------------------------


def test_malformed_peers_json_exit_2_untouched(tmp_path):
    ws = Workspace(tmp_path)
    ws.ensure_state()
    bad = '{"peers": {"mac-mini": {"host": "1.2.3.4",}}'
    ws.peers_file.write_text(bad)
    for args in (["sync"], ["peers", "list"], ["peers", "add", "x", "127.0.0.1", "--no-test"], ["status"]):
        out = cli(tmp_path, *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert "peers.json" in out.stderr and "line 1" in out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2
    assert ws.peers_file.read_text() == bad


def test_malformed_config_yaml_exit_2(tmp_path):
    ws = Workspace(tmp_path)
    ws.ensure_state()
    ws.config_file.write_text("sync:\n  policy: [unclosed\n")
    ws.save_peers({})
    out = cli(tmp_path, "sync")
    assert out.returncode == 2 and "config.yaml" in out.stderr and "Traceback" not in out.stderr


def test_clawdbot_peers_json_loads_unchanged(tmp_path):
    ws = Workspace(tmp_path)
    ws.ensure_state()
    original = {"peers": {"mac-mini": {"host": "100.95.193.55", "user": "clawdbot",
                                       "path": "/Users/clawdbot/clawd", "addedAt": "2026-01-26T10:00:00Z"}}}
    ws.peers_file.write_text(json.dumps(original))
    doc = json.loads(cli(tmp_path, "--json", "peers", "list", check=True).stdout)
    assert doc["peers"] == [{"name": "mac-mini", "host": "100.95.193.55", "user": "clawdbot",
                             "path": "/Users/clawdbot/clawd", "added_at": "2026-01-26T10:00:00Z", "port": None,
                             "identity": None, "known_hosts": None, "remote_command": None, "type": "ssh",
                             "instance_id": None}]
    assert json.loads(ws.peers_file.read_text()) == original  # the file keeps clawdbot-sync's format


def test_unknown_peer(tmp_path, pair):
    out = cli(pair.local, "sync", "nope")
    assert out.returncode == 2 and "unknown peer 'nope'" in out.stderr and "remote" in out.stderr


def test_unreachable_host_fails_fast(tmp_path):
    ws = Workspace(tmp_path)
    ws.ensure_state()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)  # accepts TCP, never says a word
    cli(ws, "peers", "add", "down", "127.0.0.1", "--port", str(port), "--no-test", check=True)
    cli(ws, "peers", "add", "mute", "127.0.0.1", "--port", str(silent.getsockname()[1]), "--no-test", check=True)
    started = time.monotonic()
    out = cli(ws, "sync", "down")
    assert out.returncode == 3 and "cannot reach down" in out.stdout + out.stderr  # 3: a peer is down
    assert "Connection refused" in out.stdout + out.stderr
    assert time.monotonic() - started < 30
    started = time.monotonic()
    reports = run_sync(ws, ["mute"], connect_timeout=2)
    assert not reports[0].ok and "mute" in reports[0].error
    assert time.monotonic() - started < 15
    silent.close()


def test_unknown_host_key_is_refused_and_nothing_moves(pair, tmp_path):
    L, R = pair.local, pair.remote
    write(L, "MEMORY.md", "secret memory\n")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    peer = L.peer("remote")
    cli(L, "peers", "set", "remote", "--known-hosts", str(empty), "--no-test", check=True)
    before = (selection_files(L), tree_digest(R.root))
    out = cli(L, "sync")
    assert out.returncode == 1  # a refusal to look at, not a peer that is down (3)
    assert "host key" in out.stdout and "ssh-keyscan" in out.stdout
    assert (selection_files(L), tree_digest(R.root)) == before  # the peer was never touched
    assert not (R.root / "MEMORY.md").exists()


@pytest.mark.parametrize("evil", ["../../etc/passwd", "/etc/passwd", "memory/clawdbot-sync/peers.json",
                                  "memory/../../x", "IDENTITY.md", "memory/a\x00b"])
def test_hostile_paths_from_a_peer_are_refused(tmp_path, sshd, evil):
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(EVIL_AGENT))} --evil {evil.encode().hex()}"
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd, command=command)
    write(pair.local, "MEMORY.md", "mine\n")
    write(pair.remote, "memory/x.md", "x\n")
    before = (selection_files(pair.local), selection_files(pair.remote))
    passwd = Path("/etc/passwd").read_bytes()
    reports = run_sync(pair.local)
    assert not reports[0].ok
    assert "refusing" in reports[0].error
    assert (selection_files(pair.local), selection_files(pair.remote)) == before
    for ws in (pair.local, pair.remote):
        assert not (ws.state / "conflicts").exists() and not (ws.state / "trash").exists()
        assert not (ws.state / "ancestors").exists()
    assert not (pair.local.root / "memory/x.md").exists() and not (pair.remote.root / "MEMORY.md").exists()
    assert Path("/etc/passwd").read_bytes() == passwd


def test_agent_refuses_hostile_paths_in_requests(tmp_path):
    from peersync.replica.handler import Handler

    root = tmp_path / "ws"
    (root / "memory").mkdir(parents=True)
    handler = Handler(root)
    for evil in ("../x", "/etc/passwd", "memory/clawdbot-sync/peers.json", "IDENTITY.md", "config/a"):
        result = handler.op_install([{"path": evil, "data": b"x", "expect": None,
                                      "new": [1, 1, 0o644, "0" * 32]}])["results"][0]
        assert not result["ok"], evil
    assert not (tmp_path / "x").exists()
    with pytest.raises(Exception):
        handler.op_read(["../../etc/passwd"])


def test_restricted_key_runs_only_agent_and_confined_rsync(tmp_path, sshd):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    key, pub = sshd.new_client_key("restricted")
    root = pair.remote.root
    forced = f"{sys.executable} -m peersync agent --restrict {root}"
    sshd.add_key(pub, options=f'command="{forced}",restrict')
    cli(pair.local, "peers", "set", "remote", "--identity", str(key), check=True)
    big = os.urandom(2 << 20)  # large enough to travel through rsync, not inline
    write(pair.local, "memory/big.bin", big)
    write(pair.remote, "memory/there.md", "there\n")
    report = sync(pair.local)
    assert (root / "memory/big.bin").read_bytes() == big
    assert (pair.local.root / "memory/there.md").read_text() == "there\n"
    assert selection_files(pair.local) == selection_files(pair.remote)
    ssh = ["ssh", *sshd.ssh_base_args(identity=key), sshd.target]
    # a shell command is not run: the agent answers instead, and nothing of /etc/passwd comes back
    out = subprocess.run(ssh + ["cat /etc/passwd"], capture_output=True, timeout=30, input=b"")
    assert b"root:x:0:0" not in out.stdout
    # rsync reading outside ROOT is refused
    dest = tmp_path / "stolen"
    dest.mkdir()
    rsh = shlex.join(["ssh", *sshd.ssh_base_args(identity=key)])
    for src in ("/etc/passwd", f"{root}/../../etc/passwd", "/root/.ssh/"):
        got = subprocess.run(["rsync", "-e", rsh, f"{sshd.target}:{src}", str(dest) + "/"],
                             capture_output=True, timeout=30)
        assert got.returncode != 0
    assert not any(dest.iterdir())
    # and a files-from list naming ../ paths cannot escape either
    got = subprocess.run(["rsync", "-e", rsh, "--files-from=-", "--from0", f"{sshd.target}:{root}/", str(dest) + "/"],
                         input=b"../../etc/passwd\0", capture_output=True, timeout=30)
    assert not (dest / "etc").exists() and not list(dest.rglob("passwd"))


def test_noop_sync_sends_only_the_difference_from_the_shared_ancestor(pair, monkeypatch):
    generate(pair.local.root, files=300, seed=5)
    sync(pair.local)
    replies = record_requests(monkeypatch)
    assert not sync(pair.local).changed
    scans = [r for op, _, r in replies if op == "scan"]
    assert scans[0]["delta"] and scans[0]["entries"] == {} and scans[0]["deleted"] == []
    assert "ancestor_get" not in [op for op, _, _ in replies] and "ancestor_put" not in [op for op, _, _ in replies]
    write(pair.remote, "memory/new-there.md", "x\n")
    (pair.remote.root / "MEMORY.md").unlink()
    replies.clear()
    report = sync(pair.local)
    scan = next(r for op, _, r in replies if op == "scan")
    assert set(scan["entries"]) == {"memory/new-there.md"} and scan["deleted"] == ["MEMORY.md"]
    assert report.pulled == ["memory/new-there.md"] and report.deleted_local == ["MEMORY.md"]
    assert selection_files(pair.local) == selection_files(pair.remote)


def test_the_ancestor_travels_as_a_delta_and_both_copies_stay_identical(pair, monkeypatch):
    generate(pair.local.root, files=300, seed=6)
    sync(pair.local)
    requests = record_requests(monkeypatch)

    def puts():
        return [args for op, args, _ in requests if op == "ancestor_put"]

    ours = pair.local.state / "ancestors" / f"{pair.remote.instance_id}.json"
    theirs = pair.remote.state / "ancestors" / f"{pair.local.instance_id}.json"
    write(pair.local, "memory/one-more.md", "new\n")
    (pair.remote.root / "USER.md").unlink()
    sync(pair.local)
    [args] = puts()
    assert "manifest" not in args and set(args["delta"]["set"]) == {"memory/one-more.md"}
    assert args["delta"]["drop"] == ["USER.md"]
    assert ours.read_bytes() == theirs.read_bytes()
    # The peer's copy changed behind our back: no delta either way, the whole manifest is sent.
    theirs.write_bytes(theirs.read_bytes().replace(b"one-more", b"one-less"))
    write(pair.local, "memory/two-more.md", "new\n")
    requests.clear()
    sync(pair.local)
    [args] = puts()
    assert "manifest" in args and "delta" not in args
    assert ours.read_bytes() == theirs.read_bytes()
    assert selection_files(pair.local) == selection_files(pair.remote)


def test_an_ancestor_delta_on_a_different_base_is_refused(tmp_path):
    from peersync.replica.handler import Handler
    from peersync.replica.scan import hash_bytes

    handler = Handler(tmp_path)
    entry = [3, 1_700_000_000_000_000_000, 0o644, "0" * 32]
    put = handler.op_ancestor_put("ab12", manifest={"format": 1, "entries": {"a.md": entry}})
    stored = handler._ancestor_file("ab12").read_bytes()
    assert put["applied"] and put["digest"] == hash_bytes(stored)
    assert handler.op_ancestor_put("ab12", base_digest="f" * 32, delta={"set": {}, "drop": ["a.md"]}) == {"applied": False}
    assert handler._ancestor_file("ab12").read_bytes() == stored
    with pytest.raises(Exception):
        handler.op_ancestor_put("ab12", base_digest=put["digest"], delta={"set": {"../x": entry}, "drop": []})
    assert handler._ancestor_file("ab12").read_bytes() == stored
    done = handler.op_ancestor_put("ab12", base_digest=put["digest"], delta={"set": {"b.md": entry}, "drop": ["a.md"]})
    assert done["applied"] and b'"b.md"' in handler._ancestor_file("ab12").read_bytes()


def test_a_kept_ancestor_is_read_again_only_when_its_file_changes(tmp_path):
    """A long-lived process keeps the ancestors it read or wrote (agent._ANCESTORS), keyed by the
    file's identity: a file replaced or damaged behind its back is read again."""
    from peersync.replica.handler import Handler
    from peersync.replica.scan import hash_bytes

    handler = Handler(tmp_path)
    entry = [3, 1_700_000_000_000_000_000, 0o644, "0" * 32]
    put = handler.op_ancestor_put("ab12", manifest={"format": 1, "entries": {"a.md": entry}})
    digest, doc = handler.ancestor_doc("ab12")
    assert digest == put["digest"] and handler.ancestor_doc("ab12")[1] is doc  # not read again
    done = handler.op_ancestor_put("ab12", base_digest=digest, delta={"set": {"b.md": entry}, "drop": []})
    assert set(doc["entries"]) == {"a.md"}  # what a caller holds is never modified
    assert set(handler.op_ancestor_get("ab12")["entries"]) == {"a.md", "b.md"}
    path = handler._ancestor_file("ab12")
    other = path.read_bytes().replace(b'"0000', b'"1111')
    path.write_bytes(other)  # rewritten in place behind its back: same size, same inode
    assert handler.ancestor_doc("ab12")[0] == hash_bytes(other) != done["digest"]
    assert handler.op_ancestor_get("ab12")["entries"]["b.md"][3].startswith("1111")
    path.write_bytes(b"{damaged")
    assert handler.op_ancestor_get("ab12") is None
    assert handler.op_ancestor_digest("ab12") == hash_bytes(b"{damaged")
    assert handler.op_scan(base_peer="ab12", base_digest=hash_bytes(b"{damaged")).get("delta") is None


def test_our_own_ancestor_is_saved_as_a_delta_too(pair, monkeypatch):
    from peersync.transport import local as remote_mod

    generate(pair.local.root, files=200, seed=7)
    sync(pair.local)
    seen = []
    original = remote_mod.LocalSession.request

    async def spy(self, op, **args):
        seen.append((op, args))
        return await original(self, op, **args)

    monkeypatch.setattr(remote_mod.LocalSession, "request", spy)
    write(pair.local, "memory/one-more.md", "new\n")
    sync(pair.local)
    [args] = [a for op, a in seen if op == "ancestor_put"]
    assert "manifest" not in args and set(args["delta"]["set"]) == {"memory/one-more.md"}
    ours = pair.local.state / "ancestors" / f"{pair.remote.instance_id}.json"
    theirs = pair.remote.state / "ancestors" / f"{pair.local.instance_id}.json"
    assert ours.read_bytes() == theirs.read_bytes()


def test_many_small_files_travel_inline_in_batches_without_rsync(pair, monkeypatch):
    from peersync.sync import transfer

    forbid_rsync(monkeypatch, "small files must not go through rsync")
    monkeypatch.setattr(transfer, "INLINE_BATCH_BYTES", 64 << 10)
    requests = record_requests(monkeypatch)
    for i in range(120):
        write(pair.local, f"memory/many/{i:03d}.md", f"{i:03d}\n" * 700)  # 2.8 kB each, 336 kB in all
    report = sync(pair.local)
    installs = [len(args["items"]) for op, args, _ in requests if op == "install"]
    assert len(report.pushed) == 120 and len(installs) >= 5 and sum(installs) == 120
    assert selection_files(pair.local) == selection_files(pair.remote)


def test_batches_keep_order_and_limits():
    from peersync.sync.transfer import _batches

    items = [{"new": [size]} for size in (10, 10, 30, 100, 5, 5)]
    batches = list(_batches(items, 40))
    assert [[i["new"][0] for i in b] for b in batches] == [[10, 10], [30], [100], [5, 5]]
    assert list(_batches([], 40)) == []
    growing = list(_batches(items, 40, 10))  # limits 10, 20, 40, 40…
    assert [[i["new"][0] for i in b] for b in growing] == [[10], [10], [30], [100], [5, 5]]


def test_an_appended_large_file_travels_as_its_tail(pair, monkeypatch):
    big = os.urandom(1 << 20)
    write(pair.local, "memory/big.log", big)
    sync(pair.local)
    forbid_rsync(monkeypatch, "an append must not go through rsync")
    requests = record_requests(monkeypatch)
    with open(pair.local.root / "memory/big.log", "ab") as f:
        f.write(b"- one more line\n")
    assert sync(pair.local).pushed == ["memory/big.log"]
    assert (pair.remote.root / "memory/big.log").read_bytes() == big + b"- one more line\n"
    assert max(len(encode(args)) for op, args, _ in requests if op == "install") < 10_000  # the tail
    # Pulled the other way, too, and a file rewritten (not appended) still goes whole (rsync).
    with open(pair.remote.root / "memory/big.log", "ab") as f:
        f.write(b"- from the peer\n")
    assert sync(pair.local).pulled == ["memory/big.log"]
    assert selection_files(pair.local) == selection_files(pair.remote)
    monkeypatch.undo()
    write(pair.local, "memory/big.log", os.urandom(1 << 20) + b"rewritten")
    assert sync(pair.local).pushed == ["memory/big.log"]
    assert selection_files(pair.local) == selection_files(pair.remote)


def test_a_tail_whose_prefix_changed_is_refused(tmp_path):
    from peersync.replica.handler import Handler
    from peersync.replica.scan import hash_bytes

    (tmp_path / "memory").mkdir()
    (tmp_path / "memory/x.log").write_bytes(b"abc\n")
    handler = Handler(tmp_path)
    assert handler.op_read_tail([{"path": "memory/x.log", "offset": 2, "prefix": hash_bytes(b"ab")}]) == \
        {"memory/x.log": b"c\n"}
    assert handler.op_read_tail([{"path": "memory/x.log", "offset": 2, "prefix": hash_bytes(b"zz")}]) == \
        {"memory/x.log": None}
    assert handler.op_read_tail([{"path": "memory/gone.log", "offset": 2, "prefix": "0"}]) == \
        {"memory/gone.log": None}
    item = {"path": "memory/x.log", "expect": [4, 0, 0o644, hash_bytes(b"abc\n")],
            "new": [6, 1_700_000_000_000_000_000, 0o644, hash_bytes(b"abXYZ\n")],
            "tail": {"size": 2, "prefix": hash_bytes(b"zz"), "data": b"XYZ\n"}}
    [result] = handler.op_install([item])["results"]
    assert not result["ok"] and (tmp_path / "memory/x.log").read_bytes() == b"abc\n"


def test_equal_files_with_different_mtimes_end_with_one_mtime_and_no_spurious_conflict(pair):
    """First sync, same bytes on both sides written at different times: the older copy takes the
    newer mtime, so the ancestor matches both sides and a later edit on either is a plain copy."""
    now = time.time()
    write(pair.local, "MEMORY.md", "same\n", mtime=now - 300)
    newer = write(pair.remote, "MEMORY.md", "same\n", mtime=now - 100).stat().st_mtime_ns
    report = sync(pair.local)
    assert not report.pushed and not report.pulled and not report.conflicts
    assert {(ws.root / "MEMORY.md").stat().st_mtime_ns for ws in (pair.local, pair.remote)} == {newer}
    write(pair.local, "MEMORY.md", "edited here, on the side that had the older copy\n", mtime=now - 50)
    report = sync(pair.local)
    assert report.pushed == ["MEMORY.md"] and not report.conflicts
    assert read(pair.remote, "MEMORY.md") == "edited here, on the side that had the older copy\n"


def test_touch_leaves_a_file_that_changed_since_the_scan(tmp_path):
    from peersync.replica.handler import Handler
    from peersync.replica.scan import entry_for

    (tmp_path / "MEMORY.md").write_bytes(b"scanned\n")
    handler = Handler(tmp_path)
    scanned = entry_for(tmp_path / "MEMORY.md")
    (tmp_path / "MEMORY.md").write_bytes(b"edited meanwhile\n")
    [res] = handler.op_touch([{"path": "MEMORY.md", "expect": scanned.to_wire(), "mtime_ns": 1}])["results"]
    assert not res["ok"] and (tmp_path / "MEMORY.md").stat().st_mtime_ns != 1
    fresh = entry_for(tmp_path / "MEMORY.md")
    [res] = handler.op_touch([{"path": "MEMORY.md", "expect": fresh.to_wire(), "mtime_ns": 5_000_000_000}])["results"]
    assert res["ok"] and (tmp_path / "MEMORY.md").stat().st_mtime_ns == 5_000_000_000
    assert (tmp_path / "MEMORY.md").read_bytes() == b"edited meanwhile\n"
