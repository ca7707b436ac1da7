"""A workspace and its state dir: config, peers.json, history, instance id."""

from __future__ import annotations

# Lazy imports: the agent never needs yaml or the clawdbot-sync formats, so they load on use.
import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from peersync.core.paths import STATE_DIR
from peersync.core.selection import DEFAULT_EXCLUDES, Selection
from peersync.core.types import Policy
from peersync.errors import ConfigError, UnknownPeer
from peersync.workspace.locate import check, locate
from peersync.workspace.peer import Peer
from peersync.workspace.storage import (
    atomic_write_bytes,
    atomic_write_json,
    ensure_private_dir,
    file_identity,
    read_json,
)

HISTORY_LIMIT = 1000  # syncs remembered: history.json's recent ones plus the archive's older ones
# history.json holds the newest HISTORY_RECENT to 2 × HISTORY_RECENT syncs (what clawdbot-sync and
# `status` read); older ones move to history-archive.jsonl in batches, so a sync rewrites a short
# file (1000 entries rewritten per sync cost ~5 ms) and the archive changes once per batch.
HISTORY_RECENT = 50
DEFAULT_LOGS = ("*.jsonl", "*.log", "memory/[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9].md")
# Files a sync merges three-way (gitignore-style patterns; see peersync.mergefile).
DEFAULT_MERGE = ("MEMORY.md", "USER.md", "HEARTBEAT.md", "memory/**/*.md", "memory/**/*.json")


@dataclass(frozen=True)
class SyncConfig:
    selection: Selection
    logs: tuple[str, ...] = DEFAULT_LOGS
    merge: tuple[str, ...] = DEFAULT_MERGE
    policy: Policy = Policy.NEWEST
    trash_days: int = 30
    mass_delete_ratio: float = 0.5
    keep_connection: float = 600.0  # seconds a peer's connection stays warm after a sync (keeper.py)

    @functools.cached_property
    def rules(self):
        """Which files merge, and how (peersync.core.mergefile.MergeRules), built once per config."""
        from peersync.core.mergefile import MergeRules  # deferred: the agent never merges

        return MergeRules(self.logs, self.merge)


class Workspace:
    """The workspace root and everything peersync keeps in its state dir."""

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().absolute()
        self.state = self.root / STATE_DIR
        self.source: str | None = None  # where resolve() found it (-w, $WORKSPACE, the current directory)

    @classmethod
    def resolve(cls, option: str | None, *, init: bool = False) -> "Workspace":
        """The workspace a command works on (workspace/locate.py says how it is chosen and which
        directories are refused)."""
        found = locate(option)
        ws = cls(check(found, init=init))
        ws.source = found.source
        return ws

    # -- paths --------------------------------------------------------------------------
    @property
    def peers_file(self) -> Path:
        return self.state / "peers.json"

    @property
    def history_file(self) -> Path:
        return self.state / "history.json"

    @property
    def history_archive(self) -> Path:
        return self.state / "history-archive.jsonl"

    @property
    def config_file(self) -> Path:
        return self.state / "config.yaml"

    def ensure_state(self) -> Path:
        return ensure_private_dir(self.state)

    def _checked_state(self) -> None:
        """Before anything is read from the state dir: it must be ours (a link, or a directory
        another user put there, could feed us peers and settings — StateDirError)."""
        if os.path.lexists(self.state):
            ensure_private_dir(self.state)

    # -- instance id ----------------------------------------------------------------------
    def existing_instance_id(self) -> str | None:
        """The instance id if one was made already (reading never writes)."""
        self._checked_state()
        try:
            return (self.state / "instance-id").read_text().strip() or None
        except (FileNotFoundError, NotADirectoryError):
            return None

    @property
    def instance_id(self) -> str:
        value = self.existing_instance_id()
        if value:
            return value
        path = self.state / "instance-id"
        self.ensure_state()
        import uuid  # lazy: once per workspace; it loads `platform` (~3 ms of every agent's start)

        value = uuid.uuid4().hex
        atomic_write_bytes(path, (value + "\n").encode())
        return value

    # -- config ---------------------------------------------------------------------------
    def raw_config(self) -> dict:
        """config.yaml as a dict ({} when absent); a clawdbot-sync config.json is read instead
        when no config.yaml exists.  Malformed files raise ConfigError (exit 2)."""
        self._checked_state()
        if self.config_file.exists():
            import yaml  # deferred: the agent never needs it

            try:
                data = yaml.safe_load(self.config_file.read_text()) or {}
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)
                where = f" line {mark.line + 1}" if mark else ""
                raise ConfigError(f"{self.config_file}:{where} is not valid YAML "
                                  f"({getattr(err, 'problem', None) or 'syntax error'})",
                                  "Fix the file (it was not changed).") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{self.config_file} must hold a mapping of settings",
                                  "Fix the file (it was not changed).")
            return data
        legacy = self.state / "config.json"
        if legacy.exists():
            return _from_clawdbot_config(_load_json_file(legacy))
        return {}

    def sync_config(self) -> SyncConfig:
        raw = self.raw_config()
        sync = raw.get("sync") or {}
        if not isinstance(sync, dict):
            raise ConfigError(f"{self.config_file}: 'sync' must be a mapping")
        try:
            policy = Policy(sync.get("policy", "newest"))
        except ValueError:
            raise ConfigError(f"{self.config_file}: unknown sync.policy {sync.get('policy')!r}",
                              "Use one of: newest, local, remote, skip, manual.") from None
        exclude = sync.get("exclude", list(DEFAULT_EXCLUDES))
        include = sync.get("include", [])
        logs = sync.get("logs", list(DEFAULT_LOGS))
        merge = sync.get("merge", list(DEFAULT_MERGE))
        for key, value in (("exclude", exclude), ("include", include), ("logs", logs), ("merge", merge)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{self.config_file}: sync.{key} must be a list of strings")
        return SyncConfig(
            selection=Selection.from_options(skills=bool(sync.get("skills", False)),
                                             include=include, exclude=exclude),
            logs=tuple(logs),
            merge=tuple(merge),
            policy=policy,
            trash_days=int(sync.get("trash_days", 30)),
            mass_delete_ratio=float(sync.get("mass_delete", 0.5)),
            keep_connection=_seconds(self.config_file, sync, "keep_connection", 600.0),
        )

    # -- peers ----------------------------------------------------------------------------
    def load_peers(self) -> dict[str, Peer]:
        self._checked_state()
        data = _load_json_file(self.peers_file, default={"peers": {}})
        peers = data.get("peers") if isinstance(data, dict) else None
        if not isinstance(peers, dict):
            raise ConfigError(f"{self.peers_file}: expected {{\"peers\": {{NAME: {{...}}}}}}",
                              "Fix the file (it was not changed).")
        try:
            return {name: Peer.from_json(name, raw) for name, raw in peers.items()}
        except ValueError as err:
            raise ConfigError(f"{self.peers_file}: {err}", "Fix the file (it was not changed).") from None

    def peer(self, name: str) -> Peer:
        peers = self.load_peers()
        if name not in peers:
            known = ", ".join(sorted(peers)) or "none configured"
            raise UnknownPeer(f"unknown peer {name!r} in workspace {self.root} (known: {known})",
                              "Add it with: peersync peers add NAME HOST --path P (or use -w for another workspace)")
        return peers[name]

    def save_peers(self, peers: dict[str, Peer]) -> None:
        self.ensure_state()
        data = _load_json_file(self.peers_file, default={}) if self.peers_file.exists() else {}
        data = data if isinstance(data, dict) else {}
        data["peers"] = {name: peers[name].to_json() for name in sorted(peers)}
        atomic_write_json(self.peers_file, data)

    # -- history --------------------------------------------------------------------------
    def history(self, limit: int | None = None) -> list[dict]:
        """The history, newest first: the newest `limit` syncs (HISTORY_LIMIT when not given), from
        history.json's recent syncs, then the archive's older ones when more are asked for.  Callers do not modify what they get."""
        recent = self._recent_history()
        if limit is not None and limit <= len(recent):
            return recent[:limit]
        older, _ = self.older_history(recent)
        entries = recent + older if older else recent
        return entries[:HISTORY_LIMIT if limit is None else min(limit, HISTORY_LIMIT)]

    def _recent_history(self) -> list:
        """history.json's entries, newest first ([] when it is damaged: the next sync starts it
        again)."""
        return _parsed(self.history_file, _read_recent)

    def older_history(self, recent: list) -> tuple[list, int]:
        """The archive's entries, newest first, without those `recent` (history.json's) still holds
        (a spill cut short between its two writes), and how many of its lines are damaged."""
        lines, entries, damaged = self._archive_lines()
        if not lines:
            return [], damaged
        held = {_history_line(e) for e in recent if isinstance(e, dict)}
        return [e for line, e in zip(reversed(lines), reversed(entries)) if line not in held], damaged

    def _archive_lines(self) -> tuple[list, list, int]:
        """The archive's (lines, entries) oldest first, and how many lines were damaged."""
        return _parsed(self.history_archive, _read_archive)

    def record(self, entry: dict) -> None:
        """Prepend one history entry (newest first, bounded).  Callers hold the workspace lock."""
        self.ensure_state()
        from peersync.workspace.clawdbot import with_clawdbot_keys

        # The clawdbot-sync keys too: its `status`/`history` read the same file.
        entry = with_clawdbot_keys({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry})
        entries = [entry] + self._recent_history()
        if len(entries) > 2 * HISTORY_RECENT:
            # The oldest go to the archive first: a crash between the two writes leaves them in
            # both files, and history() and the next spill count them once.
            self._archive(entries[HISTORY_RECENT:])
            entries = entries[:HISTORY_RECENT]
        atomic_write_json(self.history_file, {"entries": entries}, indent=None)
        _parsed(self.history_file, lambda path: entries)  # what was just written: no parsing it again

    def _archive(self, spilled: list) -> None:
        """Add `spilled` (newest first) to the archive, keeping its newest HISTORY_LIMIT − HISTORY_RECENT."""
        new = [_history_line(e) for e in reversed(spilled) if isinstance(e, dict)]
        fresh = set(new)
        old = [line for line in self._archive_lines()[0] if line not in fresh]
        keep = (old + new)[-(HISTORY_LIMIT - HISTORY_RECENT):]
        atomic_write_bytes(self.history_archive, "".join(line + "\n" for line in keep).encode("utf-8", "backslashreplace"))


def _parsed(path: Path, parse):
    """`parse(path)`, kept for as long as the file keeps its identity: a long-lived process (a
    keeper) parses the history files again only when another process has written them."""
    key = file_identity(path)
    kept = _HISTORY.get(str(path))
    if kept is not None and key is not None and kept[0] == key:
        return kept[1]
    value = parse(path)
    if key is not None:
        _HISTORY[str(path)] = (key, value)
    return value


def _read_recent(path: Path) -> list:
    try:
        data = read_json(path, default={"entries": []})
    except ValueError:
        return []
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, list) else []


def _read_archive(path: Path) -> tuple[list, list, int]:
    try:
        raw = path.read_bytes()
    except OSError:
        return [], [], 0
    lines, entries, damaged = [], [], 0
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            entry = json.loads(line) if line.strip() else None
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            lines.append(_history_line(entry))
            entries.append(entry)
        elif line.strip():
            damaged += 1
    return lines, entries, damaged


def _history_line(entry: dict) -> str:
    """One entry as the archive holds it: one line of JSON."""
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


_HISTORY: dict[str, tuple] = {}  # history file or archive -> (its identity when read or written, its contents)


def _load_json_file(path: Path, default=None):
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return default
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", "Fix the file (it was not changed).") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON at line {err.lineno} column {err.colno} ({err.msg})",
                          "Fix the file (it was not changed).") from None


def _from_clawdbot_config(raw) -> dict:
    """Map the clawdbot-sync skill's config.json onto config.yaml's structure (every key kept)."""
    from peersync.workspace.clawdbot import config_from_json

    return config_from_json(raw)


def _seconds(where: Path, section: dict, key: str, default: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{where}: sync.{key} must be a number of seconds (0 turns it off)")
    return float(value)
