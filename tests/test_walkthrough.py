"""A new user's first day, scripted from the README's own text: install from a clean copy of the
checkout into an isolated environment (a venv under a temporary HOME, as "Install" says), add a peer by
its ssh-config alias, sync, resolve a conflict and restore a file from the trash ("Quick start").

The commands run are the README's code blocks, with only the example names replaced by this test's
(the checkout copy, the two workspaces, the conflict's id); if the README changes, this test runs
what it now says.  Dependencies come from PyPI, as for a user.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from firstday_env import ROOT, agent_workspace

README = (ROOT / "README.md").read_text()
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def readme_block(heading: str, containing: str) -> list[str]:
    """The command lines of the first ```bash block under `heading` that contains `containing`
    (comments and blank lines dropped)."""
    section = README.split(f"\n{heading}\n", 1)[1]
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        if containing in block:
            lines = [line.split("  #", 1)[0].rstrip() for line in block.splitlines()]
            return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    raise AssertionError(f"README: no bash block under {heading!r} with {containing!r}")


def clean_copy(dest: Path) -> Path:
    """The checkout as a clone would have it (tracked and new files; no .venv, caches or builds)."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def bash(lines: list[str], env: dict, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    proc = subprocess.run(["bash", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc


def test_first_day_as_the_readme_tells_it(tmp_path, sshd):
    home = tmp_path / "home"
    home.mkdir()
    checkout = clean_copy(tmp_path / "peersync")
    assert not (checkout / ".venv").exists() and (checkout / "pyproject.toml").is_file()
    config = home / "ssh_config"  # the user's ~/.ssh/config, given as ssh -F would be (README: SSH)
    config.write_text(sshd.alias_config("mini"))
    system_path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "WORKSPACE"))}
    env.update(HOME=str(home), PATH=f"{home}/.local/bin{os.pathsep}{system_path}", PEERSYNC_SSH_CONFIG=str(config),
               PEERSYNC_KEEP_CONNECTION="0", PIP_DISABLE_PIP_VERSION_CHECK="1", RCLONE_CONFIG="/dev/null")

    # -- Install: the venv way (no pipx or uv needed), from the clean copy ----------------------------
    install = readme_block("## Install", "python3 -m venv")
    assert any("pip install /path/to/peersync" in line for line in install)
    done = bash([line.replace("/path/to/peersync", str(checkout)) for line in install], env, tmp_path)
    assert done.stdout.strip().splitlines()[-1].startswith("peersync ")  # `peersync --version`, from PATH
    where = subprocess.run([str(home / ".local/share/peersync-venv/bin/python"), "-c",
                            "import peersync; print(peersync.__file__)"], capture_output=True, text=True, env=env,
                           cwd=tmp_path)
    assert str(home) in where.stdout and str(ROOT) not in where.stdout  # installed, not run from the checkout
    peersync = home / ".local" / "bin" / "peersync"
    assert shutil.which("peersync", path=env["PATH"]) == str(peersync)
    rclone = subprocess.run(["peersync", "rclone", "version"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert rclone.returncode == 0 and rclone.stdout.startswith("rclone v")  # the bundled one

    # -- Quick start: a workspace, a peer by its alias, status, diff, sync ----------------------------
    laptop = agent_workspace(tmp_path / "clawd", "the laptop's memory\n")
    mini = agent_workspace(tmp_path / "mini-clawd", "the mini's memory\n")
    (laptop / "memory" / "2026-01-20.md").write_text("an old note\n")
    (laptop / "USER.md").write_text("prefers tea\n")
    quick = readme_block("## Quick start", "peersync peers add")
    peer_add = next(line for line in quick if "peers add" in line)
    assert "mac-mini mini --path '~/clawd'" in peer_add
    # On this one machine the "peer" is a second workspace, and its non-interactive PATH lacks our
    # venv: the README's --remote-command (Install) names the peersync to run there.
    steps = [line.replace("export WORKSPACE=~/clawd", f"export WORKSPACE={laptop}")
                 .replace("--path '~/clawd'", f"--path {mini} --remote-command {peersync}") for line in quick]
    out = bash(steps, env, tmp_path).stdout
    assert "Workspace ready" in out and "✅ Added mac-mini (mini:" in out and "connected in" in out
    assert "🟢 mac-mini (mini)" in out and "🔄 Synced with mac-mini (mini)" in out
    assert (mini / "memory" / "2026-01-20.md").read_text() == "an old note\n"
    assert (mini / "USER.md").read_text() == "prefers tea\n"

    # -- a conflict and a deletion, then "When something went wrong" ---------------------------------
    plan = "memory/notes/plan.txt"  # plain text: not merged, so newest wins and the other is kept aside
    (laptop / plan).parent.mkdir(parents=True, exist_ok=True)
    (mini / plan).parent.mkdir(parents=True, exist_ok=True)
    (laptop / plan).write_text("prefers green tea\n")
    (mini / plan).write_text("prefers coffee\n")
    earlier = os.stat(mini / plan).st_mtime - 120
    os.utime(laptop / plan, (earlier, earlier))  # the mini's edit is the newer one
    (mini / "memory" / "2026-01-20.md").unlink()
    synced = bash([f"export WORKSPACE={laptop}", "peersync sync mac-mini"], env, tmp_path).stdout
    assert f"⚠️ 1 conflict: {plan} — kept mac-mini's (newer); yours saved as conflict" in synced
    assert "🗑️ Deleted 1 here (to the trash): memory/2026-01-20.md" in synced
    listed = json.loads(bash([f"peersync -w {laptop} conflicts --json"], env, tmp_path).stdout)["conflicts"]
    [conflict] = [c for c in listed if c["path"] == plan]  # (MEMORY.md differed at the first sync too)
    fix = readme_block("## Quick start", "peersync trash restore")
    assert fix[1].startswith("peersync conflicts restore c-7f3a") and fix[3].startswith("peersync trash restore")
    out = bash([f"export WORKSPACE={laptop}", *(line.replace("c-7f3a", conflict["id"]) for line in fix)],
               env, tmp_path).stdout
    assert plan in out and "♻️ Restored memory/2026-01-20.md" in out
    assert (laptop / plan).read_text() == "prefers green tea\n"
    assert (laptop / "memory" / "2026-01-20.md").read_text() == "an old note\n"
    bash([f"export WORKSPACE={laptop}", "peersync sync mac-mini"], env, tmp_path)
    assert (mini / plan).read_text() == "prefers green tea\n"  # the restored version wins everywhere
    assert (mini / "memory" / "2026-01-20.md").read_text() == "an old note\n"
    history = bash([f"peersync -w {laptop} history"], env, tmp_path).stdout
    assert "🗑️ 1" in history and "⚠️ 1" in history
    assert not (home / ".ssh").exists()  # nothing read or written in a real ~/.ssh
    print(f"\nfirst day done with {sys.version.split()[0]}; peersync installed at {peersync}")
