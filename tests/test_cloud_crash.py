"""A bisync with a cloud folder killed (SIGKILL) at random moments recovers on the next sync without loss."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peersync.peers.manage import add_cloud_peer
from peersync.sync.runner import run_sync
from peersync.testing.trees import selection_files
from peersync.testing.workspace_gen import generate, mutate
from peersync.workspace.workspace import Workspace

TRIALS = 4


@pytest.fixture(autouse=True)
def no_rclone_conf(monkeypatch):
    monkeypatch.setenv("RCLONE_CONFIG", "/dev/null")


def _bulk(root: Path, side: str, rng: random.Random) -> dict[str, bytes]:
    """New files on one side, big enough that the run takes a while to move them."""
    made = {}
    for i in range(200):
        rel = f"memory/bulk-{side}/n{i:03}.md"
        made[rel] = f"{side} note {i}\n".encode() * rng.randint(10, 400)
    for i in range(3):
        made[f"memory/bulk-{side}/big{i}.bin"] = rng.randbytes(3 << 20)
    for rel, data in made.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return made


def _sync_process(ws: Workspace) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "peersync", "-w", str(ws.root), "sync", "box"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def _wait_for_lock(cloud: Path, proc: subprocess.Popen) -> float:
    """Block until the run holds the cloud lock (it is past start-up and about to write)."""
    locks = cloud / ".peersync" / "locks"
    while proc.poll() is None:
        if locks.is_dir() and any(locks.iterdir()):
            return time.monotonic()
        time.sleep(0.005)
    return time.monotonic()


def _rclones_on(cloud: Path) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"rclone") and any(str(cloud).encode() in part for part in cmd):
            found.append(int(pid))
    return found


def _restore(snapshot: Path, target: Path) -> None:
    shutil.rmtree(target)
    shutil.copytree(snapshot, target, symlinks=True)


def test_a_killed_bisync_recovers_without_loss(tmp_path):
    ws = Workspace(tmp_path / "ws")
    cloud = tmp_path / "cloud"
    ws.root.mkdir()
    generate(ws.root, files=1200, seed=3)
    add_cloud_peer(ws, "box", str(cloud), mode="bisync", test=False)
    assert run_sync(ws, ["box"])[0].ok  # the baseline both sides agree on
    # Then both sides move on: edits, appends, deletions, and new files on each side.
    mutate(ws.root, seed=11, n=60)
    mutate(cloud, seed=12, n=60)
    rng = random.Random(7)
    created = {**_bulk(ws.root, "here", rng), **_bulk(cloud, "there", rng)}
    snapshots = tmp_path / "snapshot"
    shutil.copytree(ws.root, snapshots / "ws", symlinks=True)
    shutil.copytree(cloud, snapshots / "cloud", symlinks=True)

    # The reference: the same run, not interrupted.
    proc = _sync_process(ws)
    locked = _wait_for_lock(cloud, proc)
    assert proc.wait(300) == 0
    duration = time.monotonic() - locked
    expected = selection_files(ws)
    assert selection_files(cloud) == expected
    for rel, data in created.items():  # sanity of the reference: both sides' new files arrived
        assert expected[rel] == data

    killed = 0
    for trial in range(TRIALS):
        _restore(snapshots / "ws", ws.root)
        _restore(snapshots / "cloud", cloud)
        proc = _sync_process(ws)
        _wait_for_lock(cloud, proc)
        time.sleep(random.Random(trial).uniform(0.0, 0.8) * duration)
        if proc.poll() is None:
            proc.kill()
            killed += 1
        proc.wait(60)
        deadline = time.monotonic() + 10  # rclone dies with peersync (PR_SET_PDEATHSIG): no writer left behind
        while _rclones_on(cloud) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _rclones_on(cloud), f"trial {trial}: rclone outlived the killed sync"

        reports = [run_sync(ws, ["box"])[0] for _ in range(2)]
        assert all(r.ok for r in reports), [r.error for r in reports]
        assert not reports[-1].changed, f"trial {trial}: the second sync after recovery still changed things"
        assert selection_files(ws) == expected, f"trial {trial}: workspace differs from the uninterrupted run"
        assert selection_files(cloud) == expected, f"trial {trial}: cloud differs from the uninterrupted run"
        assert not list((cloud / ".peersync" / "locks").iterdir())
        assert not [p for p in cloud.rglob("*.peersync-part")]
        assert not any((ws.state / "holding").rglob("*")) if (ws.state / "holding").exists() else True
    assert killed >= 1
