"""A machine whose clock is hours off, through a third machine, over the real loopback sshd.

b's agent runs under faketime (its clock `skew` off: the clock offset peersync measures for a pair
is that of b against a) and b's own edits carry mtimes stamped by that clock.  Version vectors, not
mtimes, decide what descends from what: no edit is reverted, whatever the clocks say, and only
genuinely concurrent edits become conflicts.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time

import pytest

from peersync.sync.runner import run_sync
from peersync.testing.pair import default_remote_command, wire_pair

pytestmark = pytest.mark.skipif(shutil.which("faketime") is None, reason="needs Debian's faketime")

F = "memory/plan.txt"  # a whole file (not in sync.merge): conflicts are decided, not merged
HOURS = 3


def mesh(tmp_path, sshd, skew_hours: int):
    """a, b, c wired pairwise; every peer entry that reaches b runs b's agent with a skewed clock."""
    ab = wire_pair(tmp_path / "a", tmp_path / "b", sshd, peer_name="b", back_name="a")
    bc = wire_pair(tmp_path / "b", tmp_path / "c", sshd, peer_name="c", back_name="b")
    wire_pair(tmp_path / "a", tmp_path / "c", sshd, peer_name="c", back_name="a")
    a, b, c = ab.local, ab.remote, bc.remote
    skewed = f"faketime -f {skew_hours:+d}h {shlex.quote(sys.executable)} -m peersync"
    for ws in (a, c):
        peers = ws.load_peers()
        peers["b"] = sshd.make_peer("b", path=b.root, command=skewed)
        ws.save_peers(peers)
    return a, b, c


def write(ws, text: str, *, clock_skew_hours: float = 0) -> None:
    path = ws.root / F
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    when = time.time() + clock_skew_hours * 3600
    os.utime(path, (when, when))


def read(ws) -> str:
    return (ws.root / F).read_text()


def kept(ws) -> list[str]:
    top = ws.state / "conflicts"
    return sorted(p.read_text() for p in top.rglob(F.rsplit("/", 1)[-1])) if top.is_dir() else []


def sync(ws, peer: str):
    [report] = run_sync(ws, [peer])
    assert report.ok, report.error
    return report


@pytest.mark.parametrize("skew", [HOURS, -HOURS], ids=["fast", "slow"])
def test_an_edit_made_after_a_skewed_machine_wrote_is_never_reverted(tmp_path, sshd, skew):
    a, b, c = mesh(tmp_path, sshd, skew)
    write(b, "b's plan\n", clock_skew_hours=skew)
    report = sync(a, "b")  # the plan reaches a…
    assert report.pulled == [F] and abs((report.clock_offset or 0) - skew * 3600) < 120
    sync(a, "c")  # …and c through a
    write(c, "b's plan, edited on c\n")  # the only change anywhere
    report = sync(a, "c")
    assert report.pulled == [F] and not report.conflicts
    report = sync(a, "b")
    assert report.pushed == [F] and not report.conflicts
    assert read(a) == read(b) == read(c) == "b's plan, edited on c\n"
    assert kept(a) == kept(b) == kept(c) == []


def test_a_fast_clock_corrected_between_syncs_does_not_lose_the_next_edit(tmp_path, sshd):
    a, b, c = mesh(tmp_path, sshd, HOURS)
    write(b, "written 3 h in the future\n", clock_skew_hours=HOURS)
    sync(a, "b")
    sync(a, "c")
    # b's clock is corrected: its next edit carries an mtime older than its previous one.
    peers = a.load_peers()
    peers["b"] = sshd.make_peer("b", path=b.root, command=default_remote_command())
    a.save_peers(peers)
    write(b, "written after the clock was fixed\n")
    report = sync(a, "b")
    assert report.pulled == [F] and not report.conflicts
    sync(c, "a")
    assert read(a) == read(b) == read(c) == "written after the clock was fixed\n"


def test_genuinely_concurrent_edits_across_the_skew_are_still_a_conflict(tmp_path, sshd):
    a, b, c = mesh(tmp_path, sshd, HOURS)
    write(a, "base\n")
    sync(a, "b")
    sync(a, "c")
    write(b, "b's edit (its clock 3 h fast)\n", clock_skew_hours=HOURS)
    write(c, "c's edit\n")
    sync(a, "c")
    report = sync(a, "b")
    assert len(report.conflicts) == 1  # concurrent: the newest by corrected time breaks the tie
    sync(a, "c")
    assert read(a) == read(b) == read(c)
    everything = kept(a) + kept(b) + kept(c) + [read(a)]
    assert "b's edit (its clock 3 h fast)\n" in everything and "c's edit\n" in everything
