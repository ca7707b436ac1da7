"""Names that are not UTF-8 (issue 14 item 2): Linux allows any bytes in a name (`caf\\xe9.md`, a
Latin-1 name from an old archive).  Between two volumes that hold such names they sync like any
other, over the agent's protocol and over rsync; towards a volume that cannot hold them (APFS and
HFS+ accept only UTF-8; a cloud folder through rclone rewrites such bytes) each is reported once and
left alone on both sides — never deleted, never a reason to stop the rest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peersync.core.names import foreign_names, not_utf8
from peersync.core.types import Entry, Side
from peersync.replica.versions import Versions
from peersync.sync.runner import run_sync
from peersync.testing.pair import wire_pair

CAFE = b"memory/caf\xe9.md"  # Latin-1 é: not UTF-8
FOLDER = b"memory/r\xe9sum\xe9"  # a folder so named, and a file inside it
BLOB = b"memory/blob\xff.bin"  # past the inline limit: travels through rsync


def put(root: Path, raw: bytes, data: bytes) -> None:
    full = os.fsencode(root) + b"/" + raw
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)


def get(root: Path, raw: bytes) -> bytes | None:
    try:
        with open(os.fsencode(root) + b"/" + raw, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def sync(ws):
    [report] = run_sync(ws)
    assert report.ok, report.error
    return report


# -- the rule (pure) --------------------------------------------------------------------------------

def test_foreign_names_only_where_a_side_cannot_hold_them():
    raw, plain = os.fsdecode(CAFE), "memory/café.md"
    assert not_utf8(raw) and not not_utf8(plain) and not not_utf8("memory/a.md")
    assert foreign_names([raw], [], [], local_holds=True, remote_holds=True) == ([], set())
    problems, unknown = foreign_names([raw, plain], [], [raw], local_holds=True, remote_holds=False, peer_name="mac")
    assert unknown == {raw} and [(p.path, p.side) for p in problems] == [(raw, Side.LOCAL)]
    assert "name not synced to mac" in problems[0].message and "rename it" in problems[0].message
    problems, unknown = foreign_names([], [raw], [], local_holds=False, remote_holds=True, peer_name="linux")
    assert unknown == {raw} and problems[0].side is Side.REMOTE and "on linux" in problems[0].message


def test_the_versions_store_keeps_a_name_that_is_not_utf8(tmp_path):
    raw = os.fsdecode(CAFE)
    store = Versions(tmp_path, "a" * 12)
    entry = Entry(size=3, mtime_ns=1, mode=0o644, hash="h")
    store.assign({raw: entry, "memory/ok.md": entry}, covers=lambda p: True)  # recorded as from before vectors
    edited = Entry(size=4, mtime_ns=2, mode=0o644, hash="h2")
    out = store.assign({raw: edited, "memory/ok.md": entry}, covers=lambda p: True)  # a new version
    assert out[raw].vv
    store.close()
    again = Versions(tmp_path, "a" * 12)
    assert again.current(raw) is not None and again.current(raw).vv == out[raw].vv
    again.close()


# -- two Linux volumes over real SSH ---------------------------------------------------------------

@pytest.mark.parametrize("where", ["local", "remote"])
def test_names_that_are_not_utf8_sync_between_linux_volumes(tmp_path, sshd, where):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    side, other = (pair.local, pair.remote) if where == "local" else (pair.remote, pair.local)
    big = os.urandom(3 << 20)
    put(side.root, CAFE, b"caf\xe9\n")
    put(side.root, FOLDER + b"/notes.md", b"inside\n")
    put(side.root, BLOB, big)
    first = sync(pair.local)
    assert not first.problems, first.problems
    assert get(other.root, CAFE) == b"caf\xe9\n" and get(other.root, FOLDER + b"/notes.md") == b"inside\n"
    assert get(other.root, BLOB) == big
    assert not sync(pair.local).changed

    put(other.root, CAFE, b"edited on the other side\n")  # an edit flows back
    sync(pair.local)
    assert get(side.root, CAFE) == b"edited on the other side\n"

    put(side.root, BLOB, b"one side's version\n")  # concurrent edits: a conflict, both kept
    put(other.root, BLOB, b"the other side's version\n")
    report = sync(pair.local)
    assert [c.path for c in report.conflicts] == [os.fsdecode(BLOB)]
    assert get(side.root, BLOB) == get(other.root, BLOB)
    kept = [p for root in (pair.local.root, pair.remote.root)
            for p in (root / "memory/clawdbot-sync/conflicts").rglob("*") if p.is_file() and p.suffix != ".json"]
    assert {p.read_bytes() for p in kept} >= {b"one side's version\n", b"the other side's version\n"} - {get(side.root, BLOB)}

    os.unlink(os.fsencode(side.root) + b"/" + CAFE)  # a deletion flows too (to the trash)
    report = sync(pair.local)
    assert get(other.root, CAFE) is None and os.fsdecode(CAFE) in report.deleted_local + report.deleted_remote
    again = sync(pair.local)
    assert not again.changed and not again.problems


def test_the_cli_prints_such_a_name_and_its_json_reads_back(tmp_path, sshd):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    put(pair.local.root, CAFE, b"x\n")
    run = [sys.executable, "-m", "peersync", "-w", str(pair.local.root)]
    proc = subprocess.run([*run, "--json", "sync", "--dry-run"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # valid JSON; the name is \udce9, which reads back as the same bytes
    assert os.fsdecode(CAFE) in json.dumps(doc, ensure_ascii=False)
    proc = subprocess.run([*run, "sync"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert get(pair.remote.root, CAFE) == b"x\n"
    proc = subprocess.run([*run, "--json", "history"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert os.fsdecode(CAFE) in json.dumps(json.loads(proc.stdout), ensure_ascii=False)
    proc = subprocess.run([*run, "status"], capture_output=True, timeout=120)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr


# -- towards a volume that holds only UTF-8 names (APFS) --------------------------------------------

@pytest.mark.parametrize("mac", ["remote", "local"])
def test_towards_an_apfs_volume_such_a_name_is_reported_once_and_never_deleted(tmp_path, sshd, fuse_volume, mac):
    volume = fuse_volume("apfs")
    linux_root, mac_root = tmp_path / "linux", volume.path / "ws"
    pair = wire_pair(mac_root, linux_root, sshd) if mac == "local" else wire_pair(linux_root, mac_root, sshd)
    put(linux_root, CAFE, b"latin-1 name\n")
    put(linux_root, b"memory/plain.md", b"plain\n")
    report = sync(pair.local)
    assert [p.path for p in report.problems] == [os.fsdecode(CAFE)], report.problems
    assert "not valid UTF-8" in report.problems[0].message and "rename it" in report.problems[0].message
    assert (mac_root / "memory/plain.md").read_bytes() == b"plain\n"
    again = sync(pair.local)  # reported once; still left alone on both sides
    assert not again.problems and not again.changed
    assert get(linux_root, CAFE) == b"latin-1 name\n"
    os.rename(os.fsencode(linux_root) + b"/" + CAFE, linux_root / "memory/café.md")  # renamed as told: it syncs
    sync(pair.local)
    assert (mac_root / "memory/café.md").read_bytes() == b"latin-1 name\n"


# -- towards a cloud folder (rclone rewrites such bytes) ---------------------------------------------

def test_a_cloud_folder_is_sent_no_such_name_and_it_is_reported_once(tmp_path, monkeypatch):
    from peersync.peers.manage import add_cloud_peer
    from peersync.workspace.workspace import Workspace

    monkeypatch.setenv("RCLONE_CONFIG", "/dev/null")
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.ensure_state()
    put(ws.root, CAFE, b"latin-1 name\n")
    put(ws.root, b"memory/plain.md", b"plain\n")
    folder = tmp_path / "cloud"
    add_cloud_peer(ws, "box", str(folder), mode="bisync", test=False)
    [report] = run_sync(ws, ["box"])
    assert report.ok, report.error
    assert [p.path for p in report.problems] == [os.fsdecode(CAFE)] and "box" in report.problems[0].message
    assert (folder / "memory/plain.md").read_bytes() == b"plain\n"
    assert sorted(os.listdir(folder / "memory")) == ["plain.md"]
    [again] = run_sync(ws, ["box"])
    assert again.ok and not again.problems and not again.changed
    assert get(ws.root, CAFE) == b"latin-1 name\n"


# -- over a restricted key (no rsync: every byte through the agent's protocol) ----------------------

def test_a_restricted_key_carries_such_names_both_ways(tmp_path, sshd):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    key, pub = sshd.new_client_key("restricted-not-utf8")
    sshd.add_key(pub, options=f'command="{sys.executable} -m peersync agent --restrict {pair.remote.root}",restrict')
    peers = pair.local.load_peers()
    peer = peers["remote"]
    peers["remote"] = type(peer)(**{**peer.__dict__, "identity": str(key)})
    pair.local.save_peers(peers)
    big = os.urandom(5 << 20)
    put(pair.local.root, BLOB, big)
    put(pair.remote.root, CAFE, b"from the restricted side\n")
    sync(pair.local)
    assert get(pair.remote.root, BLOB) == big
    assert get(pair.local.root, CAFE) == b"from the restricted side\n"
    assert not sync(pair.local).changed


def test_through_a_keepers_warm_connection_and_the_cli_fast_path(tmp_path, sshd, monkeypatch):
    import signal

    from tests.test_keeper import keepers_of, wait_until, warm_up
    from peersync.transport.keeper import ENV_KEEP

    monkeypatch.setenv(ENV_KEEP, "60")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    try:
        put(pair.local.root, b"memory/a.md", b"a\n")
        warm_up(pair)
        put(pair.local.root, CAFE, b"through the keeper\n")
        report = sync(pair.local)
        assert report.warm, "not through the keeper"
        assert report.pushed == [os.fsdecode(CAFE)] and get(pair.remote.root, CAFE) == b"through the keeper\n"
        put(pair.remote.root, CAFE, b"back, printed by the CLI's fast path\n")
        proc = subprocess.run([sys.executable, "-m", "peersync", "-w", str(pair.local.root), "sync"],
                              capture_output=True, timeout=120, env={**os.environ, ENV_KEEP: "60"})
        assert proc.returncode == 0, proc.stderr
        assert b"caf\\xe9.md" in proc.stdout + proc.stderr, proc.stdout
        assert get(pair.local.root, CAFE) == b"back, printed by the CLI's fast path\n"
    finally:
        for pid in keepers_of(pair.local):
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not keepers_of(pair.local), 20)
