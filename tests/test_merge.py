"""Append-merge of logs: a table of cases plus properties (no line lost, same bytes everywhere)."""

from __future__ import annotations

import pytest
import xxhash
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from peersync.core.merge import append_merge, extends
from peersync.core.types import Entry


def anc(data: bytes) -> Entry:
    return Entry(len(data), 0, 0o644, xxhash.xxh3_128_hexdigest(data))


H = b'{"n":0}\n{"n":1}\n'

# (id, local, remote, ancestor bytes or None, result with local_first=True)
CASES = [
    ("both-appended", H + b"L1\nL2\n", H + b"R1\n", H, H + b"L1\nL2\nR1\n"),
    ("fast-forward-to-remote", H + b"L1\n", H + b"L1\nR1\n", H, H + b"L1\nR1\n"),
    ("fast-forward-to-local", H + b"L1\nL2\n", H, H, H + b"L1\nL2\n"),
    ("identical", H + b"X\n", H + b"X\n", H, H + b"X\n"),
    ("unchanged", H, H, H, H),
    ("local-rewrote", b'{"n":9}\n' + H[8:] + b"L\n", H + b"R\n", H, None),
    ("remote-rewrote", H + b"L\n", b"# " + H + b"R\n", H, None),
    ("local-truncated", H[:8], H + b"R\n", H, None),
    ("truncated-even-if-prefix", H[:8], H, H, None),
    ("no-ancestor-common-lines", b"h\nab\n", b"h\nac\n", None, b"h\nab\nac\n"),
    ("no-ancestor-split-inside-line", b"h\nabc\n", b"h\nabd\n", None, b"h\nabc\nabd\n"),
    ("no-ancestor-nothing-common", b"x\n", b"y\n", None, b"x\ny\n"),
    ("no-ancestor-empty-local", b"", b"y\n", None, b"y\n"),
    ("no-ancestor-prefix", b"h\n", b"h\nmore\n", None, b"h\nmore\n"),
    ("ancestor-ends-mid-line", b"h\npartial-L\n", b"h\npartial-R\n", b"h\npar",
     b"h\npartial-L\npartial-R\n"),
    ("local-tail-without-newline", H + b"L", H + b"R\n", H, H + b"L\nR\n"),
    ("both-tails-without-newline", H + b"L", H + b"R", H, H + b"L\nR"),
    ("three-peer-line-seen-on-both", H + b"a1\nC\n", H + b"b1\nC\n", H, H + b"a1\nb1\nC\n"),
    ("three-peer-shared-run-in-middle", H + b"a\nS1\nS2\nb\n", H + b"c\nS1\nS2\nd\n", H,
     H + b"a\nc\nS1\nS2\nb\nd\n"),
    ("shared-line-unfinished-on-one-side", H + b"a\nC", H + b"b\nC\n", H, H + b"a\nb\nC\n"),
    ("crlf-lines", H + b"L\r\n", H + b"R\r\n", H, H + b"L\r\nR\r\n"),
    # Only distinctive lines (not blank, once in each tail) make a run "shared" ...
    ("paragraphs-not-interleaved-on-blank-lines", H + b"## A\na\n\n## A2\n\n", H + b"## B\nb\n\n",
     H, H + b"## A\na\n\n## A2\n\n## B\nb\n\n"),
    ("repeated-line-not-collapsed", H + b"L\nok\nok\n", H + b"R\nok\n", H,
     H + b"L\nok\nok\nR\nok\n"),
    ("line-repeated-in-second-not-collapsed", H + b"L\nok\n", H + b"ok\nR\nok\n", H,
     H + b"L\nok\nok\nR\nok\n"),
    ("single-blank-line-not-shared", H + b"A1\n\nA2\n", H + b"B1\n\nB2\n", H,
     H + b"A1\n\nA2\nB1\n\nB2\n"),
    ("single-whitespace-line-not-shared", H + b"A1\n \nA2\n", H + b"B1\n \nB2\n", H,
     H + b"A1\n \nA2\nB1\n \nB2\n"),
    # ... and equal lines right next to a shared line join its run.
    ("blank-lines-join-a-shared-run", H + b"a\n\nS\n\n", H + b"b\n\nS\n\n", H,
     H + b"a\nb\n\nS\n\n"),
    ("crossing-order-keeps-both-orders", H + b"X\nY\n", H + b"Y\nX\n", H, H + b"X\nY\nX\n"),
]


@pytest.mark.parametrize("local,remote,ancestor,expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_append_merge_table(local, remote, ancestor, expected) -> None:
    a = anc(ancestor) if ancestor is not None else None
    assert append_merge(local, remote, a, local_first=True) == expected
    # The other machine sees the sides swapped and passes the opposite order: same bytes.
    assert append_merge(remote, local, a, local_first=False) == expected


def test_order_decides_which_tail_comes_first() -> None:
    a = anc(H)
    assert append_merge(H + b"L\n", H + b"R\n", a, local_first=False) == H + b"R\nL\n"


@pytest.mark.parametrize("data,ancestor,expected", [
    (H + b"more\n", H, True),
    (H, H, True),
    (H[:-1], H, False),
    (b"X" + H[1:] + b"more\n", H, False),
    (b"anything", b"", True),
])
def test_extends(data, ancestor, expected) -> None:
    assert extends(data, anc(ancestor)) is expected


# --- properties -----------------------------------------------------------------------------

# A small alphabet so tails share lines often; lines may be empty, the last may lack "\n".
line = st.sampled_from([b"", b"a", b"b", b"c", b'{"k":1}', b"x y"])


@st.composite
def text(draw, min_lines=0):
    lines = draw(st.lists(line, min_size=min_lines, max_size=6))
    data = b"".join(x + b"\n" for x in lines)
    if draw(st.booleans()):
        data += draw(line)  # an unfinished last line
    return data


def stripped_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # after the final newline, or empty data
    return lines


def is_subsequence(small: list, big: list) -> bool:
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


@settings(max_examples=400, deadline=None)
@given(base=text(), tail_l=text(), tail_r=text(), with_ancestor=st.booleans(), lf=st.booleans())
def test_merge_properties(base, tail_l, tail_r, with_ancestor, lf) -> None:
    local, remote = base + tail_l, base + tail_r
    a = anc(base) if with_ancestor else None
    result = append_merge(local, remote, a, local_first=lf)
    assert result is not None
    # Same bytes on the other machine, which sees the sides swapped.
    assert append_merge(remote, local, a, local_first=not lf) == result
    # No line is lost, and each side's lines keep their order.  An unfinished last line may
    # have been continued by the other side (fast-forward), so it must only start a line.
    for side in (local, remote):
        finished, unfinished = side[: side.rfind(b"\n") + 1], side[side.rfind(b"\n") + 1:]
        assert is_subsequence(stripped_lines(finished), stripped_lines(result))
        assert any(x.startswith(unfinished) for x in stripped_lines(result) or [b""])
    # The result still extends the ancestor, so the next merge can build on it.
    if a is not None:
        assert extends(result, a)
    # Merging again with an input the result already contains is a fast-forward.
    for side in (local, remote):
        if result.startswith(side):
            assert append_merge(result, side, a, local_first=lf) == result
            assert append_merge(side, result, a, local_first=not lf) == result
    assert append_merge(result, result, a, local_first=lf) == result


@settings(max_examples=200, deadline=None)
@given(base=text(), tail_l=text(), tail_r=text(), lf=st.booleans())
def test_result_starts_with_common_whole_lines(base, tail_l, tail_r, lf) -> None:
    base = base if base.endswith(b"\n") or not base else base + b"\n"
    result = append_merge(base + tail_l, base + tail_r, None, local_first=lf)
    assert result.startswith(base)


@settings(max_examples=200, deadline=None)
@given(base=text(), tail_l=text(), tail_r=text(), cut=st.integers(0, 100), lf=st.booleans())
def test_rewrite_is_refused(base, tail_l, tail_r, cut, lf) -> None:
    assume(base)
    i = cut % len(base)
    rewritten = base[:i] + bytes([base[i] ^ 1]) + base[i + 1:] + tail_l
    a = anc(base)
    assert append_merge(rewritten, base + tail_r, a, local_first=lf) is None
    assert append_merge(base + tail_r, rewritten, a, local_first=lf) is None


tokens = st.lists(st.integers(0, 9), max_size=4)


@settings(max_examples=200, deadline=None)
@given(x1=tokens, y1=tokens, s=st.lists(st.integers(0, 9), min_size=1, max_size=4),
       x2=tokens, y2=tokens, lf=st.booleans())
def test_three_peer_lines_appear_once(x1, y1, s, x2, y2, lf) -> None:
    """A run both sides received through a third peer is kept once, each side's own lines kept."""
    def lines(prefix: str, items: list[int]) -> bytes:
        return b"".join(f"{prefix}{i}\n".encode() for i in items)

    x1, y1, x2, y2 = lines("x", x1), lines("y", y1), lines("x'", x2), lines("y'", y2)
    shared = b"".join(f"s{k}-{i}\n".encode() for k, i in enumerate(s))  # distinct lines
    local, remote = H + x1 + shared + x2, H + y1 + shared + y2
    result = append_merge(local, remote, anc(H), local_first=lf)
    assert result.count(shared) == 1
    for k in range(len(s)):
        assert result.count(f"s{k}-".encode()) == 1
    first, second = (x1, y1) if lf else (y1, x1)
    if local.startswith(remote) or remote.startswith(local):
        assert result == max(local, remote, key=len)
    elif not (x2 or y2):
        assert result == H + first + second + shared


@pytest.mark.timeout(120)
def test_large_tails_stay_fast() -> None:
    """Input on which difflib.SequenceMatcher needs minutes (quadratic) merges at once."""
    n = 10_000
    local = b"".join(b'{"l":%d}\n{"s":%d}\nok\n\n' % (i, i) for i in range(n))
    remote = b"".join(b'{"r":%d}\n{"s":%d}\nok\n\n' % (i, i) for i in range(n))
    result = append_merge(local, remote, None, local_first=True)
    assert result.count(b'{"s":') == n  # every shared line once
    assert result.count(b'{"l":') == result.count(b'{"r":') == n


# -- insertion_merge: three or more peers -------------------------------------------------

from peersync.core.merge import insertion_merge  # noqa: E402


@pytest.mark.parametrize("name,base,local,remote,expected", [
    ("appends", b"a\n", b"a\nL\n", b"a\nR\n", b"a\nL\nR\n"),
    ("third peer's lines mid-file", b"a\nb\n", b"a\nC\nb\nL\n", b"a\nb\nR\n", b"a\nC\nb\nL\nR\n"),
    ("both hold the third peer's line once", b"a\n", b"a\nC\nL\n", b"a\nC\nR\n", b"a\nC\nL\nR\n"),
    ("a removed line is not an insertion", b"a\nb\n", b"a\n", b"a\nb\nR\n", None),
    ("a changed line is not an insertion", b"a\nb\n", b"a\nB\n", b"a\nb\nR\n", None),
    ("identical sides", b"a\n", b"a\nx\n", b"a\nx\n", b"a\nx\n"),
    ("empty base", b"", b"L\n", b"R\n", b"L\nR\n"),
])
def test_insertion_merge_table(name, base, local, remote, expected):
    assert insertion_merge(base, local, remote, local_first=True) == expected


@settings(max_examples=200, deadline=None)
@given(base=st.lists(st.sampled_from([b"x", b"y", b"", b"# h"]), max_size=6),
       ins_l=st.lists(st.tuples(st.integers(0, 6), st.text("abc", min_size=1, max_size=3)), max_size=4),
       ins_r=st.lists(st.tuples(st.integers(0, 6), st.text("abc", min_size=1, max_size=3)), max_size=4))
def test_insertion_merge_keeps_every_line_and_is_order_independent(base, ins_l, ins_r):
    base_lines = [b + b"\n" for b in base]

    def insert(inserts, tag):
        lines = list(base_lines)
        for pos, text in sorted(inserts, reverse=True):
            lines.insert(min(pos, len(lines)), f"{tag}{text}\n".encode())
        return b"".join(lines)

    local, remote = insert(ins_l, "L"), insert(ins_r, "R")
    base_bytes = b"".join(base_lines)
    merged = insertion_merge(base_bytes, local, remote, local_first=True)
    assert merged is not None
    assert merged == insertion_merge(base_bytes, remote, local, local_first=False)
    out = merged.splitlines()
    for side in (local, remote):  # no line lost: each appears at least as often as on either side
        lines = side.splitlines()
        assert all(out.count(x) >= lines.count(x) for x in set(lines))


# -- merge bases kept in packs: each index parsed once per process, by its file's identity -------------

def test_pack_indexes_are_parsed_once_and_follow_their_files(tmp_path, monkeypatch):
    from peersync.core.selection import Selection
    from peersync.replica import store as store_mod
    from peersync.replica.packindex import PackIndex
    from peersync.replica.scan import hash_bytes
    from peersync.workspace.workspace import Workspace

    ws = Workspace(tmp_path)
    ws.ensure_state()
    store = store_mod.Store(tmp_path, Selection())
    first = [(hash_bytes(b"a%d\n" % i), b"a%d\n" % i) for i in range(store_mod.PACK_MIN)]
    assert store.keep_bases(first) == len(first)
    parsed = []
    real_parse = PackIndex.parse
    monkeypatch.setattr(PackIndex, "parse", lambda data: parsed.append(1) or real_parse(data))
    assert store.logbases([first[0][0]]) == {first[0][0]: first[0][1]}
    assert store.logbases([first[1][0]]) == {first[1][0]: first[1][1]}
    assert len(parsed) <= 1  # the second lookup parsed nothing
    second = [(hash_bytes(b"b%d\n" % i), b"b%d\n" % i) for i in range(store_mod.PACK_MIN)]
    assert store.keep_bases(second + first[:1]) == len(second)  # a new pack: seen, the old one kept
    assert store.logbases([second[3][0], first[3][0]]) == {second[3][0]: second[3][1], first[3][0]: first[3][1]}
    [old_index] = [p for p in store.logbase_dir.glob("pack-*.idx")
                   if real_parse(p.read_bytes()).find(first[0][0]) is not None]
    old_index.unlink()  # a pack whose index went: its bases are no longer found
    assert store.logbases([first[3][0]]) == {first[3][0]: None}
    assert store.logbases([second[3][0]]) == {second[3][0]: second[3][1]}


# -- merge bases from the bytes a sync reads or installs (Store.stash_bases) ------------------------

def test_bases_come_from_the_bytes_a_sync_read_or_installed_not_from_reading_the_files_again(tmp_path):
    """A copy's source reads a mergeable file and its target installs it: each side keeps that
    content as the next merge's base from the bytes in hand, written by the run's logbase_save in
    one go — which reads neither file again (here both changed on disk since, so a read-back
    would find other bytes and keep nothing).  Until the save, a lookup finds them in memory;
    a session that ends without a save writes them as it ends."""
    from peersync.core.types import Entry
    from peersync.replica.handler import Handler
    from peersync.replica.scan import hash_bytes
    from peersync.workspace.workspace import Workspace

    sides = {}
    for name in ("src", "dst"):
        root = tmp_path / name
        (root / "memory").mkdir(parents=True)
        Workspace(root).ensure_state()
        sides[name] = Handler(root)
        sides[name].op_selection({"roots": ["memory", "MEMORY.md"], "exclude": []})
    src, dst = sides["src"], sides["dst"]
    assert src.op_hello()["read_keeps_bases"] is True
    notes = [b"- note %d\n" % i * 3 for i in range(20)]
    for i, data in enumerate(notes):
        (tmp_path / "src" / "memory" / f"n{i}.md").write_bytes(data)
    paths = [f"memory/n{i}.md" for i in range(20)]
    read = src.call("read", {"paths": paths, "keep": paths[:10]})
    assert [read[p] for p in paths] == notes
    results = dst.call("install", {"items": [
        {"path": p, "expect": None, "new": Entry(len(d), 1_700_000_000 * 10**9, 0o644, hash_bytes(d)).to_wire(),
         "data": d, "quarantine": None, **({"base": True} if i < 15 else {})}
        for i, (p, d) in enumerate(zip(paths, notes))]})["results"]
    assert all(r["ok"] for r in results)
    digests = [hash_bytes(d) for d in notes]
    # Before the save: found in memory, nothing written yet.
    assert dst.call("logbase_get", {"hashes": digests[:1]}) == {digests[0]: notes[0]}
    for name in ("src", "dst"):  # both files change on disk after the copy
        for p in paths:
            (tmp_path / name / p).write_bytes(b"changed since\n")
    for handler in (src, dst):
        handler.call("logbase_save", {"items": [[p, d] for p, d in zip(paths, digests)]})
    assert src.call("logbase_get", {"hashes": digests}) == {d: (n if i < 10 else None)
                                                             for i, (d, n) in enumerate(zip(digests, notes))}
    assert dst.call("logbase_get", {"hashes": digests}) == {d: (n if i < 15 else None)
                                                             for i, (d, n) in enumerate(zip(digests, notes))}
    # A session that stashed and sent no logbase_save: written when it ends (EOF, reset, close).
    fresh = b"- fresh\n"
    (tmp_path / "src" / "memory" / "fresh.md").write_bytes(fresh)
    src.call("read", {"paths": ["memory/fresh.md"], "keep": ["memory/fresh.md"]})
    src.release()
    assert Handler(tmp_path / "src").call("logbase_get", {"hashes": [hash_bytes(fresh)]}) == {hash_bytes(fresh): fresh}
