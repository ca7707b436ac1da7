"""Deletion records (peersync.replica.tombstones): storage, pruning, hostile input, and the stale rule."""

from __future__ import annotations

import json

import pytest

from peersync.core import deletions
from peersync.core.paths import BadPath
from peersync.core.types import Entry
from peersync.replica import tombstones
from peersync.replica.handler import Handler

SEC = 1_000_000_000
T = 1_700_000_000 * SEC + 123_456


def entry(tag: str, t: int = T) -> Entry:
    return Entry(len(tag), t, 0o644, (tag * 32)[:32])


def test_add_lookup_and_keep_the_latest_versions(tmp_path):
    f = tmp_path / tombstones.FILE
    assert tombstones.lookup(f) == {} and not tombstones.present(f)
    assert tombstones.add(f, [("memory/a.md", entry("a"))], now=100) == 1
    assert tombstones.add(f, [("memory/a.md", entry("a"))], now=200) == 0  # the same version again
    for i, tag in enumerate("bcde"):
        tombstones.add(f, [("memory/a.md", entry(tag))], now=300 + i)
    assert tombstones.present(f)
    assert tombstones.lookup(f) == {"memory/a.md": [entry(t) for t in "bcde"][-tombstones.KEEP_PER_PATH:]}
    assert tombstones.lookup(f, ["memory/other.md"]) == {}


def test_prune_drops_records_older_than_the_retention(tmp_path):
    f = tmp_path / tombstones.FILE
    tombstones.add(f, [("old.md", entry("o"))], now=1000)
    tombstones.add(f, [("new.md", entry("n"))], now=1000 + 40 * 86400)
    assert tombstones.prune(f, 30, now=1000 + 40 * 86400) == 1
    assert set(tombstones.lookup(f)) == {"new.md"}
    assert tombstones.prune(f, 30, now=1000 + 80 * 86400) == 1
    assert not f.exists()  # nothing left: no file


@pytest.mark.parametrize("content", [b"", b"{not json", b"[]", b'{"format": 99, "entries": {}}',
                                     b'{"format": 1, "entries": {"a.md": [["x"], 5, null]}}'])
def test_a_damaged_file_is_no_records_and_is_replaced_on_the_next_add(tmp_path, content):
    f = tmp_path / tombstones.FILE
    f.write_bytes(content)
    assert tombstones.lookup(f) == {}
    tombstones.add(f, [("memory/a.md", entry("a"))])
    assert tombstones.lookup(f) == {"memory/a.md": [entry("a")]}


def test_a_peer_s_malformed_records_are_dropped():
    good = entry("a").to_wire()
    raw = {"ok.md": [good, ["bad"], [1, 2, 3, "short"]], "x.md": "nope", 5: [good]}
    assert deletions.from_wire(raw) == {"ok.md": [entry("a")]}
    assert deletions.from_wire(["not", "a", "dict"]) == {}


def test_stale_means_same_bytes_no_newer_than_the_deleted_version():
    dead = [entry("a", T)]
    assert deletions.stale(entry("a", T), dead)
    assert deletions.stale(entry("a", T - SEC), dead)  # an older copy of the same bytes
    assert not deletions.stale(entry("a", T + 1), dead)  # written again after: new content
    assert not deletions.stale(entry("b", T), dead)  # other bytes
    coarse = 1_700_000_001 * SEC  # a whole-second mtime (HFS+) compares with 2 s of slack
    assert deletions.stale(entry("a", coarse), dead)
    assert not deletions.stale(entry("a", coarse + 2 * SEC), dead)


def test_the_agent_refuses_hostile_paths_and_records_nothing(tmp_path):
    handler = Handler(tmp_path / "ws")
    handler.op_init()
    handler.ws.ensure_state()
    with pytest.raises(BadPath):
        handler.op_tombstones_add([["memory/ok.md", entry("a").to_wire()], ["../escape.md", entry("b").to_wire()]])
    assert handler.op_tombstones_get() == {}
    with pytest.raises(ValueError):
        handler.op_tombstones_add([["memory/ok.md", ["not", "an", "entry"]]])
    assert handler.op_tombstones_add([["memory/ok.md", entry("a").to_wire()]]) == {"added": 1}
    assert handler.op_tombstones_get(["memory/ok.md", "memory/none.md"]) == {"memory/ok.md": [entry("a").to_wire()]}
    stored = json.loads((handler.ws.state / tombstones.FILE).read_bytes())
    assert stored["format"] == tombstones.FORMAT
