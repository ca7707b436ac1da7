"""Sparse files stay sparse on the peer: over rsync (--sparse), over the agent channel in ranges
(a restricted key: holes travel as their length, zero blocks are not written), and in local copies."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from peersync.replica import sparse
from peersync.replica.scan import hash_file
from peersync.replica.store import Store
from peersync.core.selection import Selection
from peersync.sync.runner import run_sync
from peersync.testing import wire_pair

GB = 1 << 30
PATH = "memory/disk.img"


def make_sparse(path: Path, size: int = GB) -> Path:
    """A `size`-byte file with 8 kB of data (4 kB at the start, 4 kB in the middle), the rest holes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(os.urandom(4096))
        f.seek(size // 2)
        f.write(os.urandom(4096))
        f.truncate(size)
    return path


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def _sparse_supported(tmp_path: Path) -> bool:
    probe = make_sparse(tmp_path / "probe", 64 << 20)
    try:
        return allocated(probe) < 1 << 20
    finally:
        probe.unlink()


@pytest.fixture
def holes(tmp_path):
    if not _sparse_supported(tmp_path):
        pytest.skip("this file system does not keep holes")


def restricted_pair(tmp_path, sshd):
    """A pair whose remote is reached through a key restricted to the agent: no rsync, ranges only."""
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    key, pub = sshd.new_client_key(f"sparse-{os.urandom(4).hex()}")
    sshd.add_key(pub, options=f'command="{sys.executable} -m peersync agent --restrict {pair.remote.root}",restrict')
    peers = pair.local.load_peers()
    peer = peers["remote"]
    peers["remote"] = type(peer)(**{**peer.__dict__, "identity": str(key)})
    pair.local.save_peers(peers)
    return pair


def check_sparse_copy(source: Path, copy: Path) -> None:
    assert os.stat(copy).st_size == os.stat(source).st_size == GB
    assert hash_file(copy) == hash_file(source)
    assert allocated(copy) < 16 << 20, f"{copy} arrived with {allocated(copy) >> 20} MB allocated"


def test_a_sparse_file_stays_sparse_over_rsync(tmp_path, sshd, holes):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)

    source = make_sparse(pair.local.root / PATH)
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    check_sparse_copy(source, pair.remote.root / PATH)


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_a_sparse_file_stays_sparse_over_the_agent_channel(tmp_path, sshd, holes, monkeypatch, direction):
    import peersync.sync.transfer as engine

    def no_rsync(*args, **kwargs):
        raise AssertionError("a restricted key's peer gets no rsync")

    monkeypatch.setattr(engine, "rsync_files", no_rsync)
    pair = restricted_pair(tmp_path, sshd)
    origin, peer = (pair.local, pair.remote) if direction == "push" else (pair.remote, pair.local)
    source = make_sparse(origin.root / PATH)
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    assert not report.problems, report.problems
    check_sparse_copy(source, peer.root / PATH)


def test_a_local_copy_keeps_holes(tmp_path, holes):
    """replica/sparse.copy, which Store.put_back (and stage_log) use: holes stay holes."""
    source = make_sparse(tmp_path / "source.img")
    with open(source, "rb") as src, open(tmp_path / "copy.img", "wb") as dst:
        sparse.copy(src.fileno(), dst.fileno(), GB)
    check_sparse_copy(source, tmp_path / "copy.img")
    root = tmp_path / "ws"
    root.mkdir()
    Store(root, Selection()).put_back(PATH, source, "restored for the test")
    check_sparse_copy(source, root / PATH)


def test_zero_blocks_written_in_ranges_become_holes(tmp_path, holes):
    """A range of zeros that arrives as bytes (a sender without hole support) is not written."""
    with open(tmp_path / "out", "wb") as f:
        sparse.write_at(f.fileno(), 0, b"x" * 100)
        for at in range(100, 64 << 20, 4 << 20):
            sparse.write_at(f.fileno(), at, bytes(min(4 << 20, (64 << 20) - at)))
        sparse.write_at(f.fileno(), 64 << 20, b"end")
    data = (tmp_path / "out").read_bytes()
    assert data == b"x" * 100 + bytes((64 << 20) - 100) + b"end"
    assert allocated(tmp_path / "out") < 1 << 20


def test_a_grown_sparse_file_stays_sparse(tmp_path, sshd, holes):
    """A sparse file appended to travels as its new bytes; the peer rebuilds it from its own copy
    (read_tail), holes kept."""
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    source = make_sparse(pair.local.root / PATH)
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    with open(source, "ab") as f:
        f.write(os.urandom(1 << 20))
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    copy = pair.remote.root / PATH
    assert hash_file(copy) == hash_file(source)
    assert allocated(copy) < 16 << 20, f"{copy} arrived with {allocated(copy) >> 20} MB allocated"
