"""The dashboard's settings (config.yaml `dashboard:`) and where its page goes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peersync.core.paths import STATE_DIR
from peersync.errors import ConfigError
from peersync.workspace.workspace import Workspace

DEFAULT_OUT = f"{STATE_DIR}/dashboard.html"
SEED_OUT = "memory/sync-dashboard.html"  # the name the session-sync-cloud design uses


@dataclass(frozen=True)
class Settings:
    """config.yaml's `dashboard:` section."""

    refresh: bool = False  # rewrite the static page after each heartbeat / watch sync
    out: str = DEFAULT_OUT  # workspace-relative (or absolute) path of the static page


def settings(ws: Workspace) -> Settings:
    raw = ws.raw_config().get("dashboard")
    if raw is None:
        return Settings()
    where = f"{ws.config_file}: dashboard"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping", "Fix the file (it was not changed).")
    unknown = sorted(set(map(str, raw)) - {"refresh", "out"})
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}", "Known: out, refresh.")
    if not isinstance(raw.get("refresh", False), bool):
        raise ConfigError(f"{where}.refresh must be true or false", "Fix the file (it was not changed).")
    out = raw.get("out", DEFAULT_OUT)
    if not isinstance(out, str) or not out.strip():
        raise ConfigError(f"{where}.out must be a file path", "Fix the file (it was not changed).")
    return Settings(refresh=raw.get("refresh", False), out=out)


def out_path(ws: Workspace, out: str | None = None) -> Path:
    """Where the static page goes: `out` (a relative path is taken from the workspace root),
    else dashboard.out, else DEFAULT_OUT."""
    target = Path(out or settings(ws).out).expanduser()
    return target if target.is_absolute() else ws.root / target


def leaves_machine(ws: Workspace, path: Path) -> bool:
    """True when `path` is inside the synced selection: peers receive it (SEED_OUT is, unless
    excluded), so such a page must not carry file contents."""
    try:
        rel = path.resolve().relative_to(ws.root.resolve()).as_posix()
    except ValueError:
        return False
    return ws.sync_config().selection.contains(rel)
