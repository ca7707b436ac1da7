"""Encrypted, incremental, content-addressed backups of a workspace to any rclone target.

Layout on the target (under rclone crypt when a passphrase is set, so names and contents are
hidden; only the marker stays plain):

    peersync-backup.json        plain marker: format, encrypted?, crypt salt, repository id
    peersync-check              known plaintext, proves the passphrase on open (encrypted only)
    objects/ab/cdef…            file contents, named by SHA-256, uploaded only when missing
    snapshots/<id>.json.gz      one manifest per snapshot (gzipped JSON), written after all its objects exist
    locks/<kind>-<id>.json      a running backup or prune (prune never collects objects while
                                a live backup lock exists; a backup waits for a live prune)

Snapshot ids are `YYYYMMDDTHHMMSSZ-xxxx` (UTC), so they sort chronologically.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping

import pathspec

from peersync import __version__
from peersync.core.paths import STATE_DIR, BadPath, check_relpath
from peersync.core.retention import KeepPolicy, Snap, apply_policy
from peersync.core.selection import DEFAULT_EXCLUDES, Selection
from peersync.core.types import Problem
from peersync.errors import (
    BackupError,
    BusyError,
    ConfigError,
    PeersyncError,
    UsageError,
)
from peersync.replica.scan import StatCache, walk
from peersync.transport.rclone import (
    Rclone,
    RcloneError,
    Target,
    crypt_env,
    join,
    resolve_target,
)
from peersync.workspace.storage import (
    atomic_write_bytes,
    atomic_write_json,
    ensure_private_dir,
    read_json,
)
from peersync.workspace.workspace import Workspace

FORMAT = 1  # manifest and marker format; bump me when their encoding changes (older peersync then refuses)
MARKER = "peersync-backup.json"
SNAPSHOT_SUFFIX = ".json.gz"  # gzip: a 10,000-file manifest shrinks from 1.7 MB to 0.5 MB
CHECK_NAME = "peersync-check"
CHECK_PLAINTEXT = b"peersync backup check v1: the passphrase is right\n"
CRYPT_REMOTE = "peersync_crypt"
TARGET_REMOTE = "peersync_target"
PASSPHRASE_ENV = "PEERSYNC_BACKUP_PASSPHRASE"
OPENCLAW_PREFIX = "@openclaw/"  # manifest paths of ~/.openclaw files; restored under DIR/@openclaw/
LOCK_REFRESH = 600  # a running backup rewrites its lock this often…
LOCK_STALE = 2 * 3600  # …so a lock older than this belongs to a dead process
LOCK_FORGET = 24 * 3600  # prune removes locks this old
RACY_NS = 2_000_000_000  # files modified this close to the scan are re-hashed next time
VERIFY_BATCH = 256 << 20  # verify downloads at most this many bytes at a time
# Parallel rclone transfers: many small objects are latency-bound on remote stores (one request
# each), CPU-bound on a local disk.
TRANSFERS_LOCAL, TRANSFERS_REMOTE = 8, 32
CACHE_NAME = "sha256-cache.json"  # stat cache: path → (size, mtime_ns, inode, ctime_ns, sha256)
# Never worth backing up from the state dir: our own caches and staging, locks, the trash.
STATE_EXCLUDES = ("/backup/", "/trash/", "*.lock", "lock", "lock.info", "*.tmp", "cache/", "*cache*.json")
OPENCLAW_EXCLUDES = DEFAULT_EXCLUDES + ("*.lock", "*.sock", "*.pid")
ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{4}$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")

Progress = Callable[[str, int, int], None]  # (phase, done, total): phases hash/upload/download/restore/verify


# -- configuration --------------------------------------------------------------------------

@dataclass(frozen=True)
class BackupConfig:
    """config.yaml's `backup:` section, `${VAR}` references expanded."""

    target: str | None = None
    passphrase: str | None = field(default=None, repr=False)
    interval: int | None = None  # seconds between scheduled backups; None = not scheduled
    keep: KeepPolicy | None = None
    include_state: bool = False
    include_openclaw: bool = False
    openclaw_dir: Path = Path("~/.openclaw").expanduser()


def load_config(ws: Workspace, env: Mapping[str, str] | None = None) -> BackupConfig:
    env = os.environ if env is None else env
    raw = ws.raw_config().get("backup") or {}
    where = f"{ws.config_file}: backup"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping")
    known = {"target", "passphrase", "interval", "keep", "include_state", "include_openclaw", "openclaw_dir"}
    unknown = sorted(set(map(str, raw)) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}", f"Known: {', '.join(sorted(known))}.")

    def text(key: str) -> str | None:
        value = raw.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{where}.{key} must be a string")
        return expand_vars(value, env, f"{where}.{key}")

    passphrase = env.get(PASSPHRASE_ENV) or text("passphrase")
    interval = raw.get("interval")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int) or interval < 0):
        raise ConfigError(f"{where}.interval must be a number of seconds (0 = not scheduled)")
    keep = None
    if raw.get("keep") is not None:
        try:
            keep = KeepPolicy.from_config(raw["keep"])
        except ValueError as err:
            raise ConfigError(f"{where}.{err}" if str(err).startswith("keep") else f"{where}.keep: {err}") from None
    openclaw = text("openclaw_dir") or env.get("OPENCLAW_STATE_DIR") or str(Path.home() / ".openclaw")
    return BackupConfig(
        target=text("target"), passphrase=passphrase, interval=interval or None, keep=keep,
        include_state=bool(raw.get("include_state", False)),
        include_openclaw=bool(raw.get("include_openclaw", False)),
        openclaw_dir=Path(openclaw).expanduser(),
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


def default_target(ws: Workspace, env: Mapping[str, str] | None = None) -> Path:
    """Where backups go with no configuration: outside the workspace, per instance."""
    env = os.environ if env is None else env
    data = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "peersync" / "backups" / ws.instance_id


# -- values -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileRecord:
    """One file of a snapshot.  `path` is workspace-relative, or starts with @openclaw/."""

    path: str
    size: int
    mtime_ns: int
    mode: int
    sha256: str

    def to_json(self) -> dict:
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns, "mode": self.mode,
                "sha256": self.sha256}

    @classmethod
    def from_json(cls, raw: dict) -> "FileRecord":
        rec = cls(raw["path"], raw["size"], raw["mtime_ns"], raw["mode"], raw["sha256"])
        if not (isinstance(rec.size, int) and isinstance(rec.mtime_ns, int) and isinstance(rec.mode, int)
                and isinstance(rec.sha256, str) and SHA_RE.match(rec.sha256)):
            raise ValueError(f"bad entry for {rec.path!r}")
        return rec  # the path is checked (check_manifest_path) when something is written there


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: datetime  # UTC
    instance: str
    host: str
    workspace: str
    files: tuple[FileRecord, ...]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def summary(self) -> dict:
        return {"id": self.id, "time": iso(self.time), "files": len(self.files), "bytes": self.bytes,
                "host": self.host, "instance": self.instance, "workspace": self.workspace}

    def to_bytes(self) -> bytes:
        doc = {"format": FORMAT, **self.summary(), "peersync": __version__,
               "entries": [f.to_json() for f in self.files]}
        return gzip.compress(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(), mtime=0)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Snapshot":
        try:
            doc = json.loads(gzip.decompress(data))
        except (OSError, EOFError) as err:
            raise ValueError(f"not gzip data ({err})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("format"), int):
            raise ValueError("not a peersync snapshot manifest")
        if doc["format"] > FORMAT:
            raise ValueError(f"manifest format {doc['format']} is newer than this peersync understands")
        if not ID_RE.match(str(doc.get("id"))):
            raise ValueError(f"bad snapshot id {doc.get('id')!r}")
        files = tuple(FileRecord.from_json(e) for e in doc["entries"])
        return cls(doc["id"], parse_time(doc["time"]), str(doc.get("instance", "")), str(doc.get("host", "")),
                   str(doc.get("workspace", "")), files)


def check_manifest_path(path: str) -> str:
    """A manifest path is safe to write under a restore root (no '..', not absolute, …)."""
    if not isinstance(path, str):
        raise BadPath(f"not a path: {path!r}")
    inner = path[len(OPENCLAW_PREFIX):] if path.startswith(OPENCLAW_PREFIX) else path
    if inner.startswith(STATE_DIR + "/"):  # state files (include_state) are checked below the state dir
        inner = inner[len(STATE_DIR) + 1:]
    check_relpath(inner)
    return path


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """ISO 8601 ("2026-11-22", "2026-11-22T06:30", "…Z", "…+01:00"); no zone means local time."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"cannot read the time {text!r}", "Use ISO 8601, e.g. 2026-11-22T06:30 or 2026-11-22.") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time
    return moment.astimezone(timezone.utc)


def new_snapshot_id(now: datetime) -> str:
    """`YYYYMMDDTHHMMSSZ-xxxx`: three hex digits of the fraction of the second (so two snapshots
    in one second still sort in order), then one random digit (two machines, same instant)."""
    utc = now.astimezone(timezone.utc)
    return f"{utc:%Y%m%dT%H%M%SZ}-{utc.microsecond * 4096 // 1_000_000:03x}{secrets.randbelow(16):x}"


def object_name(sha: str) -> str:
    return f"{sha[:2]}/{sha[2:]}"


# -- the repository on the target ----------------------------------------------------------------

@dataclass
class Repo:
    """An opened backup target: rclone set up (crypt included), marker read, passphrase proven."""

    rclone: Rclone
    target: Target
    store: str  # where objects/, snapshots/, locks/ live: the crypt remote or the target itself
    encrypted: bool
    marker: dict

    @property
    def id(self) -> str:
        return str(self.marker.get("id", "unknown"))

    def path(self, *parts: str) -> str:
        return join(self.store, *parts)

    def describe(self) -> dict:
        return {"target": self.target.display, "encrypted": self.encrypted, "repository": self.id}

    def parallel(self) -> list[str]:
        n = str(TRANSFERS_LOCAL if self.target.local_path is not None else TRANSFERS_REMOTE)
        return ["--transfers", n, "--checkers", n]


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


def open_repo(ws: Workspace, cfg: BackupConfig, target: str | None = None, *, create: bool = False) -> Repo:
    """Open (or, with create, initialise) the backup repository at the target."""
    tgt = resolve(ws, cfg, target)
    rc = Rclone(secrets=[*tgt.secrets, cfg.passphrase or ""]).with_env(tgt.env)
    rc.check_remote(tgt)
    marker = _read_marker(rc, tgt)
    fresh = marker is None
    if fresh:
        if not create:
            raise NoBackups(f"no peersync backups at {tgt.display}",
                            "Run `peersync backup now` first, or check --target / backup.target.")
        existing = [n for n in rc.lsf(tgt.remote, missing_ok=True)]
        if existing:
            raise BackupError(f"{tgt.display} is not empty and holds no peersync backups",
                              "Choose an empty place (a new folder or prefix) for backups.")
        marker = {"format": FORMAT, "id": secrets.token_hex(8), "encrypted": bool(cfg.passphrase),
                  "created": iso(datetime.now(timezone.utc))}
        if cfg.passphrase:
            marker["salt"] = secrets.token_hex(16)
        rc.rcat(tgt.join(MARKER), json.dumps(marker, indent=2).encode() + b"\n")
    if not marker.get("encrypted"):
        if cfg.passphrase:
            raise BackupError(f"backups at {tgt.display} are not encrypted, but a passphrase is set",
                              f"Use a new, empty target for encrypted backups, or unset {PASSPHRASE_ENV}.")
        return Repo(rc, tgt, tgt.remote, False, marker)
    if not cfg.passphrase:
        raise WrongPassphrase(f"backups at {tgt.display} are encrypted and no passphrase is set",
                              f"Set {PASSPHRASE_ENV} (or backup.passphrase: ${{VAR}} in config.yaml).")
    env = crypt_env(rc, CRYPT_REMOTE, tgt.remote, cfg.passphrase, str(marker.get("salt", "")))
    crc = rc.with_env(env, secrets=[env[k] for k in env if k.endswith(("PASSWORD", "PASSWORD2"))])
    repo = Repo(crc, tgt, CRYPT_REMOTE + ":", True, marker)
    try:
        proof = crc.cat(repo.path(CHECK_NAME))
    except RcloneError as err:
        if not err.not_found:
            raise
        proof = None
    if not proof and (fresh or rc.lsf(tgt.remote, missing_ok=True) == [MARKER]):
        crc.rcat(repo.path(CHECK_NAME), CHECK_PLAINTEXT)  # a fresh target (or one cut off while created)
        proof = CHECK_PLAINTEXT
    if proof != CHECK_PLAINTEXT:
        raise WrongPassphrase(f"wrong passphrase for the encrypted backups at {tgt.display}",
                              f"Check {PASSPHRASE_ENV} (or backup.passphrase); nothing was read or written.")
    return repo


class WrongPassphrase(BackupError):
    """The target is encrypted and the passphrase is missing or does not open it (bad input: exit 2)."""

    exit_code = 2


class NoBackups(BackupError):
    """Nothing at the target yet."""


def _read_marker(rc: Rclone, tgt: Target) -> dict | None:
    try:
        raw = rc.cat(tgt.join(MARKER))
    except RcloneError as err:
        if err.not_found:
            return None
        # The first contact with the target: say which target failed, then why.
        reason = err.message.split(": ", 1)[-1]
        raise type(err)(f"cannot open backups at {tgt.display}: {reason}", err.hint,
                        stderr=err.stderr, returncode=err.returncode) from None
    if not raw:  # some backends (S3) answer `cat` of a missing object with nothing
        return None
    try:
        marker = json.loads(raw)
        assert isinstance(marker, dict) and isinstance(marker.get("format"), int)
    except (ValueError, AssertionError):
        raise BackupError(f"{tgt.display}/{MARKER} is damaged", "Restore it from a copy, or use a new target.") from None
    if marker["format"] > FORMAT:
        raise BackupError(f"backups at {tgt.display} were made by a newer peersync (format {marker['format']})",
                          "Upgrade peersync.")
    return marker


def snapshot_ids(repo: Repo) -> list[str]:
    names = repo.rclone.lsf(repo.path("snapshots"), files_only=True, missing_ok=True)
    ids = (n[: -len(SNAPSHOT_SUFFIX)] for n in names if n.endswith(SNAPSHOT_SUFFIX))
    return sorted(i for i in ids if ID_RE.match(i))


def load_snapshots(ws: Workspace, repo: Repo, *, cached: bool = True) -> tuple[list[Snapshot], dict[str, str]]:
    """Snapshots (oldest first) and the ids whose manifest could not be read → reason.

    Manifests never change once written, so they are kept in a local cache in the state dir
    and only new ones are downloaded (one rclone process for all of them).  `cached=False`
    downloads them all again (verify: the copy at the target is what must be sound)."""
    ids = snapshot_ids(repo)
    if cached:
        cache = ensure_private_dir(manifest_cache(ws, repo))
    else:
        cache = ensure_private_dir(ws.state / "backup") / f"manifests-{secrets.token_hex(4)}"
        cache.mkdir(mode=0o700)
    try:
        return _load_manifests(repo, ids, cache)
    finally:
        if not cached:
            shutil.rmtree(cache, ignore_errors=True)


def manifest_cache(ws: Workspace, repo: Repo) -> Path:
    return ws.state / "backup" / "manifests" / re.sub(r"\W", "_", repo.id)


def _load_manifests(repo: Repo, ids: list[str], cache: Path) -> tuple[list[Snapshot], dict[str, str]]:
    wanted = {i + SNAPSHOT_SUFFIX for i in ids}
    for old in cache.iterdir():
        if old.name not in wanted:
            old.unlink(missing_ok=True)
    missing = sorted(n for n in wanted if not (cache / n).exists())
    if missing:
        listing = cache / ".download-list"
        listing.write_text("".join(n + "\n" for n in missing))
        try:
            repo.rclone.run(["copy", repo.path("snapshots"), str(cache), "--files-from-raw", str(listing)],
                            check=False)
        finally:
            listing.unlink(missing_ok=True)
    good: list[Snapshot] = []
    bad: dict[str, str] = {}
    for sid in ids:
        try:
            snap = Snapshot.from_bytes((cache / (sid + SNAPSHOT_SUFFIX)).read_bytes())
            if snap.id != sid:
                raise ValueError(f"manifest names snapshot {snap.id}")
            good.append(snap)
        except FileNotFoundError:
            bad[sid] = "manifest could not be downloaded"
        except (ValueError, KeyError, TypeError, BadPath) as err:
            (cache / (sid + SNAPSHOT_SUFFIX)).unlink(missing_ok=True)
            bad[sid] = f"manifest unreadable: {err}"
    return sorted(good, key=lambda s: s.id), bad


def list_objects(repo: Repo) -> dict[str, int]:
    """sha256 → stored size of every object on the target (one listing)."""
    out: dict[str, int] = {}
    # --no-modtime: on S3 a modtime costs a HEAD request per object; --fast-list: one flat listing.
    for item in repo.rclone.lsjson(repo.path("objects"), recursive=True, files_only=True, missing_ok=True,
                                   extra=("--no-modtime", "--fast-list")):
        sha = item["Path"].replace("/", "")
        if SHA_RE.match(sha):
            out[sha] = item.get("Size", -1)
    return out


# -- locks on the target ------------------------------------------------------------------------

class TargetLock:
    """`locks/<kind>-<id>.json` on the target while a backup or prune runs, refreshed in the background."""

    def __init__(self, repo: Repo, ws: Workspace, kind: str, ident: str):
        self.repo, self.kind, self.ident = repo, kind, ident
        self.name = repo.path("locks", f"{kind}-{ident}.json")
        self.info = {"kind": kind, "id": ident, "host": socket.gethostname(), "pid": os.getpid(),
                     "instance": ws.instance_id, "started": time.time()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        self.repo.rclone.rcat(self.name, json.dumps({**self.info, "refreshed": time.time()}).encode())

    def __enter__(self) -> "TargetLock":
        self._write()
        self._thread = threading.Thread(target=self._refresh, daemon=True, name=f"peersync-{self.kind}-lock")
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(LOCK_REFRESH):
            with contextlib.suppress(RcloneError):
                self._write()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        with contextlib.suppress(RcloneError):
            self.repo.rclone.deletefile(self.name)


def read_locks(repo: Repo, now: float | None = None, kinds: tuple[str, ...] = ("backup", "prune")) -> list[dict]:
    """The locks of these kinds on the target, each with "stale" and "age" (seconds) added."""
    now = time.time() if now is None else now
    out = []
    for item in repo.rclone.lsjson(repo.path("locks"), files_only=True, missing_ok=True):
        if not item["Name"].startswith(tuple(k + "-" for k in kinds)):
            continue
        info: dict = {"name": item["Name"]}
        with contextlib.suppress(RcloneError, ValueError):
            info.update(json.loads(repo.rclone.cat(repo.path("locks", item["Name"]))))
        stamps = [info.get("refreshed"), info.get("started"), _modtime(item.get("ModTime"))]
        newest = max((s for s in stamps if isinstance(s, (int, float))), default=0.0)
        info["age"] = max(0.0, now - newest)
        info["stale"] = info["age"] > LOCK_STALE
        info.setdefault("kind", item["Name"].split("-", 1)[0])
        out.append(info)
    return out


def _modtime(text) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# -- collecting and hashing the files -------------------------------------------------------------

@dataclass(frozen=True)
class _Tree:
    """A Selection-like view of a whole directory tree minus gitignore-style excludes (for scan.walk)."""

    roots: tuple[str, ...]
    spec: pathspec.PathSpec

    def under_root(self, path: str) -> bool:
        return True

    def excludes_dir(self, path: str) -> bool:
        return self.spec.match_file(path + "/")

    def excludes_file(self, path: str) -> bool:
        return self.spec.match_file(path)

    def excludes_child(self, path: str) -> bool:  # a file in a directory that passed excludes_dir
        return self.spec.match_file(path)


def _tree(base: Path, excludes: Iterable[str], skip: Iterable[str] = ()) -> _Tree:
    try:
        roots = tuple(sorted(p.name for p in base.iterdir()))
    except OSError:
        roots = ()
    return _Tree(roots, pathspec.GitIgnoreSpec.from_lines([*excludes, *skip]))


@dataclass
class Found:
    """A file to back up: its record and where it lives now (with the stat seen when hashed)."""

    record: FileRecord
    source: str
    st: os.stat_result


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def collect(ws: Workspace, cfg: BackupConfig, selection: Selection | None = None,
            problems: list[Problem] | None = None, progress: Progress | None = None,
            *, save_cache: bool = True) -> list[Found]:
    """Every file a snapshot holds, hashed (SHA-256; the stat cache skips unchanged files)."""
    problems = [] if problems is None else problems
    selection = selection or ws.sync_config().selection
    sources: list[tuple[str, Path, object]] = [("", ws.root, selection)]
    if cfg.include_state and ws.state.is_dir():
        sources.append((STATE_DIR + "/", ws.state, _tree(ws.state, STATE_EXCLUDES)))
    if cfg.include_openclaw:
        base = cfg.openclaw_dir
        if base.is_dir():
            skip = []
            with contextlib.suppress(ValueError):  # the workspace often lives inside ~/.openclaw
                skip.append("/" + ws.root.resolve().relative_to(base.resolve()).as_posix() + "/")
            sources.append((OPENCLAW_PREFIX, base, _tree(base, OPENCLAW_EXCLUDES, skip)))
        else:
            problems.append(Problem(OPENCLAW_PREFIX, f"{base} not found; OpenClaw config not backed up"))
    listed: list[tuple[str, str, os.stat_result]] = []
    walk_problems: list[Problem] = []
    for prefix, base, sel in sources:
        for rel, st in walk(base, sel, walk_problems):
            listed.append((prefix + rel, os.path.join(base, rel), st))
    for p in walk_problems:
        message = "symbolic link not backed up" if p.message == "symbolic link not synced" else p.message
        problems.append(Problem(p.path, message))
    cache = StatCache(ensure_private_dir(ws.state / "backup") / CACHE_NAME)
    started = time.time_ns()
    found: list[Found] = []
    for n, (path, source, st) in enumerate(listed):
        if progress and n % 200 == 0:
            progress("hash", n, len(listed))
        try:
            check_manifest_path(path)
            path.encode("utf-8")
        except (BadPath, UnicodeEncodeError) as err:
            problems.append(Problem(path, f"name cannot be backed up: {err}"))
            continue
        digest = cache.lookup(path, st)
        if digest is None:
            try:
                digest = sha256_file(source)
                after = os.lstat(source)
            except OSError as err:
                problems.append(Problem(path, f"cannot read: {err.strerror}"))
                continue
            if (after.st_size, after.st_mtime_ns, after.st_ino) != (st.st_size, st.st_mtime_ns, st.st_ino):
                # Changed while read: hash once more from the new state, without caching it.
                st = after
                try:
                    digest = sha256_file(source)
                except OSError as err:
                    problems.append(Problem(path, f"cannot read: {err.strerror}"))
                    continue
                cache.store(path, st, None)
            else:
                cache.store(path, st, None if st.st_mtime_ns >= started - RACY_NS else digest)
        found.append(Found(FileRecord(path, st.st_size, st.st_mtime_ns, st.st_mode & 0o777, digest), source, st))
    if progress:
        progress("hash", len(listed), len(listed))
    if save_cache:
        with contextlib.suppress(OSError):
            cache.save({f.record.path for f in found})
    return found


# -- taking a snapshot ---------------------------------------------------------------------------

@dataclass
class BackupResult:
    snapshot: Snapshot
    target: dict
    uploaded_objects: int = 0
    uploaded_bytes: int = 0  # file bytes of the new objects (before encryption)
    sent_bytes: int = 0  # what rclone reports it transferred
    manifest_bytes: int = 0
    reused_objects: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    pruned: "PruneResult | None" = None

    def to_json(self) -> dict:
        return {"ok": True, "snapshot": self.snapshot.summary(), **self.target,
                "uploaded_objects": self.uploaded_objects, "uploaded_bytes": self.uploaded_bytes,
                "sent_bytes": self.sent_bytes, "manifest_bytes": self.manifest_bytes,
                "reused_objects": self.reused_objects, "seconds": round(self.seconds, 3),
                "problems": [{"path": p.path, "message": p.message} for p in self.problems],
                "pruned": self.pruned.to_json() if self.pruned else None}


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_ino, b.st_size, b.st_mtime_ns)


class BackupRun:
    """One backup, in steps: prepare (open, hash, lock, list) → upload → commit (write the manifest).

    The steps exist so that the ordering guarantees can be seen (and tested): objects are all
    uploaded before the manifest that names them, and the target lock is held from before the
    object listing until after the manifest is written.
    """

    def __init__(self, ws: Workspace, *, target: str | None = None, now: datetime | None = None,
                 progress: Progress | None = None, lock_wait: float = 120.0, config: BackupConfig | None = None):
        self.ws = ws
        self.cfg = config or load_config(ws)
        self.target_option = target
        self.now = now or datetime.now(timezone.utc)
        self.progress = progress
        self.lock_wait = lock_wait
        self.id = new_snapshot_id(self.now)
        self.started = time.monotonic()
        self.problems: list[Problem] = []
        self.found: list[Found] = []
        self.remote_objects: dict[str, int] = {}
        self.uploaded: dict[str, int] = {}
        self.sent_bytes = 0
        self._stack = contextlib.ExitStack()
        self.repo: Repo | None = None

    def __enter__(self) -> "BackupRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def prepare(self) -> None:
        ws = self.ws
        self.repo = open_repo(ws, self.cfg, self.target_option, create=True)
        self._stack.enter_context(_local_lock(ws))
        self.found = collect(ws, self.cfg, problems=self.problems, progress=self.progress)
        self._stack.enter_context(TargetLock(self.repo, ws, "backup", self.id))
        self.locked_at = time.monotonic()
        self._wait_for_prune()
        self.remote_objects = list_objects(self.repo)

    def _wait_for_prune(self) -> None:
        deadline = time.monotonic() + self.lock_wait
        while True:
            live = [lk for lk in read_locks(self.repo, kinds=("prune",)) if not lk["stale"]]
            if not live:
                return
            if time.monotonic() >= deadline:
                who = live[0]
                raise BusyError(f"a prune of {self.repo.target.display} is running (on {who.get('host', '?')})",
                                "Try the backup again in a few minutes.")
            time.sleep(1.0)

    def missing(self) -> dict[str, list[Found]]:
        """sha256 → the files holding it, for every object the target lacks — or holds with the
        wrong size (a cut-off upload), which the new upload then repairs."""
        out: dict[str, list[Found]] = {}
        for f in self.found:
            stored = self.remote_objects.get(f.record.sha256)
            if stored is None or stored not in (f.record.size, -1):
                out.setdefault(f.record.sha256, []).append(f)
        return out

    def upload(self) -> None:
        """Upload the missing objects with one `rclone copy` from a directory of hard links.

        The staging directory holds links named by hash, not copies: no second copy of the
        workspace is ever written.  A hard link also pins the content we hashed when a file is
        replaced by rename; a file changed in place is caught by comparing its stat before and
        after, and then goes through a private copy instead (rare)."""
        assert self.repo is not None
        todo = self.missing()
        if not todo:
            return
        staging = self._staging("links")
        suspects: dict[str, Found] = {}
        staged: dict[str, tuple[Found, Path]] = {}
        for sha, holders in todo.items():
            dest = staging / sha[:2] / sha[2:]
            dest.parent.mkdir(exist_ok=True)
            for f in holders:  # the first holder that is still what we hashed
                if self._link(f, dest):
                    staged[sha] = (f, dest)
                    break
                suspects[f.record.path] = f
        total = sum(f.record.size for f, _ in staged.values())
        self._copy_up(staging, total)
        linked: list[Found] = []
        for sha, (f, dest) in staged.items():
            try:
                unchanged = _same_file(os.stat(dest), f.st)
            except OSError:
                unchanged = False
            if unchanged:
                self.uploaded[sha] = f.record.size
                linked.append(f)
                continue
            suspects[f.record.path] = f
            if self._discard_if_wrong(sha):  # every file with that content needs it uploaded again
                suspects.update((g.record.path, g) for g in todo[sha])
        shutil.rmtree(staging, ignore_errors=True)
        self._recache(linked)
        if suspects:
            self._upload_private_copies(list(suspects.values()))

    def _recache(self, linked: list[Found]) -> None:
        """Making and removing a hard link changes a file's ctime, which the stat cache checks:
        store the new stat of each uploaded file that is otherwise unchanged."""
        cache = StatCache(self.ws.state / "backup" / CACHE_NAME)
        for f in linked:
            with contextlib.suppress(OSError):
                st = os.lstat(f.source)
                if _same_file(st, f.st) and cache.lookup(f.record.path, f.st) is not None:
                    cache.store(f.record.path, st, f.record.sha256)
        with contextlib.suppress(OSError):
            cache.save(set(cache.entries))

    def _link(self, f: Found, dest: Path) -> bool:
        dest.unlink(missing_ok=True)
        try:
            os.link(f.source, dest)
        except OSError:
            try:
                os.symlink(f.source, dest)  # another file system, or hard links not allowed
            except OSError:
                return False
        try:
            if _same_file(os.stat(dest), f.st):
                return True
        except OSError:
            pass
        dest.unlink(missing_ok=True)
        return False

    def _staging(self, kind: str) -> Path:
        path = ensure_private_dir(self.ws.state / "backup") / f"staging-{kind}-{self.id}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(mode=0o700)
        self._stack.callback(shutil.rmtree, path, True)
        return path

    def _copy_up(self, staging: Path, total: int) -> None:
        def on_stats(stats: dict) -> None:
            if self.progress:
                self.progress("upload", int(stats.get("bytes", 0)), total)

        _, final, _ = self.repo.rclone.run_with_stats(
            ["copy", str(staging), self.repo.path("objects"), "--copy-links", "--no-check-dest",
             *self.repo.parallel()], on_stats)
        self.sent_bytes += int(final.get("bytes", 0))

    def _discard_if_wrong(self, sha: str) -> bool:
        """A file changed while it was uploaded: delete its object unless it still matches its
        name.  True when it was deleted."""
        name = self.repo.path("objects", object_name(sha))
        try:
            if hashlib.sha256(self.repo.rclone.cat(name)).hexdigest() == sha:
                return False
        except RcloneError:
            pass
        with contextlib.suppress(RcloneError):
            self.repo.rclone.deletefile(name)
        self.remote_objects.pop(sha, None)
        return True

    def _upload_private_copies(self, suspects: list[Found]) -> None:
        """Files that changed under us: copy each privately while hashing, upload the copies,
        and record what was actually uploaded."""
        staging = self._staging("copies")
        fresh: dict[str, Found | None] = {}  # path → its new record, None when it is dropped
        total = 0
        for f in suspects:
            tmp = staging / "incoming"
            try:
                with open(f.source, "rb") as src, open(tmp, "wb") as dst:
                    st = os.fstat(src.fileno())
                    h = hashlib.sha256()
                    while chunk := src.read(1 << 20):
                        h.update(chunk)
                        dst.write(chunk)
                    size = dst.tell()
            except OSError as err:
                tmp.unlink(missing_ok=True)
                self.problems.append(Problem(f.record.path, f"changed during the backup, then unreadable "
                                                            f"({err.strerror}); not in this snapshot"))
                fresh[f.record.path] = None
                continue
            sha = h.hexdigest()
            fresh[f.record.path] = Found(FileRecord(f.record.path, size, st.st_mtime_ns, st.st_mode & 0o777, sha),
                                         f.source, st)
            dest = staging / sha[:2] / sha[2:]
            if self.remote_objects.get(sha) in (size, -1) or sha in self.uploaded or dest.exists():
                tmp.unlink()
                continue
            dest.parent.mkdir(exist_ok=True)
            os.replace(tmp, dest)
            self.uploaded[sha] = size
            total += size
        if any(staging.glob("*/*")):
            self._copy_up(staging, total)
        self.found = [g for g in (fresh.get(f.record.path, f) for f in self.found) if g is not None]

    def commit(self) -> BackupResult:
        """Write the manifest (all its objects exist now) and release the target lock."""
        assert self.repo is not None
        if time.monotonic() - self.locked_at > LOCK_STALE / 2:
            # So long (a laptop asleep?) that a prune may have taken our lock for dead and
            # collected objects we count on: list again and upload whatever is gone.
            self.remote_objects = {**list_objects(self.repo)}
            self.uploaded = {k: v for k, v in self.uploaded.items() if k in self.remote_objects}
            self.upload()
        files = tuple(sorted((f.record for f in self.found), key=lambda r: r.path))
        snap = Snapshot(self.id, self.now.astimezone(timezone.utc).replace(microsecond=0), self.ws.instance_id,
                        socket.gethostname(), str(self.ws.root), files)
        data = snap.to_bytes()
        self.repo.rclone.rcat(self.repo.path("snapshots", snap.id + SNAPSHOT_SUFFIX), data)
        with contextlib.suppress(OSError):
            atomic_write_bytes(ensure_private_dir(manifest_cache(self.ws, self.repo)) / (snap.id + SNAPSHOT_SUFFIX), data)
        self.close()  # releases the target lock and the local lock, removes staging
        reused = len({r.sha256 for r in files} - set(self.uploaded))
        return BackupResult(snap, self.repo.describe(), len(self.uploaded), sum(self.uploaded.values()),
                            self.sent_bytes, len(data), reused, time.monotonic() - self.started, self.problems)


@contextlib.contextmanager
def _local_lock(ws: Workspace):
    from peersync.workspace.lock import state_lock  # lazy: as before the layout change

    with state_lock(ensure_private_dir(ws.state / "backup"), 0, what="backup"):
        yield


def take_snapshot(ws: Workspace, *, target: str | None = None, now: datetime | None = None,
                  progress: Progress | None = None, prune_after: bool = True) -> BackupResult:
    """`backup now`: one snapshot, then (with a keep policy and prune_after) a prune."""
    cfg = load_config(ws)
    try:
        with BackupRun(ws, target=target, now=now, progress=progress, config=cfg) as run:
            run.prepare()
            run.upload()
            result = run.commit()
    except Exception as err:
        _record_run(ws, ok=False, error=str(err).split("\n")[0])
        raise
    _record_run(ws, ok=True, snapshot=result.snapshot.id, target=result.target["target"])
    if prune_after and cfg.keep is not None and not cfg.keep.empty:
        try:
            result.pruned = prune(ws, target=target, now=now, config=cfg)
        except PeersyncError as err:  # the snapshot is safe; retention can wait for the next run
            result.problems.append(Problem("", f"prune after the backup failed: {err.message}"))
    return result


# -- scheduling ---------------------------------------------------------------------------------

def _runs_file(ws: Workspace) -> Path:
    return ws.state / "backup" / "last-run.json"


def _record_run(ws: Workspace, *, ok: bool, snapshot: str | None = None, target: str | None = None,
                error: str | None = None) -> None:
    try:
        previous = read_json(_runs_file(ws), default={}) or {}
    except ValueError:
        previous = {}
    now = time.time()
    doc = {"format": 1, "last_attempt": now, "last_ok": ok,
           "last_success": now if ok else previous.get("last_success"),
           "snapshot": snapshot if ok else previous.get("snapshot"),
           "target": target or previous.get("target"), "error": None if ok else error}
    with contextlib.suppress(OSError):
        ensure_private_dir(ws.state / "backup")
        atomic_write_json(_runs_file(ws), doc)


def last_run(ws: Workspace) -> dict:
    try:
        return read_json(_runs_file(ws), default={}) or {}
    except ValueError:
        return {}


def backup_due(ws: Workspace, now: float | None = None) -> bool:
    """True when `backup.interval` is set and that long has passed since the last good backup.

    No network, no hashing: cheap enough for every heartbeat.  After a failed attempt the
    next try waits min(interval, 15 min), so a dead target is not hammered every tick."""
    now = time.time() if now is None else now
    try:
        interval = load_config(ws).interval
    except ConfigError:
        return False
    if not interval:
        return False
    runs = last_run(ws)
    success, attempt = runs.get("last_success"), runs.get("last_attempt")
    if isinstance(success, (int, float)) and now - success < interval:
        return False
    if not runs.get("last_ok", True) and isinstance(attempt, (int, float)):
        return now - attempt >= min(interval, 900)
    return True


def next_due(ws: Workspace, cfg: BackupConfig) -> float | None:
    if not cfg.interval:
        return None
    success = last_run(ws).get("last_success")
    return (success + cfg.interval) if isinstance(success, (int, float)) else time.time()


# -- listing and status ---------------------------------------------------------------------------

def list_snapshots(ws: Workspace, *, target: str | None = None) -> dict:
    cfg = load_config(ws)
    repo = open_repo(ws, cfg, target)
    snaps, bad = load_snapshots(ws, repo)
    return {**repo.describe(), "instance": ws.instance_id,
            "snapshots": [s.summary() for s in snaps],
            "unreadable": [{"id": k, "error": v} for k, v in sorted(bad.items())]}


def status(ws: Workspace, *, target: str | None = None) -> dict:
    cfg = load_config(ws)
    runs = last_run(ws)
    due = next_due(ws, cfg)
    out: dict = {"interval": cfg.interval, "keep": cfg.keep.describe() if cfg.keep else None,
                 "due": backup_due(ws), "next_due": iso(datetime.fromtimestamp(due, timezone.utc)) if due else None,
                 "last_run": {k: (iso(datetime.fromtimestamp(v, timezone.utc)) if k in ("last_attempt", "last_success")
                                  and isinstance(v, (int, float)) else v) for k, v in runs.items() if k != "format"},
                 "include_state": cfg.include_state, "include_openclaw": cfg.include_openclaw}
    try:
        repo = open_repo(ws, cfg, target)
    except NoBackups:
        return {**out, "target": resolve(ws, cfg, target).display, "initialized": False, "snapshots": 0,
                "latest": None, "stored": {"objects": 0, "bytes": 0}, "locks": []}
    snaps, bad = load_snapshots(ws, repo)
    objects = list_objects(repo)
    own = [s for s in snaps if s.instance == ws.instance_id]
    return {**out, **repo.describe(), "initialized": True, "snapshots": len(snaps), "own_snapshots": len(own),
            "unreadable": len(bad), "latest": (own or snaps)[-1].summary() if snaps else None,
            "stored": {"objects": len(objects), "bytes": sum(v for v in objects.values() if v > 0)},
            "locks": [{k: lk.get(k) for k in ("kind", "id", "host", "age", "stale")} for lk in read_locks(repo)]}


# -- restore ----------------------------------------------------------------------------------

@dataclass
class RestoreResult:
    snapshot: Snapshot
    dest: Path
    in_place: bool
    restored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # in-place: already identical, left alone
    refused: list[Problem] = field(default_factory=list)  # failed verification: not written
    skipped: list[str] = field(default_factory=list)  # in-place: state / ~/.openclaw files
    saved_to: Path | None = None  # in-place: where the replaced live versions were moved
    diff: dict = field(default_factory=dict)  # snapshot vs live workspace
    bytes: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.refused

    def to_json(self) -> dict:
        return {"ok": self.ok, "snapshot": self.snapshot.summary(), "dest": str(self.dest),
                "in_place": self.in_place, "restored": len(self.restored), "bytes": self.bytes,
                "unchanged": len(self.unchanged), "skipped": self.skipped,
                "refused": [{"path": p.path, "message": p.message} for p in self.refused],
                "saved_to": str(self.saved_to) if self.saved_to else None, "diff": self.diff,
                "seconds": round(self.seconds, 3)}


def pick_snapshot(snaps: list[Snapshot], *, snapshot: str | None = None, at: datetime | None = None,
                  instance: str | None = None) -> Snapshot:
    """By id (or unique id prefix), else the newest at or before `at`, else the newest —
    this instance's own snapshots first, any instance's when it has none (a new machine)."""
    if not snaps:
        raise BackupError("there are no snapshots to restore")
    if snapshot:
        exact = [s for s in snaps if s.id == snapshot]
        matches = exact or [s for s in snaps if s.id.startswith(snapshot)]
        if len(matches) != 1:
            what = "no snapshot" if not matches else f"{len(matches)} snapshots"
            raise UsageError(f"{what} matching {snapshot!r}", "See `peersync backup list`.")
        return matches[0]
    own = [s for s in snaps if s.instance == instance] or snaps
    if at is not None:
        before = [s for s in own if s.time <= at]
        if not before:
            raise UsageError(f"no snapshot at or before {iso(at)} (the oldest is {iso(own[0].time)})")
        return max(before, key=lambda s: s.id)
    return max(own, key=lambda s: s.id)


def restore(ws: Workspace, *, target: str | None = None, snapshot: str | None = None,
            at: str | datetime | None = None, to: str | Path | None = None, in_place: bool = False,
            progress: Progress | None = None) -> RestoreResult:
    """Restore a snapshot, verifying every file's SHA-256 before it is written.

    Default destination: `<workspace>.restore-<id>` beside the workspace.  `to` must be empty
    (or not exist) and outside the workspace.  `in_place` writes into the live workspace under
    the workspace lock, moving each live file it replaces to the state dir first.  A file whose
    object is missing or corrupt is refused; all the others are still restored."""
    started = time.monotonic()
    cfg = load_config(ws)
    repo = open_repo(ws, cfg, target)
    snaps, bad = load_snapshots(ws, repo)
    if snapshot and snapshot in bad:
        raise BackupError(f"snapshot {snapshot}: {bad[snapshot]}")
    when = parse_time(at) if isinstance(at, str) else at
    snap = pick_snapshot(snaps, snapshot=snapshot, at=when, instance=ws.instance_id)
    if in_place and to is not None:
        raise UsageError("--in-place and --to exclude each other")
    if in_place:
        from peersync.workspace.lock import (
            workspace_lock,  # lazy: as before the layout change
        )

        with workspace_lock(ws, 0, what="restore"):
            return _restore(ws, repo, snap, ws.root, True, progress, started)
    dest = Path(to).expanduser().absolute() if to is not None else ws.root.with_name(f"{ws.root.name}.restore-{snap.id}")
    live = ws.root.resolve()
    if dest.resolve() == live:
        raise UsageError("that is the live workspace", "Use --in-place to restore over it (replaced files are kept).")
    if live in dest.resolve().parents:
        raise UsageError(f"{dest} is inside the workspace", "Restore outside it (it would be synced and backed up).")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest} already exists and is not empty", "Choose an empty or new directory with --to.")
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    return _restore(ws, repo, snap, dest, False, progress, started)


def _restore(ws: Workspace, repo: Repo, snap: Snapshot, dest: Path, in_place: bool,
             progress: Progress | None, started: float) -> RestoreResult:
    result = RestoreResult(snap, dest, in_place)
    records = list(snap.files)
    if in_place:  # state files and ~/.openclaw are restored only to a staging dir
        result.skipped = [r.path for r in records if r.path.startswith((OPENCLAW_PREFIX, STATE_DIR + "/"))]
        records = [r for r in records if not r.path.startswith((OPENCLAW_PREFIX, STATE_DIR + "/"))]
    result.diff = _diff_live(ws, snap)
    tmp_parent = ensure_private_dir(ws.state / "backup") if in_place else dest
    tmp = Path(tmp_parent) / f".peersync-restore-{secrets.token_hex(4)}"
    tmp.mkdir(mode=0o700)
    try:
        failures = _download(repo, {r.sha256 for r in records}, {r.sha256: r.size for r in records}, tmp,
                             progress, "download")
        verified: dict[str, bool] = {}
        uses: dict[str, int] = {}
        for r in records:
            uses[r.sha256] = uses.get(r.sha256, 0) + 1
        saved = ws.state / "backup" / f"replaced-{snap.id}-{int(time.time())}"
        made: set[Path] = set()
        for n, r in enumerate(sorted(records, key=lambda r: r.path)):
            if progress and n % 100 == 0:
                progress("restore", n, len(records))
            try:
                check_manifest_path(r.path)
            except BadPath as err:
                result.refused.append(Problem(r.path, f"unsafe path in the manifest ({err}); not restored"))
                continue
            obj = tmp / object_name(r.sha256)
            if r.sha256 not in verified:
                verified[r.sha256] = obj.is_file() and sha256_file(obj) == r.sha256
            uses[r.sha256] -= 1
            if not verified[r.sha256]:
                why = failures.get(r.sha256) or ("missing at the target" if not obj.exists()
                                                  else "corrupted (its SHA-256 does not match)")
                result.refused.append(Problem(r.path, f"object {r.sha256[:12]}… {why}; file not restored"))
                continue
            out = dest / r.path
            try:
                _make_parents(dest, out.parent, made)  # before looking at `out`: no symlinked parents
                if in_place and (out.is_symlink() or out.is_file()):
                    if not out.is_symlink() and sha256_file(out) == r.sha256:
                        result.unchanged.append(r.path)
                        continue
                    (saved / r.path).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(out, saved / r.path)  # the live version is kept, never overwritten
                    result.saved_to = saved
                # In place, a restore is the user's latest edit: it gets the current time, so
                # peers take it (under `newest` an older mtime would lose to their version).
                _place(obj, out, r, root=dest, last_use=uses[r.sha256] == 0, made=made,
                       mtime_ns=time.time_ns() if in_place else r.mtime_ns)
            except OSError as err:
                result.refused.append(Problem(r.path, f"cannot write: {err.strerror or err}"))
                continue
            result.restored.append(r.path)
            result.bytes += r.size
        if progress:
            progress("restore", len(records), len(records))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def _place(obj: Path, out: Path, r: FileRecord, *, root: Path, last_use: bool, made: set[Path],
           mtime_ns: int) -> None:
    """Put a verified object at `out` (atomically), with the snapshot's mode and `mtime_ns`."""
    _make_parents(root, out.parent, made)
    if out.is_dir() and not out.is_symlink():
        raise IsADirectoryError(21, "a directory is in the way")
    part = out.with_name(f".{out.name}.peersync-restore")
    if last_use:
        os.replace(obj, part)
    else:
        shutil.copyfile(obj, part)
    os.chmod(part, r.mode & 0o7777)
    os.utime(part, ns=(mtime_ns, mtime_ns))
    os.replace(part, out)


def _make_parents(root: Path, parent: Path, made: set[Path]) -> None:
    """Create `parent` below `root`, never through a symbolic link (it could lead anywhere)."""
    current = root
    for part in parent.relative_to(root).parts:
        current = current / part
        if current in made:
            continue
        if current.is_symlink():
            raise OSError(40, f"a symbolic link is in the way ({current.relative_to(root)})")
        current.mkdir(exist_ok=True)
        made.add(current)


def _download(repo: Repo, shas: set[str], sizes: Mapping[str, int], into: Path,
              progress: Progress | None, phase: str) -> dict[str, str]:
    """Fetch objects into `into/ab/cdef…` with one rclone copy.  Returns sha → why it failed,
    for the objects rclone itself reported (e.g. crypt authentication failures)."""
    if not shas:
        return {}
    listing = into / ".files"
    listing.write_text("".join(object_name(s) + "\n" for s in sorted(shas)))
    total = sum(sizes.get(s, 0) for s in shas)

    def on_stats(stats: dict) -> None:
        if progress:
            progress(phase, int(stats.get("bytes", 0)), total)

    code, _, stderr = repo.rclone.run_with_stats(
        ["copy", repo.path("objects"), str(into), "--files-from-raw", str(listing),
         *repo.parallel()], on_stats, check=False)
    listing.unlink(missing_ok=True)
    failures: dict[str, str] = {}
    if code != 0:
        for line in stderr.splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                doc = json.loads(line)
                obj = str(doc.get("object", ""))
                sha = obj.replace("/", "")
                if SHA_RE.match(sha) and doc.get("level") == "error":
                    failures[sha] = _why(str(doc.get("msg", "")))
        if not failures and not any(into.glob("*/*")):
            raise repo.rclone.error(["copy"], code, stderr)
    return failures


def _why(message: str) -> str:
    message = re.sub(r"^Failed to \w+: ", "", message).strip()
    if "failed to authenticate decrypted block" in message:
        return "corrupted (fails crypt authentication)"
    return f"unreadable ({message})" if message else "unreadable"


def _diff_live(ws: Workspace, snap: Snapshot) -> dict:
    """How the snapshot's workspace files differ from the live workspace selection now."""
    try:
        live = {f.record.path: f.record.sha256 for f in collect(ws, BackupConfig(), save_cache=False)}
    except (OSError, ConfigError):
        return {}
    ours = {r.path: r.sha256 for r in snap.files if not r.path.startswith((OPENCLAW_PREFIX, STATE_DIR + "/"))}
    changed = sorted(p for p in ours if p in live and live[p] != ours[p])
    missing = sorted(p for p in ours if p not in live)
    extra = sorted(p for p in live if p not in ours)
    return {"same": sum(1 for p in ours if live.get(p) == ours[p]), "changed": changed,
            "only_in_snapshot": missing, "only_live": extra}


# -- verify ---------------------------------------------------------------------------------

@dataclass
class VerifyResult:
    target: dict
    snapshots: list[str]
    objects: int = 0
    bytes: int = 0
    bad: dict[str, str] = field(default_factory=dict)  # sha256 → what is wrong
    affected: list[dict] = field(default_factory=list)  # {"snapshot", "path", "sha256", "problem"}
    unreadable: dict[str, str] = field(default_factory=dict)  # snapshot id → why its manifest failed
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.bad and not self.unreadable

    def to_json(self) -> dict:
        return {"ok": self.ok, **self.target, "snapshots": self.snapshots, "objects": self.objects,
                "bytes": self.bytes, "bad_objects": self.bad, "affected": self.affected,
                "unreadable": self.unreadable, "seconds": round(self.seconds, 3)}


def verify(ws: Workspace, *, target: str | None = None, snapshot: str | None = None,
           progress: Progress | None = None) -> VerifyResult:
    """Download and hash every object the snapshot(s) need; name each missing or corrupted one
    and the files (per snapshot) that depend on it."""
    started = time.monotonic()
    cfg = load_config(ws)
    repo = open_repo(ws, cfg, target)
    snaps, bad_manifests = load_snapshots(ws, repo, cached=False)
    if snapshot:
        snaps = [pick_snapshot(snaps, snapshot=snapshot)]
        bad_manifests = {k: v for k, v in bad_manifests.items() if k == snapshot}
    result = VerifyResult(repo.describe(), [s.id for s in snaps], unreadable=bad_manifests)
    sizes: dict[str, int] = {}
    for s in snaps:
        for r in s.files:
            sizes[r.sha256] = r.size
    stored = list_objects(repo)
    for sha in sizes:
        if sha not in stored:
            result.bad[sha] = "missing at the target"
        elif stored[sha] >= 0 and stored[sha] != sizes[sha]:
            result.bad[sha] = f"corrupted (stored size {stored[sha]}, expected {sizes[sha]})"
    todo = sorted(s for s in sizes if s not in result.bad)
    result.objects, result.bytes = len(sizes), sum(sizes.values())
    batches: list[list[str]] = [[]]  # download at most VERIFY_BATCH bytes at a time
    size = 0
    for sha in todo:
        if batches[-1] and size + sizes[sha] > VERIFY_BATCH:
            batches.append([])
            size = 0
        batches[-1].append(sha)
        size += sizes[sha]
    scratch = ensure_private_dir(ws.state / "backup") / f"verify-{secrets.token_hex(4)}"
    done = 0
    try:
        for batch in filter(None, batches):
            scratch.mkdir(mode=0o700)
            offset = done
            failures = _download(repo, set(batch), sizes, scratch, progress and (
                lambda _phase, d, _total: progress("verify", offset + d, result.bytes)), "verify")
            for sha in batch:
                obj = scratch / object_name(sha)
                if not obj.is_file():
                    result.bad[sha] = failures.get(sha, "could not be downloaded")
                elif sha256_file(obj) != sha:
                    result.bad[sha] = "corrupted (its SHA-256 does not match)"
                done += sizes[sha]
            shutil.rmtree(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for s in snaps:
        for r in s.files:
            if r.sha256 in result.bad:
                result.affected.append({"snapshot": s.id, "path": r.path, "sha256": r.sha256,
                                        "problem": result.bad[r.sha256]})
    result.seconds = time.monotonic() - started
    _record_verify(ws, result)
    return result


def _record_verify(ws: Workspace, result: VerifyResult) -> None:
    """The last verify's outcome (state/backup/last-verify.json), for `status` pages such as the dashboard."""
    doc = {"format": 1, "time": time.time(), "ok": result.ok, "snapshots": len(result.snapshots),
           "objects": result.objects, "bad": len(result.bad) + len(result.unreadable)}
    with contextlib.suppress(OSError):
        ensure_private_dir(ws.state / "backup")
        atomic_write_json(ws.state / "backup" / "last-verify.json", doc)


# -- prune --------------------------------------------------------------------------------------

@dataclass
class PruneResult:
    policy: str
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    deleted_objects: int = 0
    freed_bytes: int = 0
    objects_held: str | None = None  # why unreferenced objects were left in place, if they were
    dry_run: bool = False

    def to_json(self) -> dict:
        return {"ok": True, "policy": self.policy, "kept": self.kept, "removed": self.removed,
                "deleted_objects": self.deleted_objects, "freed_bytes": self.freed_bytes,
                "objects_held": self.objects_held, "dry_run": self.dry_run}


def prune(ws: Workspace, *, target: str | None = None, now: datetime | None = None, dry_run: bool = False,
          config: BackupConfig | None = None, policy: KeepPolicy | None = None) -> PruneResult:
    """Forget the snapshots the keep policy does not keep (per instance, restic-style, in local
    time), then delete objects no remaining snapshot references.

    Objects are collected only when no live backup lock exists: a running backup may already
    count on an object that looks unreferenced (it listed it, so it did not upload it again)."""
    cfg = config or load_config(ws)
    keep = policy or cfg.keep
    if keep is None or keep.empty:
        raise UsageError("no retention policy: nothing to prune",
                         "Set backup.keep in config.yaml, e.g. `keep: 7` or `keep: {daily: 7, weekly: 4, monthly: 12}`.")
    repo = open_repo(ws, cfg, target)
    result = PruneResult(keep.describe(), dry_run=dry_run)
    listing = ensure_private_dir(ws.state / "backup") / ".prune-list"
    lock = contextlib.nullcontext() if dry_run else TargetLock(repo, ws, "prune", new_snapshot_id(
        now or datetime.now(timezone.utc)))
    with lock:
        # Order matters: our lock is written, THEN the backup locks are read.  A backup writes its
        # lock and then looks for prune locks, so either we see it here or it waits for us — and
        # no snapshot can appear after this point that the listing below would miss.
        locks = read_locks(repo)
        live = [lk for lk in locks if lk["kind"] == "backup" and not lk["stale"]]
        snaps, bad = load_snapshots(ws, repo)
        groups: dict[str, list[Snapshot]] = {}
        for s in snaps:
            groups.setdefault(s.instance, []).append(s)
        removed: set[str] = set()
        for group in groups.values():
            removed.update(s.id for s in apply_policy([Snap(s.id, s.time.astimezone()) for s in group], keep).remove)
        result.removed = sorted(removed)
        result.kept = sorted([s.id for s in snaps if s.id not in removed] + list(bad))
        if result.removed and not dry_run:
            repo.rclone.delete_files(repo.path("snapshots"), [i + SNAPSHOT_SUFFIX for i in result.removed], listing)
        if bad:
            result.objects_held = f"{len(bad)} snapshot manifest(s) unreadable: cannot tell which objects they need"
        elif live:
            result.objects_held = (f"a backup is running (on {live[0].get('host', '?')}); unreferenced objects "
                                   "are collected by a later prune")
        else:
            referenced = {r.sha256 for s in snaps if s.id not in removed for r in s.files}
            stored = list_objects(repo)
            garbage = sorted(sha for sha in stored if sha not in referenced)
            result.deleted_objects = len(garbage)
            result.freed_bytes = sum(max(stored[s], 0) for s in garbage)
            if garbage and not dry_run:
                repo.rclone.delete_files(repo.path("objects"), [object_name(s) for s in garbage], listing)
        if not dry_run:
            for lk in locks:
                if lk["age"] > LOCK_FORGET:
                    with contextlib.suppress(RcloneError):
                        repo.rclone.deletefile(repo.path("locks", lk["name"]))
    listing.unlink(missing_ok=True)
    return result
