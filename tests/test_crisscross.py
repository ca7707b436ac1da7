"""Merges of memory files in a mesh whose latest common version only third machines held: the
minimal cases the 5-machine soak found (tests/test_mesh.py, 600 rounds; PEERSYNC_MESH_SEED=12
first, then 2 and 10 below).

m1 and m4 share a version X of USER.md; m4 removes a line of it and adds one, m1 adds another.
m2 takes m4's edit and m0 takes m1's, so when m2 and m0 merge, neither of them ever held X: the
only common version they know is the older O, where the removed line was not yet written, and a
merge against O brings the removed line back.  m1 and m4 merge the same two edits against X.
The two merges differ, and merging them with each other (a criss-cross) against either input
undoes one — a merge that changes a version which already contained the other's edits.
A copy therefore carries the versions its source knows the copied one descends from (their
content and vector), so m2 and m0 can merge against X as well.  In-process: the same pipeline.
"""

from __future__ import annotations

import os
from pathlib import Path

from peersync.core.mergefile import merge_base
from peersync.replica.handler import PRUNE_EVERY, Handler
from peersync.replica.scan import hash_bytes
from peersync.replica.store import LOGBASE_PRUNED
from peersync.testing.inprocess import sync_local
from peersync.workspace.workspace import Workspace


def _mesh(tmp_path: Path, names: list[str]) -> dict[str, Workspace]:
    """Workspaces that have synced once (so every later version carries a version vector)."""
    out = {}
    for name in names:
        (tmp_path / name / "memory").mkdir(parents=True)
        out[name] = Workspace(tmp_path / name)
    for other in names[1:]:
        _sync(out, names[0], other)
    return out


def _sync(ws: dict[str, Workspace], a: str, b: str):
    report = sync_local(ws[a], ws[b], name=b)
    assert report.ok, report.error
    return report


def test_merge_against_a_version_only_third_machines_held_brings_no_removed_line_back(tmp_path):
    ws = _mesh(tmp_path, ["m0", "m1", "m2", "m4"])
    user = lambda name: ws[name].root / "USER.md"  # noqa: E731
    user("m1").write_text("# User\n\n- likes tea\n")
    for other in ("m0", "m2", "m4"):  # O everywhere
        _sync(ws, "m1", other)
    user("m1").write_text("# User\n\n- likes tea\n- lives in Lisbon\n")
    _sync(ws, "m1", "m4")  # X, on m1 and m4 only
    user("m4").write_text("# User\n\n- likes tea\n- moved to Porto\n")  # removes Lisbon, adds Porto
    user("m1").write_text("# User\n\n- likes tea\n- lives in Lisbon\n- has a cat\n")
    _sync(ws, "m4", "m2")  # m2 takes m4's edit
    _sync(ws, "m1", "m0")  # m0 takes m1's
    report = _sync(ws, "m2", "m0")  # neither held X
    assert report.merged == ["USER.md"]
    merged = user("m0").read_text()
    assert merged == user("m2").read_text()
    assert "Lisbon" not in merged, "a line removed on m4 came back: the merge's base was older than X"
    assert "moved to Porto" in merged and "has a cat" in merged and "likes tea" in merged

    # The same two edits merged by the machines that held X: the same bytes, so the criss-cross
    # of the two merges changes nothing on either side.
    _sync(ws, "m1", "m4")
    assert user("m1").read_text() == user("m4").read_text() == merged
    _sync(ws, "m4", "m0")
    _sync(ws, "m1", "m2")
    assert {user(n).read_text() for n in ws} == {merged}


def test_criss_cross_merges_merge_against_the_merge_of_their_common_versions(tmp_path):
    """m0 and m1 merge two concurrent edits (D: a line added on m0; C: a line added on m1); m4 got
    C and removed its line again, m3 got D, and m3 and m4 merge D with that removal.  Both merges
    descend from D and from C, neither from the other: merging them against D (or C) alone would
    bring C's line back.  Their base is the merge of D and C (git's virtual base): m4's removal
    stays, and m0's merge, which it already contained, is replaced rather than merged into."""
    ws = _mesh(tmp_path, ["m0", "m1", "m3", "m4"])
    user = lambda name: ws[name].root / "USER.md"  # noqa: E731
    user("m0").write_text("# User\n\n- likes tea\n")
    for other in ("m1", "m3", "m4"):  # P everywhere
        _sync(ws, "m0", other)
    for n in range(3):  # m0's counter runs ahead: D has more events than C (the old choice of base)
        (ws["m0"].root / "memory" / "scratch.txt").write_text(f"{n}\n")
        _sync(ws, "m0", "m3")
    user("m0").write_text("# User\n\n- likes tea\n- has a dog\n")  # D
    user("m1").write_text("# User\n\n- likes tea\n- has a cat\n")  # C
    _sync(ws, "m0", "m3")  # m3 takes D
    _sync(ws, "m1", "m4")  # m4 takes C
    user("m4").write_text("# User\n\n- likes tea\n")  # and removes its line again
    report = _sync(ws, "m0", "m1")  # M: D and C
    assert report.merged == ["USER.md"]
    assert "has a cat" in user("m0").read_text() and "has a dog" in user("m0").read_text()
    report = _sync(ws, "m3", "m4")  # D and the removal of C's line
    assert report.merged == ["USER.md"]
    assert user("m3").read_text() == "# User\n\n- likes tea\n- has a dog\n"
    report = _sync(ws, "m0", "m3")  # the criss-cross
    assert report.merged == ["USER.md"]
    assert user("m0").read_text() == user("m3").read_text() == "# User\n\n- likes tea\n- has a dog\n", \
        "a line removed on m4 came back: the criss-cross merged against one of its inputs"



def test_criss_cross_merges_of_versions_from_before_version_vectors_merge_against_their_union(tmp_path):
    """The minimal case of PEERSYNC_MESH_SEED=10 (600 rounds).  USER.md was written before any sync
    (no version vector: its history is unknown), and m1 and m3 each added a line to it (B and C).
    m1 and m4 merged B with C, and m4 removed C's line again; m2 and m0 merged B with C too.  When
    m2's merge meets that removal, both descend from B and from C, and no version below those two
    is known (they descend from one from before vectors) — their base is their union, as a first
    sync's merge: a base of B or C alone would make the removal look like the other's insertion."""
    names = ["m0", "m1", "m2", "m3", "m4"]
    ws = {}
    for name in names:
        (tmp_path / name / "memory").mkdir(parents=True)
        ws[name] = Workspace(tmp_path / name)
    user = lambda name: ws[name].root / "USER.md"  # noqa: E731
    a = "# User\n\n- likes tea\n"
    user("m0").write_text(a)  # before any sync: no version vector
    for other in names[1:]:
        _sync(ws, "m0", other)
    user("m1").write_text(a + "- has a cat\n")  # B
    user("m3").write_text(a + "- lives in Porto\n")  # C
    _sync(ws, "m1", "m2")
    _sync(ws, "m3", "m4")
    _sync(ws, "m3", "m0")
    assert _sync(ws, "m1", "m4").merged == ["USER.md"]
    user("m4").write_text(user("m4").read_text().replace("- lives in Porto\n", ""))  # m4 removes C's line
    _sync(ws, "m4", "m1")
    assert _sync(ws, "m2", "m0").merged == ["USER.md"]
    assert "lives in Porto" in user("m2").read_text()
    assert _sync(ws, "m2", "m1").merged == ["USER.md"]
    assert user("m2").read_text() == user("m1").read_text() == a + "- has a cat\n", \
        "a line removed on m4 came back: the criss-cross merged against B or C alone"


def test_merge_base_of_criss_cross_versions_is_their_merge():
    """The pure rule: of several latest common versions, their merge against theirs is the base."""
    p, d, c = b"- tea\n", b"- tea\n- dog\n", b"- tea\n- cat\n"
    content = {"p": p, "d": d, "c": c}
    common = [("p", (("a", 1),)), ("d", (("a", 5),)), ("c", (("a", 1), ("b", 2)))]
    assert merge_base("USER.md", ("text",), common, content) == b"- tea\n- cat\n- dog\n"
    assert merge_base("USER.md", ("text",), common[:2], content) == d  # one latest: itself
    assert merge_base("USER.md", ("text",), common[1:], content) == b"- tea\n- cat\n- dog\n"  # no common one kept: their union
    one, two = b'{"city": "Lisbon"}\n', b'{"city": "Porto"}\n'  # the same key changed on both: no clean merge
    assert merge_base("prefs.json", ("json",), [("1", (("a", 1),)), ("2", (("b", 2),))], {"1": one, "2": two}) == two
    assert merge_base("USER.md", ("text",), [("x", (("a", 9),))], content) is None  # nothing kept


def test_bases_keep_keeps_only_well_formed_bases_and_merge_bases_answers_them(tmp_path):
    """op bases_keep: content must have its hash, the vector must be well formed and the path
    relative; what is kept is answered by op merge_bases and survives the pruning of log bases."""
    ws = _mesh(tmp_path, ["a", "b"])["a"]
    handler = Handler(ws.root)
    good, other = b"- tea\n", b"- coffee\n"
    vv = [["0123456789ab", 3]]
    reply = handler.op_bases_keep([
        {"path": "USER.md", "hash": hash_bytes(good), "vv": vv, "data": good},
        {"path": "USER.md", "hash": hash_bytes(good), "vv": vv, "data": other},  # not those bytes
        {"path": "USER.md", "hash": hash_bytes(other), "vv": [["nothex", 1]], "data": other},
        {"path": "../USER.md", "hash": hash_bytes(other), "vv": vv, "data": other},
        {"path": "USER.md", "hash": hash_bytes(other), "vv": [], "data": other},  # no history: no base
        "not an item"])
    assert reply == {"kept": 1}
    # Answered at once; written with the run's logbase_save (or when the session ends).
    assert handler.op_merge_bases(["USER.md"]) == {"USER.md": [[hash_bytes(good), vv]]}
    assert handler.op_logbase_get([hash_bytes(good), hash_bytes(other)]) == {hash_bytes(good): good, hash_bytes(other): None}
    assert not (ws.state / "bases.json").exists()
    handler.release()
    assert Handler(ws.root).op_merge_bases(["USER.md"]) == {"USER.md": [[hash_bytes(good), vv]]}
    assert Handler(ws.root).op_logbase_get([hash_bytes(good)]) == {hash_bytes(good): good}
    marker = ws.state / LOGBASE_PRUNED  # (touched as the log base dir was made: pruned an hour ago)
    os.utime(marker, (marker.stat().st_mtime - PRUNE_EVERY - 5,) * 2)
    assert handler.op_housekeeping(prune_logbases=True)["logbases_pruned"] == 0
    assert handler.op_logbase_get([hash_bytes(good)]) == {hash_bytes(good): good}



def _answers(ws: Workspace, path: str) -> set[str]:
    """The content hashes a replica names as versions of `path` it knows (op merge_bases)."""
    return {h for h, _ in Handler(ws.root).op_merge_bases([path])[path]}


def test_merges_of_the_same_edits_made_apart_keep_the_versions_their_base_is_made_of(tmp_path):
    """The minimal case of PEERSYNC_MESH_SEED=2 (600 rounds).  m4's edit E (a line added) reaches
    m0 and m2; meanwhile m1 and m3 pass a note back and forth, then m1 adds a line (A) and m3
    removes it again.  m0 merges E with that removal (M1: the same bytes as E), m2 merges E with
    A (M2), and m1 and m3 merge M1 with M2 against the merge of A and E (a criss-cross).  Then m4,
    which takes M1's history for the bytes it holds already, merges with m2: the base must again be
    made of A and E — else the removal looks like an edit and A's line comes back into m4's copy,
    which already contained every edit of m2's.  Two ways A was forgotten: m2 kept the versions
    m1 told it of by arrival, and the many older ones pushed out A (a path now keeps those with
    the most events: A descends from them); and m4 learnt M1's history without the versions it
    descends from (equal bytes now carry them as a copy does)."""
    names = ["m0", "m1", "m2", "m3", "m4"]
    ws = _mesh(tmp_path, names)
    note = lambda name: ws[name].root / "MEMORY.md"  # noqa: E731
    c0 = "# Memory\n\n- likes tea\n"
    note("m0").write_text(c0)
    for other in names[1:]:
        _sync(ws, "m0", other)
    e, a = c0 + "- from m4\n", c0 + "- from m1\n"
    note("m4").write_text(e)  # E
    _sync(ws, "m4", "m0")
    _sync(ws, "m4", "m2")
    for n in range(16):  # m1 and m3 pass a note back and forth: many versions neither m2 nor m4 saw
        writer, reader = ("m1", "m3") if n % 2 == 0 else ("m3", "m1")
        note(writer).write_text(c0 + f"- draft {n}\n" if n % 2 == 0 else c0)
        _sync(ws, writer, reader)
    note("m1").write_text(a)  # A
    _sync(ws, "m3", "m1")
    note("m3").write_text(c0)  # m3 removes A's line
    assert _sync(ws, "m0", "m3").merged == ["MEMORY.md"]
    assert note("m0").read_text() == e  # M1
    assert _sync(ws, "m2", "m1").merged == ["MEMORY.md"]
    assert sorted(note("m2").read_text().splitlines()) == sorted((e + "- from m1\n").splitlines())  # M2
    assert hash_bytes(a.encode()) in _answers(ws["m2"], "MEMORY.md"), "m2 forgot A, an input of its merge"
    assert _sync(ws, "m3", "m1").merged == ["MEMORY.md"]  # the criss-cross
    assert note("m1").read_text() == e
    _sync(ws, "m0", "m4")  # m4 holds M1's bytes already: it takes M1's history
    assert hash_bytes(a.encode()) in _answers(ws["m4"], "MEMORY.md"), "m4 took M1's history without A"
    _sync(ws, "m4", "m2")
    assert note("m4").read_text() == note("m2").read_text() == e, \
        "a line removed on m3 came back: the merge's base was E, not the merge of A and E"
    for x in names:
        for y in names:
            if x != y:
                _sync(ws, x, y)
    assert {note(n).read_text() for n in names} == {e}


def test_copies_start_from_the_bytes_read_while_the_merges_prefetch_and_each_file_is_read_once(tmp_path, monkeypatch):
    """With merges to prepare, the copies' first batch is read alongside (Run._read_ahead), not
    after: every copied file is read from its source once, arrives intact, and both sides keep
    the mergeable ones as merge bases from the bytes in hand."""

    ws = _mesh(tmp_path, ["a", "b"])
    note = lambda name: ws[name].root / "MEMORY.md"  # noqa: E731
    note("a").write_text("# Memory\n\n- tea\n")
    _sync(ws, "a", "b")
    note("a").write_text("# Memory\n\n- tea\n- from a\n")  # concurrent edits: a merge to prefetch for
    note("b").write_text("# Memory\n\n- from b\n- tea\n")
    made = {"a": {f"memory/a{i}.md": f"- note {i} from a\n" * (i + 1) for i in range(12)},
            "b": {f"memory/b{i}.md": f"- note {i} from b\n" for i in range(4)}}
    for name, files in made.items():
        for path, text in files.items():
            (ws[name].root / path).write_text(text)
    reads: dict[str, list[str]] = {"a": [], "b": []}
    real_call = Handler.call

    def call(self, op, args):
        if op == "read":
            reads[self.ws.root.name] += args["paths"]
        return real_call(self, op, args)

    monkeypatch.setattr(Handler, "call", call)
    report = _sync(ws, "a", "b")
    assert "MEMORY.md" in report.merged
    for source, files in made.items():
        other = "b" if source == "a" else "a"
        for path, text in files.items():
            assert (ws[other].root / path).read_text() == text
            assert reads[source].count(path) == 1, (path, reads[source])
        hashes = [hash_bytes(text.encode()) for text in files.values()]
        for side in (source, other):
            kept = Handler(ws[side].root).op_logbase_get(hashes)
            assert all(kept[h] is not None for h in hashes), side


def test_a_copy_carries_only_the_bases_its_target_does_not_list_already(tmp_path, monkeypatch):
    """A copy carries the versions its source knows it descends from (Run._carry_bases), less those
    the target's merge_bases answer lists already: between two machines, the version they last
    synced is in both ancestors, kept by both, and travels no more; a third machine that never
    held it gets it, with its content."""
    ws = _mesh(tmp_path, ["a", "b", "c"])
    note = lambda name: ws[name].root / "MEMORY.md"  # noqa: E731
    v1 = "# Memory\n\n- tea\n"
    note("a").write_text(v1)
    _sync(ws, "a", "b")  # v1 on a and b, in their ancestors; c never holds it
    note("a").write_text(v1 + "- coffee\n")
    carried: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    fetched: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    real_call = Handler.call

    def call(self, op, args):
        if op == "bases_keep":
            carried[self.ws.root.name] += [item["hash"] for item in args["items"]]
        if op == "logbase_get":
            fetched[self.ws.root.name] += args["hashes"]
        return real_call(self, op, args)

    monkeypatch.setattr(Handler, "call", call)
    first = hash_bytes(v1.encode())
    assert _sync(ws, "a", "c").pushed == ["MEMORY.md"]
    assert carried["c"] == [first], "c never held v1: it is carried with the copy made from it"
    answer = Handler(ws["c"].root).op_merge_bases(["MEMORY.md"])["MEMORY.md"]
    assert first in [h for h, _ in answer]
    assert Handler(ws["c"].root).op_logbase_get([first])[first] == v1.encode()

    fetched["a"].clear()
    assert _sync(ws, "a", "b").pushed == ["MEMORY.md"]
    assert first not in carried["b"] and first not in fetched["a"], "b keeps v1 already: nothing to carry"
    assert note("b").read_text() == note("c").read_text() == v1 + "- coffee\n"


def test_merge_bases_answers_from_the_ancestor_entries_the_session_made_the_same_as_from_the_files(tmp_path, monkeypatch):
    """The local side reads its ancestor as entries (ancestor_entries); its merge_bases answer for
    that ancestor comes from them, not from reading the file again — and is the files' answer."""
    from peersync.replica import handler as handler_module

    ws = _mesh(tmp_path, ["a", "b", "c"])
    for text in ("# Memory\n\n- tea\n", "# Memory\n\n- tea\n- coffee\n"):
        (ws["a"].root / "MEMORY.md").write_text(text)
        (ws["a"].root / "memory" / "log.md").write_text(text)
        _sync(ws, "a", "b")
        _sync(ws, "a", "c")
    paths = ["MEMORY.md", "memory/log.md", "USER.md"]
    expected = Handler(ws["a"].root).op_merge_bases(paths)
    assert all(expected[p] for p in paths[:2])  # (else this test would prove nothing)
    peers = sorted(p.stem for p in (ws["a"].state / "ancestors").glob("*.json"))
    assert len(peers) == 2
    handler = Handler(ws["a"].root)
    assert handler.ancestor_entries(peers[0])[1]
    read = []
    real = handler_module.read_copy
    monkeypatch.setattr(handler_module, "read_copy", lambda *a, **k: read.append(a[0].stem) or real(*a, **k))
    monkeypatch.setattr(handler_module, "_ANCESTORS", {})  # (as in a new process: nothing parsed kept)
    assert handler.op_merge_bases(paths) == expected
    assert peers[0] not in read and peers[1] in read  # (the other ancestor, from its file)
    # The ancestor written anew since (another sync): read from the file again.
    (ws["b"].root / "MEMORY.md").write_text("# Memory\n\n- tea\n- coffee\n- cake\n")
    _sync(ws, "a", "b")
    read.clear()
    handler_module._ANCESTORS.clear()
    assert handler.op_merge_bases(paths) == Handler(ws["a"].root).op_merge_bases(paths)
    assert peers[0] in read or peers[1] in read
