"""Issue 14 item 6, end to end over real sshd: symbolic links inside the selection sync as links
(created, retargeted, deleted, conflicting), links pointing outside are reported once and never
followed, empty folders sync, a symlinked `memory/` is synced through, and a restricted key cannot
plant a link that points outside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peersync.core import links
from peersync.replica.handler import Handler
from peersync.replica.scan import hash_bytes, link_entry
from peersync.replica.store import Store
from peersync.core.selection import Selection
from peersync.sync.runner import run_sync
from peersync.testing.pair import wire_pair

pytestmark = pytest.mark.timeout(300)
OLD = time.time() - 3600


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (OLD, OLD))
    return path


def sync(ws):
    [report] = run_sync(ws)
    assert report.ok, report.error
    return report


def conflicts(ws) -> list[dict]:
    return Store(ws.root, Selection()).conflicts()


@pytest.fixture
def pair(tmp_path, sshd):
    return wire_pair(tmp_path / "local", tmp_path / "remote", sshd)


# -- the rule (pure) ------------------------------------------------------------------------------
@pytest.mark.parametrize("path, target, inside", [
    ("memory/latest.md", "notes.md", True),
    ("memory/a/b.md", "../notes.md", True),
    ("memory/projects", "2026", True),
    ("MEMORY.md", "memory/MEMORY.md", True),
    ("memory/etc", "/etc/passwd", False),  # absolute
    ("memory/up", "../../outside", False),  # climbs out of the workspace
    ("memory/id", "../IDENTITY.md", False),  # inside the workspace, outside the selection
    ("memory/state", "clawdbot-sync/peers.json", False),  # the state dir
    ("memory/self", ".", True),  # memory/ itself: a folder of the selection
    ("memory/dot", "", False),
])
def test_a_link_is_inside_only_when_its_target_resolves_into_the_selection(path, target, inside):
    assert links.inside(path, target, Selection().contains) is inside


# -- links over SSH -------------------------------------------------------------------------------
def test_a_link_inside_syncs_as_a_link_created_retargeted_and_deleted(pair):
    L, R = pair.local.root, pair.remote.root
    write(L, "memory/notes.md", "notes\n")
    write(L, "memory/other.md", "other\n")
    os.symlink("notes.md", L / "memory/latest.md")
    os.symlink("../notes.md", (L / "memory/sub").mkdir() or L / "memory/sub/up.md")
    report = sync(pair.local)
    assert "memory/latest.md" in report.pushed and not report.problems, report.to_json()
    assert os.readlink(R / "memory/latest.md") == "notes.md"  # a link, not a copy of what it points to
    assert os.readlink(R / "memory/sub/up.md") == "../notes.md"
    assert not sync(pair.local).changed  # converged: nothing to do, nothing reported

    os.unlink(R / "memory/latest.md")
    os.symlink("other.md", R / "memory/latest.md")  # retargeted on the peer
    report = sync(pair.local)
    assert report.pulled == ["memory/latest.md"], report.to_json()
    assert os.readlink(L / "memory/latest.md") == "other.md"

    os.unlink(L / "memory/latest.md")
    report = sync(pair.local)
    assert report.deleted_remote == ["memory/latest.md"]
    assert not os.path.lexists(R / "memory/latest.md")
    trashed = [Path(d, "latest.md") for d, _, names in os.walk(pair.remote.state / "trash") if "latest.md" in names]
    assert trashed and os.readlink(trashed[0]) == "other.md"  # the link itself went to the trash
    assert (R / "memory/other.md").read_text() == "other\n"  # never followed
    assert not sync(pair.local).changed


def test_a_link_retargeted_on_both_sides_is_a_conflict_that_keeps_both(pair):
    L, R = pair.local.root, pair.remote.root
    for rel in ("memory/a.md", "memory/b.md", "memory/c.md"):
        write(L, rel, rel + "\n")
    os.symlink("a.md", L / "memory/current.md")
    sync(pair.local)
    os.unlink(L / "memory/current.md")
    os.symlink("b.md", L / "memory/current.md")
    os.unlink(R / "memory/current.md")
    os.symlink("c.md", R / "memory/current.md")
    report = sync(pair.local)
    [conflict] = report.conflicts
    assert conflict.path == "memory/current.md" and conflict.saved_as, report.to_json()
    live = {os.readlink(L / "memory/current.md"), os.readlink(R / "memory/current.md")}
    assert len(live) == 1  # converged on one target
    loser = ({"b.md", "c.md"} - live).pop()
    kept = [c for ws in (pair.local, pair.remote) for c in conflicts(ws) if c["path"] == "memory/current.md"]
    assert [(ws_root / c["file"]).read_bytes() for c in kept for ws_root in (L, R)
            if (ws_root / c["file"]).exists()] == [loser.encode()]  # the loser's target, kept as a file
    assert not sync(pair.local).changed


def test_a_link_pointing_outside_is_reported_once_and_never_followed(pair, tmp_path):
    L, R = pair.local.root, pair.remote.root
    write(L, "memory/a.md", "a\n")
    secret = write(tmp_path, "outside/secret.txt", "secret\n")
    os.symlink(str(secret), L / "memory/abs.txt")
    os.symlink("../../outside/secret.txt", L / "memory/up.txt")
    os.symlink("../outside", L / "memory/dir")
    report = sync(pair.local)
    assert sorted(p.path for p in report.problems) == ["memory/abs.txt", "memory/dir", "memory/up.txt"]
    assert all("outside the synced folders" in p.message for p in report.problems)
    assert not any(os.path.lexists(R / "memory" / n) for n in ("abs.txt", "up.txt", "dir"))
    assert not list(R.rglob("secret.txt"))
    for _ in range(2):  # reported once: not on every sync
        report = sync(pair.local)
        assert not report.problems and not report.changed, report.to_json()
    os.symlink("/etc", L / "memory/new-outside")  # a new one is news
    assert [p.path for p in sync(pair.local).problems] == ["memory/new-outside"]


def test_a_link_retargeted_outside_is_not_taken_for_a_deletion(pair):
    L, R = pair.local.root, pair.remote.root
    write(L, "memory/a.md", "a\n")
    os.symlink("a.md", L / "memory/l.md")
    sync(pair.local)
    os.unlink(L / "memory/l.md")
    os.symlink("/etc/hostname", L / "memory/l.md")
    report = sync(pair.local)
    assert not report.deleted_remote and os.readlink(R / "memory/l.md") == "a.md"


# -- empty folders ------------------------------------------------------------------------------
def test_empty_folders_are_created_and_removed(pair):
    L, R = pair.local.root, pair.remote.root
    write(L, "memory/a.md", "a\n")
    (L / "memory/projects/new/empty").mkdir(parents=True)
    (L / "memory/inbox").mkdir()
    sync(pair.local)
    assert (R / "memory/projects/new/empty").is_dir() and (R / "memory/inbox").is_dir()
    assert not sync(pair.local).changed
    (R / "memory/inbox").rmdir()  # deleted on one side, unchanged on the other: removed
    sync(pair.local)
    assert not (L / "memory/inbox").exists()
    # A folder emptied on one side stays (empty) on the other, where the folder still exists.
    write(L, "memory/projects/p.md", "p\n")
    sync(pair.local)
    (L / "memory/projects/p.md").unlink()
    sync(pair.local)
    assert (R / "memory/projects").is_dir() and not (R / "memory/projects/p.md").exists()
    assert not sync(pair.local).changed


def test_a_folder_deleted_on_one_side_while_the_other_adds_a_file_keeps_the_file(pair):
    L, R = pair.local.root, pair.remote.root
    write(L, "memory/a.md", "a\n")
    (L / "memory/box").mkdir()
    sync(pair.local)
    (L / "memory/box").rmdir()
    write(R, "memory/box/new.md", "new\n")
    report = sync(pair.local)
    assert (L / "memory/box/new.md").read_text() == "new\n" and (R / "memory/box/new.md").read_text() == "new\n"
    assert not report.problems, report.to_json()
    assert not sync(pair.local).changed


# -- a symlinked memory/ --------------------------------------------------------------------------
def test_a_symlinked_memory_folder_is_synced_through_and_said_in_status(pair, tmp_path):
    L, R = pair.local.root, pair.remote.root
    dropbox = tmp_path / "Dropbox/agent-memory"
    write(dropbox, "2026-01-26.md", "- day one\n")
    write(dropbox, "projects/p.md", "p\n")
    state = L / "memory/clawdbot-sync"
    moved = tmp_path / "state-moved"
    state.rename(moved)  # the peers file made by wire_pair, carried into the linked folder
    (L / "memory").rmdir()
    os.symlink(dropbox, L / "memory")
    moved.rename(dropbox / "clawdbot-sync")
    write(L, "MEMORY.md", "# memory\n")
    report = sync(pair.local)
    assert sorted(report.pushed) == ["MEMORY.md", "memory/2026-01-26.md", "memory/projects/p.md"], report.to_json()
    assert (R / "memory/projects/p.md").read_text() == "p\n"
    write(R, "memory/projects/p.md", "p edited on the peer\n")
    write(R, "memory/new.md", "new\n")
    report = sync(pair.local)
    assert sorted(report.pulled) == ["memory/new.md", "memory/projects/p.md"], report.to_json()
    assert (dropbox / "projects/p.md").read_text() == "p edited on the peer\n"  # written through the link
    assert (dropbox / "new.md").read_text() == "new\n"
    assert os.path.islink(L / "memory")  # still the user's link
    proc = subprocess.run([sys.executable, "-m", "peersync", "-w", str(L), "status"], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert f"memory/ is a link to {os.path.realpath(dropbox)}: synced through it" in proc.stdout, proc.stdout


# -- a restricted key cannot plant a link that points outside ---------------------------------------
def test_a_restricted_key_cannot_plant_a_link_pointing_outside(tmp_path, sshd):
    from tests.test_restricted import Victim

    victim = Victim(tmp_path, sshd)
    planted = []
    with victim.wire() as agent:
        agent.result("hello")
        agent.result("lock", timeout=1)
        agent.result("selection", selection=Selection().to_wire())
        for path, target in (("memory/evil", str(victim.outside)), ("memory/up", "../../outside/secret.txt"),
                             ("memory/id", "../IDENTITY.md"), ("memory/st", "clawdbot-sync/instance-id"),
                             ("memory/ok", "a.md")):
            data = target.encode()
            new = link_entry(data).to_wire()
            res = agent.call("install", items=[{"path": path, "data": data, "expect": None, "new": new}])
            planted.append((path, res["result"]["results"][0]["ok"], res["result"]["results"][0].get("error", "")))
        # A link entry whose bytes are not its hash, or a file swapped in for an existing link's name.
        lie = link_entry(b"a.md").to_wire()
        res = agent.call("install", items=[{"path": "memory/lie", "data": b"/etc", "expect": None, "new": lie}])
        planted.append(("memory/lie", res["result"]["results"][0]["ok"], ""))
    assert planted[:4] == [(p, False, "refused a symbolic link that points outside the synced folders")
                           for p in ("memory/evil", "memory/up", "memory/id", "memory/st")], planted
    assert planted[4][1] is True and os.readlink(victim.root / "memory/ok") == "a.md"  # inside: allowed
    assert planted[5][1] is False
    for name in ("evil", "up", "id", "st", "lie"):
        assert not os.path.lexists(victim.root / "memory" / name)
    assert (victim.outside / "secret.txt").read_text() == "outside secret\n"


def test_installing_never_writes_through_a_link(tmp_path):
    """A link inside the selection that points at a folder is synced as a link; writing a file
    below its name is refused (the agent never follows a link while writing)."""
    root = tmp_path / "ws"
    write(root, "memory/real/a.md", "a\n")
    os.symlink("real", root / "memory/alias")
    handler = Handler(root)
    handler.op_selection(Selection().to_wire())
    manifest = handler.scan().manifest
    assert manifest["memory/alias"].kind == link_entry(b"real").kind and "memory/alias/a.md" not in manifest
    data = b"through the link\n"
    res = handler.op_install([{"path": "memory/alias/b.md", "data": data, "expect": None,
                               "new": [len(data), 1, 0o644, hash_bytes(data)]}])["results"][0]
    assert not res["ok"] and "symbolic link" in res["error"], res
    assert not (root / "memory/real/b.md").exists()


# -- a cloud folder cannot hold a link: reported once, skipped ------------------------------------------
def test_a_cloud_folder_skips_links_and_says_so_once(tmp_path, monkeypatch):
    from peersync.peers.manage import add_cloud_peer
    from peersync.workspace.workspace import Workspace

    monkeypatch.setenv("RCLONE_CONFIG", "/dev/null")
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.ensure_state()
    write(ws.root, "memory/a.md", "a\n")
    os.symlink("a.md", ws.root / "memory/latest.md")
    (ws.root / "memory/empty").mkdir()
    cloud = tmp_path / "cloud"
    add_cloud_peer(ws, "box", str(cloud), mode="bisync", test=False)
    [report] = run_sync(ws, ["box"])
    assert report.ok, report.error
    assert [(p.path, p.message) for p in report.problems] == [("memory/latest.md", links.CLOUD)], report.to_json()
    assert (cloud / "memory/a.md").read_text() == "a\n" and not os.path.lexists(cloud / "memory/latest.md")
    [again] = run_sync(ws, ["box"])
    assert again.ok and not again.problems and not again.changed, again.to_json()
    assert os.readlink(ws.root / "memory/latest.md") == "a.md" and (ws.root / "memory/empty").is_dir()


# -- through a keeper's warm connection ------------------------------------------------------------------
def test_links_and_empty_folders_sync_through_a_keeper(tmp_path, sshd, monkeypatch):
    import signal

    from tests.test_keeper import keepers_of, wait_until, warm_up
    from peersync.transport.keeper import ENV_KEEP

    monkeypatch.setenv(ENV_KEEP, "60")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    try:
        L, R = pair.local.root, pair.remote.root
        write(L, "memory/a.md", "a\n")
        warm_up(pair)
        os.symlink("a.md", L / "memory/latest.md")
        os.symlink("/etc", L / "memory/outside")
        (L / "memory/empty").mkdir()
        report = sync(pair.local)
        assert report.warm, "not through the keeper"
        assert sorted(report.pushed) == ["memory/empty", "memory/latest.md"], report.to_json()
        assert [p.path for p in report.problems] == ["memory/outside"]
        assert os.readlink(R / "memory/latest.md") == "a.md" and (R / "memory/empty").is_dir()
        again = sync(pair.local)
        assert again.warm and not again.changed and not again.problems, again.to_json()
    finally:
        for pid in keepers_of(pair.local):
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not keepers_of(pair.local), 20)


def test_a_symlinked_memory_folder_that_cannot_be_reached_is_never_synced_in_silence(tmp_path):
    from peersync.replica.scan import scan

    root = tmp_path / "ws"
    write(root, "MEMORY.md", "m\n")
    os.symlink(tmp_path / "unplugged/agent-memory", root / "memory")  # a drive that is not mounted
    result = scan(root, Selection())
    assert sorted(result.manifest) == ["MEMORY.md"]
    assert result.unknown == ["memory"]  # unknown: nothing is deleted anywhere on its strength
    [problem] = result.problems
    assert problem.path == "memory" and "cannot be reached" in problem.message
    # The CLI: the state dir lives in memory/ too, so nothing is synced and it says so (never "Synced").
    proc = subprocess.run([sys.executable, "-m", "peersync", "-w", str(root), "sync"], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0 and "Synced" not in proc.stdout, proc
