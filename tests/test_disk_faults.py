"""A peer whose disk is full or read-only: a clear error, nothing lost, and recovery after."""

from __future__ import annotations

import contextlib
import os
import subprocess

import pytest

from peersync.sync.runner import run_sync
from peersync.testing.pair import wire_pair
from peersync.testing.trees import selection_files


@contextlib.contextmanager
def tmpfs(path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {got.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def write(root, rel, data: bytes):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize("size", [1 << 10, 3 << 20])  # inline transfer, then rsync
def test_disk_full_on_the_peer(tmp_path, sshd, size):
    with tmpfs(tmp_path / "remote", "1m") as remote_root:
        pair = wire_pair(tmp_path / "local", remote_root, sshd)
        write(pair.local.root, "memory/small.md", b"small\n")
        write(pair.remote.root, "memory/there.md", b"there\n")
        assert run_sync(pair.local)[0].ok
        big = [os.urandom(size) for _ in range(1 if size > 1 << 20 else 1200)]
        for i, data in enumerate(big):
            write(pair.local.root, f"memory/big/{i}.bin", data)
        before_local = selection_files(pair.local)
        report = run_sync(pair.local)[0]
        text = (report.error or "") + " ".join(p.message for p in report.problems)
        assert "No space left on device" in text or "disk full" in text, text
        assert "Traceback" not in text
        assert selection_files(pair.local) == before_local  # nothing lost here
        assert (pair.remote.root / "memory/there.md").read_bytes() == b"there\n"
        # whatever arrived is complete and verified; no temp files at real paths
        for rel, data in selection_files(pair.remote).items():
            if rel.startswith("memory/big/"):
                assert data == before_local[rel]
        assert not [p for p in pair.remote.root.rglob("*") if ".peersync-" in p.name and "clawdbot-sync" not in str(p)]
        subprocess.run(["mount", "-o", "remount,size=64m", str(remote_root)], check=True)
        report = run_sync(pair.local)[0]
        assert report.ok, report.error
        assert selection_files(pair.local) == selection_files(pair.remote)


def test_read_only_peer_is_a_clear_error(tmp_path, sshd):
    with tmpfs(tmp_path / "remote", "4m") as remote_root:
        pair = wire_pair(tmp_path / "local", remote_root, sshd)
        write(pair.remote.root, "memory/there.md", b"there\n")
        write(pair.local.root, "memory/here.md", b"here\n")
        subprocess.run(["mount", "-o", "remount,ro", str(remote_root)], check=True)
        report = run_sync(pair.local)[0]
        assert not report.ok and "Read-only file system" in report.error
        assert not (pair.local.root / "memory/there.md").exists()
        assert (pair.local.root / "memory/here.md").read_bytes() == b"here\n"
        subprocess.run(["mount", "-o", "remount,rw", str(remote_root)], check=True)
        assert run_sync(pair.local)[0].ok
        assert selection_files(pair.local) == selection_files(pair.remote)
