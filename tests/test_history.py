"""The sync history: history.json keeps the recent syncs (what clawdbot-sync and `status` read, and
what each sync rewrites), history-archive.jsonl the older ones, written once per batch.  Nothing is
lost or shown twice, a spill cut short included, and the bound holds over both files."""

from __future__ import annotations

import json

import pytest

import peersync.workspace.workspace as wsmod
from peersync.dashboard.data import history_section
from peersync.workspace.workspace import Workspace


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setattr(wsmod, "HISTORY_RECENT", 4)
    monkeypatch.setattr(wsmod, "HISTORY_LIMIT", 30)
    workspace = Workspace(tmp_path)
    workspace.ensure_state()
    return workspace


def sync(n: int) -> dict:
    return {"mode": "sync", "peer": "mac-mini", "ok": True, "pushed": [f"memory/{n}.md"], "pulled": [], "n": n}


def recent(ws) -> list:
    return json.loads(ws.history_file.read_text())["entries"]


def archived(ws) -> list:
    return [json.loads(line) for line in ws.history_archive.read_text().splitlines()]


def test_history_json_stays_short_and_the_archive_keeps_the_older_syncs(ws):
    for n in range(100):
        ws.record(sync(n))
        assert wsmod.HISTORY_RECENT <= len(recent(ws)) <= 2 * wsmod.HISTORY_RECENT or n < wsmod.HISTORY_RECENT
        assert [e["n"] for e in ws.history()] == list(range(n, max(-1, n - wsmod.HISTORY_LIMIT), -1))
    # Newest first across both files, bounded in total, each sync once.
    assert [e["n"] for e in recent(ws)] == list(range(99, 99 - len(recent(ws)), -1))
    assert [e["n"] for e in archived(ws)] == sorted(e["n"] for e in archived(ws))  # oldest first, appended
    for limit in (1, 3, 4, 8, 9, 29, 30, 31):
        assert ws.history(limit) == ws.history()[:limit]
    assert recent(ws)[0]["timestamp"] and recent(ws)[0]["status"] == "success"  # clawdbot-sync still reads it


def test_a_spill_cut_short_between_its_two_writes_shows_each_sync_once(ws, monkeypatch):
    for n in range(8):
        ws.record(sync(n))
    real = wsmod.atomic_write_json

    def crash(path, value, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wsmod, "atomic_write_json", crash)
    with pytest.raises(OSError):
        ws.record(sync(8))  # the archive is written, history.json is not (sync 8 is not recorded)
    assert [e["n"] for e in archived(ws)] == [0, 1, 2, 3, 4]
    assert [e["n"] for e in recent(ws)] == list(range(7, -1, -1))  # still holds them too
    assert [e["n"] for e in ws.history()] == list(range(7, -1, -1))
    assert history_section(ws)["total"] == 8

    monkeypatch.setattr(wsmod, "atomic_write_json", real)
    ws.record(sync(9))  # spills again: the archive does not take them twice
    assert [e["n"] for e in archived(ws)] == [0, 1, 2, 3, 4]
    assert [e["n"] for e in ws.history()] == [9, 7, 6, 5, 4, 3, 2, 1, 0]


def test_a_long_history_json_from_before_moves_to_the_archive_at_the_next_sync(ws):
    old = [{"timestamp": f"2026-01-{n % 28 + 1:02d}T09:00:00Z", "action": "sync", "peer": "remote", "files": n,
            "status": "success"} for n in range(40)]  # clawdbot-sync's entries, newest first
    ws.history_file.write_text(json.dumps({"entries": old}))
    assert ws.history() == old[:wsmod.HISTORY_LIMIT]
    ws.record(sync(100))
    assert len(recent(ws)) == wsmod.HISTORY_RECENT
    assert ws.history() == ([recent(ws)[0]] + old)[:wsmod.HISTORY_LIMIT]
    section = history_section(ws)  # clawdbot-sync's entries are syncs on the timeline, not damage
    assert section["total"] == wsmod.HISTORY_LIMIT and "notice" not in section
    assert {k: section["entries"][1][k] for k in ("time", "peer", "mode", "ok")} == \
        {"time": "2026-01-01T09:00:00Z", "peer": "remote", "mode": "sync", "ok": True}


def test_damaged_archive_lines_are_skipped_and_said(ws):
    for n in range(12):
        ws.record(sync(n))
    with ws.history_archive.open("a") as f:
        f.write('{"n": 9999, "peer": "tor\n[1, 2]\n\n')
    assert [e["n"] for e in ws.history()] == list(range(11, -1, -1))
    section = history_section(ws)
    assert section["total"] == 12
    assert section["notice"] == "2 damaged lines of memory/clawdbot-sync/history-archive.jsonl skipped."
    ws.record(sync(12))  # a damaged line is dropped at the next spill, not a reason to stop
    assert [e["n"] for e in ws.history()] == list(range(12, -1, -1))


def test_the_dashboard_still_shows_the_archive_when_history_json_is_damaged(ws):
    for n in range(12):
        ws.record(sync(n))
    ws.history_file.write_text('{"entries": [{"peer": "remote", "time": "2026-01-')
    section = history_section(ws)
    assert "is not valid JSON" in section["notice"]
    assert section["total"] == len(archived(ws)) > 0
    ws.record(sync(12))  # the next sync starts history.json again; the archive stays
    assert [e["n"] for e in ws.history()][:2] == [12, archived(ws)[-1]["n"]]
