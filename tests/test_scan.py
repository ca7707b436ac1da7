"""Scanner: selection walk, stat cache, racy-git rule, per-file problems."""

import os
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from peersync.core.paths import in_state_dir
from peersync.core.selection import Selection
from peersync.replica.scan import hash_bytes, scan

SEL = Selection.from_options()


def make(root, rel, data=b"x", mtime=None):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_scan_lists_the_selection_only(tmp_path):
    for rel in ("MEMORY.md", "memory/a.md", "memory/sub/b.json", "IDENTITY.md", "config/c.json",
                "memory/clawdbot-sync/peers.json", "memory/x.tmp", "memory/.git/HEAD", "AGENTS.md"):
        make(tmp_path, rel, rel.encode())
    result = scan(tmp_path, SEL)
    assert sorted(result.manifest) == ["MEMORY.md", "memory/a.md", "memory/sub/b.json"]
    entry = result.manifest["memory/a.md"]
    assert entry.hash == hash_bytes(b"memory/a.md") and entry.size == len("memory/a.md")


def test_stat_cache_avoids_rehashing_and_notices_changes(tmp_path):
    old = time.time() - 3600
    make(tmp_path, "memory/a.md", b"one", mtime=old)
    make(tmp_path, "memory/b.md", b"two", mtime=old)
    cache = tmp_path / "cache.json"
    assert scan(tmp_path, SEL, cache).hashed == 2
    assert scan(tmp_path, SEL, cache).hashed == 0
    make(tmp_path, "memory/a.md", b"ONE", mtime=old + 1)
    again = scan(tmp_path, SEL, cache)
    assert again.hashed == 1 and again.manifest["memory/a.md"].hash == hash_bytes(b"ONE")


def test_racy_files_are_rehashed_next_time(tmp_path):
    # Modified "just now": the same mtime could hide a second edit, so never trust the cache.
    make(tmp_path, "memory/a.md", b"one")
    cache = tmp_path / "cache.json"
    scan(tmp_path, SEL, cache)
    assert scan(tmp_path, SEL, cache).hashed == 1


def test_same_size_same_mtime_edit_is_caught_for_racy_files(tmp_path):
    path = make(tmp_path, "memory/a.md", b"aaaa")
    st = path.stat()
    cache = tmp_path / "cache.json"
    scan(tmp_path, SEL, cache)
    path.write_bytes(b"bbbb")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert scan(tmp_path, SEL, cache).manifest["memory/a.md"].hash == hash_bytes(b"bbbb")


def test_symlinks_are_reported_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (tmp_path / "memory").mkdir()
    os.symlink(outside, tmp_path / "memory" / "link")
    os.symlink(outside / "secret", tmp_path / "memory" / "file-link")
    result = scan(tmp_path, SEL)
    assert result.manifest == {}
    assert {p.path for p in result.problems} == {"memory/link", "memory/file-link"}


def test_unreadable_file_is_a_problem_not_an_abort(tmp_path):
    if os.getuid() == 0:
        import pytest

        pytest.skip("root reads everything")
    make(tmp_path, "memory/ok.md")
    bad = make(tmp_path, "memory/bad.md")
    bad.chmod(0)
    result = scan(tmp_path, SEL)
    assert "memory/ok.md" in result.manifest and [p.path for p in result.problems] == ["memory/bad.md"]


def test_corrupt_cache_is_ignored(tmp_path):
    make(tmp_path, "memory/a.md", b"x", mtime=time.time() - 100)
    cache = tmp_path / "cache.json"
    cache.write_text("{not json")
    assert scan(tmp_path, SEL, cache).manifest["memory/a.md"].hash == hash_bytes(b"x")


def test_the_stat_cache_is_written_in_its_binary_form_and_read_from_the_old_json_one(tmp_path):
    """A cache in the JSON form earlier versions wrote is still used (no file is hashed again
    after an upgrade); the next save writes the binary form; a torn or foreign file, or another
    user's, is no cache (files are hashed again: slower, never wrong).  Names that are not UTF-8
    (surrogate-escaped) survive both forms."""
    import json

    from peersync.replica import scan as scan_mod

    old = time.time() - 3600
    names = ["memory/a.md", "memory/b\udcff.md"]
    for i, rel in enumerate(names):
        make(tmp_path, rel, b"x" * (i + 1), mtime=old)
    cache = tmp_path / "cache.json"
    assert scan(tmp_path, SEL, cache).hashed == 2
    raw = cache.read_bytes()
    assert raw.startswith(scan_mod.CACHE_MAGIC)
    rows = scan_mod._read_cache(cache)
    assert sorted(rows) == sorted(names)
    cache.write_text(json.dumps({"format": scan_mod.CACHE_FORMAT, "entries": rows}))  # as before
    assert scan(tmp_path, SEL, cache).hashed == 0
    make(tmp_path, "memory/c.md", b"new", mtime=old)
    for _ in range(scan_mod.SAVE_MIN_CHANGES):  # enough change for the cache to be rewritten
        make(tmp_path, f"memory/more/{_}.md", b"m", mtime=old)
    assert scan(tmp_path, SEL, cache).hashed == 1 + scan_mod.SAVE_MIN_CHANGES
    assert cache.read_bytes().startswith(scan_mod.CACHE_MAGIC)
    assert scan(tmp_path, SEL, cache).hashed == 0
    full = cache.read_bytes()
    for broken in (full[: len(full) // 2], scan_mod.CACHE_MAGIC + b"\x00junk", b"[1, 2]"):
        cache.write_bytes(broken)
        assert scan(tmp_path, SEL, cache, save_cache=False).hashed == 3 + scan_mod.SAVE_MIN_CHANGES
    cache.write_bytes(full)
    cache.chmod(0o666)  # as on exFAT, where every file is 0777: still ours, still used
    assert scan(tmp_path, SEL, cache, save_cache=False).hashed == 0
    try:
        os.chown(cache, os.getuid() + 4321, -1)  # another user's file (only root can make one)
    except PermissionError:
        return
    assert scan(tmp_path, SEL, cache, save_cache=False).hashed == 3 + scan_mod.SAVE_MIN_CHANGES


def test_rows_of_deleted_files_leave_the_stat_cache_when_it_is_rewritten_and_never_hit(tmp_path):
    """A save that does not rewrite the cache (few changes) does not look for the rows of files
    gone; the rewrite drops them; a file made anew where one was deleted, same size and mtime, is
    hashed, never taken from the old row."""
    from peersync.replica import scan as scan_mod

    old = time.time() - 3600
    for i in range(10):
        make(tmp_path, f"memory/{i}.md", b"x" * i, mtime=old)
    cache = tmp_path / "cache.json"
    assert scan(tmp_path, SEL, cache).hashed == 10
    (tmp_path / "memory" / "3.md").unlink()
    written = cache.stat().st_mtime_ns
    assert scan(tmp_path, SEL, cache).hashed == 0  # one deletion: nothing to rewrite
    assert cache.stat().st_mtime_ns == written and "memory/3.md" in scan_mod._read_cache(cache)
    assert "memory/3.md" in scan_mod._KEPT[str(cache)][1]  # and in the entries this process goes on using
    make(tmp_path, "memory/3.md", b"y" * 3, mtime=old)  # same size and mtime, other bytes
    result = scan(tmp_path, SEL, cache)
    assert result.hashed == 1 and result.manifest["memory/3.md"].hash == scan_mod.hash_bytes(b"yyy")
    (tmp_path / "memory" / "3.md").unlink()
    for n in range(scan_mod.SAVE_MIN_CHANGES + 1):  # enough change for the cache to be rewritten
        make(tmp_path, f"memory/more/{n}.md", b"m", mtime=old)
    scan(tmp_path, SEL, cache)
    rows = scan_mod._read_cache(cache)
    assert "memory/3.md" not in rows and len(rows) == 9 + scan_mod.SAVE_MIN_CHANGES + 1


def test_dry_run_scan_writes_no_cache(tmp_path):
    make(tmp_path, "memory/a.md", b"x", mtime=time.time() - 100)
    cache = tmp_path / "cache.json"
    scan(tmp_path, SEL, cache, save_cache=False)
    assert not cache.exists()


def test_a_few_changes_do_not_rewrite_a_large_stat_cache(tmp_path):
    """Rewriting the cache of a big workspace costs more than re-hashing a few files next time;
    the scan stays right either way."""
    import peersync.replica.scan as scan_mod
    from peersync.core.selection import Selection

    root = tmp_path / "ws"
    (root / "memory").mkdir(parents=True)
    old = time.time() - 3600  # outside the racy window: cacheable
    for i in range(300):
        path = root / "memory" / f"{i}.md"
        path.write_text(f"{i}\n")
        os.utime(path, (old, old))
    cache = tmp_path / "cache.json"
    first = scan_mod.scan(root, Selection(), cache)
    assert first.hashed == 300 and cache.exists()
    written = cache.stat().st_mtime_ns
    edited = root / "memory" / "7.md"
    edited.write_text("seven\n")
    os.utime(edited, (old + 10, old + 10))
    scan_mod._KEPT.clear()  # a new process: only the file counts
    second = scan_mod.scan(root, Selection(), cache)
    assert second.hashed == 1 and cache.stat().st_mtime_ns == written  # not rewritten for one file
    scan_mod._KEPT.clear()
    third = scan_mod.scan(root, Selection(), cache)
    assert third.hashed == 1 and third.manifest["memory/7.md"].hash == second.manifest["memory/7.md"].hash
    assert third.manifest == second.manifest


def test_what_the_scan_could_not_read_is_unknown_and_odd_names_are_skipped(tmp_path, monkeypatch):
    import peersync.replica.scan as scan_mod

    make(tmp_path, "memory/ok.md")
    make(tmp_path, "memory/growing.log")
    os.symlink("ok.md", tmp_path / "memory" / "link.md")
    os.makedirs(os.fsencode(tmp_path / "memory") + b"/caf\xe9")
    make(tmp_path, "memory/new\nline.md")
    real = scan_mod.hash_file

    def appending(path, size=None):  # a writer appends while the scan reads it, every time
        digest = real(path, size)
        if str(path).endswith("growing.log"):
            with open(path, "ab") as f:
                f.write(b"more")
        return digest

    monkeypatch.setattr(scan_mod, "hash_file", appending)
    result = scan(tmp_path, SEL)
    # A link inside is synced as a link; a name that is not UTF-8 is scanned as os.fsdecode spells it
    # (whether the other side can hold it is the pipeline's question: core/names.foreign_names).
    assert sorted(result.manifest) == ["memory/caf\udce9", "memory/link.md", "memory/ok.md"]
    assert sorted(result.unknown) == ["memory/growing.log"]
    assert sorted(p.path for p in result.problems) == ["memory/growing.log", "memory/new\\nline.md"]


def test_unknown_covers_a_path_and_everything_under_it():
    from peersync.core.unknown import covered, known_only

    assert covered("a/b/c.md", {"a/b"}) and covered("a/b", {"a/b"})
    assert not covered("a/bc.md", {"a/b"}) and not covered("a", {"a/b"})
    assert known_only({"a/b/c", "a/x", "z"}, ["a/b", ""]) == {"a/x", "z"}


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["*.tmp", ".git/", "cache/", "*~", ".#*", "\\#*#", "notes*.md", "a?c", "[ab]*.log",
                                 "drafts/", "memory/private/", "/top.md", "**/x.md", "!keep.tmp", "*.swp",
                                 ".DS_Store", "cache", "n*s.md", "*", "x.md ", "\\!x", "# a comment", "ab*",
                                 "*.md*", "#*#", "a*", "*x*"]),
                max_size=6),
       st.lists(st.sampled_from(["memory", "a", "cache", ".git", "drafts", "private", "sub"]), max_size=3),
       st.sampled_from(["x.md", "a.tmp", "notes1.md", "abc", "b.log", "#x#", ".#lock", "f~", "keep.tmp",
                        "top.md", "plain.md", "cache", ".DS_Store", "z.swp", "#", "##", "ns.md", "notes.md",
                        "n.md", "x.md ", "!x", "z.swpx", "ab", "a", ".md", "x.mdx", "#a", "a#"]))
def test_a_file_is_excluded_by_its_name_exactly_as_by_its_whole_path(patterns, folders, name):
    """excludes_child matches only a file's name when every pattern is a name pattern: it must
    decide as the whole path would, for every file whose folders the walker let through."""
    selection = Selection(roots=("memory",), exclude=tuple(patterns))
    path = "/".join(["memory", *folders, name])
    parents = ["/".join(["memory", *folders[:i]]) for i in range(1, len(folders) + 1)]
    if any(selection.excludes_dir(p) for p in parents):
        return  # the walker never reaches this file
    whole = selection.pattern_excludes(path) or (path.count("/") == 1 and in_state_dir(path))
    assert selection.excludes_child(path) == whole


def test_a_scan_entry_holds_its_records_objects_not_the_stat_results_or_the_caches(tmp_path):
    """A file whose version record holds its content gets an entry made of that record's own size,
    time, mode and hash objects (equal to what the scan found), so the stat results and the stat
    cache are freed whole after a scan (100k files: ~9 MB, and 40 MB without scattered survivors);
    a time that differs is the file's."""
    old = time.time() - 3600
    for name in ("a", "b", "c"):
        make(tmp_path, f"memory/{name}.md", name.encode() * 1000, mtime=old)
    cache = tmp_path / "cache.bin"
    first = scan(tmp_path, SEL, cache)
    vv = (("mac", 1),)
    fresh = lambda n: int(str(n))  # noqa: E731  (an equal int, another object)
    rows = {p: (1, fresh(e.size), fresh(e.mtime_ns), fresh(e.mode), "".join(list(e.hash)), vv, (), 1.0)
            for p, e in first.manifest.items()}
    c = rows["memory/c.md"]
    rows["memory/c.md"] = (1, c[1], c[2] + 1, c[3], c[4], vv, (), 1.0)  # touched since: same content
    rows["memory/b.md"] = (1, 3000, c[2], c[3], "0" * 32, vv, (), 1.0)  # another content
    again = scan(tmp_path, SEL, cache, known=(rows, 0))
    assert again.hashed == 0 and again.unmatched == ["memory/b.md"]
    a, row = again.manifest["memory/a.md"], rows["memory/a.md"]
    assert a == first.manifest["memory/a.md"].with_vv(vv) and all(x is y for x, y in zip(a, row[1:7]))
    c, row = again.manifest["memory/c.md"], rows["memory/c.md"]
    assert c.mtime_ns == first.manifest["memory/c.md"].mtime_ns != row[2]
    assert c.size is row[1] and c.mode is row[3] and c.hash is row[4] and c.vv is vv
    assert again.manifest["memory/b.md"] == first.manifest["memory/b.md"]


def test_hash_file_with_a_stat_size_hashes_the_whole_file_whatever_it_holds_now(tmp_path):
    """The scan passes the size its stat saw: one read(2) when that is still the length; a file
    that grew or shrank since (or one larger than a read) is still hashed to its end."""
    from peersync.replica.scan import CHUNK, hash_bytes, hash_file

    for data in (b"", b"x", b"memory line\n" * 300, os.urandom(CHUNK), os.urandom(CHUNK + 7), os.urandom(3 * CHUNK)):
        path = tmp_path / "f"
        path.write_bytes(data)
        want = hash_bytes(data)
        assert hash_file(path) == want
        for size in {len(data), max(len(data) - 1, 0), len(data) + 1, 0, CHUNK}:
            assert hash_file(path, size) == want, (len(data), size)
