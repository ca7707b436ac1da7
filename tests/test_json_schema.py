"""Every command's --json output validates against docs/output.schema.json — successes and failures,
usage errors included — and `ok` is true exactly when the exit status is 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import pytest
from fake_tailscale import FakeTailscaled, peer_status, self_status, status_document

from firstday_env import SCHEMA, FirstDay, check_document, first_day  # noqa: F401  (fixture)
from peersync.cli.main import command

pytestmark = pytest.mark.timeout(600)


def all_commands(group: click.Group, path: str = "") -> set[str]:
    out = set()
    for name, cmd in group.commands.items():
        full = f"{path} {name}".strip()
        if isinstance(cmd, click.Group):
            out |= all_commands(cmd, full)
        elif full != "rclone":  # hands its arguments to rclone: no --json of its own
            out.add(full)
    return out


def test_the_schema_names_every_command():
    assert set(SCHEMA["properties"]["command"]["enum"]) - {"", "version"} == all_commands(command())


def test_every_command_prints_one_valid_document(first_day: FirstDay, tmp_path):
    f = first_day
    seen: dict[str, set[bool]] = {}

    def run(*args, ws=f.laptop, want=None, **kw) -> dict:
        code, doc = f.json(*args, ws=ws, **kw)
        if want is not None:
            assert code == want, (args, doc)
        seen.setdefault(doc["command"], set()).add(doc["ok"])
        return doc

    run("init", "--heartbeat", want=0)
    run("peers", "add", "mac-mini", "mini", "--path", str(f.mini), "--remote-command", f.command, want=0)
    run("peers", "add", "typo", "mini", "--path", str(f.tmp / "nope"), "--remote-command", f.command, want=2)
    run("peers", "add", "pi", "127.0.0.1:1", "--path", str(f.mini), want=3)
    run("peers", "set", "pi", "--port", "2", "--no-test", want=0)
    run("peers", "list", want=0)
    run("status", want=3)
    run("peers", "remove", "pi", want=0)
    run("status", want=0)
    run("diff", want=0)
    run("sync", "--dry-run", want=0)
    run("push", "mac-mini", want=0)
    run("pull", "mac-mini", want=0)
    plan = "memory/notes/plan.txt"  # not a merged kind of file: a conflict, newest wins
    for ws, text in ((f.laptop, "laptop\n"), (f.mini, "mini, newer\n")):
        (ws / plan).parent.mkdir(parents=True, exist_ok=True)
        (ws / plan).write_text(text)
    os.utime(f.laptop / plan, (time.time() - 120, time.time() - 120))  # the mini's is newer, clearly
    sync = run("sync", want=0)
    assert sync["reports"][0]["conflicts"], sync
    run("sync", "nobody", want=2)
    run("history", want=0)
    listed = run("conflicts", "list", want=0)["conflicts"]
    cid = listed[0]["id"]
    run("conflicts", "show", cid, want=0)
    run("conflicts", "diff", cid, want=0)
    run("conflicts", "restore", cid, want=0)
    run("conflicts", "drop", json.loads(f.cli("conflicts", "--json", ws=f.laptop).stdout)["conflicts"][0]["id"], want=0)
    run("conflicts", "show", "c-nothere", want=2)
    (f.mini / "MEMORY.md").unlink()
    run("sync", want=0)
    items = run("trash", "list", want=0)["items"]
    assert items and items[0]["path"] == "MEMORY.md"
    run("trash", "restore", "MEMORY.md", want=0)
    run("trash", "empty", want=0)
    run("auto", "on", "--interval", "600", want=0)
    run("heartbeat", want=0)
    run("auto", "status", want=0)
    run("dashboard", "--no-probe", "--out", str(tmp_path / "dash.html"), want=0)
    target = tmp_path / "backups"
    config = f.laptop / "memory" / "clawdbot-sync" / "config.yaml"
    config.write_text(config.read_text() + "\nbackup:\n  keep: 3\n")
    for args in (("now",), ("list",), ("status",), ("verify",), ("prune", "--dry-run"),
                 ("restore", "--to", str(tmp_path / "restored"))):
        run("backup", *args, "--target", str(target), want=0)
    run("backup", "now", "--target", "nosuchremote:x")
    run("backup", "migrate", "--target", str(target), want=2)  # no old-format backups there: said so
    run("cloud", "add", "box", str(tmp_path / "cloudbox"), "--mode", "mirror", want=0)
    run("cloud", "list", want=0)
    run("cloud", "unlock", "box", want=0)
    run("cloud", "remove", "box", want=0)
    run("peers", "add", "--bogus", want=2)  # a usage error is a document too

    # watch: one document per line while it runs
    proc = subprocess.Popen([sys.executable, "-m", "peersync", "-w", str(f.mini), "watch", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=f.env)
    try:
        first = [json.loads(proc.stdout.readline()) for _ in range(2)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for doc in first:
        check_document(doc)
        seen.setdefault(doc["command"], set()).add(doc["ok"])
    assert "no peers" in first[1]["message"]

    # discover, against a fake tailscaled (no Tailscale here), and without one: an error document
    sock_dir = Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp"))
    env = {"PEERSYNC_TAILSCALE_SOCKET": str(sock_dir / "tailscaled.sock"),
           "PEERSYNC_TAILSCALE_CLI": str(tmp_path / "absent-cli")}
    run("discover", want=1, env=env)
    doc = status_document(self_status("laptop", "127.0.0.9"), [peer_status("server", "127.0.0.2")])
    with FakeTailscaled(doc, socket_path=sock_dir / "tailscaled.sock"):
        found = run("discover", "--timeout", "2", want=0, env=env)
    assert found["devices"][0]["name"] == "server"

    assert set(seen) == all_commands(command()), sorted(all_commands(command()) - set(seen))
    assert {c for c, oks in seen.items() if False in oks} >= {"peers add", "status", "sync", "conflicts show",
                                                               "discover", "backup now"}
    print(f"\nvalidated {len(seen)} commands: {sorted(seen)}")


def test_times_are_rfc3339_utc_even_from_older_files(first_day: FirstDay):
    """history.json keeps clawdbot-sync's local times with an offset; the JSON says UTC."""
    f = first_day
    state = f.laptop / "memory" / "clawdbot-sync"
    state.mkdir(parents=True, exist_ok=True)
    (state / "history.json").write_text(json.dumps({"entries": [
        {"time": "2026-01-26T10:00:00+0100", "peer": "mac-mini", "host": "mini", "mode": "sync", "dry_run": False,
         "ok": True, "seconds": 0.4, "pushed": ["MEMORY.md"], "pulled": [], "merged": [], "deleted_local": [],
         "deleted_remote": [], "conflicts": [], "problems": [], "notes": [], "error": None, "clock_offset": 0.25}]}))
    code, doc = f.json("history", ws=f.laptop)
    assert code == 0 and doc["entries"][0]["time"] == "2026-01-26T09:00:00Z"
    assert doc["entries"][0]["clock_offset_s"] == 0.25 and "clock_offset" not in doc["entries"][0]
