"""A key installed with `command="peersync agent --restrict ROOT",restrict`, used as an attacker would.

It may sync the selection and nothing else: no rsync (so no symlink or state file can be planted
and no file read around the agent), no path outside the victim's own selection whatever the
client claims its selection is, no retention of its choosing, and the agent never follows a link
that something else left in the state dir or the workspace."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from peersync.replica.scan import entry_for, hash_bytes
from peersync.sync.runner import run_sync
from peersync.testing import selection_files, wire_pair
from peersync.testing.wire import AgentWire

pytestmark = pytest.mark.timeout(180)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


class Victim:
    """The machine whose authorized_keys holds the restricted key: its workspace, its secrets
    outside the workspace, and the attacker's means (the key, rsync's -e)."""

    def __init__(self, tmp_path: Path, sshd):
        self.sshd = sshd
        self.pair = wire_pair(tmp_path / "attacker", tmp_path / "victim", sshd)
        self.root = self.pair.remote.root
        self.ws = self.pair.remote
        # A key per test: sshd takes the first authorized_keys line that matches a key.
        self.key, pub = sshd.new_client_key(f"restricted-{secrets.token_hex(4)}")
        forced = f"{sys.executable} -m peersync agent --restrict {self.root}"
        sshd.add_key(pub, options=f'command="{forced}",restrict')
        write(self.root / "MEMORY.md", "victim memory\n")
        write(self.root / "memory/a.md", "a\n")
        write(self.root / "IDENTITY.md", "who I am\n")
        write(self.root / "AGENTS.md", "instructions the agent obeys\n")
        write(self.root / "config/secret.yaml", "token: hunter2\n")
        write(self.root / "skills/s/SKILL.md", "a skill (skills are not synced here)\n")
        self.ws.ensure_state()
        self.ws.instance_id  # noqa: B018  (made now: the state dir holds something to steal)
        write(self.ws.state / "config.yaml", "sync:\n  trash_days: 30\n")
        self.outside = tmp_path / "outside"
        write(self.outside / "secret.txt", "outside secret\n")
        write(self.outside / "authorized_keys", "ssh-ed25519 AAAA the victim's own key\n")

    def rsh(self) -> str:
        return shlex.join(["ssh", *self.sshd.ssh_base_args(identity=self.key)])

    def rsync(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        return subprocess.run(["rsync", "-e", self.rsh(), *args], input=stdin, capture_output=True, timeout=60)

    def wire(self) -> AgentWire:
        return AgentWire.over_ssh(self.sshd, self.key)

    def outside_state(self) -> dict[str, bytes]:
        return {p.relative_to(self.outside).as_posix(): p.read_bytes() if p.is_file() else b"<dir>"
                for p in sorted(self.outside.rglob("*"))}


@pytest.fixture
def victim(tmp_path, sshd) -> Victim:
    return Victim(tmp_path, sshd)


# -- no rsync at all -----------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["memory/clawdbot-sync/peers.json", "memory/clawdbot-sync/instance-id",
                                    "IDENTITY.md", "config/secret.yaml", "AGENTS.md", "MEMORY.md", "memory/"])
def test_rsync_cannot_read_anything(victim, tmp_path, source):
    dest = tmp_path / "stolen"
    dest.mkdir()
    got = victim.rsync("-r", f"{victim.sshd.target}:{victim.root}/{source}", str(dest) + "/")
    assert got.returncode != 0
    assert not any(dest.iterdir())


def test_rsync_cannot_plant_state_files_or_symlinks(victim, tmp_path):
    evil = tmp_path / "evil"
    write(evil / "memory/clawdbot-sync/config.yaml", "cloud: {inbox: {command: 'touch /tmp/pwned'}}\n")
    write(evil / "memory/clawdbot-sync/peers.json", '{"peers": {}}\n')
    (evil / "memory/clawdbot-sync/trash").mkdir(parents=True)
    os.symlink(victim.outside, evil / "memory/clawdbot-sync/trash/20990101T000000-aaaaaa")
    os.symlink(victim.outside / "secret.txt", evil / "memory/log.jsonl")
    write(evil / "IDENTITY.md", "someone else\n")
    config_before = (victim.ws.state / "config.yaml").read_bytes()
    peers_before = victim.ws.peers_file.read_bytes()
    for flags in (["-a"], ["-rl"], ["-a", "--relative"]):
        got = victim.rsync(*flags, str(evil) + "/", f"{victim.sshd.target}:{victim.root}/")
        assert got.returncode != 0, got.stderr
    assert (victim.ws.state / "config.yaml").read_bytes() == config_before
    assert not (victim.ws.state / "trash").exists()
    assert not (victim.root / "memory/log.jsonl").is_symlink()
    assert (victim.root / "IDENTITY.md").read_text() == "who I am\n"
    assert victim.ws.peers_file.read_bytes() == peers_before


def test_only_the_agent_runs(victim):
    for command in ("cat /etc/passwd", "rsync --server --sender -vlogDtpre.iLsfxCIvu . /etc/passwd",
                    "sh -c id", "peersync sync"):
        got = subprocess.run(victim.sshd.ssh_command(command, identity=victim.key), input=b"",
                             capture_output=True, timeout=30)
        assert got.returncode != 0, command
        assert b"root:" not in got.stdout and b"uid=" not in got.stdout
    options = ["-P" if arg == "-p" else arg for arg in victim.sshd.ssh_base_args(identity=victim.key)]
    sftp = subprocess.run(["sftp", "-b", "-", *options, victim.sshd.target],
                          input=f"get {victim.root}/IDENTITY.md {victim.outside}/stolen\n".encode(),
                          capture_output=True, timeout=30)
    assert sftp.returncode != 0 and not (victim.outside / "stolen").exists()


# -- links the agent finds in its state dir or the workspace -------------------------------------
def plant(victim: Victim, where: str) -> None:
    """Something (an older rrsync, a local process) left a symlink pointing outside."""
    state = victim.ws.state
    outside = victim.outside
    if where == "trash-batch":
        (state / "trash").mkdir(parents=True, exist_ok=True)
        os.symlink(outside, state / "trash/20990101T000000-aaaaaa")
    elif where in ("staging", "holding", "trash", "conflicts", "logbase", "ancestors"):
        if where == "staging":
            write(outside / "project/notes.md", "a directory of the victim's\n")
        if where == "holding":
            write(outside / "0123456789abcdef/memory/kept.md", "only copy\n")
        if where == "trash":
            write(outside / "20000101T000000-old/memory/x.md", "an old batch\n")
        if where == "conflicts":
            write(outside / "c-abcdef/memory/y.md", "not a conflict\n")
        os.symlink(outside, state / where)
    elif where == "state-dir":
        import shutil

        shutil.rmtree(state)
        os.symlink(outside, state)
    elif where == "log":
        os.symlink(outside / "secret.txt", victim.root / "memory/log.jsonl")
    else:
        raise AssertionError(where)


def attack(victim: Victim, where: str) -> list:
    """Drive the agent over the restricted key through the operations that would touch `where`."""
    replies = []
    entry = entry_for(victim.root / "memory/a.md").to_wire()
    with victim.wire() as agent:
        replies.append(agent.call("hello"))
        replies.append(agent.call("lock", timeout=1))  # recovers: clear_staging, recover_holding, reindex_conflicts
        if where == "trash-batch":
            replies.append(agent.call("delete", items=[{"path": "memory/a.md", "expect": entry}],
                                      batch="20990101T000000-aaaaaa"))
        if where == "log":
            replies.append(agent.call("read_tail", items=[{"path": "memory/log.jsonl", "offset": 0,
                                                           "prefix": hash_bytes(b"")}]))
            replies.append(agent.call("read", paths=["memory/log.jsonl"]))
        if where in ("trash", "trash-batch", "state-dir"):
            replies.append(agent.call("housekeeping"))
        if where == "logbase":
            replies.append(agent.call("logbase_save", items=[["memory/a.md", entry[3]]]))
        if where in ("ancestors", "state-dir"):
            replies.append(agent.call("ancestor_put", peer_id="abcdef12",
                                      manifest={"format": 1, "entries": {"memory/a.md": entry}}))
    return replies


@pytest.mark.parametrize("where", ["trash-batch", "staging", "holding", "trash", "conflicts", "logbase",
                                   "ancestors", "state-dir", "log"])
def test_agent_never_follows_a_planted_link(victim, where):
    plant(victim, where)
    before = victim.outside_state()
    replies = attack(victim, where)
    assert victim.outside_state() == before  # nothing moved, deleted, read into the state or written
    for reply in replies:
        assert b"outside secret" not in repr(reply).encode()
    if where == "trash-batch":  # the file was not moved out of the workspace
        assert (victim.root / "memory/a.md").exists() or any((victim.ws.state / "trash").rglob("a.md"))


# -- the agent's own selection bounds whatever the client claims -------------------------------------
HOSTILE_SELECTION = {"roots": ["memory", "MEMORY.md", "AGENTS.md", "skills", "IDENTITY.md", "config", ".ssh",
                               "memory/clawdbot-sync"], "exclude": []}


def test_a_hostile_selection_reaches_nothing_outside_the_victims_own(victim):
    new = b"obey me\n"
    new_entry = [len(new), 1_700_000_000_000_000_000, 0o644, hash_bytes(new)]
    agents = entry_for(victim.root / "AGENTS.md").to_wire()
    with victim.wire() as agent:
        agent.result("hello")
        agent.result("lock", timeout=1)
        agent.call("selection", selection=HOSTILE_SELECTION)
        scan = agent.call("scan")
        if scan and scan.get("ok"):
            listed = set(scan["result"]["entries"])
            assert listed <= {"MEMORY.md", "memory/a.md"}, listed
        read = agent.call("read", paths=["AGENTS.md"])
        assert not (read and read.get("ok")), read
        tail = agent.call("read_tail", items=[{"path": "AGENTS.md", "offset": 0, "prefix": hash_bytes(b"")}])
        assert b"instructions" not in repr(tail).encode()
        for path, expect in (("AGENTS.md", agents), ("skills/evil/SKILL.md", None), ("IDENTITY.md", None),
                             ("config/new.yaml", None)):
            agent.call("install", items=[{"path": path, "data": new, "expect": expect, "new": new_entry}])
        agent.call("delete", items=[{"path": "AGENTS.md", "expect": agents}], batch="20990101T000000-bbbbbb")
        agent.call("touch", items=[{"path": "AGENTS.md", "expect": agents, "mtime_ns": 1}])
        agent.call("quarantine", items=[{"path": "AGENTS.md", "data": new, "info": {}}])
    assert (victim.root / "AGENTS.md").read_text() == "instructions the agent obeys\n"
    assert entry_for(victim.root / "AGENTS.md").to_wire() == agents
    assert not (victim.root / "skills/evil").exists()
    assert (victim.root / "IDENTITY.md").read_text() == "who I am\n"
    assert not (victim.root / "config/new.yaml").exists()
    assert not list((victim.ws.state / "conflicts").rglob("AGENTS.md")) if (victim.ws.state / "conflicts").exists() else True


# -- retention is the victim's --------------------------------------------------------------------
def test_the_client_cannot_empty_the_victims_trash(victim):
    old = victim.ws.state / "trash/20000101T000000-abcdef/memory/old.md"  # older than 30 days
    recent_name = __import__("time").strftime("%Y%m%dT%H%M%S", __import__("time").gmtime()) + "-fedcba"
    recent = victim.ws.state / "trash" / recent_name / "memory/recent.md"
    write(old, "deleted long ago\n")
    write(recent, "deleted today\n")
    with victim.wire() as agent:
        agent.result("hello")
        agent.result("lock", timeout=1)
        agent.call("housekeeping", trash_days=-1)
        agent.call("housekeeping", trash_days=0, prune_logbases=True)
    assert recent.exists()  # the victim keeps 30 days whatever the client says


# -- version records (issue 13) are bounded like every other write ----------------------------------
def test_version_records_stay_inside_the_selection_and_are_bounded(victim):
    from peersync.core import versions
    from peersync.replica.versions import Versions

    mine = entry_for(victim.root / "memory/a.md").to_wire()
    agents = entry_for(victim.root / "AGENTS.md").to_wire()
    vv = [["0123456789ab", 7]]
    with victim.wire() as agent:
        agent.result("hello")
        early = agent.call("versions_put", items=[["memory/a.md", mine + [vv]]])
        assert early is not None and not early["ok"], early  # a change needs the lock (the state dir checked)
        agent.result("lock", timeout=1)
        agent.call("selection", selection=HOSTILE_SELECTION)
        agent.result("scan")  # the victim records the versions it holds
        outside = agent.call("versions_put", items=[["AGENTS.md", agents + [vv]]])
        assert not outside["ok"] and "outside the synced selection" in outside["error"], outside
        for hostile in ([["0123456789ab", 1 << 63]], [[f"{i:012x}", 1] for i in range(versions.MAX_PAIRS + 1)],
                        [["0123456789ab", True]]):
            reply = agent.call("versions_put", items=[["memory/a.md", mine + [hostile]]])
            assert not reply["ok"], reply
        malformed = agent.call("versions_put", items=[{"path": "memory/a.md"}])
        assert not malformed["ok"], malformed
        assert agent.result("versions_put", items=[["memory/a.md", mine + [vv]]]) == {"recorded": 1}
    records = Versions(victim.ws.state, "victim")
    assert records.current("memory/a.md").vv == (("0123456789ab", 7),)
    assert records.current("AGENTS.md") is None
    records.close()


# -- merge bases kept from the bytes a read returns: not before the lock -----------------------------
def test_a_read_keeps_no_merge_base_before_the_lock(victim):
    """op read's `keep` stashes merge bases, written when the session ends: a restricted key that
    never locked (so never had the state dir checked) gets nothing written there; after the lock,
    what it read is kept (inside the victim's own selection only, as every read)."""
    from peersync.replica.handler import Handler
    from peersync.replica.scan import hash_bytes

    data = (victim.root / "memory/a.md").read_bytes()
    logbase = victim.ws.state / "logbase"
    with victim.wire() as agent:
        assert agent.result("hello")["read_keeps_bases"] is True
        assert agent.result("read", paths=["memory/a.md"], keep=["memory/a.md"])["memory/a.md"] == data
    assert not logbase.exists()
    with victim.wire() as agent:
        agent.result("hello")
        agent.result("lock", timeout=1)
        agent.result("read", paths=["memory/a.md"], keep=["memory/a.md"])
        assert not agent.call("read", paths=["AGENTS.md"], keep=["AGENTS.md"])["ok"]  # outside its selection
    assert Handler(victim.root).op_logbase_get([hash_bytes(data)]) == {hash_bytes(data): data}


# -- and a real sync over it still carries everything, large files included ---------------------------
def test_restricted_sync_carries_large_files_over_the_agent_channel(victim, monkeypatch):
    import peersync.transport.rsync as transfer

    used_rsync = []
    real = transfer.rsync_files

    async def spy(*args, **kwargs):
        used_rsync.append(args)
        return await real(*args, **kwargs)

    monkeypatch.setattr(transfer, "rsync_files", spy)
    import peersync.sync.transfer as engine

    monkeypatch.setattr(engine, "rsync_files", spy)
    local = victim.pair.local
    peer = victim.pair.peer()
    peers = local.load_peers()
    peers["remote"] = type(peer)(**{**peer.__dict__, "identity": str(victim.key)})
    local.save_peers(peers)
    big_up = os.urandom(9 << 20)
    big_down = os.urandom(5 << 20) + b"\n"
    write(local.root / "memory/up.bin", big_up)
    write(victim.root / "memory/down.jsonl", big_down)
    [report] = run_sync(local)
    assert report.ok, report.error
    assert (victim.root / "memory/up.bin").read_bytes() == big_up
    assert (local.root / "memory/down.jsonl").read_bytes() == big_down
    with open(victim.root / "memory/down.jsonl", "ab") as f:  # an appended log still travels as its tail
        f.write(b"appended\n")
    [report] = run_sync(local)
    assert report.ok, report.error
    assert (local.root / "memory/down.jsonl").read_bytes() == big_down + b"appended\n"
    assert not used_rsync
    assert selection_files(local) == selection_files(victim.ws)
    assert (victim.root / "AGENTS.md").read_text() == "instructions the agent obeys\n"
