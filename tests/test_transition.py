"""The apply step on one replica: verified installs, never clobbering, trash and conflicts."""

import os

import pytest

from peersync.scan import entry_for, hash_bytes
from peersync.selection import Selection
from peersync.transition import Refused, Store
from peersync.types import Entry


@pytest.fixture
def store(tmp_path):
    (tmp_path / "memory").mkdir()
    return Store(tmp_path, Selection.from_options())


def staged(store, data: bytes, name="s"):
    directory = store.new_staging()
    path = directory / name
    path.write_bytes(data)
    return path


def new_entry(data: bytes, mtime_ns=1_700_000_000_000_000_000):
    return Entry(len(data), mtime_ns, 0o640, hash_bytes(data))


def test_install_creates_with_metadata(store):
    result = store.install("memory/a.md", staged(store, b"hello"), expect=None, new=new_entry(b"hello"))
    path = store.root / "memory/a.md"
    assert path.read_bytes() == b"hello"
    assert path.stat().st_mtime_ns == 1_700_000_000_000_000_000 and path.stat().st_mode & 0o777 == 0o640
    assert Entry.from_wire(result["entry"]).hash == hash_bytes(b"hello")


def test_install_refuses_content_that_does_not_match_the_manifest(store):
    with pytest.raises(Refused, match="changed on the sending side"):
        store.install("memory/a.md", staged(store, b"other"), expect=None, new=new_entry(b"hello"))
    assert not (store.root / "memory/a.md").exists()


def test_create_never_clobbers_a_file_that_appeared(store):
    (store.root / "memory/a.md").write_bytes(b"fresh user file")
    with pytest.raises(Refused, match="created here during the sync"):
        store.install("memory/a.md", staged(store, b"hello"), expect=None, new=new_entry(b"hello"))
    assert (store.root / "memory/a.md").read_bytes() == b"fresh user file"


def test_replace_only_what_was_scanned(store):
    path = store.root / "memory/a.md"
    path.write_bytes(b"v1")
    scanned = entry_for(path)
    path.write_bytes(b"v2 edited by the user")  # after the scan
    with pytest.raises(Refused, match="edited during the sync"):
        store.install("memory/a.md", staged(store, b"new"), expect=scanned, new=new_entry(b"new"))
    assert path.read_bytes() == b"v2 edited by the user"
    assert not list((store.state / "holding").iterdir())


def test_replace_with_quarantine_keeps_the_loser(store):
    path = store.root / "memory/a.md"
    path.write_bytes(b"loser")
    result = store.install("memory/a.md", staged(store, b"winner"), expect=entry_for(path),
                           new=new_entry(b"winner"), quarantine={"peer": "mac-mini", "reason": "conflict"})
    assert path.read_bytes() == b"winner"
    [item] = store.conflicts()
    assert item["id"] == result["conflict"] and item["peer"] == "mac-mini"
    assert (store.conflicts_dir / item["id"] / "memory/a.md").read_bytes() == b"loser"


def test_plain_replace_leaves_no_holding_links(store):
    path = store.root / "memory/a.md"
    path.write_bytes(b"old")
    store.install("memory/a.md", staged(store, b"new"), expect=entry_for(path), new=new_entry(b"new"))
    assert path.read_bytes() == b"new" and not list((store.state / "holding").iterdir())
    assert store.conflicts() == []


def test_delete_goes_to_trash_and_refuses_edited(store):
    path = store.root / "memory/sub/a.md"
    path.parent.mkdir()
    path.write_bytes(b"bye")
    scanned = entry_for(path)
    store.delete("memory/sub/a.md", expect=scanned, batch="20260101T000000-abc")
    assert not path.exists() and not path.parent.exists()  # empty parent pruned
    assert (store.trash_dir / "20260101T000000-abc/memory/sub/a.md").read_bytes() == b"bye"
    other = store.root / "memory/b.md"
    other.write_bytes(b"v1")
    scanned = entry_for(other)
    other.write_bytes(b"v2")
    with pytest.raises(Refused):
        store.delete("memory/b.md", expect=scanned, batch="20260101T000000-abc")
    assert other.read_bytes() == b"v2"


def test_targets_outside_the_selection_or_through_symlinks_are_refused(store, tmp_path):
    for bad in ("IDENTITY.md", "config/x", "memory/clawdbot-sync/peers.json"):
        with pytest.raises(Exception):
            store.target(bad)
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    outside.mkdir()
    os.symlink(outside, store.root / "memory" / "link")
    with pytest.raises(Refused, match="symbolic link"):
        store.install("memory/link/x.md", staged(store, b"x"), expect=None, new=new_entry(b"x"))
    assert not (outside / "x.md").exists()


def test_same_loser_is_quarantined_once(store):
    path = store.root / "memory/a.md"
    for winner in (b"w1", b"w2"):
        path.write_bytes(b"loser")
        store.install("memory/a.md", staged(store, winner), expect=entry_for(path), new=new_entry(winner),
                      quarantine={"reason": "conflict"})
    assert len(store.conflicts()) == 1


def test_purge_trash_by_age(store):
    old = store.trash_dir / "20000101T000000-aaa"
    new = store.trash_dir / "29990101T000000-bbb"
    for d in (old, new):
        d.mkdir(parents=True)
    assert store.purge_trash(30) == 1
    assert not old.exists() and new.exists()


def test_restore_conflict_swaps_versions(store):
    path = store.root / "memory/a.md"
    path.write_bytes(b"loser")
    result = store.install("memory/a.md", staged(store, b"winner"), expect=entry_for(path),
                           new=new_entry(b"winner"), quarantine={"reason": "conflict"})
    restored = store.restore_conflict(result["conflict"])
    assert path.read_bytes() == b"loser"
    [item] = store.conflicts()
    assert item["id"] == restored["replaced_saved_as"]
    assert (store.conflicts_dir / item["id"] / "memory/a.md").read_bytes() == b"winner"
