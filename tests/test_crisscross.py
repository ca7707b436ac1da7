"""Merges of memory files in a mesh whose latest common version only third machines held: the
minimal case the 5-machine soak found (tests/test_mesh.py, PEERSYNC_MESH_SEED=12, 600 rounds).

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

from pathlib import Path

from peersync.core.mergefile import merge_base
from peersync.replica.handler import Handler
from peersync.replica.scan import hash_bytes
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


def test_merge_base_of_criss_cross_versions_is_their_merge():
    """The pure rule: of several latest common versions, their merge against theirs is the base."""
    p, d, c = b"- tea\n", b"- tea\n- dog\n", b"- tea\n- cat\n"
    content = {"p": p, "d": d, "c": c}
    common = [("p", (("a", 1),)), ("d", (("a", 5),)), ("c", (("a", 1), ("b", 2)))]
    assert merge_base("USER.md", ("text",), common, content) == b"- tea\n- cat\n- dog\n"
    assert merge_base("USER.md", ("text",), common[:2], content) == d  # one latest: itself
    assert merge_base("USER.md", ("text",), common[1:], content) == d  # no common base kept: the most events
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
    assert handler.op_merge_bases(["USER.md"]) == {"USER.md": [[hash_bytes(good), vv]]}
    assert handler.op_logbase_get([hash_bytes(good), hash_bytes(other)]) == {hash_bytes(good): good, hash_bytes(other): None}
    handler.op_housekeeping(prune_logbases=True)
    assert handler.op_logbase_get([hash_bytes(good)]) == {hash_bytes(good): good}
