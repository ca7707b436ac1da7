"""config.yaml's `backup:` section, the passphrase (configured or generated), and where the repository lives."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from peersync.backup.restic import WrongPassphrase
from peersync.errors import BackupError, ConfigError, UsageError
from peersync.transport.rclone import Rclone, RcloneError, Target, join, resolve_target
from peersync.core.retention import KeepPolicy
from peersync.workspace.storage import atomic_write_bytes, atomic_write_json, ensure_private_dir, read_json
from peersync.workspace.workspace import Workspace

PASSPHRASE_ENV = "PEERSYNC_BACKUP_PASSPHRASE"
TARGET_REMOTE = "peersync_target"  # the env-defined rclone remote of a connection-string target
LEGACY_MARKER = "peersync-backup.json"  # the root file of an old-format (peersync 0.x) repository
LEGACY_SUBDIR = "restic"  # beside an old-format repository, the restic one lives here
KNOWN = ("target", "passphrase", "interval", "keep", "include_state", "include_openclaw",
         "openclaw_dir")  # openclaw_dir: read by peersync 0.x only; accepted so old configs still load


def backup_dir(ws: Workspace) -> Path:
    """peersync's own backup files in the state dir (never backed up, never synced)."""
    return ensure_private_dir(ws.state / "backup")


# -- config.yaml ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BackupConfig:
    """config.yaml's `backup:` section, `${VAR}` references expanded."""

    target: str | None = None
    passphrase: str | None = field(default=None, repr=False)
    passphrase_source: str | None = None  # "env PEERSYNC_BACKUP_PASSPHRASE", "config ${VAR}", "config"
    interval: int | None = None  # seconds between scheduled backups; None = not scheduled
    keep: KeepPolicy | None = None
    include_state: bool = False
    include_openclaw: bool | None = None  # None: when this workspace is an OpenClaw agent's (backup/openclaw.py)


def load_config(ws: Workspace, env: Mapping[str, str] | None = None) -> BackupConfig:
    env = os.environ if env is None else env
    raw = ws.raw_config().get("backup") or {}
    where = f"{ws.config_file}: backup"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = sorted(set(map(str, raw)) - set(KNOWN))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}", f"Known: {', '.join(sorted(KNOWN))}.")

    def text(key: str) -> str | None:
        value = raw.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{where}.{key} must be a string")
        return expand_vars(value, env, f"{where}.{key}")

    source = None
    passphrase = env.get(PASSPHRASE_ENV)
    if passphrase:
        source = f"environment variable {PASSPHRASE_ENV}"
    else:
        passphrase = text("passphrase")
        if passphrase:
            refs = re.findall(r"\$\{(\w+)\}", str(raw.get("passphrase")))
            source = f"environment variable {refs[0]} (backup.passphrase)" if refs else "config.yaml (backup.passphrase)"
    interval = raw.get("interval")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int) or interval < 0):
        raise ConfigError(f"{where}.interval must be a number of seconds (0 = not scheduled)")
    keep = None
    if raw.get("keep") is not None:
        try:
            keep = KeepPolicy.from_config(raw["keep"])
        except ValueError as err:
            raise ConfigError(f"{where}.{err}" if str(err).startswith("keep") else f"{where}.keep: {err}") from None
    include_openclaw = raw.get("include_openclaw")
    if include_openclaw == "auto":
        include_openclaw = None
    if include_openclaw is not None and not isinstance(include_openclaw, bool):
        raise ConfigError(f"{where}.include_openclaw must be true, false or auto")
    return BackupConfig(
        target=text("target"), passphrase=passphrase, passphrase_source=source, interval=interval or None,
        keep=keep, include_state=bool(raw.get("include_state", False)),
        include_openclaw=include_openclaw,
    )


def expand_vars(value: str, env: Mapping[str, str], where: str) -> str:
    """Replace `${VAR}` with the environment's value; an unset VAR is a ConfigError naming it."""

    def one(match: re.Match) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(f"{where} refers to ${{{name}}}, which is not set in the environment",
                              f"Export {name} before running peersync.")
        return env[name]

    return re.sub(r"\$\{(\w+)\}", one, value)


# -- the passphrase ---------------------------------------------------------------------------------

def passphrase_file(ws: Workspace) -> Path:
    return ws.state / "backup" / "passphrase"


def _notice_file(ws: Workspace) -> Path:
    return ws.state / "backup" / "passphrase.notice"


@dataclass(frozen=True)
class Passphrase:
    """Where the repository's passphrase comes from, and how restic gets it (never argv)."""

    source: str  # "file", or a description of the variable / setting
    path: Path | None = None  # the generated file, when source == "file"
    value: str | None = field(default=None, repr=False)

    def restic_env(self) -> dict[str, str]:
        if self.path is not None:
            return {"RESTIC_PASSWORD_FILE": str(self.path)}
        return {"RESTIC_PASSWORD": self.value or ""}

    def describe(self) -> dict:
        return {"source": "file" if self.path else "environment" if "environment" in self.source else "config",
                "where": str(self.path) if self.path else self.source}


def configured_passphrase(ws: Workspace, cfg: BackupConfig) -> Passphrase | None:
    """The passphrase from the environment or config.yaml, else the generated file, else None."""
    if cfg.passphrase:
        return Passphrase(cfg.passphrase_source or "config", value=cfg.passphrase)
    path = passphrase_file(ws)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        raise BackupError(f"{path} is not a passphrase file", "Restore it from your copy, or set "
                          f"{PASSPHRASE_ENV}.")
    if st.st_mode & 0o077:
        os.chmod(path, 0o600)  # a private secret, whatever copied it here
    return Passphrase("file", path=path)


def generate_passphrase(ws: Workspace) -> Passphrase:
    """A new random passphrase stored 0600 in the state dir, with a notice still to be shown."""
    path = passphrase_file(ws)
    backup_dir(ws)
    value = secrets.token_urlsafe(32)
    atomic_write_bytes(path, (value + "\n").encode(), mode=0o600)
    atomic_write_bytes(_notice_file(ws), b"", mode=0o600)
    return Passphrase("file", path=path)


def passphrase_notice(ws: Workspace, *, consume: bool = True) -> str | None:
    """The one-time message about a generated passphrase, while it has not been shown."""
    notice = _notice_file(ws)
    if not notice.exists():
        return None
    if consume:
        with contextlib.suppress(OSError):
            notice.unlink()
    return (f"🔑 Backups are encrypted with a passphrase peersync generated and saved in {passphrase_file(ws)} "
            "(readable only by you). Keep a copy somewhere else too (a password manager): without it, "
            "these backups cannot be restored on another machine or after losing this one.")


def missing_passphrase(display: str) -> UsageError:
    return WrongPassphrase(f"the backups at {display} are encrypted and no passphrase is set",
                           f"Set {PASSPHRASE_ENV} (or backup.passphrase: ${{VAR}} in config.yaml) to the "
                           "passphrase of these backups.")


# -- where the repository lives ---------------------------------------------------------------------

def default_target(ws: Workspace, env: Mapping[str, str] | None = None) -> Path:
    """Where backups go with no configuration: outside the workspace, per instance."""
    env = os.environ if env is None else env
    data = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "peersync" / "backups" / ws.instance_id


def resolve(ws: Workspace, cfg: BackupConfig, target: str | None) -> Target:
    spec = target if target is not None else cfg.target
    if spec:
        resolved = resolve_target(expand_vars(spec, os.environ, "--target" if target else "backup.target"),
                                  env_name=TARGET_REMOTE)
    else:
        path = default_target(ws)
        resolved = Target(remote=str(path), display=str(path))
    local = resolved.local_path
    if local is not None:
        local = local.resolve()
        if local == ws.root.resolve() or ws.root.resolve() in local.parents:
            raise UsageError(f"backup target {local} is inside the workspace",
                             "Choose a target outside the workspace (a backup must not back itself up).")
    return resolved


@dataclass(frozen=True)
class Location:
    """A target and where in it the restic repository is."""

    target: Target
    remote: str  # the restic repository's rclone remote (the target, or <target>/restic beside old backups)
    layout: str  # "restic" (a repository is there), "legacy" (old-format backups, maybe a repository
                 # beside them), "empty" (nothing yet), "foreign" (other files: not ours)
    has_repository: bool

    @property
    def display(self) -> str:
        return self.target.display if self.remote == self.target.remote else join(self.target.display, LEGACY_SUBDIR)


def _layouts_file(ws: Workspace) -> Path:
    return ws.state / "backup" / "targets.json"


def locate(ws: Workspace, rclone: Rclone, target: Target, *, fresh: bool = False) -> Location:
    """Look at the target (one listing) to see whether a repository, old-format backups or other
    files are there.  A target once seen holding a repository is remembered in the state dir,
    so later runs skip the listing (`fresh` looks again)."""
    remembered = {} if fresh else _remembered(ws)
    if remembered.get(target.display) == "restic":
        return Location(target, target.remote, "restic", True)
    if remembered.get(target.display) == "legacy+restic":
        return Location(target, join(target.remote, LEGACY_SUBDIR), "legacy", True)
    rclone.check_remote(target)
    try:
        names = set(rclone.lsf(target.remote, missing_ok=True))
    except RcloneError as err:
        reason = err.message.split(": ", 1)[-1]
        raise type(err)(f"cannot open backups at {target.display}: {reason}", err.hint,
                        stderr=err.stderr, returncode=err.returncode) from None
    if LEGACY_MARKER in names:
        inner = join(target.remote, LEGACY_SUBDIR)
        has = LEGACY_SUBDIR + "/" in names and "config" in rclone.lsf(inner, missing_ok=True)
        if has:
            remember(ws, target, "legacy+restic")
        return Location(target, inner, "legacy", has)
    if "config" in names and {"keys/", "data/"} & names:
        remember(ws, target, "restic")
        return Location(target, target.remote, "restic", True)
    return Location(target, target.remote, "foreign" if names else "empty", False)


def _remembered(ws: Workspace) -> dict:
    try:
        doc = read_json(_layouts_file(ws), default={}) or {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def remember(ws: Workspace, target: Target, layout: str | None) -> None:
    doc = _remembered(ws)
    if layout is None:
        doc.pop(target.display, None)
    else:
        doc[target.display] = layout
    with contextlib.suppress(OSError):
        backup_dir(ws)
        atomic_write_json(_layouts_file(ws), doc)


def tighten_local(path: Path) -> None:
    """A local target is private: directories 0700, files 0600 (older peersync left 0755/0644)."""
    try:
        if path.stat().st_mode & 0o077 == 0:
            return
    except FileNotFoundError:
        return
    for top, dirs, files in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(top, 0o700)
        for name in files:
            with contextlib.suppress(OSError):
                full = os.path.join(top, name)
                if not os.path.islink(full):
                    os.chmod(full, 0o600)
