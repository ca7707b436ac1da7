"""Large files in ranges over the agent channel (chunks.py, read_range / stage_chunk): memory bounded by
a few ranges whatever the file's size, verified by hash before install, never through a link."""

from __future__ import annotations

import asyncio
import os
import tracemalloc

import pytest

from peersync.core.limits import RANGE as CHUNK
from peersync.replica.handler import Handler
from peersync.replica.scan import entry_for, hash_bytes
from peersync.replica.store import Refused
from peersync.sync import chunks
from peersync.transport.local import LocalSession


def sessions(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "memory").mkdir(parents=True)
    return LocalSession(a), LocalSession(b)


def test_a_large_file_travels_in_ranges_with_bounded_memory(tmp_path):
    source, target = sessions(tmp_path)
    size = 48 << 20
    with open(source.handler.ws.root / "memory/big.bin", "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    entry = entry_for(source.handler.ws.root / "memory/big.bin")

    async def copy():
        item = {"path": "memory/big.bin", "expect": None, "new": entry.to_wire()}
        failed = await chunks.stage_all(source, target, [item])
        assert not failed
        return await target.request("install", items=[item])

    tracemalloc.start()
    try:
        result = asyncio.run(copy())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["results"][0]["ok"], result
    assert entry_for(target.handler.ws.root / "memory/big.bin").hash == entry.hash
    assert peak < 4 * CHUNK + (4 << 20), f"{peak >> 20} MB held for a {size >> 20} MB file"
    asyncio.run(target.close())


def test_a_source_changed_between_ranges_is_refused_at_install(tmp_path):
    source, target = sessions(tmp_path)
    path = source.handler.ws.root / "memory/big.bin"
    path.write_bytes(os.urandom(3 * CHUNK))
    entry = entry_for(path)
    (target.handler.ws.root / "memory/big.bin").write_bytes(b"the target's own version\n")
    expect = entry_for(target.handler.ws.root / "memory/big.bin")
    real = source.request

    async def changing(op, **args):  # the file is rewritten after its first range was read
        out = await real(op, **args)
        if op == "read_range" and args["offset"] == 0:
            with open(path, "r+b") as f:
                f.seek(CHUNK + 5)
                f.write(b"edited")
        return out

    source.request = changing

    async def copy():
        item = {"path": "memory/big.bin", "expect": expect.to_wire(), "new": entry.to_wire()}
        assert not await chunks.stage_all(source, target, [item])
        return await target.request("install", items=[item])

    result = asyncio.run(copy())["results"][0]
    assert not result["ok"] and "changed on the sending side" in result["error"]
    assert (target.handler.ws.root / "memory/big.bin").read_bytes() == b"the target's own version\n"


def test_stage_chunk_takes_only_the_next_range_of_its_own_upload(tmp_path):
    handler = Handler(tmp_path)
    (tmp_path / "memory").mkdir()
    assert handler.op_stage_chunk("ab" * 8, 0, b"first")["size"] == 5
    with pytest.raises(ValueError, match="holds 5 bytes"):
        handler.op_stage_chunk("ab" * 8, 2, b"overlap")
    for bad in ("../../x", "AB" * 8, "short", "a" * 64):
        with pytest.raises(ValueError):
            handler.op_stage_chunk(bad, 0, b"x")
    missing = handler.op_install([{"path": "memory/x", "upload": "cd" * 8, "expect": None,
                                   "new": [1, 1, 0o644, hash_bytes(b"x")]}])["results"][0]
    assert not missing["ok"] and not (tmp_path / "memory/x").exists()
    handler.op_unstage()
    assert not any((tmp_path / "memory/clawdbot-sync/staging").iterdir())


def test_read_range_never_reads_through_a_link(tmp_path):
    (tmp_path / "ws/memory").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.write_bytes(b"not for peers\n")
    os.symlink(secret, tmp_path / "ws/memory/link.md")
    os.symlink(tmp_path, tmp_path / "ws/memory/dir")
    handler = Handler(tmp_path / "ws")
    for path in ("memory/link.md", "memory/dir/secret"):
        with pytest.raises((Refused, OSError)):
            handler.op_read_range(path, 0, 100)
