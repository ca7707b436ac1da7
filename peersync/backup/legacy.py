"""Old-format backups (peersync before restic): read them, and `backup migrate` them into the restic repository.

The old layout at a target (under rclone crypt when it was made with a passphrase; only the
marker stays plain):

    peersync-backup.json        marker: format, encrypted?, crypt salt, repository id
    peersync-check              known plaintext (encrypted only): proves the passphrase
    objects/ab/cdef…            file contents named by SHA-256
    snapshots/<id>.json.gz      one manifest per snapshot

Nothing here writes to the old layout: migrate reads each snapshot (every object checked
against its SHA-256), rebuilds its files in a private staging directory, and backs that up
with restic under the snapshot's own time, host and instance.  The restic repository sits
beside the old data, at <target>/restic; the old data stays until the user deletes it.

Authenticity.  An encrypted old-format snapshot is authenticated: rclone crypt seals every
file (manifest and objects) with a key derived from the passphrase (NaCl secretbox), a
manifest must name the snapshot its file is named after, and every object must match the
SHA-256 it is named by.  An unencrypted one cannot be: it was written with no key, so anyone
who could write to the target could have forged it.  Those are refused unless the user
vouches for the target (`--trust-unencrypted`).  Either way, what a restore may write is
decided again at restore time (selection, no special mode bits, nothing outside).
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
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from peersync.backup.config import LEGACY_MARKER, PASSPHRASE_ENV, Location, backup_dir, load_config, locate, resolve
from peersync.backup.repo import INSTANCE_TAG, TAG, Repo, load_snapshots, local_lock, open_repo, restic_time
from peersync.backup.restic import WrongPassphrase
from peersync.backup.selection import OPENCLAW_PREFIX
from peersync.errors import BackupError, UsageError
from peersync.core.paths import STATE_DIR, BadPath, check_relpath
from peersync.transport.rclone import Rclone, RcloneError, crypt_env, join
from peersync.core.types import Problem
from peersync.workspace.workspace import Workspace

FORMAT = 1  # the newest old format this reader understands
CHECK_NAME = "peersync-check"
CHECK_PLAINTEXT = b"peersync backup check v1: the passphrase is right\n"
CRYPT_REMOTE = "peersync_crypt"
SNAPSHOT_SUFFIX = ".json.gz"
ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{4}$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class OldFile:
    path: str
    size: int
    mtime_ns: int
    mode: int
    sha256: str


@dataclass(frozen=True)
class OldSnapshot:
    id: str
    time: datetime  # UTC, whole seconds
    instance: str
    host: str
    files: tuple[OldFile, ...]


@dataclass
class Legacy:
    """An opened old-format repository (read-only)."""

    rclone: Rclone
    store: str  # where objects/ and snapshots/ are: the crypt remote or the target itself
    encrypted: bool
    display: str

    def path(self, *parts: str) -> str:
        return join(self.store, *parts)


def open_legacy(location: Location, rc: Rclone, passphrase: str | None) -> Legacy | None:
    """The old-format repository at the target, or None when it has none."""
    if location.layout != "legacy":
        return None
    tgt = location.target
    try:
        marker = json.loads(rc.cat(tgt.join(LEGACY_MARKER)))
        assert isinstance(marker, dict) and isinstance(marker.get("format"), int)
    except (RcloneError, ValueError, AssertionError):
        raise BackupError(f"{tgt.display}/{LEGACY_MARKER} is damaged or unreadable",
                          "Restore it from a copy; the old-format snapshots cannot be read without it.") from None
    if marker["format"] > FORMAT:
        raise BackupError(f"old-format backups at {tgt.display} are of an unknown format {marker['format']}")
    if not marker.get("encrypted"):
        return Legacy(rc, tgt.remote, False, tgt.display)
    if not passphrase:
        raise WrongPassphrase(f"the old-format backups at {tgt.display} are encrypted and no passphrase is set",
                              f"Set {PASSPHRASE_ENV} to the passphrase they were made with.")
    env = crypt_env(rc, CRYPT_REMOTE, tgt.remote, passphrase, str(marker.get("salt", "")))
    crc = rc.with_env(env, secrets=[env[k] for k in env if k.endswith(("PASSWORD", "PASSWORD2"))])
    try:
        proof = crc.cat(join(CRYPT_REMOTE + ":", CHECK_NAME))
    except RcloneError:
        proof = None
    if proof != CHECK_PLAINTEXT:
        raise WrongPassphrase(f"wrong passphrase for the old-format backups at {tgt.display}",
                              f"Set {PASSPHRASE_ENV} to the passphrase they were made with.")
    return Legacy(crc, CRYPT_REMOTE + ":", True, tgt.display)


def read_snapshots(legacy: Legacy, scratch: Path) -> tuple[list[OldSnapshot], dict[str, str]]:
    """Every old snapshot (oldest first), and the ids whose manifest could not be read → why."""
    names = legacy.rclone.lsf(legacy.path("snapshots"), files_only=True, missing_ok=True)
    ids = sorted(n[: -len(SNAPSHOT_SUFFIX)] for n in names if n.endswith(SNAPSHOT_SUFFIX)
                 and ID_RE.match(n[: -len(SNAPSHOT_SUFFIX)]))
    into = scratch / "manifests"
    into.mkdir(mode=0o700)
    if ids:
        listing = scratch / "manifest-list"
        listing.write_text("".join(i + SNAPSHOT_SUFFIX + "\n" for i in ids))
        legacy.rclone.run(["copy", legacy.path("snapshots"), str(into), "--files-from-raw", str(listing)], check=False)
    good, bad = [], {}
    for sid in ids:
        try:
            snap = _parse((into / (sid + SNAPSHOT_SUFFIX)).read_bytes())
            if snap.id != sid:
                raise ValueError(f"the manifest names snapshot {snap.id}")  # a copy under another name
            good.append(snap)
        except FileNotFoundError:
            bad[sid] = "manifest could not be downloaded" + (" (fails crypt authentication?)" if legacy.encrypted else "")
        except (ValueError, KeyError, TypeError, OSError, EOFError) as err:
            bad[sid] = f"manifest unreadable: {err}"
    return good, bad


def _parse(data: bytes) -> OldSnapshot:
    doc = json.loads(gzip.decompress(data))
    if not isinstance(doc, dict) or not isinstance(doc.get("format"), int) or doc["format"] > FORMAT:
        raise ValueError("not a peersync snapshot manifest of a known format")
    if not ID_RE.match(str(doc.get("id"))):
        raise ValueError(f"bad snapshot id {doc.get('id')!r}")
    files = []
    for raw in doc["entries"]:
        f = OldFile(raw["path"], raw["size"], raw["mtime_ns"], raw["mode"], raw["sha256"])
        if not (isinstance(f.path, str) and isinstance(f.size, int) and isinstance(f.mtime_ns, int)
                and isinstance(f.mode, int) and isinstance(f.sha256, str) and SHA_RE.match(f.sha256)):
            raise ValueError(f"bad entry for {f.path!r}")
        files.append(f)
    moment = datetime.fromisoformat(str(doc["time"]).replace("Z", "+00:00")).astimezone(timezone.utc)
    return OldSnapshot(doc["id"], moment, str(doc.get("instance", "")), str(doc.get("host", "")), tuple(files))


def _safe_path(path: str) -> str:
    """A manifest path safe to write under a directory (old snapshots also held state files
    and ~/.openclaw copies under @openclaw/)."""
    inner = path[len(OPENCLAW_PREFIX):] if path.startswith(OPENCLAW_PREFIX) else path
    if inner.startswith(STATE_DIR + "/"):
        inner = inner[len(STATE_DIR) + 1:]
    check_relpath(inner)
    return path


def rebuild(legacy: Legacy, snap: OldSnapshot, into: Path, scratch: Path) -> list[Problem]:
    """Write the snapshot's files under `into` (mode without special bits, exact mtime), each
    object checked against its SHA-256.  Returns the files that could not be rebuilt."""
    problems: list[Problem] = []
    objects = scratch / "objects"
    shutil.rmtree(objects, ignore_errors=True)
    objects.mkdir(mode=0o700)
    wanted = sorted({f.sha256 for f in snap.files})
    if wanted:
        listing = scratch / "object-list"
        listing.write_text("".join(f"{s[:2]}/{s[2:]}\n" for s in wanted))
        legacy.rclone.run(["copy", legacy.path("objects"), str(objects), "--files-from-raw", str(listing),
                           "--transfers", "8"], check=False)
    good: dict[str, bool] = {}
    for f in snap.files:
        try:
            _safe_path(f.path)
        except BadPath as err:
            problems.append(Problem(f.path, f"unsafe path in the old manifest ({err}); left out"))
            continue
        obj = objects / f.sha256[:2] / f.sha256[2:]
        if f.sha256 not in good:
            good[f.sha256] = obj.is_file() and _sha256(obj) == f.sha256
        if not good[f.sha256]:
            problems.append(Problem(f.path, "its content is missing or damaged at the target; left out"))
            continue
        out = into / f.path
        try:
            _mkdirs(into, out.parent)
            shutil.copyfile(obj, out)
            os.chmod(out, f.mode & 0o777)
            os.utime(out, ns=(f.mtime_ns, f.mtime_ns))
        except OSError as err:
            problems.append(Problem(f.path, f"cannot rebuild: {err.strerror or err}"))
    shutil.rmtree(objects, ignore_errors=True)
    return problems


def _mkdirs(root: Path, parent: Path) -> None:
    current = root
    for part in parent.relative_to(root).parts:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            raise OSError(40, f"something is in the way at {current.relative_to(root)}")
        current.mkdir(mode=0o700, exist_ok=True)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- migrate ----------------------------------------------------------------------------------------------

@dataclass
class MigrateResult:
    target: str
    encrypted: bool
    migrated: list[dict] = field(default_factory=list)  # {"old", "new", "time", "files"}
    already: list[str] = field(default_factory=list)  # old ids found in the repository already
    unreadable: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.unreadable

    def to_json(self) -> dict:
        return {"ok": self.ok, "target": self.target, "encrypted": self.encrypted, "migrated": self.migrated,
                "already": self.already, "unreadable": self.unreadable,
                "problems": [{"path": p.path, "message": p.message} for p in self.problems],
                "seconds": round(self.seconds, 3)}


def migrate(ws: Workspace, *, target: str | None = None, trust_unencrypted: bool = False,
            progress=None) -> MigrateResult:
    """Copy every old-format snapshot into the restic repository beside it, oldest first, each
    under its own time, host and instance.  Idempotent: a snapshot already there (same
    instance, host and time) is not copied again, so an interrupted migrate just runs again."""
    started = time.monotonic()
    cfg = load_config(ws)
    with local_lock(ws, "migrate"):
        tgt = resolve(ws, cfg, target)
        rc = Rclone(secrets=[*tgt.secrets, cfg.passphrase or ""]).with_env(tgt.env)
        legacy = open_legacy(locate(ws, rc, tgt, fresh=True), rc, cfg.passphrase)
        if legacy is None:
            raise UsageError(f"no old-format backups at {tgt.display}", "Nothing to migrate.")
        if not legacy.encrypted and not trust_unencrypted:
            raise UsageError(f"the old-format backups at {legacy.display} are not encrypted, so nothing proves "
                             "they are the ones peersync wrote (anyone able to write there could have changed them)",
                             "If only you can write to that target, run `peersync backup migrate --trust-unencrypted`.")
        repo = open_repo(ws, cfg, target, create=True)  # the restic repository beside the old data
        result = MigrateResult(tgt.display, legacy.encrypted)
        scratch = backup_dir(ws) / f"migrate-{secrets.token_hex(4)}"
        scratch.mkdir(mode=0o700)
        try:
            olds, result.unreadable = read_snapshots(legacy, scratch)
            present = {(s.instance, s.host, int(s.time.timestamp())) for s in load_snapshots(repo)}
            parent: str | None = None
            for n, old in enumerate(olds):
                if progress:
                    progress("migrate", n, len(olds))
                if (old.instance, old.host, int(old.time.timestamp())) in present:
                    result.already.append(old.id)
                    continue
                tree = scratch / "tree"
                shutil.rmtree(tree, ignore_errors=True)
                tree.mkdir(mode=0o700)
                problems = rebuild(legacy, old, tree, scratch)
                result.problems += [Problem(p.path, f"{old.id}: {p.message}") for p in problems]
                new = _backup_tree(repo, old, tree, parent)
                parent = new
                result.migrated.append({"old": old.id, "new": new, "time": old.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                        "files": len(old.files) - len(problems)})
            if progress:
                progress("migrate", len(olds), len(olds))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def _backup_tree(repo: Repo, old: OldSnapshot, tree: Path, parent: str | None) -> str:
    tops = sorted(os.listdir(tree))
    if not tops:  # an empty old snapshot still becomes one, so every old snapshot has its twin
        (tree / ".peersync-empty-snapshot").touch()
        tops = [".peersync-empty-snapshot"]
    listing = tree.parent / "tops"
    listing.write_bytes(b"".join(t.encode() + b"\0" for t in tops))
    args = ["backup", "--files-from-raw", str(listing), "--host", old.host or "unknown",
            "--tag", f"{TAG},{INSTANCE_TAG}{old.instance}", "--time", restic_time(old.time)]
    summary: dict = {}

    def on_line(doc: dict) -> None:
        if doc.get("message_type") == "summary":
            summary.update(doc)

    repo.with_lock_recovery(lambda: repo.restic.stream([*args, *(["--parent", parent] if parent else [])],
                                                       on_line, cwd=str(tree)))
    return str(summary.get("snapshot_id", ""))[:8]


def legacy_summary(location: Location, rc: Rclone) -> dict | None:
    """For status and list: old-format snapshots still waiting at the target, if any (one read)."""
    if location.layout != "legacy":
        return None
    hint = ("Old-format snapshots are here: `peersync backup migrate` copies them into the restic repository "
            "(they are listed and restored from there afterwards).")
    with contextlib.suppress(RcloneError, ValueError):
        marker = json.loads(rc.cat(location.target.join(LEGACY_MARKER)))
        return {"encrypted": bool(marker.get("encrypted")), "where": location.target.display, "hint": hint}
    return {"encrypted": None, "where": location.target.display, "hint": hint + " (its marker is unreadable)"}
