"""A cloud folder as a replica: the agent's operations (scan, read, install, delete, quarantine, lock,
ancestor_get/put, housekeeping) carried out with rclone, so engine.Run can execute plans on it.

Content identity.  Reconcile compares xxh3-128 hashes, which no cloud stores.  Each cloud object
gets one from, in order: a per-path cache (`cloud/<peer>/cache.json`) of what peersync uploaded or
hashed before, keyed by (size, backend hash) — or (size, modtime) where the backend reports no hash
peersync can compute; the backend hash itself when it is xxh128 (local folders, SFTP); a local file
of the same size whose locally computed backend hash (md5, sha1, Dropbox, QuickXor…) matches; else
the object is downloaded and hashed (the copy then serves the transfer).  So both manifests always
carry the same kind of hash, and an unknown cloud version is never assumed equal to anything.

Writes never clobber: before replacing or trashing an object, its current size and backend hash
(or modtime) are checked against the scan; a cloud version that loses a conflict is downloaded,
checked against the scanned hash, and kept in the LOCAL conflicts/ before it is overwritten;
deletions are server-side moves to `.peersync/trash/<batch>/`; every upload is checked afterwards
(size and backend hash).  The window between the check and rclone's write is not closed (rclone has
no compare-and-swap); it is seconds long, and a desktop client's own conflict copies cover it.

Lock: `.peersync/locks/<instance>-<token>.json`, one object per holder, so two writers never
overwrite each other's lock.  A writer creates its own, lists, and backs off (deleting only its own)
if any other exists.  Locks are never expired by age and never removed for another instance: a lock
of THIS instance is necessarily left by a dead run (live runs hold the workspace flock), so it is
removed; another machine's leftover lock is removed only by a person (`peersync cloud unlock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat as stat_mod
import time
from pathlib import Path

from peersync.cloud import hashes as cloud_hash
from peersync.cloud.index import HashCache, Obj, parse_listing
from peersync.core import deletions, versions
from peersync.core.paths import BadPath, check_relpath, in_state_dir, internal_rel
from peersync.core.selection import Selection
from peersync.core.types import READABLE_FORMATS, Entry
from peersync.errors import BusyError, PeersyncError, TransferError
from peersync.replica import tombstones
from peersync.replica.store import Refused, Store
from peersync.replica.versions import open_versions
from peersync.transport.children import die_with_parent
from peersync.transport.rclone import Rclone, join
from peersync.transport.replica import CLOUD, Replica
from peersync.workspace.storage import atomic_write_json, ensure_private_dir, read_json

META = ".peersync"  # the cloud folder's peersync directory: locks, trash, conflicts
PARTIAL = ".peersync-part"  # rclone's temp-file suffix for our transfers (≤ 16 characters)
MAILBOX_DIRS = ("_inbox", "_outbox")
DEFAULT_MODE = 0o644  # clouds keep no permission bits


# -- running rclone ---------------------------------------------------------------------------

async def run_rclone(rc: Rclone, args: list[str], *, input: bytes | None = None, check: bool = True
                     ) -> tuple[int, bytes, str]:
    """Run rclone from the event loop; cancelled (time budget) or failed, it never outlives us."""
    proc = await asyncio.create_subprocess_exec(
        *rc.command(args), env=rc.env, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent())
    try:
        out, err = await proc.communicate(input)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    text = err.decode(errors="replace")
    if check and proc.returncode != 0:
        raise rc.error(args, proc.returncode, text)
    return proc.returncode, out, text


def cloud_id(root: str) -> str:
    """A stable id for a cloud folder (32 hex digits, like an instance id): ties and journal names."""
    return hashlib.sha256(("cloud:" + root).encode()).hexdigest()[:32]


# -- the session ----------------------------------------------------------------------------------

class CloudSession(Replica):
    """One cloud folder, spoken to like a peer's agent.  Built by `open()`; `close()` releases the lock."""

    caps = CLOUD

    def __init__(self, ws, peer, root: str, rc: Rclone, selection: Selection, *, mailbox: bool, key: str = ""):
        self.ws, self.peer, self.root, self.rc = ws, peer, root, rc
        self.key = key or root  # names the folder in local state: another folder means nothing known
        self.selection = selection
        self.mailbox = mailbox
        self.dir = ws.state / "cloud" / peer.name
        self.work = self.dir / "work"  # scratch for this run: fetched and staged files
        self.store = Store(ws.root, selection)  # the LOCAL store: cloud versions that lose go to its conflicts/
        self.cloud_id = cloud_id(self.key)
        self.hello = {"root": root, "instance_id": self.cloud_id, "workspace": True,
                      "version": "rclone " + ".".join(map(str, rc.version))}
        self.offset = 0.0  # cloud modtimes come from the writers' own clocks
        self.hash_type: str | None = None
        self.cache: HashCache | None = None
        self.listed: dict[str, Obj] = {}  # selection objects as scanned (basis of the no-clobber checks)
        self.entries: dict[str, Entry] = {}
        self.unstable: set[str] = set()  # changed while being hashed: never written this run
        self.exists = True
        self.lock_name: str | None = None
        self.outbox: dict[str, Obj] = {}  # a mailbox's `_outbox/` objects, as the last scan saw them
        # The folder's version records, kept here with its ancestor (the cloud holds no state):
        # an object changed by anyone but peersync (a desktop app, a person) is a new version
        # made by the folder itself.
        self.versions = open_versions(self.dir, versions.short_id(self.cloud_id))

    @classmethod
    async def open(cls, ws, peer, root: str, rc: Rclone, selection: Selection, *, mailbox: bool,
                   key: str = "") -> "CloudSession":
        session = cls(ws, peer, root, rc, selection, mailbox=mailbox, key=key)
        ensure_private_dir(session.dir)
        shutil.rmtree(session.work, ignore_errors=True)  # leftovers of a killed run (we hold the workspace lock)
        ensure_private_dir(session.work)
        await session._load_cache()
        return session

    async def request(self, op: str, **args):
        method = getattr(self, f"op_{op}", None)
        if method is None:
            raise LookupError(f"a cloud folder has no operation {op!r}")
        return await method(**args)

    async def close(self) -> None:
        try:
            await self.release()
        finally:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- rclone plumbing -------------------------------------------------------------------------
    def at(self, *parts: str) -> str:
        return join(self.root, *parts)

    async def rclone(self, *args: str, input: bytes | None = None, check: bool = True) -> tuple[int, bytes, str]:
        return await run_rclone(self.rc, list(args), input=input, check=check)

    def list_file(self, paths: list[str]) -> str:
        # An empty --files-from list would make copy/move/delete act on EVERYTHING: refuse it here.
        if not paths:
            raise ValueError("empty file list")
        path = self.work / f"list-{secrets.token_hex(4)}"
        path.write_text("".join(p + "\n" for p in paths), encoding="utf-8", errors="surrogateescape")
        return str(path)

    async def batch(self, verb: str, source: str, dest: str, paths: list[str], *extra: str,
                    check: bool = False) -> tuple[int, str]:
        """`rclone copy|move SOURCE DEST` for exactly `paths` (relative to SOURCE)."""
        code, _, err = await self.rclone(verb, source, dest, "--files-from-raw", self.list_file(paths),
                                         "--no-traverse", "--ignore-times", "--partial-suffix", PARTIAL,
                                         *extra, check=check)
        return code, err

    async def fetch_into(self, into: Path, paths: list[str]) -> None:
        """Copy cloud `paths` to into/internal_rel(path): our scratch copy of a path near PATH_MAX
        is kept under a short name (core.paths.internal_rel), one `copyto` each; the rest in one batch."""
        short = [p for p in paths if internal_rel(p) == p]
        if short:
            await self.batch("copy", self.root, str(into), short)
        for path in paths:
            if internal_rel(path) != path:
                dest = into / internal_rel(path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                await self.rclone("copyto", self.at(path), str(dest), "--ignore-times",
                                  "--partial-suffix", PARTIAL, check=False)

    async def send_from(self, upload: Path, paths: list[str]) -> None:
        """Copy upload/internal_rel(path) to each cloud `path` (fetch_into's way back).  A long name
        is written in place: rclone's temp name (name + PARTIAL) would pass NAME_MAX."""
        short = [p for p in paths if internal_rel(p) == p]
        if short:
            await self.batch("copy", str(upload), self.root, short)
        for path in paths:
            if internal_rel(path) != path:
                await self.rclone("copyto", str(upload / internal_rel(path)), self.at(path), "--ignore-times",
                                  "--inplace", check=False)

    async def stat(self, paths: list[str], base: str = "") -> dict[str, Obj]:
        """Current objects at `paths` (missing ones are absent from the result)."""
        if not paths:
            return {}
        args = ["lsjson", "-R", "--files-only", "--no-mimetype", "--files-from-raw", self.list_file(paths)]
        if self.hash_type:
            args += ["--hash", "--hash-type", self.hash_type]
        code, out, err = await self.rclone(*args, self.at(base), check=False)
        if code != 0:
            if self._missing(code, err):
                return {}
            raise self.rc.error(args, code, err)
        return parse_listing(out, self.hash_type)

    def _missing(self, code: int, err: str) -> bool:
        return code == 3 or "directory not found" in err

    async def _load_cache(self) -> None:
        probe = HashCache(self.dir / "cache.json", self.key, None)
        features = probe.features
        if not features:
            features = await self._features()
        self.hash_type = features.get("hash_type")
        self.cache = HashCache(self.dir / "cache.json", self.key, self.hash_type)
        self.cache.features = features

    async def _features(self) -> dict:
        """Which hash to compare and whether empty folders exist, from `rclone backend features`."""
        code, out, err = await self.rclone("backend", "features", self.root, check=False)
        if code != 0:
            raise self.rc.error(["backend", "features"], code, err)
        doc = json.loads(out or b"{}")
        hashes = doc.get("Hashes") or []
        # A local folder stores no hashes: rclone would read every file on every scan.  There,
        # size + modtime (ns precision) tell versions apart, and contents are hashed on download.
        local = str(doc.get("String", "")).startswith("Local file system")
        return {"hash_type": None if local else cloud_hash.pick(hashes),
                "empty_dirs": bool((doc.get("Features") or {}).get("CanHaveEmptyDirectories", True))}

    # -- scan ---------------------------------------------------------------------------------------
    async def scan(self, *, local=None, save_cache: bool = True, base_peer=None, base_digest=None) -> dict:
        """The folder's manifest, named with xxh3 hashes like ours: the listing starts at once, our
        own scan (`local`) is then used to recognise versions by their backend hash.  A dry run
        (`save_cache=False`) changes nothing; a real one removes our killed uploads' temp files."""
        listing = await self.list_all()
        entries, problems, self.outbox, partials = await self.manifest(listing, dict(await local) if local else {})
        if save_cache:
            await self.remove_partials(partials)
        unknown = {p for p, _ in problems} | self.unstable
        # A folder that lists none of the files it held (an unmounted drive, an expired share, a
        # wrong path) has not had them all deleted: no deletion is recorded, and the pipeline stops
        # unless forced (its guard for replicas that may vanish).
        held = await asyncio.to_thread(self.versions.present_count) if not entries else 0
        entries = await asyncio.to_thread(self.versions.assign, entries, save=save_cache,
                                          covers=lambda p: not held and self.selection.contains(p) and p not in unknown)
        self.entries = entries
        return {"entries": {p: e.to_wire() for p, e in entries.items()}, "problems": [list(p) for p in problems],
                "unknown": sorted(unknown),
                "dead": tombstones.present(self.dir / tombstones.FILE) or self.versions.has_deleted(), "held": held}

    async def op_selection(self, selection: dict) -> dict:
        return {}  # the folder's selection was given when it was opened (it names what is listed)

    async def list_all(self) -> dict[str, Obj]:
        """Every file under the folder except peersync's own directory."""
        args = ["lsjson", "-R", "--files-only", "--no-mimetype", "--exclude", f"/{META}/**"]
        if self.hash_type:
            args += ["--hash", "--hash-type", self.hash_type]
        code, out, err = await self.rclone(*args, self.root, check=False)
        if code != 0:
            if self._missing(code, err):
                self.exists = False
                return {}
            raise self.rc.error(args, code, err)
        return parse_listing(out, self.hash_type)

    async def manifest(self, listing: dict[str, Obj], local: dict[str, Entry]
                       ) -> tuple[dict[str, Entry], list[tuple[str, str]], dict[str, Obj], list[str]]:
        """(selection manifest with xxh3 hashes, problems, `_outbox/` objects, leftover partial uploads)."""
        problems, outbox, partials, unknown = [], {}, [], {}
        entries: dict[str, Entry] = {}
        candidates = {}
        for path, obj in sorted(listing.items()):
            if path.endswith(PARTIAL):
                partials.append(path)
                continue
            top = path.split("/", 1)[0]
            if self.mailbox and top in MAILBOX_DIRS:
                if top == "_outbox" and "/" in path:
                    outbox[path.split("/", 1)[1]] = obj
                continue
            try:
                check_relpath(path)
            except BadPath as err:
                if self.selection.under_root(path) and not in_state_dir(path):
                    problems.append((path, f"not synced: {err}"))
                continue
            if not self.selection.contains(path):
                continue
            self.listed[path] = obj
            known = self._known(path, obj)
            if known is not None:
                entries[path] = Entry(obj.size, obj.mtime_ns, known[1], known[0])
            elif obj.bhash and path in local and local[path].size == obj.size:
                candidates[path] = obj
            else:
                unknown[path] = obj
        if candidates:  # same size as the local file: compare the backend hash computed locally
            matched = await asyncio.to_thread(self._match_local, candidates, local)
            for path, obj in candidates.items():
                if path in matched:
                    entries[path] = Entry(obj.size, obj.mtime_ns, local[path].mode, local[path].hash)
                    self.cache.record(path, obj, local[path].hash, local[path].mode)
                else:
                    unknown[path] = obj
        if unknown:
            entries.update(await self._fetch_and_hash(unknown, problems))
        self.entries = entries
        self.cache.save()
        return entries, problems, outbox, partials

    def _known(self, path: str, obj: Obj) -> tuple[str, int] | None:
        known = self.cache.lookup(path, obj)
        if known is not None:
            return known
        mode = self.cache.entries.get(path, [None] * 5)[4] or DEFAULT_MODE
        if self.hash_type == "xxh128" and obj.bhash:
            return obj.bhash, mode  # the backend hash IS peersync's content hash
        digest = self.cache.by_content(obj)
        return (digest, mode) if digest else None

    def _match_local(self, candidates: dict[str, Obj], local: dict[str, Entry]) -> set[str]:
        matched = set()
        for path, obj in candidates.items():
            entry = local[path]
            memo = self.cache.local.get(path)
            if memo and memo[:3] == [entry.size, entry.mtime_ns, entry.hash]:
                theirs = memo[3]
            else:
                try:
                    ours, theirs = cloud_hash.file_hashes(self.ws.root / path, self.hash_type)
                except OSError:
                    continue
                if ours != entry.hash:
                    continue  # changed since the local scan: let the download decide
                self.cache.local[path] = [entry.size, entry.mtime_ns, entry.hash, theirs]
            if theirs == obj.bhash:
                matched.add(path)
        return matched

    async def _fetch_and_hash(self, unknown: dict[str, Obj], problems: list) -> dict[str, Entry]:
        fetch = self.work / "fetch"
        await self.fetch_into(fetch, sorted(unknown))
        entries = {}
        for path, obj in unknown.items():
            copy = fetch / internal_rel(path)
            try:
                ours, theirs = await asyncio.to_thread(cloud_hash.file_hashes, copy, self.hash_type)
                size = copy.stat().st_size
            except FileNotFoundError:
                self.listed.pop(path, None)  # vanished since the listing: it is gone
                continue
            mode = (self.cache.entries.get(path) or [None] * 5)[4] or DEFAULT_MODE
            if size != obj.size or (obj.bhash and theirs != obj.bhash):
                # Rewritten while we read it: describe what we hold, and write nothing there this run.
                self.unstable.add(path)
                problems.append((path, "changing in the cloud while scanned; left for the next sync"))
                entries[path] = Entry(size, obj.mtime_ns, mode, ours)
                continue
            self.cache.record(path, obj, ours, mode)
            entries[path] = Entry(obj.size, obj.mtime_ns, mode, ours)
        return entries

    def fetched(self, path: str, digest: str) -> Path | None:
        """The copy downloaded during the scan, if it holds `digest`."""
        copy = self.work / "fetch" / internal_rel(path)
        if copy.is_file() and self.entries.get(path) is not None and self.entries[path].hash == digest:
            return copy
        return None

    async def download(self, paths: list[str], into: Path, digests: dict[str, str]) -> None:
        """Put the cloud content of `paths` at into/internal_rel(PATH) — PATH itself unless near
        PATH_MAX — (scan copies are reused).  Not verified here: whoever installs them checks the hash."""
        missing = []
        for path in paths:
            copy = self.fetched(path, digests[path])
            if copy is not None:
                dest = into / internal_rel(path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(copy, dest)
            else:
                missing.append(path)
        if missing:
            await self.fetch_into(into, missing)
            # What the cache said about these may be stale (size + modtime fooled by an edit):
            # forget a mapping the real content contradicts, so the next scan hashes it afresh.
            stale = await asyncio.to_thread(
                lambda: [p for p in missing if (into / internal_rel(p)).is_file()
                         and cloud_hash.file_hashes(into / internal_rel(p), None)[0] != digests[p]])
            for path in stale:
                self.cache.forget(path)
            if stale:
                self.cache.save()

    # -- agent operations ---------------------------------------------------------------------------
    async def op_read(self, paths: list) -> dict:
        digests = {p: self.entries[p].hash for p in paths if p in self.entries}
        if set(digests) != set(paths):
            raise TransferError(f"{self.peer.name}: asked to read a file it does not hold")
        into = self.work / f"read-{secrets.token_hex(4)}"
        await self.download(list(paths), into, digests)
        out = {}
        for path in paths:
            try:
                data = (into / internal_rel(path)).read_bytes()
            except FileNotFoundError:
                raise TransferError(f"{path} vanished from {self.peer.name} during the sync",
                                    "Nothing was lost; run the sync again.") from None
            if cloud_hash.bytes_hashes(data, None)[0] != digests[path]:
                raise TransferError(f"{path} changed on {self.peer.name} during the sync",
                                    "Nothing was lost; run the sync again.")
            out[path] = data
        shutil.rmtree(into, ignore_errors=True)
        return out

    def _check(self, path: str, expect: Entry | None, current: Obj | None) -> None:
        """Refused unless the cloud still holds exactly what the scan saw at `path`."""
        if path in self.unstable:
            raise Refused("changing in the cloud; left for the next sync")
        if expect is None:
            if current is not None:
                raise Refused("a file was created here in the cloud during the sync; left for the next sync")
            return
        scanned = self.listed.get(path)
        if current is None:
            raise Refused("deleted in the cloud during the sync; left for the next sync")
        if scanned is None or not current.same(scanned) or self.entries.get(path) is None \
                or not self.entries[path].same_content(expect):
            raise Refused("edited in the cloud during the sync; left for the next sync")

    def _target(self, path: str) -> str:
        check_relpath(path)
        if not self.selection.contains(path):
            raise Refused(f"path outside the synced selection: {path}")
        return path

    def _checked(self, items: list) -> tuple[list[dict | None], list[str]]:
        """Validate every item's path: (results with refusals filled in, the paths that passed)."""
        results: list[dict | None] = [None] * len(items)
        paths = []
        for i, item in enumerate(items):
            try:
                paths.append(self._target(item.get("path")))
            except (BadPath, Refused) as err:
                results[i] = {"path": item.get("path"), "ok": False, "error": str(err)}
        return results, paths

    async def op_install(self, items: list) -> dict:
        """Upload new content for each item (inline `data`, else the local workspace file), after
        checking the cloud still holds `expect`; a quarantined loser is first kept locally."""
        results, paths = self._checked(items)
        current = await self.stat(paths)
        upload = self.work / f"upload-{secrets.token_hex(4)}"
        staged: dict[int, tuple[str, Entry, str | None]] = {}
        losers = {}
        for i, item in enumerate(items):
            if results[i] is not None:
                continue
            path = item["path"]
            try:
                expect = Entry.from_wire(item["expect"]) if item.get("expect") else None
                new = Entry.from_wire(item["new"])
                self._check(path, expect, current.get(path))
                if item.get("quarantine") and expect is not None:
                    losers[i] = (path, expect, item["quarantine"])
                mtime = time.time_ns() if ("mtime_ns" in item and item["mtime_ns"] is None) else new.mtime_ns
                bhash = await asyncio.to_thread(self._stage, upload / internal_rel(path), item, new, mtime)
                staged[i] = (path, new, bhash)
            except (Refused, BadPath, OSError, ValueError) as err:
                results[i] = {"path": path, "ok": False, "error": _why(err)}
        conflicts = await self._keep_losers(losers, results)
        todo = {i: s for i, s in staged.items() if results[i] is None}
        if todo:
            await self.send_from(upload, [s[0] for s in todo.values()])
            after = await self.stat([s[0] for s in todo.values()])
            for i, (path, new, bhash) in todo.items():
                got = after.get(path)
                if got is None or got.size != new.size or (bhash and got.bhash and got.bhash != bhash):
                    results[i] = {"path": path, "ok": False, "error": "upload could not be verified; left for the next sync"}
                    continue
                self.cache.record(path, got, new.hash, new.mode)
                entry = Entry(got.size, got.mtime_ns, new.mode, new.hash, new.vv, new.seen)
                self.listed[path], self.entries[path] = got, entry
                results[i] = {"path": path, "ok": True, "entry": entry.to_wire(), "conflict": conflicts.get(i)}
            self.cache.save()
            self.versions.record([(s[0], self.entries[s[0]], True) for i, s in todo.items() if results[i]["ok"]])
        shutil.rmtree(upload, ignore_errors=True)
        return {"results": results}

    def _stage(self, dest: Path, item: dict, new: Entry, mtime_ns: int) -> str | None:
        """Write the content to upload at `dest` and check it is the planned version."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        if "data" in item:
            dest.write_bytes(item["data"])
        else:
            full = self.store.target(item["path"])
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as src, open(dest, "wb") as out:
                if not stat_mod.S_ISREG(os.fstat(src.fileno()).st_mode):
                    raise Refused("no longer a regular file here; left for the next sync")
                shutil.copyfileobj(src, out, 1 << 20)
        ours, theirs = cloud_hash.file_hashes(dest, self.hash_type)
        if ours != new.hash or dest.stat().st_size != new.size:
            raise Refused("changed here during the sync; left for the next sync")
        os.utime(dest, ns=(mtime_ns, mtime_ns))
        return theirs

    async def _keep_losers(self, losers: dict, results: list) -> dict[int, str]:
        """Keep each losing cloud version in the local conflicts/ (checked against the scan's hash)."""
        if not losers:
            return {}
        into = self.work / f"losers-{secrets.token_hex(4)}"
        await self.download([p for p, _, _ in losers.values()], into,
                            {p: e.hash for p, e, _ in losers.values()})
        ids = {}
        for i, (path, expect, info) in losers.items():
            copy = into / internal_rel(path)
            try:
                digest = (await asyncio.to_thread(cloud_hash.file_hashes, copy, None))[0]
                if digest != expect.hash:
                    raise Refused("edited in the cloud during the sync; left for the next sync")
                info = {**info, "peer": self.peer.name}
                ids[i] = await asyncio.to_thread(self.store.quarantine_copy, path, copy, info)
            except FileNotFoundError:
                results[i] = {"path": path, "ok": False, "error": "deleted in the cloud during the sync; left for the next sync"}
            except (Refused, OSError) as err:
                results[i] = {"path": path, "ok": False, "error": _why(err)}
        shutil.rmtree(into, ignore_errors=True)
        return ids

    async def op_delete(self, items: list, batch: str) -> dict:
        """Move each file to `.peersync/trash/<batch>/` if it still holds `expect`."""
        if not batch.replace("-", "").replace("T", "").isalnum():
            raise BadPath(f"bad trash batch name {batch!r}")
        results, paths = self._checked(items)
        current = await self.stat(paths)
        movable, gone = {}, []
        for i, item in enumerate(items):
            if results[i] is not None:
                continue
            try:
                self._check(item["path"], Entry.from_wire(item["expect"]), current.get(item["path"]))
                movable[i] = item["path"]
            except (Refused, ValueError) as err:
                results[i] = {"path": item["path"], "ok": False, "error": str(err)}
        if movable:
            trash = self.at(META, "trash", batch)
            short = [p for p in movable.values() if internal_rel(p) == p]
            if short:
                await self.batch("move", self.root, trash, short)
            for path in movable.values():  # near PATH_MAX: kept under a short id, with its path beside it
                if internal_rel(path) != path:
                    await self.rclone("rcat", join(trash, internal_rel(path) + ".path"),
                                      input=path.encode("utf-8", "surrogateescape"), check=False)
                    await self.rclone("moveto", self.at(path), join(trash, internal_rel(path)), check=False)
            still = await self.stat(list(movable.values()))
            binned = await self.stat([internal_rel(p) for p in movable.values()], base=f"{META}/trash/{batch}")
            for i, path in movable.items():
                if path in still or internal_rel(path) not in binned:
                    results[i] = {"path": path, "ok": False, "error": "could not be moved to the cloud trash"}
                    continue
                self.cache.forget(path)
                self.listed.pop(path, None)
                gone.append((path, self.entries.pop(path, None) or Entry.from_wire(items[i]["expect"]),
                             Entry.from_wire(items[i]["dead"]) if items[i].get("dead") else None))
                results[i] = {"path": path, "ok": True, "entry": None,
                              "trash": f"{META}/trash/{batch}/{internal_rel(path)}"}
            self.cache.save()
            counter = self.versions.reserve() if any(dead is None for _, _, dead in gone) else 0
            self.versions.record([(p, e.with_vv(dead.vv, versions.join(dead.seen, e.history)) if dead else e.with_vv(
                versions.bump(e.history, self.versions.me, counter), ()), False) for p, e, dead in gone])
        return {"results": results}

    async def op_quarantine(self, items: list) -> dict:
        """Policy manual: keep the other side's version in the cloud under `.peersync/conflicts/ID/`."""
        results = []
        for item in items:
            path = item.get("path")
            try:
                self._target(path)
                cid = "c-" + secrets.token_hex(3)
                kept = self.at(META, "conflicts", cid, internal_rel(path))  # near PATH_MAX: a short id
                if internal_rel(path) != path:
                    await self.rclone("rcat", kept + ".path", input=path.encode("utf-8", "surrogateescape"))
                await self.rclone("rcat", kept, input=item["data"])
                results.append({"path": path, "ok": True, "conflict": cid})
            except (Refused, BadPath, KeyError, ValueError, PeersyncError) as err:
                results.append({"path": path, "ok": False, "error": str(err)})
        return {"results": results}

    # -- ancestor (kept locally: the cloud holds no peersync state but locks and trash) -------------
    @property
    def ancestor_file(self) -> Path:
        return self.dir / "ancestor.json"

    async def op_ancestor_get(self, peer_id: str | None = None):
        try:
            data = read_json(self.ancestor_file)
        except ValueError:
            return None  # unreadable = nothing known: union, never deletions
        if not isinstance(data, dict) or data.get("root") != self.key or data.get("format") not in READABLE_FORMATS:
            return None
        return data

    async def op_ancestor_put(self, manifest: dict, peer_id: str | None = None) -> dict:
        atomic_write_json(self.ancestor_file, {**manifest, "root": self.key}, indent=None)
        return {}

    # Deletion records of the cloud side, as this machine saw them (tombstones.py), kept beside
    # its ancestor.
    async def op_tombstones_get(self, paths: list | None = None) -> dict:
        dead = tombstones.lookup(self.dir / tombstones.FILE, paths)
        for path, entry in self.versions.deleted(paths).items():
            dead.setdefault(path, []).append(entry)
        return deletions.to_wire(dead)

    async def op_versions_put(self, items: list) -> dict:
        parsed = [(check_relpath(p), Entry.from_wire(w)) for p, w in items]
        fits = [(p, e, True) for p, e in parsed if (now := self.versions.current(p)) is not None and now.same_content(e)]
        self.versions.record(fits)
        for p, e, _ in fits:
            if p in self.entries:
                self.entries[p] = self.entries[p].with_vv(e.vv)
        return {"recorded": len(fits)}

    async def op_tombstones_add(self, items: list) -> dict:
        parsed = [(check_relpath(p), Entry.from_wire(w)) for p, w in items]
        return {"added": tombstones.add(self.dir / tombstones.FILE, parsed)}

    async def op_logbase_get(self, hashes: list) -> dict:
        # Log bases are kept with the workspace, which engine.Run asks first; the cloud keeps none.
        return {digest: None for digest in hashes}

    # -- lock -----------------------------------------------------------------------------------------
    async def list_locks(self) -> dict[str, Obj]:
        code, out, err = await self.rclone("lsjson", "--files-only", "--no-mimetype", self.at(META, "locks"), check=False)
        if code != 0:
            if self._missing(code, err):
                return {}
            raise self.rc.error(["lsjson"], code, err)
        return {k: v for k, v in parse_listing(out, None).items() if k.endswith(".json")}

    async def op_lock(self, what: str = "sync", timeout: float | None = None) -> dict:
        mine = self.ws.instance_id + "-"
        locks = await self.list_locks()
        await self._refuse_others(locks, mine)
        # Only this instance's leftovers remain: a dead run's, since a live one would hold the
        # workspace flock we hold now.  A copy of this workspace elsewhere shares the instance id,
        # so a lock is ours only if this host wrote it too.
        stale = []
        for name in locks:
            info = await self._lock_info(name)
            if info.get("host") != socket.gethostname():
                await self._refuse_others({name: None}, "")
            stale.append(name)
        for name in stale:
            await self.rclone("deletefile", self.at(META, "locks", name), check=False)
        name = f"{mine}{secrets.token_hex(6)}.json"
        body = {"instance": self.ws.instance_id, "host": socket.gethostname(), "pid": os.getpid(),
                "what": what, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "workspace": str(self.ws.root)}
        await self.rclone("rcat", self.at(META, "locks", name), input=json.dumps(body).encode())
        self.lock_name = name
        await self._refuse_others(await self.list_locks(), mine)
        return {"recovered": len(stale)}

    async def _lock_info(self, name: str) -> dict:
        with contextlib.suppress(PeersyncError, ValueError):
            _, out, _ = await self.rclone("cat", self.at(META, "locks", name))
            info = json.loads(out)
            return info if isinstance(info, dict) else {}
        return {}

    async def _refuse_others(self, locks: dict, mine: str) -> None:
        others = sorted(n for n in locks if not (mine and n.startswith(mine)) and n != self.lock_name)
        if not others:
            return
        if self.lock_name:  # we lost a race: withdraw our own lock, never theirs
            await self.release()
        info = await self._lock_info(others[0])
        holder = (f"peersync on {info.get('host', '?')} ({info.get('what', 'sync')}, since {info.get('since', '?')})"
                  if info else "another peersync")
        raise BusyError(f"{self.peer.name} is locked by {holder}",
                        "Try again when it is done. If that sync died and will not come back, remove its lock "
                        f"on purpose: peersync cloud unlock {self.peer.name} --all")

    async def release(self) -> None:
        if self.lock_name:
            name, self.lock_name = self.lock_name, None
            with contextlib.suppress(PeersyncError):
                await self.rclone("deletefile", self.at(META, "locks", name))

    async def remove_partials(self, partials: list[str]) -> None:
        """Temp files of our killed uploads (only while holding the cloud lock)."""
        if partials:
            await self.rclone("delete", self.root, "--files-from-raw", self.list_file(partials), check=False)

    # -- housekeeping ---------------------------------------------------------------------------------
    async def op_housekeeping(self, trash_days: int = 30, prune_logbases: bool = False) -> dict:
        """Purge cloud trash batches older than `trash_days` (batch names start with a UTC time)."""
        code, out, err = await self.rclone("lsjson", "--dirs-only", "--no-mimetype", self.at(META, "trash"), check=False)
        if code != 0:
            return {"trash_purged": 0}
        tombstones.prune(self.dir / tombstones.FILE, trash_days)
        self.versions.prune(trash_days)
        cutoff = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() - trash_days * 86400))
        purged = 0
        for item in json.loads(out or b"[]"):
            name = item.get("Name", "")
            if name[:15] < cutoff and re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]+", name):
                await self.rclone("purge", self.at(META, "trash", name), check=False)
                purged += 1
        return {"trash_purged": purged}


def _why(err: Exception) -> str:
    if isinstance(err, OSError):
        return f"{err.strerror or err}" + (" (disk full)" if getattr(err, "errno", None) == 28 else "")
    return str(err)
