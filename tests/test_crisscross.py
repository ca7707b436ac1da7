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

from peersync.testing.inprocess import sync_local
from peersync.workspace.workspace import Workspace


def _mesh(tmp_path: Path, names: list[str]) -> dict[str, Workspace]:
    out = {}
    for name in names:
        (tmp_path / name / "memory").mkdir(parents=True)
        out[name] = Workspace(tmp_path / name)
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
