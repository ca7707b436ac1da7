"""core/names.align: one spelling per file across a volume that folds names and one that does not."""

import unicodedata

import pytest

from peersync.core.names import Folding, align
from peersync.core.types import Entry, Side

E = Entry(1, 1_000_000_001, 0o644, "0" * 32)
E2 = Entry(2, 2_000_000_001, 0o644, "1" * 32)
MAC = Folding(case=True, normalization=True)
CASE = Folding(case=True, normalization=False)
NFC, NFD = unicodedata.normalize("NFC", "café.md"), unicodedata.normalize("NFD", "café.md")

# (description, ancestor, linux (local), mac (remote), mac folding,
#  expected local, expected remote, expected ancestor, respelled on the mac, clash paths)
CASES = [
    ("nothing folds alike: untouched", {}, {"a.md": E}, {"b.md": E}, MAC,
     {"a.md"}, {"b.md"}, set(), [], []),
    ("a file inside a folder that differs only in case is Linux's path",
     {"m/projects/b.md": E}, {"m/projects/b.md": E}, {"m/Projects/b.md": E}, CASE,
     {"m/projects/b.md"}, {"m/projects/b.md"}, {"m/projects/b.md"}, [], []),
    ("a case-only rename on Linux: the mac renames in place",
     {"n.md": E}, {"N.md": E}, {"n.md": E2}, CASE,
     {"N.md"}, {"N.md"}, {"N.md"}, [("n.md", "N.md")], []),
    ("a case-only rename on the mac: left to reconcile (delete + create)",
     {"n.md": E}, {"n.md": E}, {"N.md": E}, CASE,
     {"n.md"}, {"N.md"}, {"n.md"}, [], []),
    ("first sync, two spellings: Linux's wins, the mac respells",
     {}, {"n.md": E}, {"N.md": E}, CASE,
     {"n.md"}, {"n.md"}, set(), [("N.md", "n.md")], []),
    ("two names on Linux the mac cannot hold apart: a clash, both unknown",
     {"n.md": E}, {"n.md": E, "N.md": E2}, {"n.md": E}, CASE,
     {"n.md", "N.md"}, {"n.md"}, {"n.md"}, [], ["N.md", "n.md"]),
    ("NFC and NFD twins on Linux, an APFS peer: a clash",
     {}, {NFC: E, NFD: E2}, {}, MAC, {NFC, NFD}, set(), set(), [], sorted([NFC, NFD])),
    ("NFC and NFD twins on Linux, a peer that folds case only: no clash",
     {}, {NFC: E, NFD: E2}, {}, CASE, {NFC, NFD}, set(), set(), [], []),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_align(case):
    _, ancestor, local, remote, folding, want_l, want_r, want_a, respelled, clashes = case
    out = align(ancestor, local, remote, local_folding=None, remote_folding=folding, peer_name="mac")
    assert set(out.local) == want_l and set(out.remote) == want_r and set(out.ancestor) == want_a
    assert out.respell[Side.REMOTE] == respelled and out.respell[Side.LOCAL] == []
    assert sorted(p.path for p in out.clashes) == clashes
    if clashes:
        assert out.unknown >= set(clashes)
        assert all("name clash" in p.message and " and " in p.message and "rename" in p.message for p in out.clashes)


def test_the_mac_as_the_local_side_is_aligned_the_same_way():
    out = align({"n.md": E}, {"n.md": E}, {"N.md": E}, local_folding=CASE, remote_folding=None)
    assert set(out.local) == {"N.md"} and out.respell[Side.LOCAL] == [("n.md", "N.md")]


def test_versions_take_a_record_made_under_another_spelling(tmp_path):
    from peersync.replica.versions import open_versions

    v = open_versions(tmp_path, "mac")
    v.assign({"m/a.md": E}, covers=lambda p: True)  # first scan: legacy
    v.record([("m/projects/b.md", E2.with_vv((("linux", 3),)), True)])  # a sync wrote it so
    out = v.assign({"m/a.md": E, "m/Projects/b.md": E2}, covers=lambda p: True, fold=str.casefold)
    assert out["m/Projects/b.md"].vv == (("linux", 3),)
    assert not v.deleted() and v.current("m/Projects/b.md") is not None and v.current("m/projects/b.md") is None


def test_versions_read_back_by_another_process_hold_one_string_per_replica(tmp_path):
    """Rows read from the store (Versions._all, as a new process does) keep every vector and
    `seen` as written, and name each replica by one str object (100k rows, one or a few ids), each
    mode and each record time by one object too."""
    from peersync.replica.versions import open_versions

    v = open_versions(tmp_path, "mac")
    v.assign({"m/a.md": E}, covers=lambda p: True)
    two = (("".join(["lin", "ux"]), 3), ("mac", 7))  # built at run time: not the literal's object
    v.record([("m/b.md", E2.with_vv(two, (("mini", 2),)), True),
              ("m/c.md", E.with_vv((("".join(["li", "nux"]), 4),)), True)])
    v._rows = None  # read again, as a process that did not write them
    b, c = v.current("m/b.md"), v.current("m/c.md")
    assert b.vv == two and b.seen == (("mini", 2),) and c.vv == (("linux", 4),) and c.seen == ()
    assert b.vv[0][0] is c.vv[0][0]
    # …and one object per mode and per record time (SQLite gives a new one per row)
    rows = v._all()
    assert rows["m/b.md"][3] == rows["m/c.md"][3] and rows["m/b.md"][3] is rows["m/c.md"][3]
    assert rows["m/b.md"][7] == rows["m/c.md"][7] and rows["m/b.md"][7] is rows["m/c.md"][7]


@pytest.mark.parametrize("raw", [
    "[]", '[["7ccdc6dcb229",5]]', '[["a",0]]', '[["a",1],["b",2]]', '[["a", 5]]', '[["a",-5]]',
    '[["a",5.0]]', '[["a",1e3]]', '[["a\\u00e9",5]]', '[["a\\"b",5]]', '[["",5]]', '[["a",12345678901234567890]]',
    '[["a-b",5]]', '[["a",05]]', '[["\u00e9",5]]', '[["a",\u00b2]]', '[["a",5]',
])
def test_a_stored_vector_reads_as_json_reads_it(raw):
    """versions._vv reads the common `[["id",n]]` without the JSON parser: the same tuples as
    json.loads gives for everything it accepts, the same error for what it does not."""
    import json

    from peersync.replica.versions import _vv

    try:
        expected = tuple(tuple(pair) for pair in json.loads(raw))
    except ValueError:
        with pytest.raises(ValueError):
            _vv(raw)
        return
    assert _vv(raw) == expected
