"""Mailbox mode's way in: files dropped in the cloud `_outbox/` move into the workspace `_inbox/`.

Exactly once: a file is delivered by hard-linking a verified download into `_inbox/` (never over an
existing file: a clash gets a " (2)" suffix; identical content already there counts as delivered),
recorded in `cloud/<peer>/inbox.json`, and only then deleted from the cloud — and only if the cloud
object is still the version that was delivered.  A run killed in between finds the record and
deletes without delivering again.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

from peersync.cloud import hashes as cloud_hash
from peersync.cloud.config import inbox_command
from peersync.cloud.index import Obj
from peersync.cloud.session import MAILBOX_DIRS, CloudSession
from peersync.core.paths import BadPath, check_relpath
from peersync.core.types import Problem, Report, Side
from peersync.replica.store import Refused
from peersync.workspace.storage import atomic_write_json, fsync_dir, read_json

INBOX_FORMAT = 1  # bump me when inbox.json changes
INBOX, OUTBOX = MAILBOX_DIRS
KEEP = ".peersync-keep"  # marks an empty `_outbox/` where the cloud has no empty folders (S3)
JUNK = {".ds_store", "thumbs.db", "desktop.ini", KEEP}
COMMAND_TIMEOUT = 60.0


def is_junk(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name.lower() in JUNK or name.startswith(("~$", ".~lock."))


async def bootstrap(session: CloudSession, root: Path, outbox: dict[str, Obj]) -> None:
    """Create the workspace `_inbox/` and the cloud `_outbox/` (where folders can be empty, a folder;
    elsewhere a marker object, so the folder shows in the provider's app)."""
    _safe_dir(root, root / INBOX)
    if outbox:
        return
    if session.cache.features.get("empty_dirs", True):
        await session.rclone("mkdir", session.at(OUTBOX))
    else:
        await session.rclone("rcat", session.at(OUTBOX, KEEP), input=b"")


def describe(outbox: dict[str, Obj], report: Report) -> None:
    """Dry run: what would arrive."""
    report.pulled += [f"{INBOX}/{rel}" for rel in sorted(outbox) if not is_junk(rel)]


async def drain(session: CloudSession, root: Path, outbox: dict[str, Obj], report: Report,
                command: list[str] | None) -> list[str]:
    """Move `_outbox/` files into `_inbox/`; returns the workspace paths of new arrivals."""
    items = {}
    for rel, obj in sorted(outbox.items()):
        if is_junk(rel):
            continue
        try:
            check_relpath(f"{INBOX}/{rel}")
        except BadPath as err:
            report.problems.append(Problem(f"{OUTBOX}/{rel}", f"not moved to {INBOX}/: {err}", Side.REMOTE))
            continue
        items[rel] = obj
    journal_file = session.dir / "inbox.json"
    journal = _load(journal_file)
    done = {rel for rel, obj in items.items() if any(_matches(j, rel, obj) for j in journal)}
    fresh = sorted(set(items) - done)
    arrived = []
    if fresh:
        into = session.work / "inbox"
        await session.batch("copy", session.at(OUTBOX), str(into), fresh)
        for rel in fresh:
            obj, copy = items[rel], into / rel
            try:
                ours, theirs = await asyncio.to_thread(cloud_hash.file_hashes, copy, session.hash_type)
                if copy.stat().st_size != obj.size or (obj.bhash and theirs != obj.bhash):
                    raise Refused("still being written; it stays there for the next sync")
                name, new = await asyncio.to_thread(_deliver, root, rel, copy, ours)
            except FileNotFoundError:
                report.problems.append(Problem(f"{OUTBOX}/{rel}", "vanished before it could be moved", Side.REMOTE))
                continue
            except (Refused, OSError) as err:
                report.problems.append(Problem(f"{OUTBOX}/{rel}", f"not moved to {INBOX}/: {err}", Side.REMOTE))
                continue
            journal.append({"path": rel, "size": obj.size, "mtime_ns": obj.mtime_ns, "bhash": obj.bhash, "as": name})
            _save(journal_file, journal)  # recorded before the cloud copy goes: a crash cannot deliver twice
            done.add(rel)
            if new:
                arrived.append(name)
    if done:
        current = await session.stat(sorted(done), base=OUTBOX)
        unchanged = sorted(rel for rel in done if items[rel].same(current.get(rel)))
        for rel in sorted(done - set(unchanged)):
            if rel in current:
                report.problems.append(Problem(f"{OUTBOX}/{rel}", "replaced while being moved; the new version "
                                               "arrives with the next sync", Side.REMOTE))
        if unchanged:
            await session.rclone("delete", session.at(OUTBOX), "--files-from-raw", session.list_file(unchanged),
                                 check=False)
        left = await session.stat(unchanged, base=OUTBOX) if unchanged else {}
        journal = [j for j in journal if j["path"] in left and any(_matches(j, r, o) for r, o in left.items())]
        _save(journal_file, journal)
    report.pulled += arrived
    if arrived and command:
        await run_command(root, command, arrived, report)
    return arrived


def _matches(record: dict, rel: str, obj: Obj) -> bool:
    try:
        return record.get("path") == rel and obj.same(Obj(record["size"], record["mtime_ns"], record.get("bhash")))
    except (KeyError, TypeError):
        return False


def _deliver(root: Path, rel: str, copy: Path, digest: str) -> tuple[str, bool]:
    """Link `copy` into `_inbox/rel` without ever replacing a file; (workspace path, newly created)."""
    dest = root / INBOX / rel
    _safe_dir(root, dest.parent)
    for n in itertools.count(1):
        candidate = dest if n == 1 else dest.with_name(_numbered(dest.name, n))
        try:
            os.link(copy, candidate)
        except FileExistsError:
            if candidate.is_file() and not candidate.is_symlink() and cloud_hash.file_hashes(candidate, None)[0] == digest:
                return str(candidate.relative_to(root).as_posix()), False  # already delivered
            if n >= 1000:
                raise Refused("too many files with this name in _inbox/") from None
            continue
        fsync_dir(candidate.parent)
        return str(candidate.relative_to(root).as_posix()), True
    raise AssertionError("unreachable")


def _numbered(name: str, n: int) -> str:
    """"report.pdf" → "report (2).pdf"; ".env" → ".env (2)"; "a.tar.gz" → "a (2).tar.gz".  A name
    that would pass NAME_MAX (255 bytes) has its stem cut and a hash of the whole name added."""
    dot = name.find(".", 1)
    stem, ext = (name, "") if dot < 0 else (name[:dot], name[dot:])
    out = f"{stem} ({n}){ext}"
    if len(os.fsencode(out)) <= 255:
        return out
    import hashlib  # lazy: a name this long is rare

    tag = f"~{hashlib.blake2b(os.fsencode(name), digest_size=4).hexdigest()} ({n})"
    ext = ext if len(os.fsencode(ext)) <= 64 else ""
    room = 255 - len(os.fsencode(tag + ext))
    cut = stem
    while len(os.fsencode(cut)) > room:  # whole characters only
        cut = cut[:-1]
    return f"{cut}{tag}{ext}"


def _safe_dir(root: Path, directory: Path) -> None:
    """mkdir -p inside the workspace, refusing to go through a symbolic link."""
    current = root
    for part in directory.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            raise Refused(f"{current.relative_to(root)} is a symbolic link")
        if not current.is_dir():
            current.mkdir()


async def run_command(root: Path, command: list[str], names: list[str], report: Report) -> None:
    """The configured `cloud.inbox.command`, with the new names (`{files}` or appended); no shell."""
    if any("{files}" in arg for arg in command):
        args = [arg.replace("{files}", ", ".join(names)) for arg in command]
    else:
        args = command + names
    env = {**os.environ, "PEERSYNC_INBOX_FILES": "\n".join(names), "WORKSPACE": str(root)}
    try:
        proc = await asyncio.create_subprocess_exec(*args, cwd=root, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    except OSError as err:
        report.problems.append(Problem("", f"inbox command {command[0]!r} could not start: {err.strerror or err}"))
        return
    try:
        _, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        report.problems.append(Problem("", f"inbox command {command[0]!r} timed out after {COMMAND_TIMEOUT:g} s"))
        return
    if proc.returncode != 0:
        last = (err.decode(errors="replace").strip().splitlines() or [""])[-1][:200]
        report.problems.append(Problem("", f"inbox command {command[0]!r} failed (exit {proc.returncode})"
                                       + (f": {last}" if last else "")))


def _load(path: Path) -> list[dict]:
    try:
        data = read_json(path, default={"delivered": []})
    except ValueError:
        return []
    items = data.get("delivered") if isinstance(data, dict) else None
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _save(path: Path, items: list[dict]) -> None:
    atomic_write_json(path, {"format": INBOX_FORMAT, "delivered": items}, indent=None)


class MailboxSession(CloudSession):
    """A cloud folder in mailbox mode: the selection is pushed to it except its own two folders, and
    after each run what users dropped in its `_outbox/` is delivered into our `_inbox/`."""

    def local_view(self, entries):
        return {p: e for p, e in entries.items() if p.split("/", 1)[0] not in MAILBOX_DIRS}

    async def finish(self, ws, report: Report, *, dry_run: bool) -> None:
        if dry_run:
            describe(self.outbox, report)
            return
        await bootstrap(self, ws.root, self.outbox)
        await drain(self, ws.root, self.outbox, report, inbox_command(ws))
