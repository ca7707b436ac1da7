"""Mass-delete guard: ratio thresholds and whole-root emptying, per side."""

from __future__ import annotations

import pytest

from peersync.core.safety import mass_delete_violations
from peersync.core.types import Action, Change, Side

LOCAL, REMOTE = Side.LOCAL, Side.REMOTE


def deletes(side: Side, paths) -> list[Change]:
    return [Change(p, Action.DELETE, side, None, None, None, "x-deleted") for p in paths]


def files(n: int, root: str = "memory") -> list[str]:
    return [f"{root}/f{i:03}.md" for i in range(n)]


# (id, changes, local_count, remote_count, kwargs, expected messages)
RATIO_CASES = [
    ("nothing-deleted", [], 10, 10, {}, []),
    ("below-min-files-even-if-all", deletes(REMOTE, files(4)), 4, 4, {}, []),
    ("exactly-half-is-allowed", deletes(REMOTE, files(5)), 10, 10, {}, []),
    ("over-half-on-peer", deletes(REMOTE, files(6)), 10, 10, {},
     ["would delete 6 of 10 files on the peer (60 %)"]),
    ("over-half-locally", deletes(LOCAL, files(6)), 10, 10, {},
     ["would delete 6 of 10 files locally (60 %)"]),
    ("design-example", deletes(REMOTE, files(120)), 500, 200, {},
     ["would delete 120 of 200 files on the peer (60 %)"]),
    ("counted-per-side", deletes(LOCAL, files(3)) + deletes(REMOTE, files(3, "skills")), 5, 5, {},
     []),
    ("both-sides", deletes(LOCAL, files(5)) + deletes(REMOTE, files(7, "x")), 8, 7, {},
     ["would delete 5 of 8 files locally (63 %)", "would delete 7 of 7 files on the peer (100 %)"]),
    ("copies-and-adopts-ignored",
     [Change(p, Action.COPY, REMOTE, None, None, None, "local-created") for p in files(9)]
     + [Change(p, Action.ADOPT, None, None, None, None, "both-deleted") for p in files(9, "y")],
     10, 10, {}, []),
    ("duplicate-paths-counted-once", deletes(REMOTE, files(3) * 3), 4, 4, {}, []),
    ("custom-ratio", deletes(REMOTE, files(3)), 10, 10, {"ratio": 0.2, "min_files": 1},
     ["would delete 3 of 10 files on the peer (30 %)"]),
    ("percent-rounds-up", deletes(REMOTE, files(101)), 200, 200, {},
     ["would delete 101 of 200 files on the peer (51 %)"]),
    ("custom-min-files", deletes(REMOTE, files(2)), 3, 3, {"min_files": 3}, []),
    ("inconsistent-count-no-crash", deletes(REMOTE, files(6)), 0, 0, {},
     ["would delete 6 of 6 files on the peer (100 %)"]),
]


@pytest.mark.parametrize("changes,local_count,remote_count,kwargs,expected",
                         [c[1:] for c in RATIO_CASES], ids=[c[0] for c in RATIO_CASES])
def test_ratio(changes, local_count, remote_count, kwargs, expected) -> None:
    assert mass_delete_violations(changes, local_count, remote_count, **kwargs) == expected


HERE = files(3) + files(4, "skills") + ["MEMORY.md"] + [f"notes/n{i}.md" for i in range(30)]
PEER = files(2) + ["MEMORY.md", "USER.md"] + [f"notes/n{i}.md" for i in range(30)]
ROOTS = ("memory", "MEMORY.md", "USER.md", "skills/")

# (id, changes, expected)
ROOT_CASES = [
    ("root-emptied-on-peer", deletes(REMOTE, files(2)),
     ["would delete every file under memory/ on the peer"]),
    ("root-emptied-locally", deletes(LOCAL, files(4, "skills")),
     ["would delete every file under skills/ locally"]),
    ("root-partly-deleted", deletes(LOCAL, files(2)), []),
    ("root-emptied-on-other-side-only", deletes(LOCAL, files(2)) + deletes(REMOTE, files(1)), []),
    ("single-file-root-may-go", deletes(REMOTE, ["MEMORY.md", "USER.md"]), []),
    ("root-absent-on-side", deletes(REMOTE, files(4, "skills")), []),
    ("root-and-ratio", deletes(LOCAL, files(3) + files(4, "skills") + ["MEMORY.md"]
                               + [f"notes/n{i}.md" for i in range(20)]),
     ["would delete 28 of 38 files locally (74 %)",
      "would delete every file under memory/ locally",
      "would delete every file under skills/ locally"]),
]


@pytest.mark.parametrize("changes,expected", [c[1:] for c in ROOT_CASES],
                         ids=[c[0] for c in ROOT_CASES])
def test_roots(changes, expected) -> None:
    got = mass_delete_violations(changes, len(HERE), len(PEER), roots=ROOTS,
                                 local_paths=set(HERE), remote_paths=set(PEER))
    assert got == expected


def test_roots_need_paths() -> None:
    with pytest.raises(ValueError):
        mass_delete_violations(deletes(REMOTE, files(2)), 10, 10, roots=("memory",))
