"""Cloud folders as peers, end to end against real rclone: a local-directory remote and `rclone serve s3`."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from peersync.cloud.config import CloudSpec
from peersync.cloud.folder import open_cloud, probe_cloud
from peersync.core.selection import Selection
from peersync.core.types import Mode, Policy
from peersync.peers.manage import add_cloud_peer
from peersync.replica.store import Store
from peersync.sync.runner import run_sync
from peersync.testing.trees import selection_files
from peersync.transport.rclone import find_rclone
from peersync.workspace.workspace import Workspace

RCLONE = find_rclone()
KEY, SECRET = "PSTESTKEY", "pstest-secret-0123456789"


# -- fixtures: the clouds ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One `rclone serve s3` on loopback for the session; each test gets its own bucket."""
    data = tmp_path_factory.mktemp("s3data")
    log = tmp_path_factory.mktemp("s3log") / "serve.log"
    port = _free_port()
    env = {**os.environ, "RCLONE_CONFIG": "/dev/null"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([RCLONE, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key",
                                 f"{KEY},{SECRET}", str(data)], env=env, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"rclone serve s3 did not start: {log.read_text()[-500:]}", pytrace=False)
            time.sleep(0.1)
    prefix = "RCLONE_CONFIG_PSTESTS3_"
    yield SimpleNamespace(port=port, data=data, env={
        prefix + "TYPE": "s3", prefix + "PROVIDER": "Rclone", prefix + "ENDPOINT": f"http://127.0.0.1:{port}",
        prefix + "ACCESS_KEY_ID": KEY, prefix + "SECRET_ACCESS_KEY": SECRET})
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Cloud:
    """The other side of a cloud folder: a person or desktop app reading and writing it through rclone."""

    def __init__(self, remote: str, kind: str, scratch: Path):
        self.remote, self.kind, self.scratch = remote, kind, scratch

    def rclone(self, *args: str, input: bytes | None = None) -> bytes:
        proc = subprocess.run([RCLONE, *args], input=input, capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout

    def at(self, rel: str = "") -> str:
        return f"{self.remote}/{rel}" if rel else self.remote

    def put(self, rel: str, data: str | bytes, mtime: float | None = None) -> None:
        with tempfile.NamedTemporaryFile(dir=self.scratch, delete=False) as f:
            f.write(data.encode() if isinstance(data, str) else data)
        if mtime is not None:
            os.utime(f.name, (mtime, mtime))
        self.rclone("copyto", f.name, self.at(rel))
        os.unlink(f.name)

    def read(self, rel: str) -> bytes:
        return self.rclone("cat", self.at(rel))

    def rm(self, rel: str) -> None:
        self.rclone("deletefile", self.at(rel))

    def paths(self, under: str = "") -> set[str]:
        proc = subprocess.run([RCLONE, "lsjson", "-R", "--files-only", self.at(under)], capture_output=True)
        if proc.returncode != 0:
            return set()
        return {item["Path"] for item in json.loads(proc.stdout)}

    def files(self) -> dict[str, bytes]:
        """Everything in the folder except peersync's own `.peersync/`."""
        dest = Path(tempfile.mkdtemp(dir=self.scratch))
        subprocess.run([RCLONE, "copy", self.remote, str(dest), "--exclude", "/.peersync/**"], capture_output=True)
        return {str(p.relative_to(dest).as_posix()): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


@pytest.fixture(autouse=True)
def no_rclone_conf(monkeypatch):
    monkeypatch.setenv("RCLONE_CONFIG", "/dev/null")


def _s3_cloud(request, tmp_path, monkeypatch) -> Cloud:
    server = request.getfixturevalue("s3_server")
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    bucket = "b" + secrets.token_hex(5)
    cloud = Cloud(f"pstests3:{bucket}/agent", "s3", tmp_path)
    cloud.rclone("mkdir", f"pstests3:{bucket}")
    return cloud


@pytest.fixture(params=["local", "s3"])
def cloud(request, tmp_path, monkeypatch) -> Cloud:
    """A cloud folder on each kind of backend: a local directory (no stored hashes: size + modtime)
    and S3 (md5)."""
    if request.param == "local":
        return Cloud(str(tmp_path / "cloud"), "local", tmp_path)
    return _s3_cloud(request, tmp_path, monkeypatch)


@pytest.fixture
def s3(request, tmp_path, monkeypatch) -> Cloud:
    return _s3_cloud(request, tmp_path, monkeypatch)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.ensure_state()
    return ws


# -- helpers ------------------------------------------------------------------------------------------

def add(ws, cloud, mode, name="box", **kw):
    peer, _ = add_cloud_peer(ws, name, cloud.remote, mode=mode, test=False, **kw)
    return peer


def sync(ws, name="box", *, ok=True, **kw):
    report = run_sync(ws, [name], **kw)[0]
    if ok:
        assert report.ok, report.error
    return report


def write(ws, rel, data, mtime=None):
    path = ws.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def conflicts(ws) -> dict[str, list[bytes]]:
    """path → contents kept in the local conflicts/."""
    out: dict[str, list[bytes]] = {}
    for item in Store(ws.root, Selection()).conflicts():
        out.setdefault(item["path"], []).append((ws.root / item["file"]).read_bytes())
    return out


def trash(root: Path, rel: str) -> list[bytes]:
    return [p.read_bytes() for p in root.glob(f"*/{rel}")]


def cli(ws, *args, env=None):
    return subprocess.run([sys.executable, "-m", "peersync", "-w", str(ws.root), *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=180, env=env)


BASE = {"MEMORY.md": "# Memory\n", "USER.md": "# User\nlikes tea\n", "memory/a.md": "a v1\n",
        "memory/b.md": "b v1\n", "memory/c.md": "c v1\n", "memory/d.md": "d v1\n", "memory/e.md": "e v1\n",
        "memory/f.md": "f v1\n", "memory/2026-01-26.md": "- 09:00 woke up\n",
        "memory/Café notes/ünïcode ☕ [1] #x.md": "odd name\n", "memory/empty.md": ""}


def seed(ws, files=BASE):
    for rel, text in files.items():
        write(ws, rel, text, mtime=time.time() - 3600)


# -- bisync ---------------------------------------------------------------------------------------------

def test_bisync_round_trip_carries_edits_creations_and_deletions_both_ways(ws, cloud):
    seed(ws)
    write(ws, "IDENTITY.md", "me\n")
    write(ws, "config/secrets.json", "{}\n")
    write(ws, "memory/x.tmp", "scratch\n")
    add(ws, cloud, "bisync")
    first = sync(ws)
    assert sorted(first.pushed) == sorted(BASE)
    assert cloud.files() == {k: v.encode() for k, v in BASE.items()}  # never IDENTITY, config, *.tmp, state
    assert not sync(ws).changed
    write(ws, "memory/a.md", "a edited here\n")
    cloud.put("memory/b.md", "b edited in the cloud\n")
    write(ws, "memory/new-here.md", "new here\n")
    cloud.put("memory/sub/new-there.md", "new there\n")
    (ws.root / "memory/c.md").unlink()
    cloud.rm("memory/d.md")
    report = sync(ws)
    assert sorted(report.pushed) == ["memory/a.md", "memory/new-here.md"]
    assert sorted(report.pulled) == ["memory/b.md", "memory/sub/new-there.md"]
    assert report.deleted_remote == ["memory/c.md"] and report.deleted_local == ["memory/d.md"]
    assert selection_files(ws) == cloud.files()
    assert (ws.root / "memory/b.md").read_text() == "b edited in the cloud\n"
    # deletions went to a trash on each side, not away
    assert trash(ws.state / "trash", "memory/d.md") == [b"d v1\n"]
    assert "memory/c.md" in {p.split("/", 1)[1] for p in cloud.paths(".peersync/trash")}
    assert not cloud.paths(".peersync/locks")  # the lock is gone after the run
    assert not sync(ws).changed
    history = ws.history()
    assert history[0]["peer"] == "box" and history[0]["ok"]


def test_bisync_conflicts_merges_and_delete_versus_modify(ws, cloud):
    seed(ws)
    add(ws, cloud, "bisync")
    sync(ws)
    t = time.time() - 600
    write(ws, "USER.md", "# User\nlikes coffee (edited here)\n", mtime=t + 100)
    cloud.put("USER.md", "# User\nlikes mate (edited in the cloud, later)\n", mtime=t + 200)
    cloud.put("memory/plan.txt", "cloud version (older)\n", mtime=t + 200)  # not merged: newest wins
    write(ws, "memory/plan.txt", "local version (newer)\n", mtime=t + 300)
    with open(ws.root / "memory/2026-01-26.md", "a") as f:
        f.write("- 10:00 local: booked the dentist\n")
    cloud.put("memory/2026-01-26.md", "- 09:00 woke up\n- 10:05 cloud: watered the plants\n")
    cloud.rm("memory/e.md")
    write(ws, "memory/e.md", "e edited here while deleted there\n")
    (ws.root / "memory/f.md").unlink()
    cloud.put("memory/f.md", "f edited there while deleted here\n")
    report = sync(ws)
    local, remote = selection_files(ws), cloud.files()
    assert local == remote
    # a memory file: merged, both edits live; the versions before the merge are kept on this machine
    user = local["USER.md"].decode()
    assert user.startswith("# User\n> ⚠️ **peersync kept 2 versions of this part**")
    assert "likes coffee (edited here)\n" in user and "likes mate (edited in the cloud, later)\n" in user
    kept = conflicts(ws)
    assert sorted(kept["USER.md"]) == [b"# User\nlikes coffee (edited here)\n",
                                       b"# User\nlikes mate (edited in the cloud, later)\n"]
    # a plain file: newest wins; the loser is kept, on this machine, whichever side it came from
    assert local["memory/plan.txt"] == b"local version (newer)\n"
    assert kept["memory/plan.txt"] == [b"cloud version (older)\n"]
    assert {c.path for c in report.conflicts} == {"USER.md", "memory/plan.txt"}
    assert all(c.saved_as for c in report.conflicts)
    # both appended to the daily note: one merged log, every line once
    assert sorted(report.merged) == ["USER.md", "memory/2026-01-26.md"]
    lines = local["memory/2026-01-26.md"].decode().splitlines()
    assert lines[0] == "- 09:00 woke up" and sorted(lines[1:]) == ["- 10:00 local: booked the dentist",
                                                                   "- 10:05 cloud: watered the plants"]
    # deletion never beats content
    assert local["memory/e.md"] == b"e edited here while deleted there\n"
    assert local["memory/f.md"] == b"f edited there while deleted here\n"
    assert not report.deleted_local and not report.deleted_remote
    assert not sync(ws).changed


def test_mass_deletion_in_the_cloud_is_stopped_by_the_guard(ws, cloud):
    seed(ws, {f"memory/n{i}.md": f"note {i}\n" for i in range(10)})
    add(ws, cloud, "bisync")
    sync(ws)
    for i in range(8):
        cloud.rm(f"memory/n{i}.md")
    before = selection_files(ws)
    stopped = sync(ws, ok=False)
    assert not stopped.ok and "would delete 8 of 10 files locally" in stopped.error
    assert "--force" in stopped.error
    assert selection_files(ws) == before  # nothing was changed
    forced = sync(ws, force=True)
    assert len(forced.deleted_local) == 8
    assert sorted(selection_files(ws)) == ["memory/n8.md", "memory/n9.md"]
    assert len(list((ws.state / "trash").rglob("n*.md"))) == 8


def test_a_vanished_cloud_folder_is_not_taken_for_deletions(ws, tmp_path):
    cloud = Cloud(str(tmp_path / "cloud"), "local", tmp_path)
    seed(ws, {"MEMORY.md": "m\n", "memory/a.md": "a\n"})  # too few files for the mass-delete ratio
    add(ws, cloud, "bisync")
    sync(ws)
    shutil.rmtree(cloud.remote)  # an unmounted drive, a renamed folder…
    stopped = sync(ws, ok=False)
    assert "holds none of the 2 files" in stopped.error and "--force" in stopped.error
    assert sorted(selection_files(ws)) == ["MEMORY.md", "memory/a.md"]


def test_a_vanished_folder_is_not_taken_for_deletions_even_without_its_ancestor(ws, tmp_path):
    """The folder's own version records also know what it held: an empty listing records no
    deletion, and the sync stops; once the folder is back, nothing was lost on either side."""
    cloud = Cloud(str(tmp_path / "cloud"), "local", tmp_path)
    seed(ws, {"MEMORY.md": "m\n", "memory/a.md": "a\n"})
    add(ws, cloud, "bisync")
    sync(ws)
    (ws.state / "cloud" / "box" / "ancestor.json").unlink()
    shutil.move(cloud.remote, str(tmp_path / "away"))
    stopped = sync(ws, ok=False)
    assert "holds none of the 2 files" in stopped.error
    shutil.rmtree(cloud.remote)  # (taking the folder's lock made an empty one at its place)
    shutil.move(str(tmp_path / "away"), cloud.remote)
    report = sync(ws)
    assert not report.deleted_local and not report.deleted_remote
    assert sorted(selection_files(ws)) == sorted(cloud.files()) == ["MEMORY.md", "memory/a.md"]


def test_a_lost_sync_state_means_union_never_deletions(ws, cloud):
    """Everything this machine knew about the folder — its ancestor and its version records — is
    gone: what happened there is unknown, so a file missing there comes back (a union, never a
    deletion).  A deletion made here is this machine's own record: it still reaches the folder
    (to its trash), as it would have without the loss."""
    seed(ws)
    add(ws, cloud, "bisync")
    sync(ws)
    cloud.rm("memory/a.md")
    (ws.root / "memory/b.md").unlink()
    for name in ("ancestor.json", "versions.sqlite"):
        (ws.state / "cloud" / "box" / name).unlink()
    report = sync(ws)
    assert not report.deleted_local and report.deleted_remote == ["memory/b.md"]
    assert report.pushed == ["memory/a.md"] and not report.pulled
    expected = {k: v.encode() for k, v in BASE.items() if k != "memory/b.md"}
    assert selection_files(ws) == cloud.files() == expected


def test_pointing_a_peer_at_another_folder_forgets_the_old_one(ws, cloud, tmp_path):
    seed(ws)
    add(ws, cloud, "bisync")
    sync(ws)
    other = Cloud(str(tmp_path / "other"), "local", tmp_path)
    other.put("memory/only-there.md", "x\n")
    add(ws, other, "bisync")  # same name, another folder: the old ancestor must not delete anything
    report = sync(ws)
    assert not report.deleted_local and report.pulled == ["memory/only-there.md"]


def test_dry_run_changes_nothing_anywhere(ws, cloud):
    seed(ws)
    add(ws, cloud, "bisync")
    sync(ws)
    write(ws, "memory/a.md", "a edited\n")
    cloud.put("memory/b.md", "b edited\n")
    cloud.rm("memory/c.md")
    local_before, cloud_before = selection_files(ws), cloud.files()
    history = len(ws.history())
    report = sync(ws, dry_run=True)
    assert report.dry_run and report.pushed == ["memory/a.md"] and report.pulled == ["memory/b.md"]
    assert report.deleted_local == ["memory/c.md"]
    assert selection_files(ws) == local_before and cloud.files() == cloud_before
    assert len(ws.history()) == history and not cloud.paths(".peersync/locks")
    proc = cli(ws, "diff", "box")
    assert proc.returncode == 0 and "Dry run" in proc.stdout and "memory/a.md" in proc.stdout


def test_manual_policy_keeps_both_versions_on_both_sides(ws, s3):
    seed(ws)
    add(ws, s3, "bisync")
    sync(ws)
    write(ws, "memory/plan.txt", "mine\n")  # not merged: the policy decides
    s3.put("memory/plan.txt", "theirs\n")
    report = sync(ws, policy=Policy.MANUAL)
    assert (ws.root / "memory/plan.txt").read_text() == "mine\n" and s3.read("memory/plan.txt") == b"theirs\n"
    assert conflicts(ws)["memory/plan.txt"] == [b"theirs\n"]
    kept_there = [p for p in s3.paths(".peersync/conflicts") if p.endswith("/memory/plan.txt")]
    assert len(kept_there) == 1 and s3.read(f".peersync/conflicts/{kept_there[0]}") == b"mine\n"
    assert report.conflicts[0].kept == "both"


# -- mirror -----------------------------------------------------------------------------------------------

def test_mirror_push_replicates_through_the_trash_and_the_guard(ws, cloud):
    seed(ws)
    add(ws, cloud, "mirror")
    cloud.put("memory/stray.md", "was in the cloud folder before\n")
    cloud.put("photos/cat.jpg", b"\xff\xd8 not synced: outside the selection")
    report = sync(ws)
    assert report.mode is Mode.PUSH and report.deleted_remote == ["memory/stray.md"]
    assert cloud.files() == {**{k: v.encode() for k, v in BASE.items()},
                             "photos/cat.jpg": b"\xff\xd8 not synced: outside the selection"}
    cloud.put("USER.md", "edited in the cloud: a mirror overwrites it, but keeps it\n")
    write(ws, "memory/a.md", "a v2\n")
    report = sync(ws)
    assert sorted(report.pushed) == ["USER.md", "memory/a.md"]
    assert cloud.read("USER.md") == BASE["USER.md"].encode()
    assert conflicts(ws)["USER.md"] == [b"edited in the cloud: a mirror overwrites it, but keeps it\n"]
    for rel in list(BASE)[:7]:
        (ws.root / rel).unlink()
    stopped = sync(ws, ok=False)
    assert "stopped" in stopped.error and "on box" in stopped.error
    assert set(cloud.files()) >= set(BASE)
    forced = sync(ws, force=True)
    assert len(forced.deleted_remote) == 7
    assert set(cloud.files()) == set(list(BASE)[7:]) | {"photos/cat.jpg"}


def test_mirror_pull_makes_the_workspace_a_reader(ws, s3, tmp_path):
    source = Workspace(tmp_path / "agent")
    source.root.mkdir()
    seed(source)
    add(source, s3, "mirror", name="share")
    sync(source, "share")
    write(ws, "memory/mine.md", "only here\n")
    write(ws, "USER.md", "a local edit the mirror replaces (kept)\n")
    add(ws, s3, "mirror", direction="pull")
    report = sync(ws)
    assert report.mode is Mode.PULL and report.deleted_local == ["memory/mine.md"]
    assert selection_files(ws) == {k: v.encode() for k, v in BASE.items()}
    assert conflicts(ws)["USER.md"] == [b"a local edit the mirror replaces (kept)\n"]
    assert trash(ws.state / "trash", "memory/mine.md") == [b"only here\n"]
    write(source, "memory/a.md", "a v2 from the agent\n")
    sync(source, "share")
    assert sync(ws).pulled == ["memory/a.md"] and (ws.root / "memory/a.md").read_text() == "a v2 from the agent\n"
    assert not s3.paths(".peersync/trash")  # a pull never touches the cloud


# -- mailbox ------------------------------------------------------------------------------------------------

INBOX_SCRIPT = """
import json, os, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"args": sys.argv[2:], "env": os.environ["PEERSYNC_INBOX_FILES"].splitlines()}) + "\\n")
"""


def test_mailbox_pushes_the_workspace_and_moves_the_outbox_into_the_inbox_once(ws, cloud, tmp_path):
    script = tmp_path / "notify.py"
    script.write_text(INBOX_SCRIPT)
    calls = tmp_path / "calls.jsonl"
    ws.config_file.write_text("cloud:\n  inbox:\n    command: " + json.dumps([sys.executable, str(script), str(calls)]) + "\n")
    seed(ws)
    write(ws, "_inbox/report.pdf", b"an earlier, different report")
    add(ws, cloud, "mailbox")
    first = sync(ws)
    assert first.mode is Mode.PUSH and sorted(first.pushed) == sorted(BASE)
    assert {p for p in cloud.files() if not p.startswith("_outbox/")} == set(BASE)  # _inbox/ is never pushed
    if cloud.kind == "local":
        assert Path(cloud.remote, "_outbox").is_dir()  # bootstrapped for the user
    else:
        assert cloud.paths("_outbox") == {".peersync-keep"}  # S3 has no empty folders: a marker
    cloud.put("_outbox/report.pdf", b"%PDF the new report")
    cloud.put("_outbox/notes/todo.txt", "buy milk\n")
    cloud.put("_outbox/.DS_Store", b"junk")
    report = sync(ws)
    assert sorted(report.pulled) == ["_inbox/notes/todo.txt", "_inbox/report (2).pdf"]
    assert (ws.root / "_inbox/report.pdf").read_bytes() == b"an earlier, different report"  # never overwritten
    assert (ws.root / "_inbox/report (2).pdf").read_bytes() == b"%PDF the new report"
    assert (ws.root / "_inbox/notes/todo.txt").read_text() == "buy milk\n"
    assert cloud.paths("_outbox") <= {".DS_Store", ".peersync-keep"}  # delivered files are gone from the cloud
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [
        {"args": ["_inbox/notes/todo.txt", "_inbox/report (2).pdf"],
         "env": ["_inbox/notes/todo.txt", "_inbox/report (2).pdf"]}]
    again = sync(ws)
    assert not again.pulled and len(calls.read_text().splitlines()) == 1  # arrived once
    assert sorted(p.relative_to(ws.root / "_inbox").as_posix() for p in (ws.root / "_inbox").rglob("*")
                  if p.is_file()) == ["notes/todo.txt", "report (2).pdf", "report.pdf"]
    # the push side: an edit in the cloud is overwritten by the workspace, and kept here
    cloud.put("MEMORY.md", "edited in the cloud folder\n")
    write(ws, "memory/a.md", "a v2\n")
    push = sync(ws)
    assert sorted(push.pushed) == ["MEMORY.md", "memory/a.md"]
    assert conflicts(ws)["MEMORY.md"] == [b"edited in the cloud folder\n"]
    assert cloud.read("MEMORY.md") == BASE["MEMORY.md"].encode()


def test_mailbox_finishes_a_delivery_that_a_crash_interrupted_without_duplicating(ws, cloud):
    add(ws, cloud, "mailbox")
    sync(ws)
    cloud.put("_outbox/photo.jpg", b"\xff\xd8 a photo")
    # The state a crash leaves after delivering and recording, before deleting from the cloud:
    session = asyncio.run(_listing(ws))
    obj = session["_outbox/photo.jpg"]
    write(ws, "_inbox/photo.jpg", b"\xff\xd8 a photo")
    (ws.state / "cloud" / "box" / "inbox.json").write_text(json.dumps({"format": 1, "delivered": [
        {"path": "photo.jpg", "size": obj.size, "mtime_ns": obj.mtime_ns, "bhash": obj.bhash, "as": "_inbox/photo.jpg"}]}))
    report = sync(ws)
    assert not report.pulled
    assert [p.name for p in (ws.root / "_inbox").iterdir()] == ["photo.jpg"]
    assert "photo.jpg" not in cloud.paths("_outbox")
    assert json.loads((ws.state / "cloud" / "box" / "inbox.json").read_text())["delivered"] == []


async def _listing(ws):
    peer = ws.peer("box")
    session = await open_cloud(ws, peer, CloudSpec.from_peer(peer), ws.sync_config())
    try:
        return await session.list_all()
    finally:
        await session.close()


def test_mailbox_only_pushes(ws, cloud):
    add(ws, cloud, "mailbox")
    report = run_sync(ws, ["box"], mode=Mode.PULL)[0]
    assert not report.ok and report.error_exit == 2 and "mailbox" in report.error


# -- locks ----------------------------------------------------------------------------------------------

def test_another_machines_lock_is_respected_and_only_a_person_removes_it(ws, cloud):
    seed(ws)
    add(ws, cloud, "bisync")
    sync(ws)
    other = "ab" * 16 + "-0123456789ab.json"
    cloud.put(f".peersync/locks/{other}", json.dumps({"host": "mac-mini", "what": "sync", "since": "then"}))
    write(ws, "memory/a.md", "waiting\n")
    busy = sync(ws, ok=False)
    assert "locked by peersync on mac-mini" in busy.error and "cloud unlock box --all" in busy.error
    assert cloud.paths(".peersync/locks") == {other}  # never cleared by a sync
    assert cloud.read("memory/a.md") == b"a v1\n"
    proc = cli(ws, "cloud", "unlock", "box")
    assert proc.returncode == 0 and cloud.paths(".peersync/locks") == {other}  # not ours: kept
    proc = cli(ws, "cloud", "unlock", "box", "--all")
    assert proc.returncode == 0 and "Removed 1" in proc.stdout and not cloud.paths(".peersync/locks")
    assert sync(ws).pushed == ["memory/a.md"]


def test_this_machines_leftover_lock_is_cleared_by_the_next_sync(ws, cloud):
    seed(ws)
    add(ws, cloud, "bisync")
    cloud.put(f".peersync/locks/{ws.instance_id}-deadbeef0000.json", json.dumps({"host": socket.gethostname()}))
    sync(ws)
    assert not cloud.paths(".peersync/locks")
    # A copy of this workspace on another machine has the same instance id: its lock is not ours.
    twin = f"{ws.instance_id}-0123456789ab.json"
    cloud.put(f".peersync/locks/{twin}", json.dumps({"host": "the-clone", "since": "now"}))
    busy = sync(ws, ok=False)
    assert "locked by peersync on the-clone" in busy.error and cloud.paths(".peersync/locks") == {twin}


# -- hashes ---------------------------------------------------------------------------------------------

def test_identical_files_are_recognised_without_downloading_them(ws, s3, tmp_path):
    """On S3 (md5) a first sync finds equal files by hashing the local copy, never downloading;
    a same-size cloud file with other content is downloaded and told apart."""
    seed(ws)
    source = tmp_path / "copy"
    for rel, text in BASE.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(text)
    (source / "memory/a.md").write_text("A v1\n")  # same size, other content
    s3.rclone("copy", str(source), s3.remote)
    add(ws, s3, "bisync")

    async def scan():
        peer = ws.peer("box")
        session = await open_cloud(ws, peer, CloudSpec.from_peer(peer), ws.sync_config())
        try:
            from peersync.replica.scan import scan as local_scan

            local = local_scan(ws.root, ws.sync_config().selection).manifest
            entries, _, _, _ = await session.manifest(await session.list_all(), local)
            fetched = sorted(p.relative_to(session.work / "fetch").as_posix()
                             for p in (session.work / "fetch").rglob("*") if p.is_file())
            return local, entries, fetched
        finally:
            await session.close()

    local, entries, fetched = asyncio.run(scan())
    assert fetched == ["memory/a.md"]
    assert {p for p in entries if entries[p].same_content(local[p])} == set(BASE) - {"memory/a.md"}
    report = sync(ws)
    assert report.merged == ["memory/a.md"] and not report.conflicts  # a real difference, no ancestor: merged
    assert (ws.root / "memory/a.md").read_bytes() == s3.read("memory/a.md") == b"A v1\na v1\n"


# -- CLI, providers, status ------------------------------------------------------------------------------

def test_cloud_commands(ws, tmp_path):
    target = tmp_path / "folder"
    assert cli(ws, "cloud", "add", "box", str(target)).returncode == 2  # --mode is required
    assert cli(ws, "cloud", "add", "box", str(target), "--mode", "bisync", "--direction", "pull").returncode == 2
    assert cli(ws, "cloud", "add", "box", str(target), "--mode", "both").returncode == 2
    proc = cli(ws, "cloud", "add", "box", str(target), "--mode", "mirror", "--direction", "pull", "--path", "agent")
    assert proc.returncode == 0 and "Added cloud peer box" in proc.stdout and "the first sync fills it" in proc.stdout
    peers = json.loads(ws.peers_file.read_text())["peers"]
    assert peers["box"]["type"] == "cloud" and peers["box"]["mode"] == "mirror" and peers["box"]["direction"] == "pull"
    assert peers["box"]["path"] == "agent" and peers["box"]["host"] == f"{target}/agent"
    assert "box" in cli(ws, "cloud", "list").stdout
    assert "box" in cli(ws, "peers", "list").stdout  # a peer like the others
    proc = cli(ws, "cloud", "add", "nowhere", "nosuchremote:x", "--mode", "bisync")
    assert proc.returncode == 3 and "could not be reached" in proc.stdout  # saved anyway; 3: not reached
    assert cli(ws, "cloud", "add", "x", "b", "--mode", "bisync", "--provider", "floppy").returncode == 2
    assert cli(ws, "sync", "nowhere").returncode == 2  # unknown rclone remote: bad input
    (ws.state / "cloud" / "box").mkdir(parents=True, exist_ok=True)
    assert cli(ws, "cloud", "remove", "box").returncode == 0
    assert "box" not in json.loads(ws.peers_file.read_text())["peers"] and not (ws.state / "cloud" / "box").exists()
    assert cli(ws, "cloud", "remove", "box").returncode == 2


def test_provider_shortcut_with_secrets_from_the_environment(ws, s3_server, monkeypatch):
    bucket = "p" + secrets.token_hex(5)
    ws.config_file.write_text(f"cloud:\n  providers:\n    s3:\n      provider: Rclone\n"
                              f"      endpoint: http://127.0.0.1:{s3_server.port}\n")
    env = {**os.environ, "RCLONE_CONFIG": "/dev/null"}
    proc = cli(ws, "cloud", "add", "s3box", f"{bucket}/agent", "--mode", "bisync", "--provider", "s3", env=env)
    # saved; the test says what is missing (exit status 3: the peer could not be reached yet)
    assert proc.returncode == 3 and "AWS_ACCESS_KEY_ID" in proc.stdout
    seed(ws)
    env.update(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
    proc = cli(ws, "--json", "sync", "s3box", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(json.loads(proc.stdout)["reports"][0]["pushed"]) == sorted(BASE)
    assert SECRET not in ws.peers_file.read_text() and SECRET not in ws.history_file.read_text()
    env["AWS_SECRET_ACCESS_KEY"] = "wrong-secret"
    proc = cli(ws, "sync", "s3box", env=env)
    assert proc.returncode == 1 and "wrong-secret" not in proc.stdout + proc.stderr


def test_status_probe_of_a_cloud_peer(ws, cloud):
    add(ws, cloud, "bisync")
    before = asyncio.run(probe_cloud(ws, ws.peer("box")))
    assert before["reachable"] and before["workspace"] is False and before["version"].startswith("rclone ")
    assert set(before) >= {"peer", "host", "reachable", "rtt_ms", "clock_offset_s", "version", "instance_id"}
    seed(ws)
    sync(ws)
    assert asyncio.run(probe_cloud(ws, ws.peer("box")))["workspace"] is True
    add_cloud_peer(ws, "gone", "nosuchremote:agent", mode="bisync", test=False)
    gone = asyncio.run(probe_cloud(ws, ws.peer("gone")))
    assert not gone["reachable"] and "nosuchremote" in gone["error"]


# -- several machines on one cloud folder ------------------------------------------------------------

def test_two_machines_share_one_cloud_folder_and_never_write_it_at_once(tmp_path):
    cloud = Cloud(str(tmp_path / "cloud"), "local", tmp_path)
    a, b = Workspace(tmp_path / "laptop"), Workspace(tmp_path / "server")
    for w in (a, b):
        w.root.mkdir()
        add(w, cloud, "bisync")
    seed(a)
    write(b, "memory/from-server.md", "server note\n")
    sync(a)
    sync(b)
    sync(a)
    assert selection_files(a) == selection_files(b) == cloud.files()
    # Both start at once, a few times: each run either syncs or politely finds the folder busy.
    for round_ in range(3):
        write(a, f"memory/a{round_}.md", f"laptop {round_}\n")
        write(b, f"memory/b{round_}.md", f"server {round_}\n")
        procs = [subprocess.Popen([sys.executable, "-m", "peersync", "-w", str(w.root), "--json", "sync", "box"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in (a, b)]
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            report = json.loads(out)["reports"][0]
            assert report["ok"] or "box is locked by " in report["error"]["message"], report
    assert not cloud.paths(".peersync/locks")
    (a.root / "memory/a.md").unlink()
    for w in (a, b, a, b):
        sync(w)
    assert selection_files(a) == selection_files(b) == cloud.files()
    files = selection_files(a)
    assert {f"memory/a{i}.md" for i in range(3)} | {f"memory/b{i}.md" for i in range(3)} <= set(files)
    assert "memory/a.md" not in files and trash(b.state / "trash", "memory/a.md") == [b"a v1\n"]
