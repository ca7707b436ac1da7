"""`backup verify`: restic reads and authenticates every pack; peersync names the files a damaged one holds."""

from __future__ import annotations

import concurrent.futures
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field

from peersync.backup.config import backup_dir, load_config
from peersync.backup.repo import load_snapshots, open_repo
from peersync.backup.restic import ResticError
from peersync.backup.restoring import pick_snapshot
from peersync.workspace.storage import atomic_write_json, read_json
from peersync.workspace.workspace import Workspace

_PACK = re.compile(r"\b(?:pack|Pack ID does not match, want|Pack)\s+([0-9a-f]{8,64})\b")
_IGNORED = re.compile(r"^ignoring error for (/.*?): (.*)$", re.M)
_NOISE = ("using temporary cache", "create exclusive lock", "load indexes", "check all packs",
          "check snapshots, trees and blobs", "read all data", "no errors were found", "[")


@dataclass
class VerifyResult:
    target: dict
    snapshots: list[str]  # short ids checked
    ok: bool = True
    bad_packs: list[str] = field(default_factory=list)
    affected: list[dict] = field(default_factory=list)  # {"snapshot", "path", "damaged", "problem"}: per file
    errors: list[str] = field(default_factory=list)  # restic's own lines about what is wrong
    seconds: float = 0.0
    checked_at: float = 0.0

    def to_json(self) -> dict:
        return {"ok": self.ok, **self.target, "snapshots": self.snapshots, "bad_packs": self.bad_packs,
                "affected": self.affected, "errors": self.errors, "seconds": round(self.seconds, 3),
                "checked_at": self.checked_at}


def verify(ws: Workspace, *, target: str | None = None, snapshot: str | None = None, progress=None) -> VerifyResult:
    """`restic check --read-data`: every pack downloaded, decrypted and authenticated, every
    blob hashed, every snapshot's tree walked.  A damaged pack is traced to the files (per
    snapshot) whose content it holds with `restic find --pack`.  With `snapshot`, the files
    reported are that snapshot's (the check itself is of the whole repository)."""
    started = time.monotonic()
    cfg = load_config(ws)
    repo = open_repo(ws, cfg, target)
    # The listing takes no lock, so it runs while `check` holds the exclusive one.
    listing = concurrent.futures.ThreadPoolExecutor(1)
    pending = listing.submit(load_snapshots, repo)
    listing.shutdown(wait=False)
    chosen = pick_snapshot(pending.result(), snapshot=snapshot) if snapshot else None  # a bad id: before the check

    def check() -> str:
        proc = repo.restic.run(["check", "--read-data"], check=False)
        text = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
        if proc.returncode != 0 and "repository contains errors" not in text:
            raise repo.restic.error(["check"], proc.returncode, proc.stderr.decode(errors="replace"))
        return text if proc.returncode != 0 else ""

    text = repo.with_lock_recovery(check)
    snaps = [chosen] if chosen else pending.result()
    result = VerifyResult(repo.describe(), [s.short_id for s in snaps])
    if text:
        result.ok = False
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith(_NOISE) or line == "Fatal: repository contains errors":
                continue
            result.errors.append(line)
            result.bad_packs += [m for m in _PACK.findall(line) if m not in result.bad_packs]
        result.affected = _files_in(repo, result.bad_packs, {s.id for s in snaps} if snapshot else None)
    result.seconds = time.monotonic() - started
    result.checked_at = time.time()
    _record(ws, result)
    return result


def _files_in(repo, packs: list[str], only: set[str] | None) -> list[dict]:
    """The files whose content a damaged pack holds (`restic find --pack`), each then restored
    alone with --verify into a private scratch dir: "damaged" when its content fails, "intact"
    when every blob it needs still decrypts and matches (a pack is damaged as a whole, its
    blobs one by one)."""
    if not packs:
        return []
    try:
        found = repo.restic.json(["find", "--no-lock", "--pack", *packs]) or []
    except ResticError:
        return []
    wanted: dict[str, set[str]] = {}
    for item in found:
        sid, path = str(item.get("snapshot", "")), str(item.get("path", ""))
        if only is None or sid in only:
            wanted.setdefault(sid, set()).add(path)
    out = []
    for sid, paths in sorted(wanted.items()):
        failed = _restore_failures(repo, sid, sorted(paths))
        for path in sorted(paths):
            why = failed.get(path)
            out.append({"snapshot": sid[:8], "path": path.lstrip("/"), "damaged": why is not None,
                        "problem": f"content damaged ({why})" if why else "intact, but stored in a damaged pack"})
    return sorted(out, key=lambda a: (not a["damaged"], a["snapshot"], a["path"]))


def _restore_failures(repo, sid: str, paths: list[str], batch: int = 500) -> dict[str, str]:
    scratch = backup_dir(repo.ws) / f"verify-{secrets.token_hex(4)}"
    failed: dict[str, str] = {}
    try:
        for i in range(0, len(paths), batch):
            scratch.mkdir(mode=0o700)
            includes = [a for p in paths[i:i + batch] for a in ("--include", _escape(p))]
            proc = repo.restic.run(["restore", sid, "--target", str(scratch), "--verify", *includes], check=False)
            text = proc.stderr.decode(errors="replace")
            failed.update({m.group(1): m.group(2) for m in _IGNORED.finditer(text)})
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return failed


def _escape(path: str) -> str:
    """A literal path as a restic pattern (filepath.Match syntax)."""
    return re.sub(r"([\\*?\[])", r"\\\1", path)


def _file(ws: Workspace):
    return ws.state / "backup" / "last-verify.json"


def _record(ws: Workspace, result: VerifyResult) -> None:
    backup_dir(ws)
    doc = {"format": 1, "ok": result.ok, "checked_at": result.checked_at, "target": result.target.get("target"),
           "snapshots": len(result.snapshots), "bad_packs": len(result.bad_packs),
           "affected_files": sum(1 for a in result.affected if a["damaged"]), "seconds": round(result.seconds, 3)}
    try:
        atomic_write_json(_file(ws), doc)
    except OSError:
        pass


def last_verify(ws: Workspace) -> dict | None:
    """The last `backup verify` here: {"ok", "checked_at", "target", "snapshots", "bad_packs", …} or None."""
    try:
        doc = read_json(_file(ws), default=None)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
