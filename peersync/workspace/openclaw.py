"""OpenClaw, the agent platform peersync lives in, asked through its own CLI: the agent's workspace,
the cron command job that runs peersync's heartbeat with no LLM turn, a consistent snapshot of
OpenClaw's state, and the system event that wakes the agent.

Facts this module relies on (read in OpenClaw's code and docs, checked against the real CLI in
tests/test_openclaw.py):

- `openclaw cron add --command-argv JSON --every 300s --declaration-key K --no-deliver` runs a
  command on the Gateway scheduler without starting a model turn; the same declaration key
  updates the job instead of adding a second one.  Run history records the output; a silent run
  is `ok` with no summary.  Every `cron` command needs a running Gateway.
- OpenClaw 2026.8 retired HEARTBEAT.md: `openclaw doctor --fix` moves it into the Gateway's
  database and deletes the file, and the runtime never reads it again.  2026.7.x still reads it
  (and already has command cron jobs).
- `openclaw agents list --json` prints each agent's resolved workspace (profiles, state dirs and
  per-agent overrides applied), with no Gateway.
- `openclaw backup create --verify --no-include-workspace --output DIR --json` writes a verified
  archive of config, credentials and state (its SQLite databases through their own snapshots).
- `openclaw system event --text T --mode now` wakes the agent's main session at once.
"""

from __future__ import annotations

# Lazy imports: init's HEARTBEAT.md line is read only when asked (init imports this module).
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from peersync.errors import PeersyncError

HEARTBEAT_MD_RETIRED = (2026, 8)  # first release whose runtime no longer reads HEARTBEAT.md
CLI_TIMEOUT = 60.0  # seconds for one openclaw command (Gateway RPCs time out at 30 s by default)
CRON_NAME = "peersync"
NO_OPENCLAW = ("OpenClaw's CLI is not on PATH: run `peersync init --heartbeat` if your agent reads HEARTBEAT.md, "
               "or keep `peersync watch` running")


class OpenClawError(PeersyncError):
    """The openclaw CLI failed or is not there."""

    kind = "openclaw"


@dataclass(frozen=True)
class OpenClaw:
    """The OpenClaw CLI present on this machine and what it supports."""

    argv: tuple[str, ...]  # how to run it
    version: tuple[int, int, int] | None

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version)) if self.version else "unknown version"

    @property
    def reads_heartbeat_md(self) -> bool:
        """Does this release's heartbeat still read HEARTBEAT.md?"""
        return self.version is not None and self.version[:2] < HEARTBEAT_MD_RETIRED

    def run(self, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        """Run one openclaw command; its stdout, or OpenClawError with its own words."""
        try:
            proc = subprocess.run([*self.argv, *args], capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except OSError as err:
            raise OpenClawError(f"cannot run {self.argv[0]}: {err.strerror or err}") from None
        except subprocess.TimeoutExpired:
            raise OpenClawError(f"`openclaw {args[0]}` did not answer within {timeout:g} s") from None
        if proc.returncode != 0:
            raise OpenClawError(f"`openclaw {' '.join(args[:2])}` failed: {_what_failed(proc)}",
                                _hint(proc))
        return proc.stdout

    def run_json(self, *args: str, timeout: float = CLI_TIMEOUT):
        out = self.run(*args, timeout=timeout)
        # Some commands print a notice line before the document: start at its first bracket.
        start = min((i for i in (out.find("{"), out.find("[")) if i >= 0), default=0)
        try:
            return json.loads(out[start:])
        except ValueError:
            raise OpenClawError(f"`openclaw {' '.join(args[:2])}` printed no JSON: {out.strip()[:200]}") from None

    def has_command_cron(self) -> bool:
        """Can `cron add` register a command job idempotently (command argv + declaration key)?"""
        try:
            text = self.run("cron", "add", "--help", timeout=30)
        except OpenClawError:
            return False
        return "--command-argv" in text and "--declaration-key" in text


def find() -> OpenClaw | None:
    """The OpenClaw CLI: $PEERSYNC_OPENCLAW (a command line), else `openclaw` on PATH."""
    configured = os.environ.get("PEERSYNC_OPENCLAW")
    if configured:
        argv = tuple(shlex.split(configured))
    else:
        path = shutil.which("openclaw")
        if not path:
            return None
        argv = (path,)
    try:
        proc = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return OpenClaw(argv, parse_version(proc.stdout))


def parse_version(text: str) -> tuple[int, int, int] | None:
    """`OpenClaw 2026.9.6 (eb377ac)` → (2026, 9, 6)."""
    m = re.search(r"(\d{4})\.(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def _what_failed(proc: subprocess.CompletedProcess) -> str:
    """The headline of a failed command: its JSON error's message, else its first stderr line
    (the lines after it are details such as the config path)."""
    try:
        message = json.loads(proc.stdout)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    for text in (message, proc.stderr, proc.stdout):
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if lines:
            return lines[0][:300]
    return f"exit status {proc.returncode}"


def _hint(proc: subprocess.CompletedProcess) -> str | None:
    text = (proc.stderr or "") + (proc.stdout or "")
    if re.search(r"ECONNREFUSED|gateway (?:is )?not (?:running|reachable)|connect failed|closed before connect",
                 text, re.IGNORECASE):
        return "Start OpenClaw's Gateway (openclaw gateway start), then run the command again."
    return None


# -- the agent's workspace ------------------------------------------------------------------
def configured_workspace(agent: str | None = None, claw: OpenClaw | None = None) -> str | None:
    """The workspace OpenClaw's config gives `agent` (default: $OPENCLAW_AGENT, else the default
    agent), if OpenClaw is installed and that directory exists; else None.

    Asking the CLI starts Node.js (seconds), so the answer is kept in peersync's cache dir for as
    long as OpenClaw's config file and the CLI itself are unchanged."""
    agent = agent or os.environ.get("OPENCLAW_AGENT")
    key = _lookup_key(agent)
    if key is None and claw is None:
        return None  # no CLI on this machine
    cache = _cache_file()
    try:
        kept = json.loads(cache.read_text())
        if kept.get("key") == key and (kept.get("workspace") is None or os.path.isdir(kept["workspace"])):
            return kept.get("workspace")
    except (OSError, ValueError, AttributeError):
        pass
    claw = claw or find()
    if claw is None:
        return None
    try:
        agents = claw.run_json("agents", "list", "--json")
    except OpenClawError:
        return None
    found = pick_workspace(agents, agent)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        cache.write_text(json.dumps({"key": key, "workspace": found}))
    except OSError:
        pass  # only a cache
    return found


def _lookup_key(agent: str | None) -> list | None:
    """What the CLI's answer depends on: the CLI (path and mtime), OpenClaw's config file (path,
    mtime, size; or its absence) and its state dir, the agent.  None when there is no CLI."""
    configured = os.environ.get("PEERSYNC_OPENCLAW")
    cli = shlex.split(configured)[0] if configured else shutil.which("openclaw")
    if not cli:
        return None
    state = os.environ.get("OPENCLAW_STATE_DIR") or os.path.expanduser("~/.openclaw")
    config = os.environ.get("OPENCLAW_CONFIG_PATH") or os.path.join(state, "openclaw.json")

    def stamp(path: str) -> list:
        try:
            st = os.stat(path)
            return [path, st.st_mtime_ns, st.st_size]
        except OSError:
            return [path, None, None]

    return [stamp(cli), stamp(config), state, os.environ.get("OPENCLAW_PROFILE"), agent]


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "peersync" / "openclaw-workspace.json"


def pick_workspace(agents, agent: str | None) -> str | None:
    """From `openclaw agents list --json`: the named agent's workspace, else the default agent's
    (else the only agent's); None when it is not an existing directory."""
    if not isinstance(agents, list):
        return None
    rows = [a for a in agents if isinstance(a, dict) and isinstance(a.get("workspace"), str)]
    chosen = ([a for a in rows if a.get("id") == agent] if agent else
              [a for a in rows if a.get("isDefault")] or (rows if len(rows) == 1 else []))
    if not chosen:
        return None
    path = os.path.expanduser(chosen[0]["workspace"])
    return path if os.path.isdir(path) else None


# -- auto-sync through a cron command job ---------------------------------------------------
def declaration_key(ws) -> str:
    """One job per workspace on this machine, whatever peersync's interval or interpreter."""
    return "peersync:heartbeat:" + hashlib.sha256(str(ws.root).encode()).hexdigest()[:16]


def heartbeat_argv(ws) -> list[str]:
    """What the job runs: this very peersync, by absolute paths (the Gateway's PATH is thin).
    `-P`: the job runs in the workspace, and `python -m` would import a `peersync/` folder there
    before the installed one (whatever can write to the workspace would run code)."""
    return [sys.executable, "-P", "-m", "peersync", "-w", str(ws.root), "heartbeat"]


def register_cron(claw: OpenClaw, ws, interval: int, timeout: float) -> dict:
    """Add or update (same declaration key) the job that runs `peersync heartbeat` every
    `interval` seconds on the Gateway, with no model turn and no chat delivery."""
    job = claw.run_json(
        "cron", "add", "--name", f"{CRON_NAME} {ws.root.name}",
        "--description", f"peersync auto-sync of {ws.root} (peersync auto on|off|status)",
        "--every", f"{int(interval)}s", "--command-argv", json.dumps(heartbeat_argv(ws)),
        "--command-cwd", str(ws.root), "--declaration-key", declaration_key(ws),
        "--timeout-seconds", str(int(timeout) + 60), "--no-deliver", "--json")
    return job.get("job", job) if isinstance(job, dict) else {}


def find_cron(claw: OpenClaw, ws) -> dict | None:
    """This workspace's job, enabled or not; None when there is none."""
    listed = claw.run_json("cron", "list", "--all", "--json")
    jobs = listed.get("jobs", []) if isinstance(listed, dict) else []
    key = declaration_key(ws)
    return next((j for j in jobs if isinstance(j, dict) and j.get("declarationKey") == key), None)


def remove_cron(claw: OpenClaw, ws) -> bool:
    """Remove this workspace's job; False when there was none."""
    job = find_cron(claw, ws)
    if job is None:
        return False
    claw.run("cron", "remove", str(job["id"]), "--json")
    return True


# -- backups and wake-ups -------------------------------------------------------------------
def snapshot(dest: Path | str, claw: OpenClaw | None = None) -> Path:
    """A verified, consistent archive of OpenClaw's config, credentials and state (not the
    workspace: peersync backs that up itself) written into the directory `dest`, through
    `openclaw backup create --verify` — never by copying live SQLite files.  Returns its path."""
    claw = claw or find()
    if claw is None:
        raise OpenClawError("OpenClaw is not installed here (no `openclaw` on PATH)",
                            "Set $PEERSYNC_OPENCLAW to its command, or leave OpenClaw out of the backup.")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    result = claw.run_json("backup", "create", "--verify", "--no-include-workspace",
                           "--output", str(dest), "--json", timeout=600)
    archive = result.get("archivePath") if isinstance(result, dict) else None
    if not archive or not result.get("verified") or not Path(archive).is_file():
        raise OpenClawError(f"openclaw backup create did not report a verified archive in {dest}")
    return Path(archive)


def system_event_argv(claw: OpenClaw, text: str) -> list[str]:
    """The command that puts `text` before the agent and wakes it now (one agent turn)."""
    return [*claw.argv, "system", "event", "--mode", "now", "--text", text]


# -- which mechanism runs auto-sync here ----------------------------------------------------
@dataclass
class Schedule:
    """What drives auto-sync on this machine, as found (or just set up).

    mechanism: "cron" (an OpenClaw cron command job: no LLM turn), "heartbeat-md" (the line in
    HEARTBEAT.md, read by OpenClaw before 2026.8: one LLM turn per heartbeat), or None."""

    openclaw: str | None = None  # version text, None when OpenClaw is not installed
    mechanism: str | None = None
    job: dict | None = None
    heartbeat_line: bool = False  # HEARTBEAT.md holds peersync's line
    heartbeat_read: bool = False  # …and this OpenClaw still reads HEARTBEAT.md
    problem: str | None = None  # why the preferred mechanism is not in place
    hint: str | None = None

    def to_json(self) -> dict:
        return {"openclaw": self.openclaw, "mechanism": self.mechanism, "job_id": (self.job or {}).get("id"),
                "heartbeat_line": self.heartbeat_line, "heartbeat_read": self.heartbeat_read,
                "problem": self.problem, "hint": self.hint}


def heartbeat_line_present(ws) -> bool:
    from peersync.workspace.init import HEARTBEAT_MARK

    try:
        return HEARTBEAT_MARK in (ws.root / "HEARTBEAT.md").read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return False


def apply_auto(ws, enabled: bool, interval: int, timeout: float, *, claw: OpenClaw | None = None,
               add_line=None) -> Schedule:
    """Make the machine match the auto setting: with auto on, the cron command job where this
    OpenClaw has them and its Gateway answers, else — on an OpenClaw that still reads it — the
    HEARTBEAT.md line (`add_line(ws)` adds it); with auto off, no cron job.  Never raises for
    OpenClaw trouble: the Schedule says what is in place and why not more."""
    claw = claw or find()
    sched = Schedule(openclaw=claw.version_text if claw else None)
    if claw is None:
        sched.heartbeat_line = heartbeat_line_present(ws)
        if enabled and not sched.heartbeat_line:
            sched.hint = NO_OPENCLAW
        sched.mechanism = "heartbeat-md" if sched.heartbeat_line else None
        return sched
    sched.heartbeat_read = claw.reads_heartbeat_md
    cron = claw.has_command_cron()
    if cron:
        try:
            if enabled:
                sched.job = register_cron(claw, ws, interval, timeout)
                sched.mechanism = "cron"
            else:
                remove_cron(claw, ws)
        except OpenClawError as err:
            sched.problem, sched.hint = err.message, err.hint
    elif enabled:
        sched.problem = f"OpenClaw {claw.version_text} has no cron command jobs"
    if enabled and sched.mechanism is None and claw.reads_heartbeat_md and add_line is not None:
        add_line(ws)  # the fallback this release still reads
    sched.heartbeat_line = heartbeat_line_present(ws)
    if sched.mechanism is None and sched.heartbeat_line and sched.heartbeat_read:
        sched.mechanism = "heartbeat-md"
    return sched


def inspect_auto(ws, *, claw: OpenClaw | None = None) -> Schedule:
    """What drives auto-sync right now, changing nothing."""
    claw = claw or find()
    sched = Schedule(openclaw=claw.version_text if claw else None, heartbeat_line=heartbeat_line_present(ws))
    if claw is None:
        sched.mechanism = "heartbeat-md" if sched.heartbeat_line else None
        sched.hint = None if sched.heartbeat_line else NO_OPENCLAW
        return sched
    sched.heartbeat_read = claw.reads_heartbeat_md
    if claw.has_command_cron():
        try:
            sched.job = find_cron(claw, ws)
        except OpenClawError as err:
            sched.problem, sched.hint = err.message, err.hint
    if sched.job is not None and sched.job.get("enabled", True):
        sched.mechanism = "cron"
    elif sched.heartbeat_line and sched.heartbeat_read:
        sched.mechanism = "heartbeat-md"
    return sched


def schedule_lines(sched: Schedule, enabled: bool) -> list[str]:
    """The truth about the mechanism, in one to three chat lines."""
    lines = []
    if sched.mechanism == "cron":
        job = sched.job or {}
        every = ((job.get("schedule") or {}).get("everyMs") or 0) / 1000
        state = "" if job.get("enabled", True) else " (disabled in OpenClaw)"
        lines.append(f"⏱️ OpenClaw cron job runs `peersync heartbeat`{f' every {every:g} s' if every else ''}"
                     f", no LLM turn{state}" + ("" if enabled else " — idle while auto-sync is off"))
    elif sched.mechanism == "heartbeat-md":
        lines.append("💓 HEARTBEAT.md runs the heartbeat (one LLM turn per heartbeat)"
                     + (f" — OpenClaw {sched.openclaw}" if sched.openclaw else ""))
    if sched.heartbeat_line and sched.openclaw and not sched.heartbeat_read:
        lines.append(f"💡 OpenClaw {sched.openclaw} no longer reads HEARTBEAT.md: its peersync line does nothing "
                     "(openclaw doctor --fix moves it away)")
    elif sched.heartbeat_line and sched.mechanism == "cron":
        lines.append("💡 HEARTBEAT.md also runs it, an LLM turn each time: the line can go")
    if sched.problem:
        lines.append(f"⚠️ {sched.problem}" + (f" — {sched.hint}" if sched.hint else ""))
    elif enabled and sched.mechanism is None:
        lines.append("⚠️ Nothing runs auto-sync on this machine yet"
                     + (f": {sched.hint}" if sched.hint else ": start OpenClaw's Gateway, then run peersync auto on"))
    return lines
