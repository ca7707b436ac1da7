"""The benchmark harness runs end to end on a tiny workspace and reports every column (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("initial", "noop", "changes", "bigappend")
TOOLS = ("peersync", "peersync-cold", "rsync", "unison")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--files", "60", "--reps", "1",
         "--big-mb", "0.5", "--append-mb", "0.05", "--changes", "5", "--no-backup",
         "--workdir", str(out / "work"), "--json", str(out / "bench.json"), "--markdown", str(out / "bench.md")],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def test_json_has_every_scenario_tool_and_ratio(bench_run):
    _, doc, _ = bench_run
    assert doc["reps"] == 1 and doc["tools"] == list(TOOLS)
    assert doc["env"]["cpus"] and len(doc["load_start"]) == 3
    [size] = doc["sizes"]
    assert size["files"] == 60
    for scenario in SCENARIOS:
        for tool in TOOLS:
            assert len(size["runs_s"][scenario][tool]) == 1
            assert size["median_s"][scenario][tool] > 0
        assert set(size["ratios"][scenario]) == {"vs_rsync", "vs_unison", "cold_vs_rsync", "cold_vs_unison"}
        assert all(v > 0 for v in size["ratios"][scenario].values())
    # every tool copied the whole selection on the initial sync; the two-way tools converge after edits
    assert size["converged"]["initial"] == {t: True for t in TOOLS}
    assert size["converged"]["changes"]["peersync"] is True
    assert size["converged"]["changes"]["peersync-cold"] is True
    assert size["converged"]["changes"]["rsync"] is True  # one-way: the remote now equals the local side
    assert "client_mb" in size["memory"] or "skipped" in size["memory"]
    assert "median_ms" in size["heartbeat"] or "skipped" in size["heartbeat"]
    assert size["load_min_max"][0] <= size["load_min_max"][1]


def test_markdown_table_has_all_columns_and_targets(bench_run):
    stdout, _, md = bench_run
    assert md in stdout
    header = ("| scenario | peersync ² | peersync, new connection ³ | rsync -a (one-way) | unison -batch "
              "| peersync / rsync | peersync / unison | new conn. / rsync | new conn. / unison |")
    assert header in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and line.count("|") == 10]
    titles = [r.split("|")[1].strip() for r in rows]
    for title in ("initial sync", "no-op sync", "2 × 5 changes", "0.5 MB file + 0.05 MB appended"):
        assert any(t.startswith(title) for t in titles), titles
    for row in rows[1:]:
        assert "—" not in row, row  # every cell measured
    for target in ("≤ 1.2×", "≤ 0.7×", "≤ 0.8×", "< 150 ms"):
        assert target in md
    assert "Load average during the runs" in md


def test_the_round_trip_count_runs_end_to_end_through_the_delaying_relay():
    """scripts/bench_rtt.py on a tiny workspace: both modes, the no-op and both kinds of changes, measured
    through the relay too (no timing asserted beyond the relay adding time: a 25 ms round trip
    cannot cost nothing)."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_rtt.py"), "--files", "60", "--reps", "1",
                             "--one-way-ms", "12.5"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=240, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split("loopback")[0].strip(): line for line in result.stdout.splitlines() if "loopback" in line}
    assert set(rows) == {f"{mode}, {kind}" for mode in ("warm", "new connection")
                         for kind in ("no-op", "4 changes", "2 made, 2 deleted")}, result.stdout
    for line in rows.values():
        assert float(line.split("=")[1].split()[0]) > 0, line
