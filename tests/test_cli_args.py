"""The command line reads the same everywhere: global options anywhere, the keeper's fast path
(cli/quick.py) reading exactly what the full CLI reads, its output the same document; every command
and every argument has a help text, and every command an example."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time

import click
import pytest
from click.testing import CliRunner

from firstday_env import check_document
from peersync.cli import quick
from peersync.cli import sync as sync_cli
from peersync.cli.app import state
from peersync.cli.main import command
from peersync.testing import wire_pair
from peersync.testing.dashboard_scene import _closed_port
from peersync.transport.keeper import ENV_KEEP

GLOBALS = [[], ["--json"], ["-w", "/ws"], ["-w/ws"], ["--workspace=/ws"], ["--workspace", "/ws"],
           ["--ssh-config", "/c"], ["--ssh-config=/c"], ["--init"], ["--debug"]]
AFTER = [["-n"], ["--dry-run"], ["--force"], ["--policy", "local"], ["--policy=remote"], ["mini"], ["other"],
         ["--", "-odd"], ["--bogus"], ["--json"], ["-w", "/elsewhere"], ["--init"], ["--ssh-config", "/d"]]


def corpus(seed: int = 19, count: int = 600) -> list[list[str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        before = [t for g in rng.sample(GLOBALS, rng.randint(0, 3)) for t in g]
        after = rng.sample(AFTER, rng.randint(0, 4))
        if ["--", "-odd"] in after:  # `--` ends the options: it goes last
            after.remove(["--", "-odd"])
            after.append(["--", "-odd"])
        out.append([*before, rng.choice(["sync", "push", "pull"]), *[t for a in after for t in a]])
    return out


def full_cli_reading(argv: list[str], monkeypatch) -> dict | None:
    """What the full CLI makes of `argv` (None when it refuses it), without running a sync."""
    seen = {}

    def fake_run(ctx, peers, mode, dry_run, force, policy):
        st = state(ctx)
        seen.update(workspace=st.workspace_option, json=st.json, init=st.init,
                    ssh_config=os.environ.get("PEERSYNC_SSH_CONFIG") or None, mode=mode.value, peers=list(peers or []),
                    dry_run=dry_run, force=force, policy=policy)

    monkeypatch.setattr(sync_cli, "_run", fake_run)
    monkeypatch.setenv("PEERSYNC_SSH_CONFIG", "")  # the CLI sets it for --ssh-config; undone after the test
    result = CliRunner().invoke(command(), argv)
    return seen if result.exit_code == 0 and seen else None


def test_the_fast_path_reads_exactly_what_the_full_cli_reads(monkeypatch):
    checked = taken = 0
    for argv in corpus():
        fast = quick.parse(argv)
        full = full_cli_reading(argv, monkeypatch)
        if fast is not None:
            assert full is not None, f"the fast path takes {argv}, the full CLI refuses it"
            assert {k: fast[k] for k in ("workspace", "json", "init", "ssh_config", "mode", "dry_run", "force",
                                         "policy")} == {k: full[k] for k in ("workspace", "json", "init", "ssh_config",
                                                                             "mode", "dry_run", "force", "policy")}, argv
            assert [fast["peer"]] if fast["peer"] else [] == full["peers"], argv
            taken += 1
        elif full is not None and len(full["peers"]) <= 1 and "--debug" not in argv:
            pytest.fail(f"the full CLI takes {argv} but the fast path does not: a warm sync would refuse "
                        f"what a cold one accepts")
        checked += 1
    assert taken > 100 and checked == 600  # the corpus exercises both readings


@pytest.mark.timeout(180)
def test_a_warm_sync_prints_the_same_document_with_options_anywhere(tmp_path, sshd, monkeypatch):
    monkeypatch.setenv(ENV_KEEP, "60")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    (pair.local.root / "MEMORY.md").write_text("hello\n")

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "peersync", *args], capture_output=True, text=True, timeout=120)
        doc = json.loads(proc.stdout)
        check_document(doc, proc.returncode)
        return doc

    cold = cli("-w", str(pair.local.root), "--json", "sync", "remote")
    assert cold["ok"] and not cold["reports"][0]["in_keeper"]
    deadline = time.monotonic() + 30
    warm = None
    try:
        while time.monotonic() < deadline:
            (pair.local.root / "USER.md").write_text(f"edit {time.monotonic()}\n")
            warm = cli("sync", "remote", "--json", "-w", str(pair.local.root))  # options after the command
            if warm["reports"][0]["in_keeper"]:
                break
            time.sleep(0.3)
        assert warm is not None and warm["reports"][0]["in_keeper"], "the keeper never took the run"
        assert set(warm) == set(cold) and set(warm["reports"][0]) == set(cold["reports"][0])
        assert warm["command"] == cold["command"] == "sync" and warm["workspace"] == cold["workspace"]
    finally:
        for pid in keepers_of(str(pair.local.root)):
            os.kill(pid, signal.SIGTERM)


def keepers_of(root: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        try:
            argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0") if entry.isdigit() else []
        except OSError:
            continue
        if b"keeper" in argv and root.encode() in argv:
            out.append(int(entry))
    return out


# -- help ------------------------------------------------------------------------------------------
def commands(group: click.Group, path: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        full = f"{path} {name}".strip()
        out.append((full, cmd))
        if isinstance(cmd, click.Group):
            out += commands(cmd, full)
    return out


@pytest.mark.parametrize("path, cmd", commands(command()), ids=[p for p, _ in commands(command())])
def test_every_command_and_argument_is_explained_with_an_example(path, cmd):
    assert (cmd.help or "").strip(), f"{path}: no help text"
    missing = [p.name for p in cmd.params if not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"{path}: no help for {missing}"
    examples = (cmd.epilog or "").split("Examples:", 1)[-1].split("\n\n")
    lines = [e.strip() for e in examples if e.strip()]
    assert lines, f"{path}: no example"
    words = path.split()
    for line in lines:
        tokens = line.split("#", 1)[0].split()
        assert tokens[0] == "peersync", line
        it = iter(tokens)
        assert all(word in it for word in words), f"{path}: the example {line!r} runs another command"
    if cmd.name != "rclone":
        assert {"workspace", "json", "init", "ssh_config", "debug"} <= {p.name for p in cmd.params}, path


def test_help_runs_for_every_command():
    for path, cmd in commands(command()):
        if path == "rclone":
            continue  # its --help is rclone's own
        result = CliRunner().invoke(command(), [*path.split(), "--help"])
        assert result.exit_code == 0 and "Examples:" in result.output, (path, result.output)
        assert list(itertools.islice((line for line in result.output.splitlines() if "peersync " in line), 1))


# -- a cold sync without the CLI stack ---------------------------------------------------------------
RUN = ("import sys\nimport peersync.cli.quick as q\nfrom peersync.__main__ import main\n"
       "if sys.argv[1] == 'full':\n    q.fast_main = lambda argv: None\n"
       "sys.argv = ['peersync', *sys.argv[2:]]\n"
       "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
       "sys.stderr.write(f'\\n{code} {\"click\" in sys.modules} {\"typer\" in sys.modules}\\n')\n")


def run_as(way: str, *args) -> tuple[str, str, list[str]]:
    env = {**os.environ, ENV_KEEP: "0"}
    proc = subprocess.run([sys.executable, "-c", RUN, way, *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=120)
    err, _, last = proc.stderr.rstrip("\n").rpartition("\n")
    return proc.stdout, err, last.split()


def steady(doc: dict) -> dict:
    """A sync's document without what differs from one run to the next (times, counts of bytes)."""
    for report in doc.get("reports") or []:
        for key in ("seconds", "started", "finished", "clock_offset_s", "bytes_sent", "bytes_received", "timings"):
            report.pop(key, None)
    return doc


def test_a_cold_sync_runs_without_the_cli_stack_and_says_what_the_full_cli_says(tmp_path, sshd):
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    (pair.local.root / "MEMORY.md").write_text("hello\n")
    ws = str(pair.local.root)
    out, err, (code, click_loaded, typer_loaded) = run_as("fast", "-w", ws, "sync")
    assert (code, click_loaded, typer_loaded) == ("0", "False", "False"), err
    assert (pair.remote.root / "MEMORY.md").read_text() == "hello\n"
    assert run_as("fast", "-w", ws, "sync", "remote") == run_as("full", "-w", ws, "sync", "remote")[:2] + \
        (["0", "False", "False"],)  # a no-op: the same text
    fast, full = run_as("fast", "-w", ws, "--json", "sync"), run_as("full", "-w", ws, "--json", "sync")
    assert steady(json.loads(fast[0])) == steady(json.loads(full[0])) and fast[2][0] == full[2][0] == "0"

    # Failures: the same lines, the same document, the same exit status.
    cases = [("sync", "remote", "--policy", "bogus"), ("--json", "sync", "remote", "--policy", "bogus"),
             ("pull", "remote", "--force", "-n")]  # a peer named: two are configured now
    peers = pair.local.load_peers()
    peers["gone"] = dataclasses.replace(peers["remote"], name="gone", port=_closed_port())  # nothing listens there
    pair.local.save_peers(peers)
    cases += [("sync", "gone"), ("--json", "push", "gone")]
    for args in cases:
        fast, full = run_as("fast", "-w", ws, *args), run_as("full", "-w", ws, *args)
        assert fast[2][1:] == ["False", "False"], (args, fast[1])
        assert fast[2][0] == full[2][0] and fast[1] == full[1], (args, fast, full)
        if "--json" in args:
            assert steady(json.loads(fast[0])) == steady(json.loads(full[0]))
            check_document(json.loads(fast[0]), int(fast[2][0]))
        else:
            assert fast[0] == full[0]
    assert [run_as("fast", "-w", ws, *args)[2][0] for args in cases] == ["2", "2", "0", "3", "3"]
