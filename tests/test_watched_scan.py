"""Watch-fed scans (peersync/replica/watched.py): a long-lived process lists again only the directories
inotify named, and reaches exactly what a full walk reaches — through random edits, creations,
deletions, renames of files and folders, links, odd names, a lost event queue, a hard link written
through its other name, a file system that is not watched, and changes made while no one watched."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from peersync.core.paths import STATE_DIR
from peersync.core.selection import Selection
from peersync.core.types import Entry
from peersync.replica import scan as scanning
from peersync.replica import watched
from peersync.replica.handler import Handler
from peersync.testing import generate, mutate, wire_pair

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")

SEL = Selection(roots=("memory", "notes", "MEMORY.md"), exclude=("*.tmp", "memory/cache/"))


@pytest.fixture(autouse=True)
def fresh_watches():
    watched.forget_all()
    yield
    watched.forget_all()


def plain(root: Path, selection: Selection = SEL):
    problems, unknown = [], []
    found = {rel: _facts(st) for rel, st in scanning.walk(root, selection, problems, unknown, kinds=True)}
    return found, sorted((p.path, p.message) for p in problems), sorted(unknown)


def through(watch: watched.TreeWatch):
    problems, unknown = [], []
    found = {rel: _facts(st) for rel, st in watch.walk(problems, unknown)}
    return found, sorted((p.path, p.message) for p in problems), sorted(unknown)


def _facts(st):
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def new_watch(root: Path, selection: Selection = SEL) -> watched.TreeWatch:
    assert watched.walker(root, selection) is None  # a process's first scan is a plain one
    watch = watched.walker(root, selection)
    assert watch is not None
    watch.mutex.release()  # held for a scan by walker(); these tests call walk() themselves
    return watch


def seed_tree(root: Path) -> None:
    for d in ("memory/2026", "memory/people", "memory/cache", "notes/a/b"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(12):
        (root / f"memory/2026/day{i}.md").write_text(f"day {i}\n")
    (root / "memory/people/ana.md").write_text("Ana\n")
    (root / "memory/cache/x.bin").write_text("not synced\n")
    (root / "notes/a/b/deep.md").write_text("deep\n")
    (root / "MEMORY.md").write_text("# memory\n")


def random_change(root: Path, rng: random.Random) -> str:
    """One random user change under memory/ or notes/; the state dir (under memory/) is the engine's own."""
    def ours(p: Path) -> bool:
        rel = str(p.relative_to(root))
        return not (rel == STATE_DIR or rel.startswith(STATE_DIR + "/"))
    dirs = sorted(str(p.relative_to(root)) for top in ("memory", "notes") if (root / top).is_dir()
                  for p in [root / top, *(root / top).rglob("*")] if p.is_dir() and not p.is_symlink() and ours(p))
    files = sorted(str(p.relative_to(root)) for top in ("memory", "notes") if (root / top).is_dir()
                   for p in (root / top).rglob("*") if p.is_file() and not p.is_symlink() and ours(p))
    kind = rng.choice(["create", "append", "rewrite", "chmod", "delete", "rename", "move", "mkdir", "rmtree",
                       "dirmove", "link", "relink", "odd", "excluded", "touch", "empty"])
    d = rng.choice(dirs) if dirs else "memory"
    if kind == "create" or not files:
        (root / d / f"n{rng.randrange(10**6)}.md").write_text("new\n")
        return kind
    f = rng.choice(files)
    if kind == "append":
        with open(root / f, "a") as out:
            out.write("more\n")
    elif kind == "rewrite":  # same size, other bytes
        data = (root / f).read_bytes()
        (root / f).write_bytes(bytes(reversed(data)) if len(data) > 1 else b"z")
    elif kind == "chmod":
        os.chmod(root / f, 0o600 if os.stat(root / f).st_mode & 0o7 else 0o644)
    elif kind == "delete":
        os.unlink(root / f)
    elif kind == "rename":
        os.rename(root / f, root / os.path.dirname(f) / f"r{rng.randrange(10**6)}.md")
    elif kind == "move":
        os.rename(root / f, root / d / f"m{rng.randrange(10**6)}.md")
    elif kind == "mkdir":
        (root / d / f"dir{rng.randrange(10**6)}" / "sub").mkdir(parents=True)
        (root / d / "x.md").write_text("x\n")
    elif kind == "rmtree" and d.count("/") >= 1:
        shutil.rmtree(root / d)
    elif kind == "dirmove" and d.count("/") >= 1:
        target = rng.choice([x for x in dirs if not (x == d or x.startswith(d + "/"))] or ["memory"])
        os.rename(root / d, root / target / f"moved{rng.randrange(10**6)}")
    elif kind == "link":
        os.symlink(os.path.basename(f), root / os.path.dirname(f) / f"l{rng.randrange(10**6)}.md")
    elif kind == "relink":
        links = [p for p in (root / "memory").rglob("*") if p.is_symlink()]
        if links:
            link = rng.choice(links)
            link.unlink()
            os.symlink("elsewhere.md", link)
    elif kind == "odd":
        (root / d / f"odd\nname{rng.randrange(100)}.md").write_text("odd\n")
    elif kind == "excluded":
        (root / d / "scratch.tmp").write_text("x")
        (root / "memory/cache").mkdir(parents=True, exist_ok=True)
        (root / "memory/cache/y.bin").write_text(str(rng.random()))
    elif kind == "touch":
        os.utime(root / f, ns=(0, rng.randrange(10**18)))
    elif kind == "empty":
        (root / d / f"empty{rng.randrange(10**6)}").mkdir()
    return kind


@pytest.mark.parametrize("seed", range(4))
def test_the_watched_walk_reaches_what_a_full_walk_reaches_through_random_changes(tmp_path, seed):
    rng = random.Random(seed)
    root = tmp_path / "ws"
    seed_tree(root)
    watch = new_watch(root)
    assert through(watch) == plain(root)
    assert watch.full
    kinds = set()
    for round_ in range(60):
        for _ in range(rng.randrange(0, 4)):
            kinds.add(random_change(root, rng))
        assert through(watch) == plain(root), f"round {round_}"
        assert not watch.full
    assert through(watch) == plain(root)
    # Nothing changed since: only folders holding something unknown (a link leading outside) are listed again.
    assert watch.listed == sum(not node.fresh for node in watch.nodes.values()) < len(watch.nodes) / 4
    assert len(kinds) >= 12


def test_only_the_directories_that_changed_are_listed_again(tmp_path):
    root = tmp_path / "ws"
    seed_tree(root)
    watch = new_watch(root)
    through(watch)
    total = watch.listed
    assert total >= 6
    through(watch)
    assert (watch.full, watch.listed) == (False, 0)
    (root / "memory/2026/day3.md").write_text("edited\n")
    found, _, _ = through(watch)
    assert (watch.listed, watch.restatted) == (0, 1)  # the file events named is stat'ed, nothing is listed
    assert found["memory/2026/day3.md"][1] == len("edited\n")
    (root / "memory/2026/new.md").write_text("new\n")
    os.rename(root / "memory/2026/day4.md", root / "memory/people/day4.md")
    (root / "notes/a/b/sub").mkdir()
    found, _, _ = through(watch)
    assert watch.listed == 2  # notes/a/b (a folder appeared there) and the new one
    assert watch.restatted == 3  # new.md, and day4.md where it left and where it came
    assert "memory/people/day4.md" in found and "memory/2026/day4.md" not in found
    assert (found, *through(watch)[1:]) == plain(root)
    # Opening and reading files (a scan's own hashing) wakes nothing.
    for p in (root / "memory").rglob("*.md"):
        p.read_bytes()
    through(watch)
    assert watch.listed == 0


def test_a_lost_event_queue_means_a_full_listing(tmp_path):
    root = tmp_path / "ws"
    seed_tree(root)
    watch = new_watch(root)
    through(watch)
    queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if queued > 200_000:
        pytest.skip(f"max_queued_events is {queued}")
    targets = [root / "memory/2026/day1.md", root / "memory/2026/day2.md"]  # alternate: equal events merge
    for i in range(queued + 10):  # more events than the kernel keeps: IN_Q_OVERFLOW
        os.utime(targets[i % 2], ns=(i, i))
    (root / "notes/a/b/deep.md").write_text("changed after the overflow\n")
    assert through(watch) == plain(root)
    assert watch.full
    assert through(watch) == plain(root)
    assert not watch.full


def test_changes_made_while_nobody_watched_are_found(tmp_path):
    root = tmp_path / "ws"
    seed_tree(root)
    watch = new_watch(root)
    through(watch)
    watch.close()  # as a process that ends, or a watch dropped after a failed scan
    (root / "memory/people/ana.md").write_text("Ana, edited while no one watched\n")
    os.unlink(root / "memory/2026/day0.md")
    assert through(watch) == plain(root)
    assert watch.full


def settled_watch(root):
    """A watch on a seeded tree, walked twice: its next walk lists only what changed."""
    seed_tree(root)
    watch = new_watch(root)
    through(watch)
    through(watch)
    assert not watch.full
    return watch


def test_the_whole_tree_is_listed_again_every_full_every_seconds(tmp_path, monkeypatch):
    watch = settled_watch(tmp_path / "ws")
    monkeypatch.setattr(watched, "FULL_EVERY", 0.0)
    through(watch)
    assert watch.full


def test_a_hard_link_written_through_its_other_name_is_seen(tmp_path):
    root = tmp_path / "ws"
    seed_tree(root)
    outside = tmp_path / "outside.md"
    outside.write_text("v1\n")
    os.link(outside, root / "memory/people/linked.md")
    watch = new_watch(root)
    through(watch)
    with open(outside, "a") as f:  # tells tmp_path's directory only, not memory/people
        f.write("v2\n")
    found, _, _ = through(watch)
    assert found["memory/people/linked.md"][1] == len("v1\nv2\n")
    assert (found, *through(watch)[1:]) == plain(root)


def test_a_file_system_inotify_cannot_vouch_for_is_listed_every_time(tmp_path, monkeypatch):
    monkeypatch.setattr(watched, "LOCAL_FS", {})
    root = tmp_path / "ws"
    seed_tree(root)
    watch = new_watch(root)
    through(watch)
    first = watch.listed
    (root / "memory/2026/day5.md").write_text("edited\n")
    assert through(watch) == plain(root)
    assert watch.listed == first


def test_an_unlistable_folder_is_listed_again_every_time(tmp_path):
    root = tmp_path / "ws"
    seed_tree(root)
    watch = new_watch(root)
    # An unreadable directory (as a non-root user meets it) is simulated by its listing's trouble.
    real = scanning.list_dir

    def failing(root_, current, top, selection, found):
        if current == "notes/a":
            found.unreadable(current, "cannot list directory: Permission denied")
            return [], []
        return real(root_, current, top, selection, found)

    scanning.list_dir = failing
    try:
        _, problems, unknown = through(watch)
        assert unknown == ["notes/a"]
        listed = watch.listed
        through(watch)
        assert watch.listed == 1  # notes/a again, nothing else
        assert listed > 1
    finally:
        scanning.list_dir = real
    assert through(watch) == plain(root)


def test_the_handlers_scan_is_watch_fed_from_its_second_scan_and_decides_alike(tmp_path, monkeypatch):
    root = tmp_path / "ws"
    generate(root, files=300, seed=3)
    handler = Handler(root)
    handler.ws.ensure_state()
    selection = handler.ws.sync_config().selection
    for round_ in range(6):
        result = handler.scan(selection)
        watch = watched._WATCHES.get(os.path.realpath(root))
        assert (watch is not None) == (round_ >= 1)
        if round_ >= 2:
            assert not watch.full and watch.restatted > 0 and watch.listed < len(watch.nodes) / 2
        monkeypatch.setattr(watched, "ENABLED", False)  # a process of its own: a plain walk
        fresh = Handler(root).scan(selection)
        monkeypatch.setattr(watched, "ENABLED", True)
        assert result.manifest == fresh.manifest, f"round {round_}"
        assert sorted(result.unknown) == sorted(fresh.unknown)
        mutate(root, seed=round_, n=20)


def test_another_selection_gets_a_watch_of_its_own(tmp_path):
    root = tmp_path / "ws"
    seed_tree(root)
    watch = new_watch(root)
    through(watch)
    narrower = Selection(roots=("memory",), exclude=())
    other = watched.walker(root, narrower)
    assert other is not None and other is not watch and other.selection == narrower
    try:
        problems, unknown = [], []
        found = {rel for rel, _ in other.walk(problems, unknown)}
    finally:
        watched.done(other, ok=True)
    assert found == {rel for rel, _ in scanning.walk(root, narrower, kinds=True)}
    assert "memory/cache/x.bin" in found and "MEMORY.md" not in found
    assert watch.fd < 0  # the old one let its watches go


def test_no_more_watches_than_max_trees_even_while_all_are_in_use(tmp_path):
    """Every watch held by a scan under way: a scan of yet another workspace lists everything
    itself rather than add a watch (inotify instances are few); once one is free, it is replaced."""
    held = []
    for i in range(watched.MAX_TREES):
        root = tmp_path / f"ws{i}"
        seed_tree(root)
        watched.walker(root, SEL)  # (a first scan: plain)
        held.append(watched.walker(root, SEL))
    assert all(w is not None for w in held) and len(watched._WATCHES) == watched.MAX_TREES
    extra = tmp_path / "extra"
    seed_tree(extra)
    watched.walker(extra, SEL)
    assert watched.walker(extra, SEL) is None
    assert len(watched._WATCHES) == watched.MAX_TREES
    watched.done(held[0], ok=True)
    newest = watched.walker(extra, SEL)
    assert newest is not None and len(watched._WATCHES) == watched.MAX_TREES
    for watch in [*held[1:], newest]:
        watched.done(watch, ok=True)


def test_the_volume_type_is_read_as_statfs_lays_it_out():
    """f_type is read with the width this machine's struct statfs gives it; a tmpfs or the
    volume of this checkout is one inotify reports every change on."""
    lib = watched._lib()
    if lib is None:
        pytest.skip("no inotify here")
    assert watched._F_TYPE == ("I" if os.uname().machine == "s390x" else "l")
    assert lib.fs_type("/dev/shm") in (0x01021994, None)  # tmpfs, where it is mounted
    assert lib.fs_type(str(Path(__file__).parent)) is not None


def test_a_kept_agent_sets_its_watches_up_between_syncs_and_a_keeper_from_its_first_scan(tmp_path, monkeypatch):
    root = tmp_path / "ws"
    generate(root, files=200, seed=4)
    handler = Handler(root)
    handler.ws.ensure_state()
    handler.scan()
    assert os.path.realpath(root) not in watched._WATCHES  # one scan: nothing watched
    handler.op_reset()  # a keeper's client left: more syncs will come
    deadline = time.monotonic() + 20
    while not ((w := watched._WATCHES.get(os.path.realpath(root))) and w.fd >= 0 and not w.mutex.locked()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    mutate(root, seed=1, n=10)
    result = handler.scan()
    watch = watched._WATCHES[os.path.realpath(root)]
    assert not watch.full and watch.listed + watch.restatted > 0
    monkeypatch.setattr(watched, "ENABLED", False)
    assert Handler(root).scan().manifest == result.manifest
    monkeypatch.setattr(watched, "ENABLED", True)

    other = tmp_path / "other"
    generate(other, files=100, seed=5)
    monkeypatch.setattr(watched, "LONG_LIVED", True)
    Handler(other).scan()
    assert watched._WATCHES[os.path.realpath(other)].full


def test_a_kept_connection_syncs_alike_with_watched_scans_on_both_sides(tmp_path, sshd, monkeypatch):
    from peersync.sync.runner import run_sync
    from peersync.transport.keeper import ENV_KEEP

    monkeypatch.setenv(ENV_KEEP, "60")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    generate(pair.local.root, files=200, seed=5)
    try:
        for round_ in range(6):
            [report] = run_sync(pair.local, ["remote"])
            assert report.error is None, report.error
            assert tree(pair.local.root) == tree(pair.remote.root), f"round {round_}"
            mutate(pair.local.root, seed=10 + round_, n=15)
            mutate(pair.remote.root, seed=20 + round_, n=15)
            (pair.remote.root / "memory" / f"new-{round_}").mkdir(parents=True, exist_ok=True)
            (pair.remote.root / "memory" / f"new-{round_}" / "a.md").write_text(f"round {round_}\n")
    finally:
        subprocess.run(["pkill", "-f", str(pair.local.root)], check=False)  # its keeper


def tree(root: Path) -> dict:
    sel = Selection()
    return {rel: (root / rel).read_bytes() for rel, _ in scanning.walk(root, sel)}


@pytest.mark.parametrize("seed", range(4))
def test_a_watched_scan_reuses_unchanged_entries_and_its_delta_equals_a_fresh_one(tmp_path, monkeypatch, seed):
    """A watch-fed scan reuses the last scan's entry of every file no event named (and op_scan its
    comparison with the same ancestor): through no-ops, random changes, new version records of
    unchanged files and a new ancestor (whole, or a delta: the comparison is then carried over), with
    scans that record nothing in between (dry runs, a keeper's warm-up), its manifest and its delta
    equal a fresh handler's."""
    from peersync.core import versions as vv

    rng, dry_rng = random.Random(seed), random.Random(seed + 1000)
    root = tmp_path / "ws"
    generate(root, files=200, seed=seed)
    handler = Handler(root)
    handler.ws.ensure_state()
    peer = "a" * 32
    first = handler.scan()
    digest = handler.op_ancestor_put(peer, manifest={"format": 2, "entries": {
        p: e.to_wire() for p, e in first.manifest.items() if rng.random() < 0.9}})["digest"]
    last, memoized, last_action, last_scan, told, carried, dry = None, set(), None, None, 0, 0, 0
    for round_ in range(24):
        action = rng.choice(["noop", "noop", "change", "record", "ancestor", "delta"])
        if action == "change":
            for _ in range(rng.randint(1, 4)):
                random_change(root, rng)
        elif action == "record" and last:  # a sync recorded another version of bytes already here
            path = rng.choice(sorted(p for p, e in last.items() if e.kind == 0))
            entry = last[path]
            counter = handler.versions.reserve()
            handler.versions.record([(path, entry.with_vv(vv.bump(entry.vv, handler.versions.me, counter),
                                                           entry.seen), True)])
        elif action == "ancestor" and last:
            digest = handler.op_ancestor_put(peer, manifest={"format": 2, "entries": {
                p: e.to_wire() for p, e in last.items() if rng.random() < 0.95}})["digest"]
        elif action == "delta" and last:  # a sync's new ancestor, as a delta (op_scan's memo carried over)
            stored = handler._ancestor_entries(peer, digest)
            paths = sorted({*last, *stored})
            moved = rng.sample(paths, min(len(paths), rng.randint(1, 12)))
            changes = {"set": {}, "drop": []}
            for p in moved:
                pick = rng.random()
                if pick < 0.3 or p not in last:
                    changes["drop"].append(p)
                elif pick < 0.7:
                    changes["set"][p] = last[p].to_wire()  # the ancestor now records what is here
                else:  # or another version than what is here
                    changes["set"][p] = last[p].with_vv(vv.bump(last[p].vv, "b" * vv.ID_DIGITS, rng.randint(1, 99)),
                                                        last[p].seen).to_wire()
            current = handler._delta_memo is not None and handler._delta_memo[0] is stored
            put = handler.op_ancestor_put(peer, base_digest=digest, delta=changes)
            assert put["applied"]
            digest = put["digest"]
            carried += current
            assert not current or handler._delta_memo[0] is handler._ancestor_entries(peer, digest)
        if dry_rng.random() < 0.3:  # then a scan that records nothing (a dry run, a keeper's warm-up)
            handler.scan(save_cache=False)
            dry += 1
        out = handler.op_scan(base_peer=peer, base_digest=digest)
        watch = watched._WATCHES.get(os.path.realpath(root))
        reused = handler._delta_memo[1] if handler._delta_memo else {}
        monkeypatch.setattr(watched, "ENABLED", False)  # a process of its own: a plain walk, no memo
        fresh_handler = Handler(root)
        fresh = fresh_handler.op_scan(base_peer=peer, base_digest=digest)
        monkeypatch.setattr(watched, "ENABLED", True)
        assert out["delta"] and fresh["delta"]
        assert out["entries"] == fresh["entries"], f"round {round_} ({action})"
        assert sorted(out["deleted"]) == sorted(fresh["deleted"]), f"round {round_} ({action})"
        assert sorted(out["unknown"]) == sorted(fresh["unknown"])
        if action == "noop" and memoized:
            # Nothing happened since the last scan: every entry it kept is reused as it was (a file
            # written within the last second is never kept: the stat cache holds no hash for it).
            # A selection root that is a file (MEMORY.md) is stat'ed anew by every scan.
            in_folders = {p for p in memoized if "/" in p}
            assert in_folders <= {p for p, e in reused.items() if last.get(p) is e}, f"round {round_}"
        if action != "change" and last_action not in (None, "change"):
            # No file changed since the last scan (a record may have): folders come whole, not file
            # by file — all but the one holding a file whose record changed.
            assert watch.whole > len(watch.nodes) / 2, f"round {round_} ({action})"
        memoized = {p for n in watch.nodes.values() for p in n.kept or ()} if watch is not None else set()
        assert round_ == 0 or action == "change" or len(memoized) > len(reused) / 2
        # What the scan says it may have made anew since the last one (watched.changed_between):
        # every other path holds the very entry object it held then.
        scanned = handler._delta_memo[3]
        anew = watched.changed_between(last_scan, scanned)
        if anew is not None:
            told += 1
            assert [p for p, e in reused.items() if p not in anew and last.get(p) is not e] == [], f"round {round_}"
            if action != "change" and last_action not in (None, "change"):
                assert len(anew) < len(reused) / 2, f"round {round_} ({action})"
        last, last_action, last_scan = dict(reused), action, scanned
    assert told >= 12  # most rounds know (not the first two, nor one after a record changed every folder)
    assert carried  # a new ancestor sent as a delta: the next scan compared only what moved
    assert dry  # and scans that recorded nothing came between


def test_a_processs_first_scan_frees_the_stat_cache_and_its_later_ones_keep_it(tmp_path, monkeypatch):
    """A CLI run or a cold agent scans once: its stat cache (40 MB at 100k files) goes before the
    ancestor is read.  A second scan keeps it for the next; a keeper keeps it from its first."""
    root = tmp_path / "ws"
    generate(root, files=100, seed=1)
    handler = Handler(root)
    handler.ws.ensure_state()
    cache = str(handler.ws.state / "scan-cache.json")
    handler.scan()
    assert os.path.exists(cache) and cache not in scanning._KEPT
    handler.op_reset()  # a kept agent's client left: it loads the cache back, in the background
    deadline = time.monotonic() + 10
    while cache not in scanning._KEPT and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cache in scanning._KEPT
    scanning._KEPT.clear()
    handler.scan()
    assert cache in scanning._KEPT
    watched.forget_all()
    scanning._KEPT.clear()
    monkeypatch.setattr(watched, "LONG_LIVED", True)
    Handler(root).scan()
    assert cache in scanning._KEPT


def test_a_selection_root_that_now_names_another_folder_is_listed_again(tmp_path):
    """A root that is a link re-pointed, or a nested root whose parent (not watched) was moved away
    and the path made again: no event tells, the root's identity does."""
    a, b, root = tmp_path / "A", tmp_path / "B", tmp_path / "ws"
    for d in (a, b, root / "projects/notes"):
        d.mkdir(parents=True)
    (a / "one.md").write_text("A\n")
    (b / "two.md").write_text("B\n")
    (root / "projects/notes/old.md").write_text("old\n")
    os.symlink(a, root / "memory")
    selection = Selection(roots=("memory", "projects/notes"), exclude=())
    watch = new_watch(root, selection)
    assert through(watch) == plain(root, selection) and through(watch) == plain(root, selection)
    os.unlink(root / "memory")
    os.symlink(b, root / "memory")
    assert through(watch) == plain(root, selection)
    os.unlink(root / "memory")
    (root / "memory").mkdir()
    (root / "memory/three.md").write_text("3\n")
    assert through(watch) == plain(root, selection)
    os.rename(root / "projects", root / "projects.bak")
    (root / "projects/notes").mkdir(parents=True)
    (root / "projects/notes/new.md").write_text("new\n")
    assert through(watch) == plain(root, selection) and through(watch) == plain(root, selection)


def test_a_hard_link_made_after_the_listing_and_written_through_is_seen(tmp_path):
    root = tmp_path / "ws"
    (root / "memory/a").mkdir(parents=True)
    (root / "memory/b").mkdir()
    (root / "memory/a/f.md").write_text("v1\n")
    (root / "memory/b/other.md").write_text("x\n")
    selection = Selection(roots=("memory",), exclude=())
    watch = new_watch(root, selection)
    assert through(watch) == plain(root, selection) and through(watch) == plain(root, selection)
    os.link(root / "memory/a/f.md", root / "memory/b/g.md")
    with open(root / "memory/b/g.md", "a") as f:
        f.write("v2 through g\n")
    assert through(watch) == plain(root, selection)
    with open(root / "memory/b/g.md", "a") as f:  # from now on its folders are listed every time
        f.write("v3 through g\n")
    assert through(watch) == plain(root, selection)


def test_a_change_to_the_mount_table_means_a_full_listing(tmp_path, monkeypatch):
    watch = settled_watch(tmp_path / "ws")
    monkeypatch.setattr(watched, "_mountinfo", lambda: b"another mount table")
    through(watch)
    assert watch.full
    through(watch)
    assert not watch.full


def test_a_watch_dropped_for_a_new_selection_stays_held(tmp_path):
    """A thread that found the old watch just before it was dropped must not scan through it (it
    would open an inotify instance nobody closes): it finds it held and lists everything itself."""
    root = tmp_path / "ws"
    seed_tree(root)
    old = new_watch(root)
    other = Selection(roots=("memory",), exclude=())
    new = watched.walker(root, other)
    assert new is not None and new is not old
    assert not old.mutex.acquire(blocking=False) and old.fd < 0
    watched.done(new, ok=True)


def test_versions_say_which_records_changed_since_a_generation(tmp_path, monkeypatch):
    """Versions.changed_since, which lets a watched scan take a folder whole after records changed
    elsewhere: exactly the paths recorded or pruned after that generation; None once forgotten."""
    from peersync.replica import versions as versions_module
    from peersync.replica.versions import Versions

    monkeypatch.setattr(versions_module, "LOG_MAX", 2)  # generations remembered
    v = Versions(tmp_path, "a" * 32)
    entry = lambda n: Entry(n, n, 0o644, f"{n:032x}")  # noqa: E731
    v.record([(f"memory/{i}.md", entry(i), True) for i in range(3)])
    gen = v.known()[1]
    assert v.changed_since(gen) == set()
    v.record([("memory/1.md", entry(10), True)])
    v.record([("notes/x.md", entry(11), False)])
    assert v.changed_since(gen) == {"memory/1.md", "notes/x.md"}
    assert v.changed_since(gen + 1) == {"notes/x.md"}
    assert v.changed_since(gen + 5) is None  # (a generation it never had)
    v.record([("memory/2.md", entry(12), True)])
    assert v.changed_since(gen) is None  # the first change is forgotten: not known
    assert v.changed_since(gen + 1) == {"notes/x.md", "memory/2.md"}


@pytest.mark.parametrize("seed", range(4))
def test_the_union_of_whole_folders_equals_a_plain_merge(seed):
    """TreeWatch.union amends the last union (folders gone, folders new, a folder's dict replaced
    by another for the same folder) and answers what merging the parts anew answers."""
    rng = random.Random(seed)
    watch = watched.TreeWatch("/nonexistent", Selection(), lib=None)
    folders = {f"memory/d{i}": {f"memory/d{i}/{j}.md": (i, j) for j in range(rng.randrange(1, 6))}
               for i in range(30)}
    for _ in range(60):
        for name in rng.sample(sorted(folders), rng.randrange(0, 4)):  # rewritten: a new dict
            folders[name] = {f"{name}/{j}.md": (rng.random(), j) for j in range(rng.randrange(1, 6))}
        parts = [folders[name] for name in sorted(folders) if rng.random() < 0.9]
        rng.shuffle(parts)
        plain = {}
        for part in parts:
            plain.update(part)
        assert watch.union(parts) == plain


def test_a_folder_where_one_file_changed_is_rescanned_at_that_file_only(tmp_path, monkeypatch):
    """A kept agent's scan after a sync that touched one file in each big folder (today's daily
    note, one installed file): the other files of those folders come whole, as the last scan made
    them; only the named file and those whose record changed are looked at one by one."""
    root = tmp_path / "ws"
    for folder in ("memory/a", "memory/b", "memory/c"):
        (root / folder).mkdir(parents=True)
        for i in range(40):
            (root / folder / f"{i}.md").write_text(f"{folder} {i}\n")
            os.utime(root / folder / f"{i}.md", ns=(10**18, 10**18))  # not written just now: kept
    monkeypatch.setattr(watched, "LONG_LIVED", True)
    handler = Handler(root)
    handler.ws.ensure_state()
    handler.scan()
    before = handler.scan()  # every folder's files kept: whole from here on
    (root / "memory/a/3.md").write_text("changed\n")
    os.unlink(root / "memory/b/5.md")
    (root / "memory/c/new.md").write_text("new\n")
    result = handler.scan()
    watch = watched._WATCHES[os.path.realpath(root)]
    assert watch.restatted == 3 and watch.whole >= 3
    # (and the file its watch saw go: TreeWatch.removed)
    assert watch.fresh_between(before.fresh[1], result.fresh[1]) == {"memory/a/3.md", "memory/c/new.md",
                                                                     "memory/b/5.md"}
    # A new record for a file that did not change (a sync's new vector): that file only.
    entry = result.manifest["memory/c/7.md"]
    from peersync.core import versions as vv
    handler.versions.record([("memory/c/7.md", entry.with_vv(vv.bump(entry.vv, handler.versions.me,
                                                                      handler.versions.reserve()), entry.seen), True)])
    again = handler.scan()
    anew = watch.fresh_between(result.fresh[1], again.fresh[1])
    assert "memory/c/7.md" in anew <= {"memory/a/3.md", "memory/c/new.md", "memory/c/7.md"}
    assert again.manifest["memory/c/7.md"].vv != entry.vv
    monkeypatch.setattr(watched, "ENABLED", False)
    assert Handler(root).scan().manifest == again.manifest


def test_a_kept_agents_delta_finds_deletions_among_what_its_watch_saw_go(tmp_path, monkeypatch):
    """A kept agent's delta scan finds the ancestor's paths gone among those of its last scan and
    the files its watch saw go (TreeWatch.removed: a file deleted, a folder removed with all it
    held), and its scan records those deletions so, not by looking up every one of the ancestor's
    paths (and every version record) in the manifest: at 100k files that was on every sync after a
    deletion.  A path that leaves unnamed (a selected root that is a file) is still found: the
    count of what is gone says some are missing, and then every path is looked up.  Each answer is
    a fresh handler's, and each deletion is on record."""
    import itertools

    root = tmp_path / "ws"
    for folder in ("memory/a", "memory/b", "memory/c"):
        (root / folder).mkdir(parents=True)
        for i in range(40):
            (root / folder / f"{i}.md").write_text(f"{folder} {i}\n")
            os.utime(root / folder / f"{i}.md", ns=(10**18, 10**18))
    (root / "MEMORY.md").write_text("# memory\n")
    monkeypatch.setattr(watched, "LONG_LIVED", True)
    handler = Handler(root)
    handler.ws.ensure_state()
    peer = "a" * 32
    first = handler.scan()
    digest = handler.op_ancestor_put(peer, manifest={"format": 2, "entries": {
        p: e.to_wire() for p, e in first.manifest.items()}})["digest"]
    assert handler.op_scan(base_peer=peer, base_digest=digest)["deleted"] == []
    looked_up_all, kept = [], []  # each filterfalse call: over all the ancestor's paths or records?
    real = itertools.filterfalse

    def filterfalse(predicate, iterable):
        looked_up_all.append(isinstance(iterable, dict) and len(iterable) > 100)
        return real(predicate, iterable)

    monkeypatch.setattr(itertools, "filterfalse", filterfalse)

    def delta() -> list[str]:
        looked_up_all.clear()
        out = handler.op_scan(base_peer=peer, base_digest=digest)
        kept[:] = looked_up_all
        monkeypatch.setattr(watched, "ENABLED", False)  # a process of its own: a plain walk
        assert out["deleted"] == sorted(Handler(root).op_scan(base_peer=peer, base_digest=digest)["deleted"])
        monkeypatch.setattr(watched, "ENABLED", True)
        records = handler.versions._all()
        assert [p for p in out["deleted"] if records[p][0]] == []  # each deletion recorded
        return out["deleted"]

    os.unlink(root / "memory/b/5.md")
    assert delta() == ["memory/b/5.md"]
    assert not any(kept)
    shutil.rmtree(root / "memory/c")
    assert delta() == sorted(["memory/b/5.md", *(f"memory/c/{i}.md" for i in range(40))])
    assert not any(kept)
    (root / "memory/b/5.md").write_text("back\n")
    assert delta() == sorted(f"memory/c/{i}.md" for i in range(40))
    assert not any(kept)
    os.unlink(root / "MEMORY.md")  # a selected root that is a file: no listing says it went
    assert delta() == sorted(["MEMORY.md", *(f"memory/c/{i}.md" for i in range(40))])
    assert any(kept)  # found by looking every path up: the count said one was missing
    # A keeper's local side scans through a new handler every sync: the watch keeps which walk recorded last.
    os.unlink(root / "memory/a/1.md")
    looked_up_all.clear()
    assert "memory/a/1.md" not in Handler(root).scan().manifest
    assert not any(looked_up_all)
    assert not Handler(root).versions._all()["memory/a/1.md"][0]


def test_a_keepers_agent_warmed_before_its_first_sync_scans_watch_fed(tmp_path, monkeypatch):
    """A keeper has its agent (and its own side) read what a sync reads, set the watches up and scan
    once without recording anything as soon as it is connected (op_warm): the first sync through it
    is then watch-fed, not a full listing of the tree, and takes the folders nothing changed in
    whole from that scan — and it finds what a plain walk finds."""
    root = tmp_path / "ws"
    generate(root, files=300, seed=3)
    Handler(root).ws.ensure_state()
    Handler(root).scan()  # an earlier process's sync: the stat cache and the records are on disk
    watched.forget_all()  # this process has scanned nothing and watches nothing
    scanning._KEPT.clear()
    handler = Handler(root)
    assert handler.op_warm() == {}
    deadline = time.monotonic() + 20
    while not ((w := watched._WATCHES.get(os.path.realpath(root))) and w.fd >= 0 and not w.mutex.locked()):
        assert time.monotonic() < deadline, "no watch set up"
        time.sleep(0.01)
    assert str(handler._scan_cache) in scanning._KEPT  # the stat cache is in memory already
    for thread in threading.enumerate():
        if thread.name == "peersync-warm":
            thread.join(20)
    mutate(root, seed=2, n=5)
    result = handler.scan()
    watch = watched._WATCHES[os.path.realpath(root)]
    assert not watch.full and watch.listed < len(watch.nodes) / 2
    assert watch.whole > len(watch.nodes) / 2  # (the warm-up's scan built their entries)
    monkeypatch.setattr(watched, "ENABLED", False)
    assert Handler(root).scan().manifest == result.manifest
    with pytest.raises(Exception, match="bad instance id"):
        handler.op_warm(peer_id="../x", digest="0")
