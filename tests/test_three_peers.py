"""Three instances appending to the same logs, synced pairwise in changing orders: no conflicts."""

import json

from peersync.sync.runner import run_sync
from peersync.testing.pair import wire_pair
from peersync.testing.trees import selection_files


def append(ws, rel, text):
    path = ws.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(text)


def test_three_peers_merge_logs_without_conflicts(tmp_path, sshd):
    ab = wire_pair(tmp_path / "a", tmp_path / "b", sshd, peer_name="b", back_name="a")
    bc = wire_pair(tmp_path / "b", tmp_path / "c", sshd, peer_name="c", back_name="b")
    ac = wire_pair(tmp_path / "a", tmp_path / "c", sshd, peer_name="c", back_name="a")
    a, b, c = ab.local, ab.remote, bc.remote
    note, log = "memory/2026-01-26.md", "memory/agent/events.jsonl"
    append(a, note, "# 2026-01-26\n")
    append(a, log, json.dumps({"n": 0}) + "\n")
    for ws, peer in ((a, "b"), (a, "c"), (b, "c")):
        assert run_sync(ws, [peer])[0].ok
    orders = [((a, "c"), (a, "b"), (b, "c")), ((b, "c"), (a, "b"), (a, "c")), ((a, "b"), (b, "c"), (a, "c"))]
    written = []
    for round_no, order in enumerate(orders * 2):
        for name, ws in (("a", a), ("b", b), ("c", c)):
            line = f"- {name} round {round_no}\n"
            append(ws, note, line)
            append(ws, log, json.dumps({"who": name, "round": round_no}) + "\n")
            written.append((line, json.dumps({"who": name, "round": round_no})))
        for ws, peer in order:
            report = run_sync(ws, [peer])[0]
            assert report.ok, report.error
            assert not report.conflicts, report.conflicts
    for ws, peer in ((a, "b"), (b, "c"), (a, "c")):
        assert not run_sync(ws, [peer])[0].conflicts
    files = [selection_files(w) for w in (a, b, c)]
    assert files[0] == files[1] == files[2]
    text, events = files[0][note].decode(), files[0][log].decode()
    for line, event in written:
        assert text.count(line) == 1 and events.count(event) == 1
    assert not any((w.state / "conflicts").exists() for w in (a, b, c))
