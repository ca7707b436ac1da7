"""Both sides of a pair write an ancestor's canonical bytes (their digests decide whether the next
scan may be a delta): the incremental encoder of long-lived processes must write exactly
canonical_json's bytes, whatever the names, entries and changes."""

import json
import os

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from peersync.core.commit import ancestor_delta
from peersync.core.types import Entry
from peersync.replica import handler as handler_module
from peersync.replica.handler import Handler, canonical_ancestor, canonical_json

NAMES = st.text(alphabet=st.sampled_from(list("ab/._-é\"\\\u00e9\u0301\u4e2d") + ["\udce9", "\n", "\x7f", "\U0001f600"]),
                min_size=1, max_size=12)
HASH = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
VV = st.lists(st.tuples(st.text(alphabet="0123456789abcdef", min_size=12, max_size=12), st.integers(1, 2**63 - 1))
              .map(list), max_size=3)
WIRE = st.tuples(st.integers(0, 2**40), st.integers(0, 2**62), st.integers(0, 0o777), HASH, VV, VV).map(
    lambda t: list(t[:4]) + ([t[4]] if t[4] or t[5] else []) + ([t[5]] if t[5] else []))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(NAMES, WIRE, max_size=30), st.dictionaries(NAMES, WIRE, max_size=8),
       st.lists(NAMES, max_size=8), st.dictionaries(st.sampled_from(["format", "held", "zz", "a"]), st.integers(), max_size=3))
def test_incremental_ancestor_bytes_are_canonical_json_bytes(first, changed, dropped, extra):
    doc = {**extra, "format": 3, "entries": first}
    raw, encoded = canonical_ancestor(doc, None)
    assert raw == canonical_json(doc) == (json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                                          + "\n").encode("utf-8", "backslashreplace")
    # The next sync: the same wire objects for what did not change, new ones for what did.
    entries = dict(first)
    for path in dropped:
        entries.pop(path, None)
    entries.update({p: list(w) for p, w in changed.items()})
    nxt = {**doc, "entries": entries}
    raw2, _ = canonical_ancestor(nxt, encoded)
    assert raw2 == canonical_json(nxt)
    # As an ancestor delta writes it: only the paths the delta names are looked at, in order.
    _, encoded = canonical_ancestor(doc, None)
    raw3, again = canonical_ancestor(nxt, encoded, since=first, moved=[*dropped, *changed])
    assert raw3 == raw2 and again.order == sorted(entries)
    # And once more from there (the order kept is the one used).
    last = {**nxt, "entries": {**entries, **{p + "x": w for p, w in changed.items()}}}
    raw4, _ = canonical_ancestor(last, again, since=entries, moved=[p + "x" for p in changed])
    assert raw4 == canonical_json(last)


def test_a_kept_process_writes_the_same_ancestor_bytes_as_a_fresh_one(tmp_path):
    """op_ancestor_put with deltas, three times in one process (the third reuses encoded entries),
    against the same deltas applied by a fresh handler each time: equal digests and bytes."""
    from peersync.workspace.workspace import Workspace

    peer = "0123456789abcdef0123456789abcdef"
    kept_ws, fresh_root = Workspace(tmp_path / "kept"), tmp_path / "fresh"
    for root in (kept_ws.root, fresh_root):
        root.mkdir()
        Workspace(root).ensure_state()
    wire = lambda n: [n, 1_700_000_000_000_000_000 + n, 0o644, f"{n:032x}", [["abcdef123456", n + 1]]]  # noqa: E731
    manifest = {"format": 3, "entries": {f"memory/n{i}.md": wire(i) for i in range(50)}}
    kept = Handler(kept_ws.root)
    digest = kept.op_ancestor_put(peer, manifest=manifest)["digest"]
    assert Handler(fresh_root).op_ancestor_put(peer, manifest=manifest)["digest"] == digest
    for step in range(3):
        delta = {"set": {f"memory/n{step}.md": wire(100 + step), f"memory/new{step}.md": wire(200 + step)},
                 "drop": [f"memory/n{40 + step}.md"]}
        mine = kept.op_ancestor_put(peer, base_digest=digest, delta=delta)
        name = f"{peer}.json"
        handler_module._ENCODED.pop(str(Workspace(fresh_root).state / "ancestors" / name), None)  # canonical_json
        theirs = Handler(fresh_root).op_ancestor_put(peer, base_digest=digest, delta=delta)
        assert mine["applied"] and theirs["applied"] and mine["digest"] == theirs["digest"]
        digest = mine["digest"]
        assert (kept_ws.state / "ancestors" / name).read_bytes() == (Workspace(fresh_root).state / "ancestors" / name).read_bytes()


def test_a_warmed_up_process_writes_its_first_ancestor_delta_from_the_kept_encoding(tmp_path, monkeypatch):
    """A keeper's warm-up (Handler.warm) keeps the ancestor's encoding entry by entry and reads the
    merge-base pack indexes: the process's first delta write then patches that encoding at the
    paths that moved (not every entry), its bytes still canonical_json's."""
    from peersync.replica import store as store_module
    from peersync.replica.scan import hash_bytes
    from peersync.testing import generate

    root = tmp_path / "ws"
    generate(root, files=200, seed=5)
    handler = Handler(root)
    handler.ws.ensure_state()
    manifest = handler.scan().manifest
    peer = "a" * 32
    digest = handler.op_ancestor_put(peer, manifest={"format": 2, "entries": {
        p: e.to_wire() for p, e in manifest.items()}})["digest"]
    contents = [f"merge base {i}\n".encode() for i in range(store_module.PACK_MIN)]  # (one pack)
    bases = [hash_bytes(data) for data in contents]
    handler.store.keep_bases(list(zip(bases, contents)))
    monkeypatch.setattr(handler_module, "_ENCODED", {})  # a new process: nothing encoded, no index read
    monkeypatch.setattr(store_module, "_INDEXES", {})
    warm = Handler(root)
    warm.warm(None, peer, digest)
    path = str(warm._ancestor_file(peer))
    encoded = handler_module._ENCODED[path]
    assert encoded is not None and encoded.entries is warm._ancestor_entries(peer, digest)
    [(_, index)] = store_module._INDEXES.values()  # the pack index, read
    assert set(index.digests()) == set(bases)
    gone, edited = sorted(manifest)[3], sorted(manifest)[7]
    put = warm.op_ancestor_put(peer, base_digest=digest, delta={
        "drop": [gone], "set": {edited: manifest[edited].with_vv([["b" * 12, 5]], ()).to_wire()}})
    assert put["applied"]
    raw = warm._ancestor_file(peer).read_bytes()
    assert raw == canonical_json(json.loads(raw)) and hash_bytes(raw) == put["digest"]
    assert gone not in json.loads(raw)["entries"]
    assert handler_module._ENCODED[path].order is encoded.order  # patched where it moved, not encoded anew
    assert handler_module._ENCODED[path].chunks is encoded.chunks


def _same(a, b) -> bool:
    """Equal, and of the very same types all the way down (a tuple is no list here)."""
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(map(_same, a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _cold(monkeypatch) -> None:
    """As a new process: no ancestor read or written yet (nothing kept in memory)."""
    monkeypatch.setattr(handler_module, "_ANCESTORS", {})
    monkeypatch.setattr(handler_module, "_ENCODED", {})
    monkeypatch.setattr(handler_module, "_LAYOUTS", {})


def _parse_fails(monkeypatch) -> None:
    def refuse(*_args):
        raise AssertionError("the JSON was parsed: the copy was not used")

    monkeypatch.setattr(Handler, "_parse_ancestor", refuse)


PEER = "0123456789abcdef0123456789abcdef"


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(NAMES, WIRE, max_size=30), st.dictionaries(NAMES, WIRE, max_size=8), st.lists(NAMES, max_size=8))
def test_a_cold_process_reads_the_ancestor_from_its_copy_exactly_as_the_json_reads(first, changed, dropped):
    """A whole manifest, then a delta on it: each time, a new process reads the document from the
    marshal copy, part by part (the JSON is not parsed) and gets exactly what json.loads makes of the JSON file —
    the same values and the same types (lists, never tuples), odd names included."""
    import tempfile

    from _pytest.monkeypatch import MonkeyPatch

    from peersync.replica.scan import hash_bytes
    from peersync.workspace.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp, MonkeyPatch.context() as mp:
        ws = Workspace(tmp)
        ws.ensure_state()
        _cold(mp)
        mp.setattr(handler_module, "COPY_PART", 4)  # (entries in parts of 4: several parts)
        put = Handler(ws.root).op_ancestor_put(PEER, manifest={"format": 3, "entries": first})
        delta = {"set": {f"memory/c{i}.md": w for i, w in enumerate(changed.values())}, "drop": dropped}
        for step in ("whole", "delta"):
            path = ws.state / "ancestors" / f"{PEER}.json"
            raw = path.read_bytes()
            assert put["digest"] == hash_bytes(raw) and path.with_suffix(".marshal").is_file()
            _cold(mp)
            with MonkeyPatch.context() as strict:
                _parse_fails(strict)
                digest, doc = Handler(ws.root).ancestor_doc(PEER)
            assert digest == put["digest"] and _same(doc, json.loads(raw)), step
            if step == "whole":
                _cold(mp)
                put = Handler(ws.root).op_ancestor_put(PEER, base_digest=digest, delta=delta)
                assert put["applied"]


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(NAMES, WIRE, max_size=30), st.dictionaries(NAMES, WIRE, max_size=8), st.lists(NAMES, max_size=8),
       st.sampled_from(["copy", "no lengths", "bad lengths", "shifted lengths", "no copy"]))
def test_a_cold_process_writes_an_ancestor_delta_cut_from_the_file_where_its_copy_says(first, changed, dropped, copy):
    """A new process's first delta write (a CLI's, a cold agent's) encodes only the entries that
    moved — the others' bytes are cut from the file at the lengths its copy holds — and writes
    canonical_json's bytes, and a copy the next new process cuts from in turn.  Without those
    lengths (a copy from a JSON parse, or none), or with lengths that do not fit the file, every
    entry is encoded: the same bytes."""
    import tempfile

    from _pytest.monkeypatch import MonkeyPatch

    from peersync.core.types import MANIFEST_FORMAT
    from peersync.workspace.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp, MonkeyPatch.context() as mp:
        ws = Workspace(tmp)
        ws.ensure_state()
        _cold(mp)
        mp.setattr(handler_module, "COPY_PART", 4)
        doc = {"format": 3, "entries": first}
        digest = Handler(ws.root).op_ancestor_put(PEER, manifest=doc)["digest"]
        path = ws.state / "ancestors" / f"{PEER}.json"
        if copy == "no lengths":  # as a process that parsed the JSON writes it
            handler_module.write_copy(path.with_suffix(".marshal"), digest, json.loads(path.read_bytes()))
        elif copy == "bad lengths":  # a good copy of the document whose lengths do not fit the file
            entries = json.loads(path.read_bytes())["entries"]
            order = sorted(entries)
            handler_module.write_copy(path.with_suffix(".marshal"), digest, {"format": 3, "entries": entries},
                                      handler_module.Encoded(order, [b'"x"'] * len(order), entries))
        elif copy == "shifted lengths":  # the right total, but the first cut a byte into the next entry
            entries = json.loads(path.read_bytes())["entries"]
            order = sorted(entries)
            chunks = [handler_module._encoded_entry(p, entries[p]) for p in order]
            if len(chunks) > 1:
                chunks[0], chunks[-1] = chunks[0] + b"x", chunks[-1][:-1]
            handler_module.write_copy(path.with_suffix(".marshal"), digest, {"format": 3, "entries": entries},
                                      handler_module.Encoded(order, chunks, entries))
        elif copy == "no copy":
            path.with_suffix(".marshal").unlink()
        encoded_entries = []
        real = handler_module._encoded_entry
        mp.setattr(handler_module, "_encoded_entry", lambda p, w: encoded_entries.append(p) or real(p, w))
        for step in range(2):
            delta = {"set": {f"memory/c{i}-{step}.md": w for i, w in enumerate(changed.values())},
                     "drop": dropped + [f"memory/c{i}-{step - 1}.md" for i in range(len(changed))]}
            expected = {p: w for p, w in json.loads(path.read_bytes())["entries"].items() if p not in delta["drop"]}
            expected.update(delta["set"])
            _cold(mp)
            encoded_entries.clear()
            put = Handler(ws.root).op_ancestor_put(PEER, base_digest=digest, delta=delta)
            raw = path.read_bytes()
            assert put["applied"] and raw == canonical_json({"format": MANIFEST_FORMAT, "entries": expected})
            if copy == "copy" or step == 1:  # (the first write made a copy with lengths)
                assert len(encoded_entries) <= len(delta["set"]), (step, copy)
            elif copy == "shifted lengths" and len(chunks) < 2:
                assert len(encoded_entries) <= len(delta["set"])  # (nothing was shifted)
            else:
                assert len(encoded_entries) == len(expected)
            digest = put["digest"]


def test_an_ancestor_copy_that_is_not_a_good_copy_of_the_json_as_it_is_is_no_copy(tmp_path, monkeypatch):
    """The JSON decides.  A copy is not used — the JSON is parsed, and the copy written anew — when
    the JSON was rewritten by something else (an older peersync: the copy names other bytes), when
    the copy is torn or has a flipped byte, or is another user's file; a document holding tuples
    (no JSON reader would get those) gets no copy.  A restricted key's session writes no copy
    before it holds the lock."""
    from peersync.workspace.workspace import Workspace

    ws = Workspace(tmp_path)
    ws.ensure_state()
    wire = lambda n: [n, 1_700_000_000_000_000_000 + n, 0o644, f"{n:032x}", [["abcdef123456", n + 1]]]  # noqa: E731
    doc = {"format": 3, "entries": {f"memory/n{i}.md": wire(i) for i in range(20)}}
    Handler(ws.root).op_ancestor_put(PEER, manifest=doc)
    path = ws.state / "ancestors" / f"{PEER}.json"
    copy = path.with_suffix(".marshal")
    good = copy.read_bytes()

    def read(**kwargs) -> dict:
        _cold(monkeypatch)
        return Handler(ws.root, **kwargs).ancestor_doc(PEER)[1]

    # Rewritten beside us: the copy still holds the old document; the new one is read, and copied.
    other = {"format": 3, "entries": {**doc["entries"], "memory/new.md": wire(99)}}
    path.write_bytes(canonical_json(other))
    assert read() == other and copy.read_bytes() != good
    with monkeypatch.context() as strict:
        _parse_fails(strict)
        assert read() == other  # (the copy written on that read is used by the next)
    renewed = copy.read_bytes()
    for broken in (renewed[:-7], renewed[:-3] + bytes([renewed[-3] ^ 1]) + renewed[-2:], b"", b"peersync"):
        copy.write_bytes(broken)
        assert read() == other and copy.read_bytes() == renewed, broken[:12]
    try:
        os.chown(copy, os.getuid() + 4321, -1)  # another user's file (only root can make one)
    except PermissionError:
        pass
    else:
        with monkeypatch.context() as strict:
            _parse_fails(strict)
            with pytest.raises(AssertionError, match="was parsed"):
                read()
    # Tuples: the JSON is written (as lists), no copy is.
    copy.unlink()
    Handler(ws.root).op_ancestor_put(PEER, manifest={"format": 3, "entries": {"a.md": tuple(wire(1))}})
    assert json.loads(path.read_bytes())["entries"]["a.md"] == wire(1) and not copy.exists()
    # A restricted session, lock not held: it reads the JSON and writes nothing.
    assert read(restricted=True)["entries"]["a.md"] == wire(1) and not copy.exists()
    assert read()["entries"]["a.md"] == wire(1) and copy.exists()


def test_a_cold_process_builds_ancestor_entries_part_by_part_sharing_what_its_scan_holds(tmp_path, monkeypatch):
    """ancestor_entries gives exactly what read_ancestor makes of the JSON — from the copy (the
    JSON not parsed) and from the JSON alone — with the very Entry objects of `like` where they
    are equal.  The document is not kept meanwhile: a later ancestor_doc reads it again, and a
    delta put on it applies.  An ancestor whose entries are not Entries is unreadable (None)."""
    from peersync.core.commit import read_ancestor
    from peersync.core.types import MANIFEST_FORMAT, Entry
    from peersync.replica.scan import hash_bytes
    from peersync.workspace.workspace import Workspace

    ws = Workspace(tmp_path)
    ws.ensure_state()
    monkeypatch.setattr(handler_module, "COPY_PART", 4)
    wire = lambda n: [n, 1_700_000_000_000_000_000 + n, 0o644, f"{n:032x}"] + ([[["abcdef123456", n]]] if n % 2 else [])  # noqa: E731
    doc = {"format": MANIFEST_FORMAT, "entries": {f"memory/é{i}.md": wire(i) for i in range(1, 20)}}
    _cold(monkeypatch)
    Handler(ws.root).op_ancestor_put(PEER, manifest=doc)
    path = ws.state / "ancestors" / f"{PEER}.json"
    expected = read_ancestor(json.loads(path.read_bytes()), trusted=True)
    like = {p: Entry.trusted(w) for p, w in doc["entries"].items() if int(p[8:-3]) % 3}  # two in three: equal
    like["memory/é3.md"] = Entry.trusted(wire(4))  # (not equal: its own)
    for copy in (True, False):
        if not copy:
            path.with_suffix(".marshal").unlink()
        _cold(monkeypatch)
        with monkeypatch.context() as strict:
            if copy:
                _parse_fails(strict)
            digest, entries = Handler(ws.root).ancestor_entries(PEER, like)
        assert digest == hash_bytes(path.read_bytes()) and entries == expected and len(entries) == 19
        assert all(type(e) is Entry for e in entries.values())
        for p, e in entries.items():
            assert (e is like.get(p)) == (like.get(p) == e), p
        assert sum(e is like.get(p) for p, e in entries.items()) == 13
        assert handler_module._ANCESTORS[str(path)][2] is None  # the document is not kept
    # Read again when wanted: the very document, and a delta on it applies.
    handler = Handler(ws.root)
    assert handler.ancestor_doc(PEER) == (digest, json.loads(path.read_bytes()))
    _cold(monkeypatch)
    handler = Handler(ws.root)
    handler.ancestor_entries(PEER)
    put = handler.op_ancestor_put(PEER, base_digest=digest, delta={"set": {"memory/new.md": wire(50)}, "drop": []})
    assert put["applied"] and json.loads(path.read_bytes())["entries"]["memory/new.md"] == wire(50)
    # Entries that are no entries: unreadable, from the copy and from the JSON alike.
    _cold(monkeypatch)
    Handler(ws.root).op_ancestor_put(PEER, manifest={"format": MANIFEST_FORMAT, "entries": {"a.md": [1, 2]}})
    for copy in (True, False):
        _cold(monkeypatch)
        assert path.with_suffix(".marshal").exists() == copy
        assert Handler(ws.root).ancestor_entries(PEER) == (hash_bytes(path.read_bytes()), None)
        path.with_suffix(".marshal").unlink()


ENTRY = st.tuples(st.integers(0, 9), st.integers(0, 3), st.sampled_from(["a" * 32, "b" * 32])).map(
    lambda t: Entry(t[0], t[1], 0o644, t[2], (), ()))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([f"p{i}" for i in range(12)]), ENTRY, max_size=12),
       st.dictionaries(st.sampled_from([f"p{i}" for i in range(16)]), st.one_of(st.none(), ENTRY), max_size=8),
       st.sets(st.sampled_from([f"p{i}" for i in range(16)]), max_size=4))
def test_an_ancestor_delta_over_the_moved_paths_is_the_full_comparisons_delta(old, moves, idle):
    """new_ancestor changes a copy of the old ancestor only at the paths it names: the delta
    compared there alone (sent on every sync) is the one comparing every entry."""
    new = dict(old)
    for path, entry in moves.items():
        if entry is None:
            new.pop(path, None)
        else:
            new[path] = entry
    full, quick = ancestor_delta(old, new), ancestor_delta(old, new, set(moves) | idle)
    assert quick["set"] == full["set"] and sorted(quick["drop"]) == sorted(full["drop"])
