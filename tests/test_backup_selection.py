"""What a snapshot holds — the synced selection plus this instance's IDENTITY.md and config/, which no sync
ever carries — and restoring another machine's backups on a new one."""

from __future__ import annotations

import json
import os

import pytest

from peersync.backup import list_snapshots, restore, take_snapshot
from peersync.backup.selection import BackupSelection, plan, restorable
from peersync.sync.runner import run_sync
from peersync.errors import UsageError
from peersync.core.selection import Selection
from peersync.testing import selection_files
from peersync.workspace.workspace import Workspace
from test_backup import backup_files, files_under, isolated, make_workspace, run_cli, set_config, write  # noqa: F401


def test_backup_selection_adds_identity_and_config_with_the_same_excludes():
    sel = BackupSelection(Selection.from_options(exclude=["*.tmp", "cache/"]))
    for path, wanted in [("MEMORY.md", True), ("memory/a.md", True), ("IDENTITY.md", True),
                         ("config/settings.yaml", True), ("config/cache/x", False), ("config/x.tmp", False),
                         ("skills/s/SKILL.md", False), ("AGENTS.md", False), (".git/config", False),
                         ("memory/clawdbot-sync/peers.json", False), ("Memory/Clawdbot-Sync/peers.json", False)]:
        assert sel.contains(path) is wanted, path
    assert restorable("IDENTITY.md", sel, in_place=True) is None
    assert restorable("memory/clawdbot-sync/peers.json", sel, in_place=False) is None
    assert "staging directory only" in restorable("memory/clawdbot-sync/peers.json", sel, in_place=True)
    assert restorable("AGENTS.md", sel, in_place=False) == "outside the backup selection"
    assert restorable("memory/../../x", sel, in_place=False).startswith("unsafe path")


def test_restic_gets_whole_directories_when_nothing_in_them_is_left_out(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    for n in range(50):
        write(ws.root, f"memory/notes/n{n}.md", "x\n")
    chosen = plan(ws.root, BackupSelection(ws.sync_config().selection))
    assert "memory/notes" in chosen.targets and "memory/deep" in chosen.targets  # whole: one path each
    assert "memory" not in chosen.targets  # it holds excluded things (cache/, *.tmp, the state dir, a symlink)
    assert {"IDENTITY.md", "config", "MEMORY.md", "memory/events.jsonl"} <= set(chosen.targets)
    assert not any(t.startswith(("memory/cache", "memory/clawdbot-sync", "skills")) or t.endswith(".tmp")
                   for t in chosen.targets)
    assert [p.path for p in chosen.problems] == ["memory/link.md"]
    assert chosen.files == len(backup_files(ws))


def test_identity_and_config_are_in_the_backup_and_never_in_any_sync(workspace_pair, tmp_path):
    pair = workspace_pair
    local = make_workspace(pair.local.root)
    write(pair.remote.root, "IDENTITY.md", "# Identity\nthe server instance\n")
    write(pair.remote.root, "config/settings.yaml", "model: small\n")
    # Even named in sync.include, they never travel.
    set_config(local, "sync:\n  include: [IDENTITY.md, config]\n")
    snap = take_snapshot(local).snapshot
    reports = run_sync(local, [pair.peer_name])
    assert reports[0].ok, reports[0].error
    assert (pair.remote.root / "MEMORY.md").read_bytes() == (local.root / "MEMORY.md").read_bytes()
    assert (pair.remote.root / "IDENTITY.md").read_bytes() == b"# Identity\nthe server instance\n"
    assert (pair.remote.root / "config" / "settings.yaml").read_bytes() == b"model: small\n"
    assert (local.root / "IDENTITY.md").read_bytes() == b"# Identity\nI am the laptop instance.\n"
    cloud = tmp_path / "cloud-folder"
    cloud.mkdir()
    assert run_cli("-w", str(local.root), "cloud", "add", "share", str(cloud), "--mode", "mirror").returncode == 0
    assert run_cli("-w", str(local.root), "sync", "share").returncode == 0
    assert (cloud / "MEMORY.md").is_file() and not (cloud / "IDENTITY.md").exists() and not (cloud / "config").exists()

    out = tmp_path / "out"
    restore(local, snapshot=snap.short_id, to=out)
    assert files_under(out)["IDENTITY.md"] == b"# Identity\nI am the laptop instance.\n"
    assert files_under(out)["config/settings.yaml"] == b"model: large\n"


def test_a_new_machine_lists_every_instance_and_restores_the_chosen_one(tmp_path, monkeypatch):
    target = tmp_path / "shared"
    monkeypatch.setenv("PEERSYNC_BACKUP_PASSPHRASE", "the family passphrase")
    laptop = make_workspace(tmp_path / "laptop")
    server = make_workspace(tmp_path / "server")
    write(server.root, "IDENTITY.md", "# Identity\nthe server instance\n")
    take_snapshot(laptop, target=str(target))
    only_laptop = Workspace(tmp_path / "new-machine")
    only_laptop.root.mkdir()
    # One instance in the repository: a new machine restores it without being told which.
    result = restore(only_laptop, target=str(target))
    assert files_under(result.dest)["IDENTITY.md"] == b"# Identity\nI am the laptop instance.\n"
    assert result.dest == tmp_path / f"new-machine.restore-{result.snapshot.short_id}"

    server_snap = take_snapshot(server, target=str(target)).snapshot
    listing = json.loads(run_cli("-w", str(only_laptop.root), "--json", "backup", "list", "--target",
                                 str(target)).stdout)
    assert {s["instance"] for s in listing["snapshots"]} == {laptop.instance_id, server.instance_id}
    human = run_cli("-w", str(only_laptop.root), "backup", "list", "--target", str(target)).stdout
    assert f"instance {server.instance_id[:8]}" in human and f"instance {laptop.instance_id[:8]}" in human
    proc = run_cli("-w", str(only_laptop.root), "backup", "restore", "--target", str(target))
    assert proc.returncode == 2 and "hold 2 instances" in proc.stderr and "--snapshot ID or --host" in proc.stderr
    chosen = run_cli("-w", str(only_laptop.root), "backup", "restore", "--target", str(target),
                     "--snapshot", server_snap.short_id, "--to", str(tmp_path / "server-copy"))
    assert chosen.returncode == 0, chosen.stderr
    assert (tmp_path / "server-copy" / "IDENTITY.md").read_bytes() == b"# Identity\nthe server instance\n"
    with pytest.raises(UsageError, match="no snapshot from host"):
        restore(only_laptop, target=str(target), host="nonesuch")
    monkeypatch.delenv("PEERSYNC_BACKUP_PASSPHRASE")
    proc = run_cli("-w", str(only_laptop.root), "backup", "list", "--target", str(target))
    assert proc.returncode == 2 and "no passphrase is set" in proc.stderr  # nothing without the passphrase
