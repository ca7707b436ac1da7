"""Logs too large to hold merge streamed (sync/logmerge.py): the same bytes as the in-memory
append merge, only the tails after the common prefix travel, memory bounded whatever the size;
a log that cannot merge is a per-path problem and everything else syncs."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from peersync.core import mergefile
from peersync.core.merge import append_merge, merge_tails
from peersync.core.types import Action, Change, Entry, Side
from peersync.replica import handler as handler_module
from peersync.replica.scan import hash_bytes
from peersync.sync import execute, logmerge
from peersync.sync.runner import run_sync
from peersync.testing import default_remote_command, wire_pair
from peersync.testing.rss import peak_mb
from peersync.transport.local import LocalSession

LOG = "memory/events.jsonl"
OTHER = "memory/other.log"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def entry(data: bytes) -> Entry:
    return Entry(len(data), 1, 0o644, hash_bytes(data))


def streamed_result(tmp_path: Path, local: bytes, remote: bytes, ancestor: Entry | None) -> bytes | None | str:
    """What merge_streamed leaves on both sides (checked equal), between two in-process replicas."""
    roots = {side: tmp_path / side.value for side in Side}
    data = {Side.LOCAL: local, Side.REMOTE: remote}
    for side in Side:
        write(roots[side] / LOG, data[side])
    sessions = {side: LocalSession(roots[side]) for side in Side}
    change = Change(LOG, Action.MERGE, None, entry(local), entry(remote), ancestor, "merge")
    try:
        out = asyncio.run(logmerge.merge_streamed(sessions, change, local_first=True))
        if not isinstance(out, logmerge.Streamed):
            return out
        results = set()
        for side in Side:
            if side in out.uploads:
                results.add((sessions[side].handler.uploads / out.uploads[side]).read_bytes())
            else:
                results.add(data[side])
        assert len(results) == 1, "the two sides staged different bytes"
        result = results.pop()
        assert (len(result), hash_bytes(result)) == (out.size, out.digest)
        return result
    finally:
        for session in sessions.values():
            asyncio.run(session.close())


def _lines(rng: random.Random, pool: list[bytes], n: int) -> bytes:
    return b"".join(rng.choice(pool) for _ in range(n))


@pytest.mark.parametrize("seed", range(60))
def test_a_streamed_merge_gives_the_in_memory_merges_bytes(tmp_path, monkeypatch, seed):
    """Random logs, tails with shared runs, prefixes of each other, a half-written last line, no
    ancestor or a rewritten side — in ranges of a few bytes so every boundary case is crossed."""
    rng = random.Random(seed)
    small = rng.choice([7, 16, 64, 1000])
    monkeypatch.setattr(handler_module, "RANGE", small)
    monkeypatch.setattr(logmerge, "RANGE", small)
    pool = [b"", b"\n", b"ok\n", b"{\"t\": 1}\n"] + [f"line {n}\n".encode() for n in range(40)]
    base = _lines(rng, pool, rng.randrange(0, 30))
    if rng.random() < 0.3:
        base += b"half a li"  # the ancestor was taken mid-line
    shared = _lines(rng, pool, rng.randrange(0, 6))
    local = base + shared + _lines(rng, pool, rng.randrange(0, 12))
    remote = base + shared + _lines(rng, pool, rng.randrange(0, 12))
    if rng.random() < 0.2:
        remote = local + _lines(rng, pool, rng.randrange(1, 5))  # a fast-forward
    if rng.random() < 0.1:
        local = b"rewritten\n" + local  # no longer extends the ancestor
    ancestor = entry(base) if rng.random() < 0.8 else None
    if local == remote:
        remote += b"one more\n"
    expected = append_merge(local, remote, ancestor, local_first=True)
    assert streamed_result(tmp_path, local, remote, ancestor) == expected


def test_tails_over_the_bound_are_not_merged_but_said(tmp_path, monkeypatch):
    monkeypatch.setattr(logmerge, "TAIL_MAX", 100)
    base = b"x\n" * 1000
    out = streamed_result(tmp_path, base + b"a\n" * 40, base + b"b\n" * 40, entry(base))
    assert isinstance(out, str) and "line by line" in out


# -- over the real sshd ------------------------------------------------------------------------------
def _pair(tmp_path, sshd, *, measure: Path | None = None):
    command = default_remote_command()
    if measure is not None:  # the agent runs under the launcher that records its peak RSS
        command = f"{sys.executable} -m peersync.testing.rss {measure} {command}"
    return wire_pair(tmp_path / "local", tmp_path / "remote", sshd, command=command)


def _sync(pair) -> None:
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    return report


def test_a_large_log_merges_over_ssh_and_other_files_sync(tmp_path, sshd, monkeypatch):
    """Above STREAM_MIN (lowered here) a log merges streamed, the same bytes on both sides; a
    non-log file over MEMORY_MAX (lowered) changed on both sides is a per-path problem decided by
    the policy, and a small file beside them still syncs."""
    monkeypatch.setattr(execute, "MEMORY_MAX", 1 << 20)
    monkeypatch.setattr(mergefile, "STREAM_MIN", 1 << 20)
    pair = _pair(tmp_path, sshd)
    base = b"".join(b'{"n": %d, "event": "started"}\n' % n for n in range(200_000))  # ~6 MB
    write(pair.local.root / LOG, base)
    write(pair.local.root / "memory/big.md", b"# notes\n" + b"- a line\n" * 300_000)
    write(pair.local.root / OTHER, base)
    _sync(pair)
    with open(pair.local.root / LOG, "ab") as f:
        f.write(b'{"from": "local", "n": 1}\n{"from": "local", "n": 2}\n')
    with open(pair.remote.root / LOG, "ab") as f:
        f.write(b'{"from": "remote", "n": 1}\n')
    for side, ws in (("local", pair.local), ("remote", pair.remote)):
        with open(ws.root / "memory/big.md", "ab") as f:
            f.write(f"- {side} edit\n".encode())
    write(pair.local.root / "memory/small.md", b"still syncs\n")
    monkeypatch.setattr(logmerge, "TAIL_MAX", 1 << 20)  # the second log's tails are over it
    for ws, who in ((pair.local, b"local"), (pair.remote, b"remote")):
        with open(ws.root / OTHER, "ab") as f:
            f.write(b"".join(b"%s %d\n" % (who, n) for n in range(60_000)))
    report = _sync(pair)
    merged = (pair.local.root / LOG).read_bytes()
    assert merged == (pair.remote.root / LOG).read_bytes()
    assert merged == base + merge_tails(b'{"from": "local", "n": 1}\n{"from": "local", "n": 2}\n',
                                        b'{"from": "remote", "n": 1}\n', local_first=pair.local.instance_id <
                                        pair.remote.instance_id)
    assert LOG in report.merged
    assert (pair.remote.root / "memory/small.md").read_bytes() == b"still syncs\n"
    assert any(p.path == "memory/big.md" and "merges in memory" in p.message for p in report.problems)
    assert (pair.local.root / "memory/big.md").read_bytes() == (pair.remote.root / "memory/big.md").read_bytes()
    # Tails too large to merge line by line: said, and the policy decided (nothing lost: the
    # other version is kept in conflicts/); the rest of the run went on.
    assert any(p.path == OTHER and "line by line" in p.message for p in report.problems), report.problems
    assert (pair.local.root / OTHER).read_bytes() == (pair.remote.root / OTHER).read_bytes()
    kept = list((pair.local.state / "conflicts").rglob("other.log")) + list((pair.remote.state / "conflicts").rglob("other.log"))
    assert kept, "the losing version of the log was not kept"


LARGE_MB = int(os.environ.get("PEERSYNC_TEST_LOG_MB", "200"))


def test_a_200_mb_log_appended_on_both_sides_merges_in_bounded_memory(tmp_path, sshd):
    """The acceptance case at a size the suite can afford: a 200 MB log appended on both sides
    merges over the real sshd with the agent and the client each far below the log's size."""
    report_agent, report_client = tmp_path / "agent.rss", tmp_path / "client.rss"
    pair = _pair(tmp_path, sshd, measure=report_agent)
    block = b"".join(b'{"ts": "2026-12-04T10:00:%02d", "event": "tool_call", "seq": %06d}\n' % (n % 60, n)
                     for n in range(16_000))  # ~1 MB
    with open(write(pair.local.root / LOG, b""), "ab") as f:
        for _ in range(LARGE_MB):
            f.write(block)
    os.link(pair.local.root / LOG, tmp_path / "base.jsonl")  # the same bytes, to compare with
    write(pair.remote.root / LOG, b"")
    (pair.remote.root / LOG).unlink()
    os.link(tmp_path / "base.jsonl", pair.remote.root / LOG)  # already on both sides: adopted, not copied
    _sync(pair)
    (pair.local.root / LOG).unlink()  # from here each side's own file (an append writes in place)
    (pair.remote.root / LOG).unlink()
    for ws, who in ((pair.local, b"local"), (pair.remote, b"remote")):
        with open(ws.root / LOG, "wb") as dst, open(tmp_path / "base.jsonl", "rb") as src:
            while chunk := src.read(8 << 20):
                dst.write(chunk)
            dst.write(b"".join(b'{"from": "%s", "n": %d}\n' % (who, n) for n in range(5000)))
    report_agent.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "peersync.testing.rss", str(report_client), sys.executable, "-m",
                           "peersync", "-w", str(pair.local.root), "sync"], capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    size = os.stat(pair.local.root / LOG).st_size
    assert size == os.stat(pair.remote.root / LOG).st_size > LARGE_MB << 20
    local_tail, remote_tail = ((ws.root / LOG).open("rb") for ws in (pair.local, pair.remote))
    base_size = os.stat(tmp_path / "base.jsonl").st_size
    with local_tail as a, remote_tail as b:
        a.seek(base_size), b.seek(base_size)
        merged_a, merged_b = a.read(), b.read()
    assert merged_a == merged_b
    assert sorted(merged_a.splitlines()) == sorted(
        [b'{"from": "%s", "n": %d}' % (who, n) for who in (b"local", b"remote") for n in range(5000)])
    agent_mb, client_mb = peak_mb(report_agent), peak_mb(report_client)
    print(f"{LARGE_MB} MB log: agent peak RSS {agent_mb:.0f} MB, client peak RSS {client_mb:.0f} MB")
    assert 0 < agent_mb < 100, f"the agent's peak RSS was {agent_mb:.0f} MB for a {LARGE_MB} MB log"
    assert 0 < client_mb < 150, f"the client's peak RSS was {client_mb:.0f} MB for a {LARGE_MB} MB log"


def test_a_log_that_changes_during_its_merge_is_left_for_the_next_sync(tmp_path, sshd, monkeypatch):
    """A per-path failure of a streamed merge (here: the log grew after the scan) is reported for
    that path; the rest of the run syncs, and the next sync merges the log."""
    monkeypatch.setattr(mergefile, "STREAM_MIN", 1 << 20)
    pair = _pair(tmp_path, sshd)
    base = b"".join(b'{"n": %d}\n' % n for n in range(200_000))
    write(pair.local.root / LOG, base)
    _sync(pair)
    for ws, who in ((pair.local, b"local"), (pair.remote, b"remote")):
        with open(ws.root / LOG, "ab") as f:
            f.write(b"%s wrote this\n" % who)
    write(pair.local.root / "memory/small.md", b"still syncs\n")
    real = logmerge.merge_streamed

    async def appended_meanwhile(sessions, c, **kwargs):
        with open(pair.local.root / LOG, "ab") as f:
            f.write(b"written during the sync\n")
        return await real(sessions, c, **kwargs)

    monkeypatch.setattr(logmerge, "merge_streamed", appended_meanwhile)
    report = _sync(pair)
    assert [p.path for p in report.problems] == [LOG], report.problems
    assert "left for the next sync" in report.problems[0].message
    assert (pair.remote.root / "memory/small.md").read_bytes() == b"still syncs\n"
    monkeypatch.setattr(logmerge, "merge_streamed", real)
    report = _sync(pair)
    assert not report.problems, report.problems
    merged = (pair.local.root / LOG).read_bytes()
    assert merged == (pair.remote.root / LOG).read_bytes()
    assert merged.startswith(base)
    assert sorted(merged[len(base):].splitlines()) == [b"local wrote this", b"remote wrote this",
                                                       b"written during the sync"]
