"""The apply step on one replica: verified installs, never clobbering, trash and conflicts."""

import os
import time

import pytest

from peersync.core.selection import Selection
from peersync.core.types import Entry
from peersync.replica.scan import entry_for, hash_bytes
from peersync.replica.store import Refused, Store


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
    before = time.time_ns()
    restored = store.restore_conflict(result["conflict"])
    assert path.read_bytes() == b"loser"
    assert path.stat().st_mtime_ns >= before - 10_000_000  # a user action: newest, so peers take it
    [item] = store.conflicts()
    assert item["id"] == restored["replaced_saved_as"]
    assert (store.conflicts_dir / item["id"] / "memory/a.md").read_bytes() == b"winner"


# -- fast paths of a batch install ---------------------------------------------------------------
def test_create_without_noreplace_rename_still_never_clobbers(store, monkeypatch):
    import peersync.replica.store as transition

    monkeypatch.setattr(transition, "_rename_noreplace", lambda *a: False)  # link + unlink instead
    result = store.install("memory/a.md", staged(store, b"hello"), expect=None, new=new_entry(b"hello"))
    assert (store.root / "memory/a.md").read_bytes() == b"hello" and result["conflict"] is None
    (store.root / "memory/b.md").write_bytes(b"fresh user file")
    src = staged(store, b"other", name="t")
    with pytest.raises(Refused, match="created here during the sync"):
        store.install("memory/b.md", src, expect=None, new=new_entry(b"other"))
    assert (store.root / "memory/b.md").read_bytes() == b"fresh user file" and src.exists()


def test_batch_create_refuses_a_file_created_after_prepare(store):
    src = staged(store, b"hello")
    store.prepare(src, new_entry(b"hello"))
    store.deferred_dirs = set()
    store.install("memory/sub/first.md", staged(store, b"x", name="f"), expect=None, new=new_entry(b"x"))
    (store.root / "memory/sub/a.md").write_bytes(b"fresh user file")  # between prepare and install
    with pytest.raises(Refused, match="created here during the sync"):
        store.install("memory/sub/a.md", src, expect=None, new=new_entry(b"hello"), prepared=True)
    store.flush_dirs()
    assert (store.root / "memory/sub/a.md").read_bytes() == b"fresh user file"
    assert src.read_bytes() == b"hello"  # the new version is not lost either (staging, next sync)


def test_batch_install_refuses_symlinked_parents(store, tmp_path):
    outside = tmp_path.parent / (tmp_path.name + "-out")
    outside.mkdir()
    os.symlink(outside, store.root / "memory" / "link")
    store.deferred_dirs = set()
    store.install("memory/ok.md", staged(store, b"x"), expect=None, new=new_entry(b"x"))
    with pytest.raises(Refused, match="symbolic link"):
        store.install("memory/link/deep/x.md", staged(store, b"y", name="y"), expect=None, new=new_entry(b"y"))
    store.flush_dirs()
    assert not list(outside.iterdir())


def test_prepare_refuses_what_is_not_a_regular_file(store):
    real = staged(store, b"hello")
    link = real.with_name("link")
    os.symlink(real, link)
    with pytest.raises(Refused, match="not a regular file"):
        store.prepare(link, new_entry(b"hello"))
    fifo = real.with_name("fifo")
    os.mkfifo(fifo)
    with pytest.raises(Refused, match="not a regular file"):
        store.prepare(fifo, new_entry(b""))


def test_read_gives_a_file_its_bytes_a_link_its_target_an_empty_folder_nothing_and_refuses_the_rest(store, tmp_path):
    """What a sync sends of each kind of entry (scan.py's entries): a file's bytes, a link's target
    (never what it points to), an empty folder's nothing.  A folder with files, a fifo (opened
    without blocking) and a link in the path are refused; a missing file is an OSError."""
    memory = store.root / "memory"
    (memory / "a.md").write_bytes(b"notes\n")
    (memory / "empty.md").write_bytes(b"")
    outside = tmp_path.parent / (tmp_path.name + "-secret")
    outside.write_bytes(b"secret")
    os.symlink(outside, memory / "link.md")
    (memory / "hollow").mkdir()
    (memory / "full").mkdir()
    (memory / "full" / "x.md").write_bytes(b"x")
    os.mkfifo(memory / "pipe.md")
    os.symlink(memory / "full", memory / "via")
    assert store.read(["memory/a.md", "memory/empty.md", "memory/link.md", "memory/hollow"]) == {
        "memory/a.md": b"notes\n", "memory/empty.md": b"", "memory/link.md": os.fsencode(outside),
        "memory/hollow": b""}
    for path in ("memory/full", "memory/pipe.md"):
        with pytest.raises(Refused, match="not a regular file"):
            store.read([path])
    with pytest.raises(Refused, match="symbolic link"):
        store.read(["memory/via/x.md"])
    with pytest.raises(FileNotFoundError):
        store.read(["memory/gone.md"])


def test_prepare_sets_mode_and_mtime_only_where_they_differ(store):
    src = staged(store, b"hello")
    store.prepare(src, new_entry(b"hello"))
    assert src.stat().st_mtime_ns == 1_700_000_000_000_000_000 and src.stat().st_mode & 0o7777 == 0o640
    store.prepare(src, new_entry(b"hello"))  # already right: still right
    assert src.stat().st_mtime_ns == 1_700_000_000_000_000_000 and src.stat().st_mode & 0o7777 == 0o640


# -- log bases -----------------------------------------------------------------------------------
def write_logs(store, count, prefix="log"):
    items = []
    for i in range(count):
        data = f"{prefix} {i}\n".encode() * (i + 1)
        (store.root / "memory" / f"{prefix}{i}.jsonl").write_bytes(data)
        items.append((f"memory/{prefix}{i}.jsonl", hash_bytes(data)))
    return items


def test_small_save_keeps_loose_bases(store):
    items = write_logs(store, 3)
    assert store.save_logbases(items) == 3
    assert sorted(p.name for p in store.logbase_dir.iterdir()) == sorted(h for _, h in items)
    assert store.save_logbases(items) == 0  # already kept


def test_large_save_goes_into_one_pack_and_reads_back(store):
    from peersync.replica.store import PACK_MIN

    items = write_logs(store, PACK_MIN + 4)
    stale = items[0]
    (store.root / stale[0]).write_bytes(b"rewritten before the save")  # no longer that hash: skipped
    assert store.save_logbases(items) == len(items) - 1
    assert len([p for p in store.logbase_dir.iterdir() if not p.name.endswith(".idx")]) == 1
    with open(store.root / items[1][0], "ab") as f:  # appends after the save do not touch the base
        f.write(b"appended\n")
    got = store.logbases([h for _, h in items])
    assert got[stale[1]] is None
    for path, digest in items[1:]:
        assert hash_bytes(got[digest]) == digest
    assert store.logbase(items[2][1]) == got[items[2][1]]
    assert store.save_logbases(items[1:]) == 0  # already packed


def test_prune_repacks_a_mostly_unreferenced_pack_and_drops_strays(store):
    from peersync.replica.store import PACK_MIN

    items = write_logs(store, 2 * PACK_MIN)
    store.save_logbases(items)
    (store.logbase_dir / "pack-0123456789ab").write_bytes(b"no index")  # died before its index
    (store.logbase_dir / ".tmp-pack-ba9876543210").write_bytes(b"died mid-write")
    everything = {h for _, h in items}
    assert store.prune_logbases(everything) == 1  # the stray temp file (an unindexed pack is not a base)
    assert len(list(store.logbase_dir.iterdir())) == 2  # the pack and its index
    keep = {h for _, h in items[:3]}
    assert store.prune_logbases(keep) == len(items) - 3
    assert sorted(p.name for p in store.logbase_dir.iterdir()) == sorted(keep)  # few: loose now
    assert all(store.logbase(h) is not None for h in keep)
    assert store.prune_logbases(set()) == 3 and not list(store.logbase_dir.iterdir())


def test_prune_combines_the_small_packs_each_sync_adds(store):
    from peersync.replica.store import PACK_MIN, PACKS_MAX

    saved = []
    for round_ in range(PACKS_MAX + 3):  # a pack a sync, as log bases arrive
        items = write_logs(store, PACK_MIN + round_, prefix=f"r{round_}-")
        assert store.save_logbases(items) == len(items)
        saved += items
    packs = lambda: sorted(p.name for p in store.logbase_dir.iterdir() if not p.name.endswith(".idx"))  # noqa: E731
    assert len(packs()) == PACKS_MAX + 3
    gone = {h for _, h in saved[:5]}
    keep = {h for _, h in saved} - gone
    assert store.prune_logbases(keep) == len(gone)
    assert len(packs()) == 2  # the largest, and one holding every other live base
    got = store.logbases([h for _, h in saved])
    assert all(got[h] is None for h in gone)
    assert all(hash_bytes(got[h]) == h for h in keep)
    assert store.prune_logbases(keep) == 0 and len(packs()) == 2  # nothing more to do


def test_a_damaged_pack_gives_no_base(store):
    from peersync.replica.store import PACK_MIN

    items = write_logs(store, PACK_MIN)
    store.save_logbases(items)
    pack = next(p for p in store.logbase_dir.iterdir() if not p.name.endswith(".idx"))
    data = bytearray(pack.read_bytes())
    data[0] ^= 1
    pack.write_bytes(bytes(data))
    assert store.logbase(items[0][1]) is None and store.logbase(items[1][1]) is not None


def test_batch_replace_shares_one_holding_dir_and_leaves_none(store):
    store.deferred_dirs = set()
    for name in ("a", "b"):
        path = store.root / f"memory/d/{name}.md"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"v1")
        store.install(f"memory/d/{name}.md", staged(store, b"v2", name=name), expect=entry_for(path),
                      new=new_entry(b"v2"), quarantine={"peer": "p"})
    assert len(list((store.state / "holding").iterdir())) == 1
    store.flush_dirs()
    assert not list((store.state / "holding").iterdir())
    assert {c["path"] for c in store.conflicts()} == {"memory/d/a.md", "memory/d/b.md"}


def test_batch_flush_keeps_a_held_version_for_recovery(store):
    path = store.root / "memory/a.md"
    path.write_bytes(b"v1")
    store.deferred_dirs = set()
    held = store._hold(path, "memory/a.md")
    path.unlink()  # as if replaced and the run failed before the quarantine
    store.flush_dirs()
    assert held.read_bytes() == b"v1"
    assert store.recover_holding() == 1
    assert [c["path"] for c in store.conflicts()] == ["memory/a.md"]


def test_held_versions_are_flat_names_and_any_holding_left_is_recovered_by_its_path(store):
    """A batch holds replaced versions under one name each (no folders made per file); a run that
    died meanwhile — or one of an older version, which held them under their paths — is
    recovered under the right paths, odd characters included."""
    from peersync.core.paths import flat_rel, unflat

    for path in ("a%2Fb.md", "x/%25/y%.md", "memory/d/e.md"):
        assert unflat(flat_rel(path)) == path and "/" not in flat_rel(path)
    paths = ["memory/d/a.md", "memory/100%/b%2F.md", "top.md"]
    store.deferred_dirs = set()
    for path in paths:
        full = store.root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(path.encode())
        held = store._hold(full, path)
        assert held.parent.parent.name == "holding"  # flat: the token dir holds the name itself
        full.unlink()  # replaced, and the run died before keeping the old version
    store.flush_dirs()
    old = store.state / "holding" / "0123456789abcdef" / "memory" / "old"  # an older version's nesting
    old.mkdir(parents=True)
    (old / "c.md").write_bytes(b"older layout")
    assert store.recover_holding() == 4
    kept = {c["path"]: store.conflict_bytes(c["id"]) for c in store.conflicts()}
    assert kept == {**{p: p.encode() for p in paths}, "memory/old/c.md": b"older layout"}
    assert not list((store.state / "holding").iterdir())


def test_housekeeping_prunes_log_bases_at_most_hourly(tmp_path):
    """Pruning reads every ancestor: a sync does it when it last happened an hour ago or more."""
    from peersync.replica.handler import PRUNE_EVERY, Handler

    handler = Handler(tmp_path)
    base = handler.store.logbase_dir
    base.mkdir(parents=True)
    (base / ("a" * 32)).write_bytes(b"unreferenced")
    assert handler.op_housekeeping(prune_logbases=True)["logbases_pruned"] == 1
    (base / ("b" * 32)).write_bytes(b"unreferenced too")
    assert "logbases_pruned" not in handler.op_housekeeping(prune_logbases=True)  # pruned just now
    marker = handler.ws.state / "logbase.pruned"
    old = time.time() - PRUNE_EVERY - 5
    os.utime(marker, (old, old))
    assert handler.op_housekeeping(prune_logbases=True)["logbases_pruned"] == 1


def test_prune_leaves_full_packs_as_they_are(store, monkeypatch):
    """An initial sync writes a pack per STASH_MAX of bases: a prune must not read and write them
    all again because they are many; only the small packs later syncs add are combined."""
    from peersync.replica import store as store_mod

    monkeypatch.setattr(store_mod, "PACK_FULL", 1)  # every pack counts as full
    saved = []
    for round_ in range(store_mod.PACKS_MAX + 3):
        items = write_logs(store, store_mod.PACK_MIN + round_, prefix=f"f{round_}-")
        assert store.save_logbases(items) == len(items)
        saved += items
    before = sorted(p.name for p in store.logbase_dir.iterdir())
    keep = {h for _, h in saved}
    assert store.prune_logbases(keep) == 0
    assert sorted(p.name for p in store.logbase_dir.iterdir()) == before  # nothing rewritten
    monkeypatch.setattr(store_mod, "PACK_FULL", 1 << 40)  # now all small: combined
    assert store.prune_logbases(keep) == 0
    assert len([p for p in store.logbase_dir.iterdir() if not p.name.endswith(".idx")]) == 2
    got = store.logbases([h for _, h in saved])
    assert all(hash_bytes(got[h]) == h for h in keep)


def test_a_new_log_base_dir_counts_as_pruned_so_a_first_sync_does_not_read_its_ancestors_again(tmp_path):
    """The bases a first sync keeps are all its new ancestor's: the prune that would read that
    ancestor back right after finds nothing, so it is due an hour after the dir was made."""
    from peersync.replica.handler import PRUNE_EVERY, Handler
    from peersync.replica.store import LOGBASE_PRUNED

    handler = Handler(tmp_path)
    assert not handler.store.logbase_dir.exists()
    kept = [(hash_bytes(b"%d" % i), b"%d" % i) for i in range(3)]
    assert handler.store.keep_bases(kept) == 3
    marker = handler.ws.state / LOGBASE_PRUNED
    assert marker.is_file()
    assert "logbases_pruned" not in handler.op_housekeeping(prune_logbases=True)  # not due: nothing read
    assert handler.store.logbases([d for d, _ in kept]) == dict(kept)
    old = time.time() - PRUNE_EVERY - 5
    os.utime(marker, (old, old))
    assert handler.op_housekeeping(prune_logbases=True)["logbases_pruned"] == 3  # no ancestor names them
    # A dir that already existed (an older peersync's, a prune's) leaves the marker as it is.
    os.utime(marker, (old, old))
    handler.store.keep_bases([(hash_bytes(b"new"), b"new")])
    assert marker.stat().st_mtime == pytest.approx(old, abs=1)
