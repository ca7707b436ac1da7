"""Issue 14 item 11, end to end over real sshd: a file whose path is near PATH_MAX (4096 bytes) and
whose name is 255 bytes is created on the peer, updated, deleted to the trash and restored, and
its conflict loser is kept, listed and restored — peersync's own copies (holding, staging, trash,
conflicts) never need a longer path than the file itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from peersync.core.paths import STATE_DIR, internal_rel
from peersync.dashboard.data import conflicts_section, trash_section
from peersync.sync.runner import run_sync
from peersync.workspace.workspace import Workspace

OLD = time.time() - 3600
PATH_MAX = 4096


def long_path(*roots: Path) -> str:
    """memory/<dirs of 250 bytes>/<a 255-byte name>: as long as both roots leave room for."""
    room = PATH_MAX - 8 - max(len(os.fsencode(str(r))) for r in roots)  # "/", NUL and a little slack
    name = "n" * 251 + ".dat"
    assert len(name.encode()) == 255
    parts = ["memory"]
    while len("/".join(parts)) + 1 + 250 + 1 + len(name) <= room:
        parts.append(f"{len(parts):03d}" + "d" * 247)
    left = room - len("/".join(parts)) - 1 - len(name)  # fill what is left up to `room`
    parts += ["f" * (left - 1)] if left > 1 else []
    parts[-1] += "e" * (left == 1)
    parts.append(name)
    path = "/".join(parts)
    assert len(path.encode()) == room and max(len(p) for p in parts[:-1]) <= 255
    return path


def at(root: Path, rel: str) -> int:
    """A descriptor of the directory holding `rel` (its absolute path may be too long for one call)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for part in rel.split("/")[:-1]:
        os.mkdir(part, dir_fd=fd) if not _exists(fd, part) else None
        nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    return fd


def _exists(fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=fd)
        return True
    except FileNotFoundError:
        return False


def write(root: Path, rel: str, data: bytes, mtime: float) -> None:
    fd = at(root, rel)
    try:
        name = rel.rsplit("/", 1)[1]
        f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd)
        os.write(f, data)
        os.utime(f, (mtime, mtime))
        os.close(f)
    finally:
        os.close(fd)


def read(root: Path, rel: str) -> bytes | None:
    fd = at(root, rel)
    try:
        f = os.open(rel.rsplit("/", 1)[1], os.O_RDONLY, dir_fd=fd)
    except FileNotFoundError:
        return None
    finally:
        os.close(fd)
    with os.fdopen(f, "rb") as fh:
        return fh.read()


def sync(ws: Workspace):
    [report] = run_sync(ws)
    assert report.ok, report.error
    assert not report.problems, [(p.path[:60], p.message) for p in report.problems]
    return report


def cli(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "peersync", "-w", str(ws.root), *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    return proc


def items(proc: subprocess.CompletedProcess) -> list[dict]:
    doc = json.loads(proc.stdout)
    return doc["items"] if "items" in doc else doc["conflicts"]


def test_internal_names_stay_short():
    short = "memory/a.md"
    assert internal_rel(short) == short
    for path in ("memory/" + "x" * 250 + "/" + "y" * 255, "memory/" + "/".join(["z" * 250] * 15)):
        rel = internal_rel(path)
        assert len(rel.encode()) < 100 and rel != internal_rel(path + "2")
        assert rel.startswith(STATE_DIR)  # never a wire path: cannot collide with a real file


def test_a_file_near_path_max_lives_its_whole_life_on_the_peer(workspace_pair):
    local, remote = workspace_pair.local, workspace_pair.remote
    path = long_path(local.root, remote.root)

    write(local.root, path, b"one\n", OLD)  # created, then sent to the peer
    sync(local)
    assert read(remote.root, path) == b"one\n"

    two = b"two\n" * 100_000  # updated, large (not inline: rsync would stage it under its long path)
    write(local.root, path, two, OLD + 60)  # the peer replaces it (through holding)
    sync(local)
    assert read(remote.root, path) == two

    fd = at(local.root, path)  # deleted here: the peer moves its copy to the trash
    os.unlink(path.rsplit("/", 1)[1], dir_fd=fd)
    os.close(fd)
    sync(local)
    assert read(remote.root, path) is None
    assert [i["path"] for i in items(cli(remote, "--json", "trash", "list"))] == [path]
    [batch] = trash_section(remote, [])["batches"]  # the dashboard shows it by its real path
    assert batch["paths"] == [path] and batch["files"] == 1
    cli(remote, "trash", "restore", path)  # put back under its real path, as a new edit
    assert read(remote.root, path) == two
    assert items(cli(remote, "--json", "trash", "list")) == []
    sync(local)
    assert read(local.root, path) == two

    write(local.root, path, b"local edit\n", time.time() - 30)  # both edit: one wins, the other is kept
    write(remote.root, path, b"remote edit\n", time.time() - 10)
    sync(local)
    assert read(local.root, path) == read(remote.root, path) == b"remote edit\n"
    [item] = [i for i in items(cli(local, "--json", "conflicts", "list")) if i.get("path") == path]
    assert cli(local, "conflicts", "show", item["id"]).stdout == "local edit\n"
    assert "-local edit\n+remote edit" in cli(local, "conflicts", "diff", item["id"]).stdout
    [row] = [r for r in conflicts_section(local, contents=True)["items"] if r["id"] == item["id"]]
    assert row["path"] == path and row["diff_note"] is None and row["diff"]
    cli(local, "conflicts", "restore", item["id"])
    assert read(local.root, path) == b"local edit\n"
    assert [i for i in items(cli(local, "--json", "conflicts", "list")) if i.get("path") == path and i["id"] != item["id"]]  # the replaced edit, kept
    sync(local)
    assert read(remote.root, path) == b"local edit\n"


def test_a_numbered_twin_of_a_255_byte_name_is_still_a_valid_name():
    from peersync.cloud.mailbox import _numbered

    assert _numbered("report.pdf", 2) == "report (2).pdf"
    for name in ("n" * 251 + ".dat", "é" * 125 + ".md", "x" * 255, "caf\udce9" * 60 + ".md"):
        twins = {_numbered(name, n) for n in (2, 3)}
        assert len(twins) == 2 and all(len(os.fsencode(t)) <= 255 for t in twins)


def test_a_file_near_path_max_syncs_with_a_cloud_folder(tmp_path, monkeypatch):
    """The cloud peer's scratch copies (fetched, uploaded, losers) are kept under short names too."""
    from peersync.peers.manage import add_cloud_peer

    monkeypatch.setenv("RCLONE_CONFIG", "/dev/null")
    ws, cloud = Workspace(tmp_path / "ws"), tmp_path / "c"
    ws.root.mkdir()
    cloud.mkdir()
    ws.ensure_state()
    add_cloud_peer(ws, "box", str(cloud), mode="bisync", test=False)
    path = long_path(ws.root, cloud)
    big = b"big\n" * 100_000

    def cloud_sync():
        [report] = run_sync(ws, ["box"])
        assert report.ok, report.error
        assert not report.problems, [(p.path[:60], p.message) for p in report.problems]

    write(ws.root, path, b"one\n", OLD)
    cloud_sync()
    assert read(cloud, path) == b"one\n"
    write(cloud, path, big, OLD + 60)  # edited in the cloud: downloaded, replaces ours
    cloud_sync()
    assert read(ws.root, path) == big
    write(ws.root, path, b"here\n", time.time() - 30)  # both edit: the cloud's newer one wins
    write(cloud, path, b"there\n", time.time() - 10)
    cloud_sync()
    assert read(ws.root, path) == read(cloud, path) == b"there\n"
    [item] = [i for i in items(cli(ws, "--json", "conflicts", "list")) if i.get("path") == path]
    assert cli(ws, "conflicts", "show", item["id"]).stdout == "here\n"
    fd = at(ws.root, path)  # deleted here: the cloud's copy goes to its trash
    os.unlink(path.rsplit("/", 1)[1], dir_fd=fd)
    os.close(fd)
    cloud_sync()
    assert read(cloud, path) is None


def test_an_interrupted_run_keeps_a_long_path_under_its_real_path(tmp_path):
    """recover_holding() and reindex_conflicts() name a short-id copy by its sidecar."""
    from peersync.core.selection import Selection
    from peersync.replica.store import Store

    root = tmp_path / "ws"
    root.mkdir()
    path = long_path(root)
    write(root, path, b"replaced, not yet kept\n", OLD)
    store = Store(root, Selection())
    held = store._hold(None, path)  # the run held the old version ...
    assert len(os.fsencode(str(held))) < 300
    fd = at(root, path)
    os.unlink(path.rsplit("/", 1)[1], dir_fd=fd)  # ... replaced the live name, and died
    os.close(fd)
    assert store.recover_holding() == 1
    [item] = store.conflicts()
    assert item["path"] == path and store.conflict_bytes(item["id"]) == b"replaced, not yet kept\n"
    store.conflicts_index.unlink()  # an index lost: the kept version is listed again, by its path
    assert store.reindex_conflicts() == 1
    [again] = store.conflicts()
    assert again["path"] == path and store.conflict_bytes(again["id"]) == b"replaced, not yet kept\n"
    assert store.restore_conflict(again["id"])["path"] == path
    assert read(root, path) == b"replaced, not yet kept\n"
