"""Auto-sync settings (config.yaml `auto:`) and the heartbeat's memory of past ticks (auto-state.json)."""

from __future__ import annotations

# Lazy imports: this module is on the heartbeat's fast path; OpenClaw and init load only for `auto on|off`.
import json
import os
import re
from collections import namedtuple
from pathlib import Path

from peersync.core.paths import STATE_DIR
from peersync.errors import ConfigError

# This module sits on the heartbeat's fast path (a not-due tick must return in well under
# 150 ms from process start): nothing heavy at import time — no typer, asyncssh, pathspec.

MIN_INTERVAL = 60  # seconds; as in openclaw-workspace-sync
DEFAULT_INTERVAL = 300
DEFAULT_TIMEOUT = 60
MIN_TIMEOUT = 5
SLACK = 5.0  # seconds (see is_due)
MAX_BACKOFF = 3600  # a peer that is down is retried at least hourly (or every interval, if longer)
STATE_FILE = "auto-state.json"
STATE_FORMAT = 1  # bump me when auto-state.json changes shape (old files are then ignored)
REASONS = ("interval", "session-start", "session-end")
DEFAULT_SUMMARY = 86400  # routine syncs are summed up in chat at most once a day (daemons/digest.py)


class AutoConfig(namedtuple("AutoConfig", "enabled interval timeout on_session_start on_session_end summary",
                            defaults=(False, DEFAULT_INTERVAL, DEFAULT_TIMEOUT, False, False, DEFAULT_SUMMARY))):
    """The `auto:` section of config.yaml: enabled, interval (s), timeout (s), on_session_start,
    on_session_end, and summary (seconds between digests of routine syncs; 0: each; None: never).
    A named tuple, not a dataclass: dataclasses costs the heartbeat's not-due path ~10 ms."""

    __slots__ = ()

    def to_yaml_dict(self) -> dict:
        out = self._asdict()
        out["summary"] = "never" if self.summary is None else self.summary
        return out


def parse_summary(value, where: str = "config.yaml") -> int | None:
    """auto.summary: seconds (0: tell every routine sync), or `never` (None)."""
    if value is None or value == "never" or value is False:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{where}: auto.summary must be a number of seconds (0: every sync) or never",
                          "Fix the value (nothing was changed).")
    return int(value)


# -- pure core ------------------------------------------------------------------------------
def parse_auto(raw, where: str = "config.yaml") -> AutoConfig:
    """Validate the `auto:` section.  Too small an interval or timeout is raised to the minimum
    (a heartbeat that failed on every tick would be worse than a clamped value)."""
    if raw is None:
        return AutoConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'auto' must be a mapping", "Fix the file (it was not changed).")
    for key in ("enabled", "on_session_start", "on_session_end"):
        if key in raw and not isinstance(raw[key], bool):
            raise ConfigError(f"{where}: auto.{key} must be true or false", "Fix the file (it was not changed).")
    for key in ("interval", "timeout"):
        value = raw.get(key)
        if key in raw and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{where}: auto.{key} must be a number of seconds", "Fix the file (it was not changed).")
    return AutoConfig(
        enabled=raw.get("enabled", False),
        interval=max(MIN_INTERVAL, int(raw.get("interval", DEFAULT_INTERVAL))),
        timeout=max(MIN_TIMEOUT, float(raw.get("timeout", DEFAULT_TIMEOUT))),
        on_session_start=raw.get("on_session_start", False),
        on_session_end=raw.get("on_session_end", False),
        summary=parse_summary(raw["summary"], where) if "summary" in raw else DEFAULT_SUMMARY,
    )


def forced_by(cfg: AutoConfig, reason: str | None) -> bool:
    """A session hook forces a tick when the config turns that hook on (independently of `enabled`)."""
    return (reason == "session-start" and cfg.on_session_start) or (reason == "session-end" and cfg.on_session_end)


def is_due(cfg: AutoConfig, last_run: float | None, reason: str | None, now: float) -> bool:
    """Should this heartbeat sync?  A last run in the future (clock set back) counts as due.
    A tick up to SLACK early counts as on time: a cron job that fires every `interval` seconds
    must not skip every other run because it fired a hair before the interval was up."""
    if forced_by(cfg, reason):
        return True
    if not cfg.enabled:
        return False
    return last_run is None or not 0 <= now - last_run < cfg.interval - SLACK


def backoff_seconds(failures: int, base: float, cap: float) -> float:
    """Wait before the next try of a peer after `failures` failures in a row: base, 2·base, 4·base… ≤ cap."""
    if failures <= 0:
        return 0.0
    return min(base * 2 ** min(failures - 1, 30), max(cap, base))


def peers_to_try(names: list[str], peer_state: dict, now: float) -> tuple[list[str], list[str]]:
    """Split peers into (try now, still backing off)."""
    ready, waiting = [], []
    for name in names:
        retry_at = (peer_state.get(name) or {}).get("retry_at")
        (waiting if isinstance(retry_at, (int, float)) and retry_at > now else ready).append(name)
    return ready, waiting


def peer_busy(report) -> bool:
    """The run only found the peer syncing with someone else: not a failure."""
    return report.error_kind == "busy"


def record_results(peer_state: dict, results: dict[str, str | None], now: float, *, base: float,
                   cap: float) -> tuple[dict, list[str]]:
    """New per-peer state after a tick: a success clears a peer's record, a failure extends its
    backoff.  Returns (state, peers whose failure streak just began — the ones worth telling about)."""
    out = {name: dict(rec) for name, rec in peer_state.items() if isinstance(rec, dict)}
    new_failures = []
    for name, error in results.items():
        if error is None:
            out.pop(name, None)
            continue
        failures = int(out.get(name, {}).get("failures", 0)) + 1
        if failures == 1:
            new_failures.append(name)
        out[name] = {"failures": failures, "retry_at": now + backoff_seconds(failures, base, cap),
                     "since": out.get(name, {}).get("since", now), "error": error.splitlines()[0][:300]}
    return out, new_failures


# -- files ----------------------------------------------------------------------------------
def state_dir(root) -> str:
    return os.path.join(os.fspath(root), STATE_DIR)


def read_state(state: str | os.PathLike) -> dict:
    """auto-state.json; a missing, corrupt or foreign-format file reads as a fresh start."""
    try:
        with open(os.path.join(state, STATE_FILE), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return {"format": STATE_FORMAT, "peers": {}}
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        return {"format": STATE_FORMAT, "peers": {}}
    if not isinstance(data.get("peers"), dict):
        data["peers"] = {}
    return data


def write_state(state, data: dict) -> None:
    from peersync.workspace.storage import atomic_write_json  # lazy: start-up (a not-due heartbeat writes nothing)

    atomic_write_json(Path(state) / STATE_FILE, {**data, "format": STATE_FORMAT})


def raw_config_fast(root) -> dict | None:
    """config.yaml as a dict without importing the Workspace stack; None when only a legacy
    clawdbot-sync config.json exists (the caller then asks Workspace.raw_config, which maps it)."""
    state = state_dir(root)
    path = os.path.join(state, "config.yaml")
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return None if os.path.exists(os.path.join(state, "config.json")) else {}
    import yaml  # lazy: a heartbeat that is not due must not pay for it

    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except yaml.YAMLError:
        return None  # let Workspace.raw_config report it properly
    return data if isinstance(data, dict) else None


def load_auto(ws) -> AutoConfig:
    return parse_auto(ws.raw_config().get("auto"), str(ws.config_file))


def set_auto(ws, **changes) -> AutoConfig:
    """Change keys of the `auto:` section of config.yaml and leave everything else — other
    sections, comments, unknown keys — as it was.  The file is replaced atomically."""
    import yaml  # lazy: a heartbeat that is not due must not pay for it


    unknown = set(changes) - set(AutoConfig._fields)
    if unknown:
        raise ValueError(f"unknown auto settings: {sorted(unknown)}")
    ws.ensure_state()
    if ws.config_file.exists():
        text = ws.config_file.read_text()
        data = ws.raw_config()  # validates; a malformed file stops here, untouched
    else:
        text, data = "", ws.raw_config()  # a clawdbot-sync config.json is carried over
    section = data.get("auto")
    if section is not None and not isinstance(section, dict):
        raise ConfigError(f"{ws.config_file}: 'auto' must be a mapping", "Fix the file (it was not changed).")
    wanted = {**data, "auto": {**(section or {}), **changes}}
    cfg = parse_auto(wanted["auto"], str(ws.config_file))
    new_text = edit_section(text, "auto", changes) if text else None
    if new_text is None or _safe_load(new_text) != wanted:
        # The text edit could not be proven right (flow style, odd indentation…): write the
        # settings out plainly rather than risk a wrong file.  Comments are lost in this case only.
        new_text = yaml.safe_dump(wanted, sort_keys=False, allow_unicode=True, default_flow_style=False)
    from peersync.workspace.storage import atomic_write_bytes  # lazy: start-up (see write_state)

    atomic_write_bytes(ws.config_file, new_text.encode())
    return cfg


def _safe_load(text: str):
    import yaml  # lazy: a heartbeat that is not due must not pay for it

    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return None


_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:(.*)$")


def edit_section(text: str, section: str, values: dict) -> str | None:
    """Set `section.key: value` for each item by editing lines in place, keeping comments.

    Returns None when the section has a shape this line editor does not handle; the caller
    checks the result by parsing it anyway."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = None
    for i, line in enumerate(lines):
        m = _TOP_KEY.match(line)
        if m and m.group(1) == section:
            rest = m.group(2).split("#", 1)[0].strip()
            if rest:
                return None  # `auto: {...}` flow style
            start = i
            break
    if start is None:
        block = [f"{section}:\n"] + [f"  {k}: {_scalar(v)}\n" for k, v in values.items()]
        sep = [] if not lines or lines[-1].strip() == "" else ["\n"]
        return "".join(lines + sep + block)
    end = start + 1
    while end < len(lines) and (lines[end].strip() == "" or lines[end][:1] in (" ", "\t", "#")):
        end += 1
    # Blank lines and column-0 comments after the block belong to what follows it.
    while end > start + 1 and lines[end - 1][:1] not in (" ", "\t"):
        end -= 1
    body = lines[start + 1:end]
    indents = {len(l) - len(l.lstrip(" ")) for l in body if l.strip() and not l.lstrip().startswith("#")}
    if len(indents) > 1 or any("\t" in l[:len(l) - len(l.lstrip())] for l in body):
        return None  # nested values or tabs: leave it to the plain writer
    indent = " " * (indents.pop() if indents else 2)
    for key, value in values.items():
        pattern = re.compile(rf"^{indent}{re.escape(key)}\s*:(\s*)([^#\n]*?)(\s*#.*)?\n$")
        for j in range(start + 1, end):
            m = pattern.match(lines[j])
            if m:
                lines[j] = f"{indent}{key}: {_scalar(value)}{m.group(3) or ''}\n"
                break
        else:
            last = max((j for j in range(start + 1, end) if lines[j].strip()), default=start)
            lines.insert(last + 1, f"{indent}{key}: {_scalar(value)}\n")
            end += 1
    return "".join(lines)


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value) if isinstance(value, str) else str(value)


def switch(ws, **changes):
    """`auto on|off|--interval…`: change config.yaml, then make this machine match it — the
    OpenClaw cron job (or, on an OpenClaw that still reads it, the HEARTBEAT.md line) — and keep
    a clawdbot-sync config.json's autoSync in step.  Returns (AutoConfig, openclaw.Schedule or
    None when nothing that drives auto-sync changed)."""
    from peersync.workspace import openclaw
    from peersync.workspace.clawdbot import sync_config_json
    from peersync.workspace.init import add_heartbeat_line

    cfg = set_auto(ws, **changes)
    sync_config_json(ws, cfg.enabled)
    if not {"enabled", "interval", "timeout"} & set(changes):
        return cfg, None
    return cfg, openclaw.apply_auto(ws, cfg.enabled, cfg.interval, cfg.timeout, add_line=add_heartbeat_line)
