"""The test infrastructure itself: a real loopback sshd, wired workspace pairs, tree oracles, the generator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from peersync.testing import LoopbackSSHD, SSHDError, selection_files, tree_digest
from peersync.testing.workspace_gen import generate, mutate
from peersync.workspace.workspace import Workspace


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, **kw)


# -- sshd --------------------------------------------------------------------------------------
def test_ssh_runs_commands(sshd):
    assert sshd.host == "127.0.0.1" and sshd.port
    assert run(sshd.ssh_command("true")).returncode == 0
    result = run(sshd.ssh_command("echo hello from $(id -un)"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"hello from {sshd.user}"


def test_known_hosts_names_the_port(sshd):
    line = sshd.known_hosts.read_text().strip()
    assert line.startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    assert line.split()[2] == (sshd.base_dir / "ssh_host_ed25519_key.pub").read_text().split()[1]


def test_remote_command_runs_peersync_over_ssh(sshd, remote_command):
    # A non-interactive SSH session has a thin PATH: the configured command must still find peersync.
    result = run(sshd.ssh_command(f"{remote_command} --version"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("peersync ")


def test_rsync_over_ssh_copies_a_file(sshd, tmp_path):
    src = tmp_path / "src" / "note.md"
    src.parent.mkdir()
    src.write_bytes("# Héllo\n".encode() + os.urandom(3000))
    dest = tmp_path / "dest"
    dest.mkdir()
    result = run(["rsync", "-a", "-e", sshd.rsh(), str(src), f"{sshd.target}:{dest}/"])
    assert result.returncode == 0, result.stderr
    assert (dest / "note.md").read_bytes() == src.read_bytes()


def test_ssh_config_file_works(sshd):
    result = run(["ssh", "-F", str(sshd.ssh_config), sshd.host, "true"])
    assert result.returncode == 0, result.stderr


def test_unknown_host_key_is_refused(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = run(sshd.ssh_command("true", known_hosts=empty))
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr
    assert empty.read_text() == ""  # nothing learned behind the user's back


def test_changed_host_key_is_refused(sshd, tmp_path):
    other, _ = sshd.new_client_key("not-the-host")  # any other ed25519 key
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    result = run(sshd.ssh_command("true", known_hosts=wrong))
    assert result.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr


def test_unauthorized_client_key_is_refused(sshd):
    key, _ = sshd.new_client_key("stranger")
    result = run(sshd.ssh_command("true", identity=key))
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_forced_command_key(sshd):
    key, pub = sshd.new_client_key("forced")
    sshd.add_key(pub, options='command="echo forced:$SSH_ORIGINAL_COMMAND",restrict')
    result = run(sshd.ssh_command("cat /etc/passwd", identity=key))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "forced:cat /etc/passwd"


def test_server_lifecycle(tmp_path):
    with LoopbackSSHD(tmp_path / "own") as server:
        port = server.port
        assert server.running
        assert run(server.ssh_command("true")).returncode == 0
    assert not server.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_missing_sshd_says_what_to_install(tmp_path):
    with pytest.raises(SSHDError, match="apt-get install -y openssh-server"):
        LoopbackSSHD(tmp_path, sshd_path="/nonexistent/sshd").start()


# -- workspace pair -----------------------------------------------------------------------------
def test_workspace_pair_is_wired_both_ways(workspace_pair, sshd, remote_command):
    pair = workspace_pair
    peer = pair.local.peer("remote")
    assert (peer.host, peer.user, peer.port) == ("127.0.0.1", sshd.user, sshd.port)
    assert peer.path == str(pair.remote.root)
    assert peer.identity == str(sshd.identity) and peer.known_hosts == str(sshd.known_hosts)
    assert peer.command == remote_command
    back = pair.remote.peer("local")
    assert back.path == str(pair.local.root) and back.port == sshd.port
    raw = json.loads(pair.local.peers_file.read_text())  # the clawdbot-sync format, extended
    assert set(raw["peers"]["remote"]) >= {"host", "user", "path", "addedAt", "port", "identity",
                                           "knownHosts", "command"}


def test_peer_settings_reach_the_other_workspace(workspace_pair):
    peer = workspace_pair.peer()
    argv = ["ssh", "-F", "/dev/null", "-p", str(peer.port), "-i", peer.identity,
            "-o", f"UserKnownHostsFile={peer.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", peer.target, f"ls -a {peer.path}/memory"]
    result = run(argv)
    assert result.returncode == 0, result.stderr
    assert "clawdbot-sync" in result.stdout.split()


# -- tree oracles --------------------------------------------------------------------------------
def test_tree_digest_sees_every_change(tmp_path):
    root = tmp_path / "ws"
    (root / "memory" / "clawdbot-sync").mkdir(parents=True)
    (root / "MEMORY.md").write_text("a\n")
    (root / "memory" / "clawdbot-sync" / "history.json").write_text("{}\n")
    before = tree_digest(root)
    assert tree_digest(root) == before
    (root / "memory" / "clawdbot-sync" / "history.json").write_text("{ }\n")
    assert tree_digest(root) != before  # the state dir counts
    after_edit = tree_digest(root)
    (root / "memory" / "empty").mkdir()
    assert tree_digest(root) != after_edit  # so do new directories
    with_dir = tree_digest(root, mtimes=True)
    os.utime(root / "MEMORY.md", ns=(1, 1))
    assert tree_digest(root) == tree_digest(root, mtimes=False)
    assert tree_digest(root, mtimes=True) != with_dir


def test_selection_files_uses_the_default_selection(tmp_path):
    ws = Workspace(tmp_path)
    files = {
        "MEMORY.md": True, "USER.md": True, "HEARTBEAT.md": True, "IDENTITY.md": False, "AGENTS.md": False,
        "memory/2026-01-26.md": True, "memory/streaming-buddy/preferences.json": True,
        "memory/logs/a.jsonl": True, "memory/clawdbot-sync/peers.json": False, "memory/x.tmp": False,
        "memory/.git/HEAD": False, "memory/node_modules/a/index.js": False, "memory/w/cache/c.json": False,
        "memory/.DS_Store": False, "config/openclaw.json": False, "skills/s/SKILL.md": False,
    }
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / "memory" / "link.md").symlink_to(tmp_path / "MEMORY.md")
    assert selection_files(ws) == {rel: rel.encode() for rel, keep in files.items() if keep}
    assert "skills/s/SKILL.md" in selection_files(ws, skills=True)


# -- generator -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen") / "ws"
    return root, generate(root, files=400, seed=7)


def test_generator_is_deterministic(generated, tmp_path):
    root, stats = generated
    again = generate(tmp_path / "again", files=400, seed=7)
    assert again == stats
    assert tree_digest(tmp_path / "again", mtimes=True) == tree_digest(root, mtimes=True)
    generate(tmp_path / "other", files=400, seed=8)
    assert tree_digest(tmp_path / "other") != tree_digest(root)


def test_generator_shape(generated):
    root, stats = generated
    rels = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert stats.files == len(rels) == 400
    assert stats.bytes == sum((root / r).stat().st_size for r in rels)
    selected = selection_files(root)
    assert stats.selected_files == len(selected) and stats.selected_bytes == sum(map(len, selected.values()))
    for rel in ("MEMORY.md", "USER.md", "IDENTITY.md", "HEARTBEAT.md", "AGENTS.md", "SOUL.md", "TOOLS.md",
                "memory/streaming-buddy/preferences.json", "config/openclaw.json"):
        assert rel in rels, rel
    daily = [r for r in rels if r.startswith("memory/20") and r.count("/") == 1]
    assert len(daily) >= 30
    assert sum(r.endswith(".jsonl") for r in rels) >= 10
    assert any(r.startswith("memory/people/") for r in rels)
    assert any(r.startswith("skills/") and r.endswith("/SKILL.md") for r in rels)
    for junk in ("node_modules/", ".git/", "/cache/", ".tmp", ".DS_Store"):
        assert any(junk in r for r in rels), junk
    assert not (root / "memory" / "clawdbot-sync").exists()
    for rel in rels:
        if rel.endswith(".json"):
            json.loads((root / rel).read_text())
        elif rel.endswith(".jsonl"):
            assert all(json.loads(line) for line in (root / rel).read_text().splitlines())


def test_generator_scales_to_the_benchmark_size(tmp_path):
    stats = generate(tmp_path / "ws", files=2000, seed=1, size_scale=0.25)
    assert stats.files == 2000
    # ~4 KB a file at size_scale 1.0, so 10,000 files ≈ 40 MB: here a quarter of that per file.
    assert 0.5 * 1024 < stats.bytes / 2000 < 1.6 * 1024


def test_mutate_touches_files_inside_the_selection(generated, tmp_path):
    root, _ = generated
    copies = []
    for name in ("a", "b"):
        dest = tmp_path / name
        subprocess.run(["cp", "-a", str(root), str(dest)], check=True)
        copies.append(dest)
    before = selection_files(copies[0])
    state_file = copies[0] / "memory" / "clawdbot-sync" / "peers.json"
    state_file.parent.mkdir()
    state_file.write_text("{}\n")
    touched = mutate(copies[0], seed=3, n=25)
    assert touched and len(touched) == len(set(touched))
    after = selection_files(copies[0])
    assert all(before.get(rel) != after.get(rel) for rel in touched)  # each really changed
    assert {rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel)} == set(touched)
    assert state_file.read_text() == "{}\n"
    assert mutate(copies[1], seed=3, n=25) == touched
    assert selection_files(copies[1]) == after


def test_genworkspace_script(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "genworkspace.py")
    result = run([sys.executable, script, str(tmp_path / "ws"), "--files", "100", "--seed", "2", "--json"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"] == 100
