"""Issue 14 item 11: a path near PATH_MAX that sync created can also be updated and deleted: the
internal paths a replace or a deletion uses (holding/, trash/) are kept short."""

from __future__ import annotations

import os

from peersync.sync.runner import run_sync
from peersync.testing.pair import wire_pair

PATH_MAX = 4096


def long_rel(root_a, root_b) -> str:
    """A workspace path whose full path is a little under PATH_MAX on both roots."""
    room = PATH_MAX - 1 - max(len(os.fsencode(root_a)), len(os.fsencode(root_b))) - 1 - 20
    parts, used = ["memory"], len("memory")
    while used + 1 + 200 <= room:
        parts.append(f"{len(parts):02}" + "d" * 198)
        used += 201
    parts.append("n" * max(1, min(200, room - used - 1 - 3)) + ".md")
    return "/".join(parts)


def sync(ws):
    [report] = run_sync(ws)
    assert report.ok, report.error
    return report


def test_a_path_near_path_max_can_be_updated_and_deleted(tmp_path, sshd):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    L, R = pair.local.root, pair.remote.root
    rel = long_rel(L, R)
    (L / rel).parent.mkdir(parents=True)
    (L / rel).write_text("v1\n")
    assert not sync(pair.local).problems
    assert (R / rel).read_text() == "v1\n"
    (L / rel).write_text("v2, longer than v1\n")
    report = sync(pair.local)
    assert not report.problems, report.problems
    assert (R / rel).read_text() == "v2, longer than v1\n"
    (L / rel).unlink()
    report = sync(pair.local)
    assert not report.problems, report.problems
    assert not (R / rel).exists() and report.deleted_remote == [rel]


def test_a_long_internal_copy_left_by_a_killed_run_is_recovered_under_its_path(tmp_path):
    from peersync.core.selection import Selection
    from peersync.replica.store import Store, internal_path

    root = tmp_path / "ws"
    rel = long_rel(root, root)
    store = Store(root, Selection())
    held = internal_path(store.state / "holding" / "0123456789abcdef", rel)
    assert len(os.fsencode(held)) < PATH_MAX - 64
    held.parent.mkdir(parents=True, exist_ok=True)
    held.write_text("the only copy of a replaced version\n")
    assert store.recover_holding() == 1
    [kept] = store.conflicts()
    assert kept["path"] == rel and (root / kept["file"]).read_text() == "the only copy of a replaced version\n"
