"""A new user's machine for the first-day tests: two agent workspaces, the loopback sshd reachable only
through Host aliases of an ssh config file (its non-default port is written nowhere else), and a
home directory of its own — nothing reads or writes the real ~/.ssh.

OpenSSH reads ~/.ssh from the passwd entry, not $HOME, so pointing HOME elsewhere would not keep a
real ~/.ssh/config out; peersync takes the file from $PEERSYNC_SSH_CONFIG (what --ssh-config sets),
exactly as `ssh -F` would, and these tests set it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest

from peersync.testing import default_remote_command

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "output.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


@dataclass
class FirstDay:
    tmp: Path
    sshd: object
    home: Path
    config: Path
    laptop: Path
    mini: Path
    command: str = field(default_factory=default_remote_command)
    env: dict = field(default_factory=dict)

    def cli(self, *args: str, ws: Path | None = None, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess:
        """`peersync -w WS ARGS…` (no -w when ws is None: the current directory or $WORKSPACE)."""
        argv = [sys.executable, "-m", "peersync", *(["-w", str(ws)] if ws is not None else []), *args]
        return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
                              cwd=cwd or self.tmp, env={**self.env, **(env or {})})

    def add_mini(self, name: str = "mac-mini", alias: str = "mini", *extra: str) -> subprocess.CompletedProcess:
        return self.cli("peers", "add", name, alias, "--path", str(self.mini), "--remote-command", self.command,
                        *extra, ws=self.laptop)

    def json(self, *args: str, ws: Path | None = None, **kw) -> tuple[int, dict]:
        """Run with --json, check the document against docs/output.schema.json, return (exit, doc)."""
        proc = self.cli(*args, "--json", ws=ws, **kw)
        assert proc.stdout.strip(), f"no JSON from {args}: {proc.stderr}"
        doc = json.loads(proc.stdout)
        check_document(doc, proc.returncode)
        return proc.returncode, doc


def check_document(doc: dict, code: int | None = None) -> None:
    """The schema, plus what a schema cannot say: `ok` is true exactly when the exit status is 0,
    and every key at every depth is snake_case (the backup engine's own maps excepted)."""
    VALIDATOR.validate(doc)
    if code is not None:
        assert doc["ok"] is (code == 0), (code, doc)
        if doc["error"] is not None:
            assert doc["error"]["exit_code"] == code, (code, doc)
    if not doc["command"].startswith("backup "):
        bad = [k for k in keys(doc) if not k.replace("_", "a").isalnum() or not k[:1].isalpha() or k != k.lower()]
        assert not bad, f"keys that are not snake_case: {bad}"


def keys(value) -> list[str]:
    if isinstance(value, dict):
        return [k for k, v in value.items() for k in [k, *keys(v)]]
    if isinstance(value, list):
        return [k for v in value for k in keys(v)]
    return []


def agent_workspace(path: Path, text: str) -> Path:
    """A directory as an agent leaves it: OpenClaw's AGENTS.md, a MEMORY.md and memory/."""
    (path / "memory").mkdir(parents=True, exist_ok=True)
    (path / "AGENTS.md").write_text("# Agent\n")
    (path / "MEMORY.md").write_text(text)
    return path


@pytest.fixture
def first_day(tmp_path, sshd) -> FirstDay:
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "ssh_config"
    config.write_text(sshd.alias_config("mini", "mac-mini.local"))
    env = {k: v for k, v in os.environ.items() if k != "WORKSPACE"}
    env.update(HOME=str(home), PEERSYNC_SSH_CONFIG=str(config), PEERSYNC_KEEP_CONNECTION="0", RCLONE_CONFIG="/dev/null")
    return FirstDay(tmp=tmp_path, sshd=sshd, home=home, config=config,
                    laptop=agent_workspace(tmp_path / "laptop", "laptop notes\n"),
                    mini=agent_workspace(tmp_path / "mini", "mini notes\n"), env=env)
