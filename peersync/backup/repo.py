"""An opened backup repository: the target located, the passphrase found (or made), restic bound to it.

Also the two things every command needs around restic: recovering from a lock a killed
peersync left behind, and reading snapshots as values.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, TypeVar

from peersync.backup.config import (BackupConfig, Location, Passphrase, backup_dir, configured_passphrase,
                                    generate_passphrase, locate, missing_passphrase, remember, resolve,
                                    tighten_local)
from peersync.backup.restic import NoRepository, RepositoryLocked, Restic, ResticError, check_version, find_restic
from peersync.errors import BackupError, BusyError
from peersync.transport.rclone import Rclone
from peersync.workspace.lock import pid_alive, state_lock
from peersync.workspace.storage import atomic_write_json, read_json
from peersync.workspace.workspace import Workspace

TAG = "peersync"  # every snapshot peersync makes; retention only ever touches these
INSTANCE_TAG = "instance:"  # + the workspace's instance id: one retention group per instance
LOCK_WAIT = 120.0  # seconds a command waits for another process's lock before giving up

T = TypeVar("T")


@dataclass
class Repo:
    ws: Workspace
    cfg: BackupConfig
    location: Location
    restic: Restic
    passphrase: Passphrase
    notices: list[str] = field(default_factory=list)  # said once to the user (a generated passphrase)

    @property
    def display(self) -> str:
        return self.location.display

    def describe(self) -> dict:
        return {"target": self.display, "encrypted": True, "engine": "restic " + ".".join(map(str, self.restic.version)),
                "passphrase": self.passphrase.describe()}

    def with_lock_recovery(self, action: Callable[[], T], *, wait: float = LOCK_WAIT,
                           said: list[str] | None = None) -> T:
        """Run `action` (one restic command); when a lock stops it:

        - held by a restic process of THIS host that is gone (a killed backup or prune):
          `restic unlock`, which removes exactly such locks (and locks older than 30 minutes,
          restic's own staleness rule), then try again — restic 0.14 does not do this by itself
          (0.15 and later ignore such locks);
        - held by a live process (here or elsewhere): wait for it, up to `wait` seconds.
        """
        deadline = time.monotonic() + wait
        unlocked: set[tuple[str, int]] = set()
        while True:
            try:
                return action()
            except RepositoryLocked as err:
                lock = err.lock
                here = lock.host == socket.gethostname()
                if here and not pid_alive(lock.pid) and (lock.host, lock.pid) not in unlocked:
                    unlocked.add((lock.host, lock.pid))
                    self.restic.run(["unlock"])
                    if said is not None:
                        said.append(f"removed the stale lock of restic PID {lock.pid} on this host "
                                    "(a backup or prune that was killed)")
                    continue
                if time.monotonic() >= deadline:
                    raise BusyError(f"the backups at {self.display} are in use by restic PID {lock.pid} on "
                                    f"{lock.host}" + ("" if here else " (another machine)"),
                                    "Try again when it has finished." if here or not lock.exclusive_wanted else
                                    "If that machine is gone, run `restic unlock` against the repository "
                                    "after 30 minutes (restic then treats the lock as stale).") from None
                time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


@contextlib.contextmanager
def local_lock(ws: Workspace, what: str = "backup"):
    """One backup/prune/restore of this workspace at a time (an flock: dies with its holder)."""
    with state_lock(backup_dir(ws), 0, what=what):
        yield


def open_repo(ws: Workspace, cfg: BackupConfig, target: str | None = None, *, create: bool = False) -> Repo:
    """Locate the repository at the target and bind restic to it; with `create`, initialise
    it (generating a passphrase if none is configured) when the target is empty."""
    tgt = resolve(ws, cfg, target)
    binary = find_restic()  # before anything is made: no restic, no passphrase generated for nothing
    version = check_version(binary)
    rclone = Rclone(secrets=[*tgt.secrets, cfg.passphrase or ""]).with_env(tgt.env)
    if tgt.local_path is not None:
        tighten_local(tgt.local_path)
    location = locate(ws, rclone, tgt)
    passphrase = configured_passphrase(ws, cfg)
    notices: list[str] = []
    if not location.has_repository:
        if not create:
            err = NoBackups(f"no backups at {location.display} yet", "Run `peersync backup now` first, or check "
                            "--target / backup.target." if location.layout != "legacy" else
                            "Old-format peersync backups are there: `peersync backup migrate` makes them readable.")
            err.location, err.rclone = location, rclone
            raise err
        if location.layout == "foreign":
            raise BackupError(f"{tgt.display} is not empty and holds no peersync backups",
                              "Choose an empty place (a new folder or prefix) for backups.")
        if passphrase is None:
            passphrase = generate_passphrase(ws)
    elif passphrase is None:
        raise missing_passphrase(location.display)
    restic = Restic(rclone, location.remote, passphrase.restic_env(),
                    secrets=tuple(s for s in (*tgt.secrets, cfg.passphrase or "") if s), binary=binary, version=version)
    repo = Repo(ws, cfg, location, restic, passphrase, notices)
    if not location.has_repository:
        init(repo)
    return repo


def init(repo: Repo) -> None:
    try:
        repo.restic.run(["init"])
    except ResticError as err:
        if "already exists" not in err.stderr:  # two first backups at once: the other one made it
            raise
    repo.location = Location(repo.location.target, repo.location.remote, repo.location.layout, True)
    remember(repo.ws, repo.location.target, "restic" if repo.location.layout != "legacy" else "legacy+restic")


class NoBackups(NoRepository):
    """No repository at the target (and none was to be made); `location` says what is there."""

    location: Location | None = None
    rclone: Rclone | None = None


def forget_layout(repo: Repo) -> None:
    """The remembered layout was wrong (the repository was removed): look again next time."""
    remember(repo.ws, repo.location.target, None)


# -- snapshots as values --------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """One restic snapshot, with peersync's view of it."""

    id: str
    short_id: str
    time: datetime  # as restic stored it (with its zone offset)
    host: str
    tags: tuple[str, ...]
    paths: tuple[str, ...]
    stats: dict | None = None  # files, bytes (total), bytes_added… when known (see snapshot_stats)

    @property
    def instance(self) -> str | None:
        for tag in self.tags:
            if tag.startswith(INSTANCE_TAG):
                return tag[len(INSTANCE_TAG):]
        return None

    def summary(self) -> dict:
        stats = self.stats or {}
        changed = (stats.get("files_new") or 0) + (stats.get("files_changed") or 0) if "files_new" in stats else None
        return {"id": self.short_id, "full_id": self.id, "time": iso(self.time), "host": self.host,
                "instance": self.instance, "tags": list(self.tags), "files": stats.get("files"),
                "bytes": stats.get("bytes"), "bytes_added": stats.get("bytes_added"), "files_added": changed}

    @classmethod
    def from_restic(cls, doc: dict, stats: dict | None = None) -> "Snapshot":
        summary = doc.get("summary")  # restic >= 0.17 stores what the backup counted
        if stats is None and isinstance(summary, dict):
            stats = {"files": summary.get("total_files_processed"), "bytes": summary.get("total_bytes_processed"),
                     "bytes_added": summary.get("data_added")}
        return cls(doc["id"], doc.get("short_id") or doc["id"][:8], parse_restic_time(doc["time"]),
                   str(doc.get("hostname", "")), tuple(doc.get("tags") or ()), tuple(doc.get("paths") or ()), stats)


def parse_restic_time(text: str) -> datetime:
    """restic's RFC 3339 times carry nanoseconds; Python keeps microseconds."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    return datetime.fromisoformat(text)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stats_file(ws: Workspace) -> Path:
    return ws.state / "backup" / "snapshot-stats.json"


def snapshot_stats(ws: Workspace) -> dict[str, dict]:
    """What our own backups counted, per short snapshot id (restic 0.14 does not store it)."""
    try:
        doc = read_json(_stats_file(ws), default={}) or {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def save_stats(ws: Workspace, snapshot_id: str, stats: dict, keep: set[str] | None = None) -> None:
    doc = snapshot_stats(ws)
    doc[snapshot_id] = stats
    if keep is not None:
        doc = {k: v for k, v in doc.items() if k in keep or k == snapshot_id}
    with contextlib.suppress(OSError):
        backup_dir(ws)
        atomic_write_json(_stats_file(ws), doc)


_UNLOADABLE = re.compile(r"could not load snapshot ([0-9a-f]+): (.*)")


def load_snapshots(repo: Repo, unreadable: dict[str, str] | None = None) -> list[Snapshot]:
    """Every snapshot in the repository, oldest first (restic takes no lock to list them).

    A snapshot file that fails restic's authentication (damaged, or forged by someone without
    the key) is not listed; its short id and restic's reason go into `unreadable`."""
    proc = repo.with_lock_recovery(lambda: repo.restic.run(["snapshots", "--no-lock", "--json"]))
    if unreadable is not None:
        for match in _UNLOADABLE.finditer(proc.stderr.decode(errors="replace")):
            unreadable[match.group(1)[:8]] = match.group(2).strip()
    text = proc.stdout.decode()
    docs = json.loads(text) if text.strip() else []
    known = snapshot_stats(repo.ws)
    snaps = sorted((Snapshot.from_restic(doc, known.get(doc["id"][:8])) for doc in docs), key=lambda s: (s.time, s.id))
    _remember_listing(repo, docs, unreadable)
    return snaps


def _listing_file(ws: Workspace) -> Path:
    return ws.state / "backup" / "snapshots.json"


def _remember_listing(repo: Repo, docs: list[dict], unreadable: dict[str, str] | None) -> None:
    """The last listing, for pages drawn without asking the target (dashboard refreshes)."""
    keep = ("id", "short_id", "time", "hostname", "tags", "summary")
    doc = {"format": 1, "target": repo.display, "listed_at": time.time(),
           "restic": ".".join(map(str, repo.restic.version)), "unreadable": dict(unreadable or {}),
           "snapshots": [{k: d[k] for k in keep if k in d} for d in docs]}
    with contextlib.suppress(OSError):
        backup_dir(repo.ws)
        atomic_write_json(_listing_file(repo.ws), doc)


def cached_listing(ws: Workspace) -> tuple[list[Snapshot], dict]:
    """The snapshots this machine last saw at its target (no network), and {target, listed_at,
    restic, unreadable}; ([], {}) when it never listed them."""
    try:
        doc = read_json(_listing_file(ws), default=None)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("snapshots"), list):
        return [], {}
    known = snapshot_stats(ws)
    snaps = []
    for raw in doc["snapshots"]:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            snaps.append(Snapshot.from_restic(raw, known.get(str(raw["id"])[:8])))
    meta = {k: doc.get(k) for k in ("target", "listed_at", "restic", "unreadable")}
    return sorted(snaps, key=lambda s: (s.time, s.id)), meta


def restic_time(moment: datetime) -> str:
    """`restic backup --time` wants local time without a zone."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def workspace_owner(ws: Workspace) -> tuple[int, int]:
    st = os.stat(ws.root)
    return st.st_uid, st.st_gid
