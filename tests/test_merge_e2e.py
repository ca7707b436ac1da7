"""Memory files edited on two and three machines at once, synced over the real loopback sshd:
every line ends up live on every machine (MEMORY.md, USER.md, a JSON preferences file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from peersync.sync.runner import run_sync
from peersync.testing.pair import default_remote_command
from peersync.testing.trees import selection_files
from peersync.replica.store import Store
from peersync.workspace.workspace import Workspace

PREFS = "memory/streaming-buddy/preferences.json"
MEMORY = "# Memory\n\n## People\n- Dana lives in Lisbon\n\n## Projects\n- peersync\n"
USER = "# User\n\n## Profile\n- Timezone: Europe/Lisbon\n- Language: English\n\n## Likes\n- coffee\n"


def machines(tmp_path, sshd, names: list[str]) -> dict[str, Workspace]:
    """Workspaces that all know each other; each agent names itself as its machine does
    (PEERSYNC_MACHINE_NAME), so kept passages say which machine wrote what."""
    spaces = {n: Workspace(tmp_path / n) for n in names}
    for name, ws in spaces.items():
        ws.root.mkdir(parents=True)
        peers = {other: sshd.make_peer(other, path=spaces[other].root,
                                       command=f"env PEERSYNC_MACHINE_NAME={other} {default_remote_command()}")
                 for other in names if other != name}
        ws.save_peers(peers)
    return spaces


def sync(spaces, who: str, *peers: str):
    """`who` runs a sync (this process plays that machine: it names itself `who`)."""
    os.environ["PEERSYNC_MACHINE_NAME"] = who
    try:
        reports = run_sync(spaces[who], list(peers) or None)
    finally:
        del os.environ["PEERSYNC_MACHINE_NAME"]
    for r in reports:
        assert r.ok, r.error
        assert not r.problems, r.problems
    return reports


def write(ws: Workspace, rel: str, text: str) -> None:
    path = ws.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def edit(ws: Workspace, rel: str, old: str, new: str) -> None:
    text = (ws.root / rel).read_text()
    assert old in text
    write(ws, rel, text.replace(old, new, 1))


def prefs(ws: Workspace, **changes) -> None:
    path = ws.root / PREFS
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def cli(ws: Workspace, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peersync", "-w", str(ws.root), *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=180)


def start(spaces, first: str) -> None:
    ws = spaces[first]
    write(ws, "MEMORY.md", MEMORY)
    write(ws, "USER.md", USER)
    write(ws, PREFS, json.dumps({"theme": "dark", "volume": 5}, indent=2) + "\n")
    for other in spaces:
        if other != first:
            sync(spaces, first, other)


@pytest.fixture
def two(tmp_path, sshd):
    spaces = machines(tmp_path, sshd, ["laptop", "mac-mini"])
    start(spaces, "laptop")
    return spaces


def test_two_machines_write_memory_user_and_prefs_at_once_and_every_line_stays_live(two):
    laptop, mini = two["laptop"], two["mac-mini"]
    edit(laptop, "MEMORY.md", "- Dana lives in Lisbon\n", "- Dana lives in Lisbon\n- Dana moved to Porto\n")
    edit(mini, "MEMORY.md", "- Dana lives in Lisbon\n", "- Dana lives in Lisbon\n- Dana's sister is Eva\n")
    edit(laptop, "MEMORY.md", "- peersync\n", "- peersync\n- merge memory files\n")
    edit(laptop, "USER.md", "- Language: English\n", "- Language: English, some Portuguese\n")
    edit(mini, "USER.md", "- coffee\n", "- coffee\n- long walks\n")
    prefs(laptop, theme="light")
    prefs(mini, subtitles=True)
    [report] = sync(two, "laptop", "mac-mini")
    assert sorted(report.merged) == sorted(["MEMORY.md", "USER.md", PREFS]) and not report.conflicts
    files = selection_files(laptop)
    assert files == selection_files(mini)
    memory, user = files["MEMORY.md"].decode(), files["USER.md"].decode()
    for line in ("- Dana moved to Porto\n", "- Dana's sister is Eva\n", "- merge memory files\n"):
        assert memory.count(line) == 1
    assert memory.index("Porto") < memory.index("## Projects") and memory.index("Eva") < memory.index("## Projects")
    assert "- Language: English, some Portuguese\n" in user and "- long walks\n" in user
    assert json.loads(files[PREFS]) == {"theme": "light", "volume": 5, "subtitles": True}
    assert not (laptop.state / "conflicts").exists() and not (mini.state / "conflicts").exists()
    # The merged versions are each side's new base: the next concurrent edits merge three-way again.
    edit(laptop, "MEMORY.md", "- Dana moved to Porto\n", "")
    edit(mini, "MEMORY.md", "- peersync\n", "- peersync (v0.1)\n")
    [report] = sync(two, "mac-mini", "laptop")
    memory = (laptop.root / "MEMORY.md").read_text()
    assert memory == (mini.root / "MEMORY.md").read_text()
    assert "Porto" not in memory and "- peersync (v0.1)\n" in memory and not report.conflicts


def test_overlapping_edits_keep_both_versions_live_and_say_so(two):
    laptop, mini = two["laptop"], two["mac-mini"]
    edit(laptop, "USER.md", "Europe/Lisbon", "Europe/Porto")
    edit(mini, "USER.md", "Europe/Lisbon", "Atlantic/Azores")
    prefs(laptop, theme="light", volume=7)
    prefs(mini, theme="solarized")
    os.utime(laptop.root / PREFS, (os.stat(mini.root / PREFS).st_mtime - 60,) * 2)  # mac-mini's is newer
    [report] = sync(two, "mac-mini", "laptop")  # the other machine starts this time
    user = (laptop.root / "USER.md").read_text()
    assert user == (mini.root / "USER.md").read_text()
    assert "- Timezone: Europe/Porto\n" in user and "- Timezone: Atlantic/Azores\n" in user
    assert "**▼ laptop · " in user and "**▼ mac-mini · " in user and "<<<<<<<" not in user
    assert "- Language: English\n" in user and user.count("- Language: English\n") == 1  # only the line itself
    doc = json.loads((laptop.root / PREFS).read_text())
    assert doc == json.loads((mini.root / PREFS).read_text()) == {"theme": "solarized", "volume": 7}
    looks = {c.path: c for c in report.conflicts}
    assert looks["USER.md"].kept == "merged" and looks["USER.md"].passages == 1
    assert looks[PREFS].keys == ("theme",)
    # Both pre-merge versions are in conflicts/ on both machines, with the reason.
    for ws in (laptop, mini):
        kept = Store(ws.root, ws.sync_config().selection).conflicts()
        reasons = {(i["path"], i["reason"]) for i in kept}
        assert ("USER.md", "merged with both versions kept live") in reasons
        versions = {(ws.state / "conflicts" / i["id"] / i["path"]).read_text() for i in kept if i["path"] == "USER.md"}
        assert versions == {USER.replace("Europe/Lisbon", "Europe/Porto"), USER.replace("Europe/Lisbon", "Atlantic/Azores")}
        assert any(p == PREFS and r.startswith("merged by key; changed on both sides: theme") for p, r in reasons)
    # status, conflicts list and the sync's own report say which file needs a look.
    status = cli(laptop, "status")
    assert status.returncode == 0 and "Needs a look: USER.md" in status.stdout
    listed = cli(laptop, "conflicts", "list")
    assert "Needs a look: USER.md" in listed.stdout and "merged with both versions kept live" in listed.stdout
    from peersync.core.render import report_text
    assert "USER.md — merged, needs a look" in report_text(report)
    # conflicts diff: a readable diff of a kept version against the live file.
    mine = next(i for i in Store(laptop.root, laptop.sync_config().selection).conflicts()
                if i["path"] == "USER.md" and "Europe/Porto" in (laptop.state / "conflicts" / i["id"] / "USER.md").read_text())
    diff = cli(laptop, "conflicts", "diff", mine["id"])
    assert diff.returncode == 0 and "+- Timezone: Atlantic/Azores\n" in diff.stdout and "--- " + mine["id"] in diff.stdout
    # Sorting it out: the user keeps one version; the file no longer needs a look anywhere.
    write(laptop, "USER.md", USER.replace("Europe/Lisbon", "Europe/Porto"))
    sync(two, "laptop", "mac-mini")
    assert (mini.root / "USER.md").read_text() == USER.replace("Europe/Lisbon", "Europe/Porto")
    assert "Needs a look" not in cli(mini, "conflicts", "list").stdout


def test_restore_merge_brings_a_kept_version_back_into_the_live_file(two):
    laptop, mini = two["laptop"], two["mac-mini"]
    sync(two, "laptop", "mac-mini")
    # A plain file conflict from before: the losing version went to conflicts/ (newest wins).
    write(laptop, "memory/notes/plan.txt", "step 1\nstep 2\n")
    sync(two, "laptop", "mac-mini")
    write(laptop, "memory/notes/plan.txt", "step 1\nstep 2\nstep 3 (laptop)\n")
    write(mini, "memory/notes/plan.txt", "step 0\nstep 1\nstep 2\n")
    os.utime(laptop.root / "memory/notes/plan.txt", (os.stat(mini.root / "memory/notes/plan.txt").st_mtime - 60,) * 2)
    [report] = sync(two, "laptop", "mac-mini")
    [lost] = [c for c in report.conflicts if c.path == "memory/notes/plan.txt"]
    assert (laptop.root / "memory/notes/plan.txt").read_text() == "step 0\nstep 1\nstep 2\n"
    restored = cli(laptop, "conflicts", "restore", lost.saved_as, "--merge")
    assert restored.returncode == 0, restored.stderr
    assert (laptop.root / "memory/notes/plan.txt").read_text() == "step 0\nstep 1\nstep 2\nstep 3 (laptop)\n"
    sync(two, "laptop", "mac-mini")
    assert (mini.root / "memory/notes/plan.txt").read_text() == "step 0\nstep 1\nstep 2\nstep 3 (laptop)\n"


@pytest.fixture
def three(tmp_path, sshd):
    spaces = machines(tmp_path, sshd, ["a", "b", "c"])
    start(spaces, "a")
    sync(spaces, "b", "c")  # every pair has a shared ancestor
    return spaces


def test_three_machines_write_at_once_and_every_line_ends_up_live_everywhere(three):
    orders = [(("a", "c"), ("a", "b"), ("b", "c")), (("b", "c"), ("a", "b"), ("a", "c")),
              (("c", "a"), ("b", "c"), ("a", "b"))]
    written: list[tuple[str, str]] = []
    keys: dict[str, int] = {}
    for round_no, order in enumerate(orders * 2):
        for name, ws in three.items():
            line = f"- {name} noted fact {round_no}\n"
            edit(ws, "MEMORY.md", "\n## Projects\n", f"{line}\n## Projects\n")  # all under ## People
            written.append(("MEMORY.md", line))
            section = "## Likes\n" if round_no % 2 else "## Profile\n"
            text = (ws.root / "USER.md").read_text()
            end = text.index("\n\n", text.index(section)) if "\n\n" in text[text.index(section):] else len(text) - 1
            user_line = f"- {name} says {round_no}\n"
            write(ws, "USER.md", text[:end + 1] + user_line + text[end + 1:])
            written.append(("USER.md", user_line))
            prefs(ws, **{f"{name}-{round_no}": round_no})
            keys[f"{name}-{round_no}"] = round_no
        for who, peer in order:
            for report in sync(three, who, peer):
                assert not report.conflicts, report.conflicts
    for who, peer in (("a", "b"), ("b", "c"), ("a", "c")):
        sync(three, who, peer)
    files = [selection_files(ws) for ws in three.values()]
    assert files[0] == files[1] == files[2]
    for path, line in written:
        assert files[0][path].decode().count(line) == 1, (path, line)
    doc = json.loads(files[0][PREFS])
    assert {k: doc[k] for k in keys} == keys and doc["theme"] == "dark"
    assert not any((ws.state / "conflicts").exists() for ws in three.values())


def test_three_machines_editing_one_line_end_with_one_passage_of_three_versions(three):
    for name, ws in three.items():
        edit(ws, "USER.md", "Europe/Lisbon", f"Europe/{name.upper()}")
    sync(three, "a", "b")
    sync(three, "b", "c")
    sync(three, "c", "a")
    sync(three, "a", "b")
    files = [selection_files(ws) for ws in three.values()]
    assert files[0] == files[1] == files[2]
    user = files[0]["USER.md"].decode()
    assert user.count("peersync kept 3 versions of this part") == 1
    for name in three:
        assert f"- Timezone: Europe/{name.upper()}\n" in user and f"**▼ {name} · " in user
