"""`peersync init`: prepare a workspace in one step — state dir, commented config, heartbeat line, tool check."""

from __future__ import annotations

# Lazy imports: OpenClaw and YAML are needed only by the steps that use them.
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from peersync import __version__, install
from peersync.core.paths import STATE_DIR
from peersync.core.selection import DEFAULT_EXCLUDES
from peersync.workspace import auto
from peersync.workspace.storage import atomic_write_bytes
from peersync.workspace.workspace import DEFAULT_LOGS, DEFAULT_MERGE, Workspace

HEARTBEAT_MARK = "handler.sh heartbeat"  # how init recognises its line (HEARTBEAT.md is synced too)
# Machine-independent on purpose: HEARTBEAT.md is synced, and the skill's folder differs per machine.
# Only for OpenClaw before 2026.8 (and Clawdbot), whose heartbeat still reads HEARTBEAT.md; newer
# releases run `peersync heartbeat` as a cron command job instead (peersync.workspace.openclaw).  NO_REPLY is
# today's silent reply; HEARTBEAT_OK is what those older releases expect.
HEARTBEAT_LINE = ("- 🔄 peersync: run `handler.sh heartbeat $WORKSPACE` from the peersync skill's folder. "
                  "If it prints anything, tell the user; if it prints nothing, reply NO_REPLY "
                  "(HEARTBEAT_OK on older OpenClaw).")
MIN_RSYNC = (3, 0)
MIN_RESTIC = (0, 14)  # Debian 12's restic: the oldest the backups are written for

CONFIG_TEMPLATE = """\
# peersync settings for this workspace (written by `peersync init`; edit freely).
# The values shown are the defaults.  State files next to this one are peersync's own.

sync:
  # Also sync skills/.  IDENTITY.md and config/ are never synced: each instance keeps its own.
  skills: {skills}
  # Extra paths to sync besides memory/, MEMORY.md, USER.md and HEARTBEAT.md.
  include: {include}
  # gitignore-style patterns that are never synced.
  exclude: {exclude}
  # Log files: when both sides only appended, the lines of both are kept (append-merge).
  logs: {logs}
  # Memory files both machines may edit (gitignore-style patterns): merged three-way, line by line
  # (Markdown-aware) or, for .json, key by key.  Overlapping edits keep both versions live in the
  # file between marker lines; `peersync status` and `peersync conflicts list` name those files.
  merge: {merge}
  # Who wins a real conflict: newest, local, remote, skip or manual.  The loser is never
  # destroyed: it is kept in conflicts/ (peersync conflicts list).
  policy: {policy}
  # Days that files deleted by a sync stay in the trash before they are purged.
  trash_days: {trash_days}
  # Stop a sync that would delete more than this share of the files (override with --force).
  mass_delete: {mass_delete}
  # Seconds a peer's connection stays warm after a sync (a small `peersync keeper` process
  # holds it; the next sync then starts at once).  0: connect anew every time.
  keep_connection: {keep_connection}

auto:
  # Sync automatically (peersync auto on|off): an OpenClaw cron job runs `peersync heartbeat`.
  enabled: {enabled}
  # Seconds between heartbeat syncs (minimum 60).
  interval: {interval}
  # Seconds a heartbeat sync may take before it gives up (it never blocks the heartbeat longer).
  timeout: {timeout}
  # Also sync when an agent session starts or ends (heartbeat --reason session-start|session-end).
  on_session_start: {on_session_start}
  on_session_end: {on_session_end}
  # How often the heartbeat sums up routine syncs in chat: seconds (86400: once a day), 0 to tell
  # every sync, or never.  Conflicts, problems and a peer that stops answering are told at once.
  summary: {summary}

# Backups (peersync backup now): restic repositories reached through rclone, always encrypted.
# Uncomment and adjust to use them.
# backup:
#   # Any rclone remote; without one, backups go to a local directory outside the workspace.
#   target: r2:my-bucket/agent
#   # Without a passphrase here, the first backup generates one in
#   # memory/clawdbot-sync/backup/passphrase: keep a copy elsewhere, nothing restores without it.
#   passphrase: ${{PEERSYNC_BACKUP_PASSPHRASE}}
#   # Seconds between scheduled backups, taken by the heartbeat (unset: only `backup now`).
#   interval: 86400
#   # Retention: the last N snapshots, or rules like restic's forget.
#   keep: {{last: 7, daily: 14, weekly: 8, monthly: 12}}
"""


@dataclass
class Check:
    """One required or recommended tool."""

    name: str
    ok: bool
    version: str | None = None
    fix: str | None = None
    required: bool = True

    def to_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "version": self.version, "fix": self.fix,
                "required": self.required}


@dataclass
class InitResult:
    root: str
    config_written: bool
    heartbeat: str | None  # "added", "present", "retired" (this OpenClaw ignores it) or None (not asked)
    checks: list[Check] = field(default_factory=list)
    schedule: object = None  # peersync.workspace.openclaw.Schedule: what runs auto-sync here

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.required)

    def to_json(self) -> dict:
        return {"ok": self.ok, "root": self.root, "config_written": self.config_written,
                "heartbeat": self.heartbeat, "checks": [c.to_json() for c in self.checks],
                "schedule": self.schedule.to_json() if self.schedule is not None else None}


def render_config(raw: dict | None = None) -> str:
    """The commented config.yaml, with the values of `raw` (e.g. a clawdbot-sync config.json
    mapped by Workspace.raw_config) where it has them, and defaults elsewhere."""
    raw = raw or {}
    sync = raw.get("sync") if isinstance(raw.get("sync"), dict) else {}
    cfg = auto.parse_auto(raw.get("auto") if isinstance(raw.get("auto"), dict) else None)

    def value(v) -> str:
        return auto._scalar(v) if not isinstance(v, (list, tuple)) else json.dumps(list(v), ensure_ascii=False)

    return CONFIG_TEMPLATE.format(
        skills=value(bool(sync.get("skills", False))), include=value(sync.get("include", [])),
        exclude=value(sync.get("exclude", list(DEFAULT_EXCLUDES))), logs=value(sync.get("logs", list(DEFAULT_LOGS))),
        merge=value(sync.get("merge", list(DEFAULT_MERGE))),
        policy=sync.get("policy", "newest"), trash_days=value(sync.get("trash_days", 30)),
        mass_delete=value(sync.get("mass_delete", 0.5)),
        keep_connection=value(sync.get("keep_connection", 600)),
        enabled=value(cfg.enabled), interval=value(cfg.interval), timeout=value(cfg.timeout),
        on_session_start=value(cfg.on_session_start), on_session_end=value(cfg.on_session_end),
        summary=value(cfg.to_yaml_dict()["summary"])
    ) + _kept_section(raw.get("clawdbot"))


def _kept_section(kept) -> str:
    """clawdbot-sync config.json keys peersync has no use for, carried over unchanged."""
    if not isinstance(kept, dict) or not kept:
        return ""
    import yaml

    return ("\n# Other settings from clawdbot-sync's config.json, kept as they were.\n"
            + yaml.safe_dump({"clawdbot": kept}, sort_keys=False, allow_unicode=True, default_flow_style=False))


def add_heartbeat_line(ws: Workspace) -> str:
    """Append the heartbeat line to HEARTBEAT.md unless a line already runs the heartbeat."""
    path = ws.root / "HEARTBEAT.md"
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    if HEARTBEAT_MARK in text:
        return "present"
    sep = "" if not text or text.endswith("\n") else "\n"
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    atomic_write_bytes(path, (text + sep + HEARTBEAT_LINE + "\n").encode(), mode=mode)
    return "added"


def init_workspace(ws: Workspace, *, heartbeat: bool = False) -> InitResult:
    ws.ensure_state()
    ws.instance_id  # noqa: B018  (created on first use)
    written = False
    if not ws.config_file.exists():
        atomic_write_bytes(ws.config_file, render_config(ws.raw_config()).encode())
        written = True
    from peersync.workspace import openclaw

    claw = openclaw.find()
    retired = claw is not None and not claw.reads_heartbeat_md
    result = InitResult(root=str(ws.root), config_written=written,
                        heartbeat=None if not heartbeat else "retired" if retired else add_heartbeat_line(ws))
    # The cron job is set up whatever auto's setting (as the HEARTBEAT.md line was): a tick while
    # auto is off returns at once.  `auto off` removes it.
    cfg = auto.load_auto(ws)
    result.schedule = openclaw.apply_auto(ws, True, cfg.interval, cfg.timeout, claw=claw,
                                          add_line=add_heartbeat_line)
    result.checks = check_tools()
    return result


# -- tools ----------------------------------------------------------------------------------
def check_tools(which=shutil.which, run=None, platform: str = sys.platform) -> list[Check]:
    """ssh and rsync (required), and whether peers can start this peersync over SSH."""
    run = run or _version_output
    mac = platform == "darwin"
    checks = []
    if which("ssh"):
        out = run(["ssh", "-V"])
        m = re.search(r"OpenSSH_[\w.]+", out or "")
        checks.append(Check("ssh", True, m.group(0) if m else (out or "").strip()[:40] or "unknown version"))
    else:
        checks.append(Check("ssh", False, fix="install the OpenSSH client: " + (
            "it ships with macOS — check your PATH" if mac else "sudo apt-get install openssh-client")))
    if which("rsync"):
        out = run(["rsync", "--version"]) or ""
        m = re.search(r"version\s+v?(\d+)\.(\d+)(?:\.(\d+))?", out)
        if m:
            version = ".".join(g for g in m.groups() if g is not None)
            old = (int(m.group(1)), int(m.group(2))) < MIN_RSYNC
            checks.append(Check("rsync", True, version, required=True, fix=(
                f"rsync {version} is old; install a current one: brew install rsync" if old and mac else
                f"rsync {version} is old; upgrade it: sudo apt-get install rsync" if old else None)))
        else:  # openrsync (macOS 15+) and others answer differently
            checks.append(Check("rsync", True, (out.splitlines() or ["unknown version"])[0][:40],
                                fix="for delta transfers install GNU rsync: brew install rsync" if mac else None))
    else:
        checks.append(Check("rsync", False, fix="install rsync: " + (
            "brew install rsync" if mac else "sudo apt-get install rsync")))
    install_restic = "brew install restic" if mac else "sudo apt install restic"
    if which("restic"):
        out = run(["restic", "version"]) or ""
        m = re.search(r"restic (\d+)\.(\d+)(?:\.(\d+))?", out)
        version = ".".join(g for g in m.groups() if g is not None) if m else "unknown version"
        old = m is None or (int(m.group(1)), int(m.group(2))) < MIN_RESTIC
        checks.append(Check("restic", not old, version, required=False, fix=(
            f"restic {version} is too old for backups (needs {MIN_RESTIC[0]}.{MIN_RESTIC[1]}): {install_restic}"
            if old else None)))
    else:
        checks.append(Check("restic", False, required=False,
                            fix=f"backups (peersync backup) need restic: {install_restic}"))
    on_path = which("peersync")
    checks.append(Check("peersync", True, __version__, required=False, fix=None if on_path else (
        f"peers run `peersync agent` here over SSH, and `peersync` is not on PATH: {install.local_hint()}; "
        f"or give peers the full command with `peers set NAME --remote-command '{sys.executable} -P -m peersync'`")))
    return checks


def _version_output(cmd: list[str]) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (proc.stdout + proc.stderr).strip()


def init_text(result: InitResult, source: str | None = None) -> str:
    chosen = f", from {source}" if source else ""
    lines = [f"✅ Workspace ready: {result.root} (state in {STATE_DIR}/{chosen})"]
    lines.append(f"📝 Wrote {STATE_DIR}/config.yaml with commented defaults" if result.config_written
                 else f"📝 {STATE_DIR}/config.yaml already exists — left as it was")
    if result.heartbeat == "added":
        lines.append("💓 Added the peersync line to HEARTBEAT.md")
    elif result.heartbeat == "present":
        lines.append("💓 HEARTBEAT.md already runs the peersync heartbeat")
    elif result.heartbeat == "retired":
        lines.append("💓 HEARTBEAT.md left alone: this OpenClaw no longer reads it")
    if result.schedule is not None:
        from peersync.workspace.openclaw import schedule_lines

        lines += schedule_lines(result.schedule, True)
    lines.append(" · ".join(f"{'✅' if c.ok else '❌'} {c.name} {c.version or 'missing'}" for c in result.checks))
    for c in result.checks:
        if c.fix:
            lines.append(f"{'⚠️' if c.ok or not c.required else '❌'} {c.name}: {c.fix}")
    lines.append("Next: peersync peers add NAME HOST --path P (or peersync discover --add), "
                 "then peersync auto on")
    return "\n".join(lines)
