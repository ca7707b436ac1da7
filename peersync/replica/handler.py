"""A replica's operations on its own disk (scan, read, install, delete, quarantine, ancestors…),
confined to its root: what the agent serves over the wire and the local side calls in-process.

Imported by the agent at start-up: nothing heavy here (not even secrets or socket: os.urandom and
os.uname give what it needs of them, without ~10 ms of their imports).
"""

from __future__ import annotations

import array
import bisect
import contextlib
import functools
import itertools
import json
import marshal
import operator
import os
import re
import shutil
import threading
import time
import unicodedata
from pathlib import Path
from typing import Callable, Mapping

import xxhash

from peersync import __version__
from peersync.core import deletions, links, versions
from peersync.core.names import Folding
from peersync.core.paths import BadPath, check_relpath, internal_rel, valid_instance_id
from peersync.core.selection import Intersection, Selection
from peersync.core.limits import RANGE
from peersync.core.types import MANIFEST_FORMAT, READABLE_FORMATS, Entry, gone_paths, new_objects
from peersync.core.unknown import covered
from peersync.errors import BusyError, SafetyError, StateDirError
from peersync.replica import bases, fsprobe, sparse, tombstones, watched
from peersync.replica.scan import (CACHE_ROW_BYTES, MARSHAL_VERSION, ScanResult, StatCache, cache_kept, forget_cache,
                                   hash_bytes, rewrite_pays, scan)
from peersync.replica.store import LOGBASE_PRUNED, Refused, Store, hash_fd
from peersync.replica.versions import Versions, open_versions
from peersync.workspace.locate import looks_like_workspace
from peersync.workspace.lock import state_lock
from peersync.workspace.storage import (atomic_write_bytes, ensure_private_dir, file_identity, read_json, stat_identity,
                                        sweep_temp)
from peersync.workspace.workspace import Workspace


PRUNE_EVERY = 3600.0  # seconds between two prunings (trash, deletion records, unreferenced log bases)
PARALLEL_WRITES_MIN = 64  # inline files in one install from which two threads write them
TAIL_MAX = 4 * RANGE  # read_tail hands back at most this much of one file (else: the whole file, in ranges)
_BATCH = re.compile(r"[0-9]{8}T[0-9]{6}-[0-9a-f]{1,32}")  # a trash batch: UTC time, then a token
_UPLOAD = re.compile(r"[0-9a-f]{8,32}")
# Operations that change this side; a restricted key's client must hold the lock for them (so the
# state dir was checked, and writers are one at a time).
CHANGES = frozenset({"init", "install", "delete", "touch", "quarantine", "ancestor_put", "tombstones_add", "versions_put",
                     "logbase_save", "housekeeping", "stage", "stage_chunk", "stage_log", "bases_keep"})

# Ancestor files this process read or wrote: str(path) -> (file identity, digest, document,
# whether the document was parsed).
_ANCESTORS: dict[str, tuple] = {}
# The encoded entries of the ancestors this process wrote: str(path) -> Encoded (None: a document
# that is not entries).  A sync changes a few entries of many: a long-lived process (a keeper, a
# kept agent) encodes only those from its second write on (canonical_ancestor).
_ENCODED: dict[str, "Encoded | None"] = {}
# The byte length of each entry of the ancestor files whose copies this process read (read_copy):
# str(copy path) -> (digest of the JSON, array('I') bytes, in the order of the sorted paths).  A
# process's first delta write cuts the encoding it patches from the file's bytes (_encoded_from_copy).
_LAYOUTS: dict[str, tuple[str, bytes]] = {}


class Handler:
    """Protocol operations on one workspace root.  The local side of a sync uses it directly."""

    def __init__(self, root: Path | str, *, restricted: bool = False):
        self.ws = Workspace(root)
        self.restricted = restricted
        self.store = Store(self.ws.root, Selection())
        self.scan_selection = self.store.selection  # what scan walks (the store may be narrower)
        self.staging: Path | None = None
        self.uploads: Path | None = None  # a large file's ranges, staged apart from rsync's tree
        # The local side calls us from worker threads: one operation at a time, and closing the
        # session (unstage, release the lock) waits for one still running after its caller gave up.
        self._busy = threading.RLock()
        self._lock = None
        self._lock_refused = False  # this session asked for the lock and did not get it (op_scan)
        self._records_failed = False  # this session's last tombstones_add was not written (op_ancestor_put)
        self._versions: Versions | None = None
        # bases_keep's (path, hash, vector) triples, recorded with their content (stashed in the
        # store) by the run's logbase_save, or when the session ends: one write each per sync.
        self._pending_bases: list[tuple[str, str, list]] = []
        # op_scan's last delta: (ancestor entries, manifest, changed, scan, the ancestor's paths it lacked)
        self._delta_memo: tuple | None = None
        # The ancestor entries ancestor_entries last made: (its file, that file's identity, entries)
        self._entries_read: tuple[str, tuple, dict[str, Entry]] | None = None

    @property
    def _scan_cache(self) -> Path:
        return self.ws.state / "scan-cache.json"

    @property
    def versions(self) -> Versions:
        """This replica's version records (replica/versions.py), opened on first use."""
        if self._versions is None:
            ensure_private_dir(self.ws.state)  # a real directory of ours, never a planted link
            self._versions = open_versions(self.ws.state, versions.short_id(self.ws.instance_id))
        return self._versions

    # -- session ---------------------------------------------------------------------------
    def op_hello(self, protocol: int | None = None) -> dict:
        """Who we are; the server adds the wire protocol's version (transport/agent.py)."""
        return {"version": __version__, "time": time.time(),
                "root": str(self.ws.root), "workspace": self.ws.root.is_dir(),
                "instance_id": self.ws.existing_instance_id(),
                "restricted": self.restricted, "machine": machine_name(),
                # for `peers add` (peers/manage.py): is the path an agent's workspace, and whose home is it in
                "agent_workspace": self.ws.root.is_dir() and looks_like_workspace(self.ws.root),
                "home": os.path.expanduser("~"),
                # A restricted key gets no rsync (restrict.py): its files travel in ranges.
                "rsync": not self.restricted and shutil.which("rsync") is not None,
                # op read takes `keep` (merge bases kept from the bytes read); an older agent: no.
                "read_keeps_bases": True,
                # op ancestor_put takes `after_records` (applied only if the deletion records sent
                # right before it were written): a client need not wait for those first.
                "ancestor_after_records": True}

    def op_init(self) -> dict:
        self.ws.root.mkdir(parents=True, exist_ok=True)
        return {"instance_id": self.ws.instance_id}

    def op_lock(self, timeout: float = 10.0, what: str = "sync") -> dict:
        if self._lock is None:
            lock = state_lock(self.ws.state, timeout, what=what)
            try:
                lock.__enter__()
            except BaseException:
                self._lock_refused = True
                raise
            self._lock, self._lock_refused = lock, False
            return {"recovered": self.recover(), "instance_id": self.ws.instance_id}
        return {"recovered": 0, "instance_id": self.ws.instance_id}

    def recover(self) -> int:
        """Clear what interrupted runs left in the state dir.  Only while holding the lock."""
        return (self.store.clear_staging() + self.store.recover_holding() + self.store.reindex_conflicts()
                + sweep_temp(self.ws.state))

    def release(self) -> None:
        with self._busy:
            self._entries_read = None
            self._save_stashed()  # what this session kept and no logbase_save wrote yet
            self._save_installed()
            # The next process's first read of the records (from the process's one store of them:
            # the local side's scan ran in a Handler of its own).
            with contextlib.suppress(OSError, StateDirError):
                if self._versions is not None or self.ws.existing_instance_id() is not None:
                    self.versions.keep_snapshot()
            self._lock_refused = False
            if self._lock is not None:
                self._lock.__exit__(None, None, None)
                self._lock = None

    def _save_installed(self) -> None:
        """The files this session installed go into the stat cache (Store.installed: their bytes
        were checked as they were installed), so the next scan looks them up instead of reading
        them again — after an initial sync, every file of the tree.  A process that no longer
        holds the cache reloads and rewrites it only for more than a few in a hundred of its rows
        (as StatCache.save would write it): those few are cheaper to read again."""
        installed, self.store.installed = self.store.installed, {}
        if not installed:
            return
        if not cache_kept(self._scan_cache):
            try:
                rows = os.path.getsize(self._scan_cache) // CACHE_ROW_BYTES
            except OSError:
                rows = 0
            if not rewrite_pays(len(installed), rows):
                return
        try:
            cache = StatCache(self._scan_cache)
            cache.add(installed)
            cache.save()  # (a few rows in a large cache are only kept in memory: StatCache.save)
        except OSError:
            pass  # the next scan reads those files again: slower, never wrong

    def op_reset(self) -> dict:
        """End one client's use of a kept agent (see keeper.py): what EOF does, minus exiting.  The
        agent is kept for more syncs: its scans become watch-fed from now (replica/watched.py)."""
        self.op_unstage()
        self.release()
        if self.scan_selection is not None:
            watched.prime(self.ws.root, self.scan_selection, cache=self._scan_cache)
        return {}

    def op_warm(self, peer_id: str | None = None, digest: str | None = None) -> dict:
        """A keeper's agent, right after the keeper connected (daemons/keeper.py): get ready for the
        syncs to come while nobody waits, so that the keeper's first sync is as fast as its later
        ones (warm).  Reads only: no lock is needed."""
        if peer_id is not None and not valid_instance_id(peer_id):
            raise BadPath(f"bad instance id {str(peer_id)[:40]!r}")

        def run() -> None:
            with contextlib.suppress(Exception):  # (ahead of time only: a sync does it all itself)
                self.warm(self.scan_selection, peer_id, digest)

        threading.Thread(target=run, name="peersync-warm", daemon=True).start()
        return {}

    def warm(self, selection: Selection | None, peer_id: str | None = None, digest: str | None = None) -> None:
        """Read what a sync reads first — the version records, the ancestor shared with `peer_id`
        (when its file still has `digest`) — set the watches up, load the stat cache
        (watched.prime_now) and scan once without recording anything: the first scan of a process
        that will scan again and again is then watch-fed and reuses that scan's entries.  Meant for
        a background thread, while no sync runs here (a sync's commit would wait for the records'
        read)."""
        recorded = self.ws.existing_instance_id() is not None
        if recorded:
            self.versions.known()
        if peer_id is not None and digest is not None:
            with contextlib.suppress(OSError, BadPath):
                self._encode_ancestor(peer_id, digest)
        if selection is not None:
            watched.prime_now(self.ws.root, selection, cache=self._scan_cache, first=True)
            if recorded:
                # A scan that records nothing (a dry run's): the first sync's scan then takes each
                # folder's entries whole from it instead of building one per file (0.3 s at 100k).
                self.scan(selection, save_cache=False)
        with contextlib.suppress(OSError):
            self.store.read_pack_indexes()  # what the first merge looks its bases up in

    def _encode_ancestor(self, peer_id: str, digest: str) -> None:
        """Read the ancestor shared with `peer_id` (when its file still has `digest`) and keep its
        encoding entry by entry (canonical_ancestor): this process's first write of it as a delta
        then encodes only what moved, not every entry (~150 ms at 100k files)."""
        path = str(self._ancestor_file(peer_id))
        doc = self._ancestor_at(peer_id, digest) if path not in _ENCODED else None
        if doc is not None:
            raw, encoded = canonical_ancestor(doc, None)
            if hash_bytes(raw) == digest:  # (the file is canonical: we wrote it)
                _ENCODED.setdefault(path, encoded)

    def op_selection(self, selection: dict) -> dict:
        """The client's selection governs a session — bounded, for a restricted key, by this
        side's own (config.yaml): such a client reaches nothing this side does not sync."""
        wanted = Selection.from_wire(selection)
        bound = wanted
        if self.restricted:
            own = self.ws.sync_config().selection  # a malformed config.yaml refuses the session
            bound = wanted if wanted == own else Intersection(wanted, own)
        self.store, self.scan_selection = Store(self.ws.root, bound), wanted
        return {}

    # -- scan and ancestors ----------------------------------------------------------------
    def scan(self, selection: Selection | None = None, *, save_cache: bool = True) -> ScanResult:
        """The selection's manifest, each file with its version vector (new versions and deletions
        found by this scan are recorded first, unless `save_cache` is off: a dry run)."""
        walk = selection or self.scan_selection
        selection = selection or self.store.selection
        known = self.versions.known() if self.ws.existing_instance_id() is not None else None
        again = watched.scans_again(self.ws.root)
        listings = watched.walker(self.ws.root, walk)
        cache_path = self._scan_cache
        try:
            result = scan(self.ws.root, walk, cache_path, save_cache=save_cache, known=known, listings=listings,
                          changed_since=self.versions.changed_since)
        except BaseException:
            if listings is not None:
                watched.done(listings, ok=False)
            raise
        finally:
            if not again:  # this process's first scan of it: maybe its only one
                forget_cache(cache_path)
        if listings is not None:
            watched.done(listings, ok=True)
        if selection is not walk:  # a restricted key's session: only what both sides' selections hold
            result.unmatched = None  # (the manifest is no longer everything the scan matched)
            result.manifest = {p: e for p, e in result.manifest.items() if selection.contains(p)}
            result.problems = [p for p in result.problems if not p.path or selection.contains(p.path)]
            result.unknown = [p for p in result.unknown if selection.contains(p)]
        if save_cache:
            result.problems = self._reported_once(result.problems)
        fresh, result.fresh = result.fresh, None
        if self.ws.existing_instance_id() is None and not save_cache:
            if fresh is not None:
                fresh[0].record(fresh[1], None)
            return result  # a dry run against a workspace that has no state yet: nothing on record
        folding = self._folding(result)
        unknown = set(result.unknown)

        def covers(path: str) -> bool:  # inside the selection, and not a path the scan could not read
            return selection.contains(path) and not covered(path, unknown)

        scanned = (*result.known, result.unmatched) if result.unmatched is not None else None
        # Where a file may have gone since the last scan that recorded: what the watch named since.
        since = fresh[0].recorded if fresh is not None else None
        named = fresh[0].fresh_between(since, fresh[1] - 1) if since is not None else None
        result.manifest, rest_only = self.versions.assign_scanned(
            result.manifest, covers=covers, save=save_cache, fold=folding.key if folding is not None else None,
            scanned=scanned, own=True,  # (scan's manifest is its own dict, never the watch's)
            gone=named.union(fresh[2]) if named is not None else None)
        if save_cache and fresh is not None:
            fresh[0].recorded = fresh[1]
        if fresh is not None:
            # What the next scan's readers may skip (TreeWatch.record): only while the manifest is
            # the walk's own, path for path and object for object, but at the paths it walked file
            # by file — no other selection's filter, no respelled names, no other history assigned.
            watch, seq, paths = fresh
            same = rest_only and selection is walk and (folding is None or not folding.normalization)
            watch.record(seq, set(paths) if same else None)
            result.fresh = (watch, seq) if same else None
        return result

    def _reported_once(self, problems: list, message: str = links.OUTSIDE, key: str = "outside") -> list:
        """`problems` less those with `message` (links not synced) that an earlier scan already
        reported: remembered in the state dir under `key` while they stay so (one that goes and comes
        back is news again)."""
        now = {p.path for p in problems if p.message == message}
        remembered_file = self.ws.state / "links-reported.json"
        try:
            doc = read_json(remembered_file, {})
            remembered = set(doc.get(key) or ())
        except (ValueError, AttributeError, OSError):
            doc, remembered = {}, set()
        if now != remembered and self.ws.state.is_dir():
            try:
                atomic_write_bytes(remembered_file, json.dumps({**doc, key: sorted(now)}).encode())
            except OSError:
                return problems  # not remembered: reported again next time rather than never
        return [p for p in problems if p.message != message or p.path not in remembered]

    def _folding(self, result: ScanResult) -> Folding | None:
        """Probe the volume (once per process and device) into `result.fs`.  Where it finds a name in
        any normal form, names are reported NFC (what Linux and most tools write), whatever form the
        volume stores (HFS+: NFD), so that both sides spell them alike; the volume still finds them."""
        if not self.ws.state.is_dir():
            return None  # a dry run against a workspace with no state yet: nothing to probe in
        try:
            behaviour = fsprobe.probe(self.ws.state)
        except fsprobe.ProbeError:
            return None
        result.fs = behaviour.to_wire()
        folding = Folding.from_wire(result.fs)
        if folding is not None and folding.normalization:
            nfc = lambda p: unicodedata.normalize("NFC", p)  # noqa: E731
            result.manifest = {nfc(p): e for p, e in result.manifest.items()}
            result.unknown = [nfc(p) for p in result.unknown]
        return folding

    def op_respell(self, items: list) -> dict:
        """Rename files in place to another spelling of the same name (a case-only rename made on
        the other side, on a volume that folds names: core/names.py); the old and new spellings must
        be one name here.  {"done": [old…], "failed": [[old, error]…]}."""
        done, failed = [], []
        folding = Folding.from_wire(fsprobe.probe(self.ws.state).to_wire())
        for old, new in items:
            if folding is None or folding.key(check_relpath(old)) != folding.key(check_relpath(new)):
                failed.append([old, "not another spelling of the same name here"])
                continue
            try:
                source, target = self.store.target(old), self.store.target(new)  # no symlinked parent
                if not os.path.isfile(source) or os.path.islink(source):
                    raise Refused("not a regular file")
                os.rename(source, target)
                done.append(old)
            except (OSError, Refused) as err:
                failed.append([old, error_text(err) if isinstance(err, OSError) else str(err)])
        return {"done": done, "failed": failed}

    def op_scan(self, save_cache: bool = True, base_peer: str | None = None, base_digest: str | None = None) -> dict:
        """The manifest; or, when the caller holds the same ancestor as we do (equal digests of
        the ancestor file), only what differs from it — a no-op sync of 100k files then sends
        almost nothing.  Refused after this session's lock was: a client sends its scan right
        behind the lock (sync/pipeline.py begin), and a workspace another sync holds is not
        walked for nothing."""
        if self._lock_refused:
            raise BusyError("not scanned: this workspace's lock was not granted to this session",
                            "Try again in a moment.")
        if self.restricted and self._lock is None:
            save_cache = False  # nothing is written to the state dir before the lock checked it
        if save_cache:
            ensure_private_dir(self.ws.state)
        result = self.scan(save_cache=save_cache)
        problems = [[p.path, p.message] for p in result.problems]
        unknown = result.unknown
        base = self._ancestor_entries(base_peer, base_digest) if base_peer and base_digest else None
        if base is None:
            return {"entries": {p: e.to_wire() for p, e in result.manifest.items()},
                    "problems": problems, "unknown": unknown, "fs": result.fs, "hashed": result.hashed,
                    "dead": self.has_dead()}
        # A file that was rewritten with the ancestor's bytes (a revert) counts too: its mtime moved;
        # and so does a chmod (permission bits are merged: core/modes.py).
        # Against the same ancestor as the last scan, an entry that is the very object it was then
        # (a watch-fed scan reuses what no event named: scan.scan) compares as it did then.
        # And where the watch says which paths its scans since then may have made anew
        # (TreeWatch.fresh_between), only those are looked at: a no-op then looks at none.
        last = self._delta_memo if self._delta_memo is not None and self._delta_memo[0] is base else None
        before, was_changed = (last[1], last[2]) if last is not None else ({}, {})
        manifest = result.manifest
        fresh = watched.changed_between(last[3], result.fresh) if last is not None else None
        if fresh is not None:
            changed = {p: w for p, w in was_changed.items() if p not in fresh and p in manifest}
            again = [p for p in fresh if p in manifest]
        else:
            changed = {p: was_changed[p] for p in was_changed
                       if (e := manifest.get(p)) is not None and e is before.get(p)}
            again = new_objects(before, manifest)
        for p in again:
            e = manifest[p]
            if _differs(base.get(p), e):
                changed[p] = e.to_wire()
        # The ancestor's paths the manifest lacks: none when as many of them are in it as it holds;
        # the last scan's and those the watch just named, when they are as many as are gone (a path
        # can leave a watch-fed scan's manifest unnamed: watched.record); else every one looked up.
        gone = gone_paths(base, manifest, changed, (last[4], fresh) if fresh is not None else None)
        self._delta_memo = (base, manifest, changed, result.fresh, gone)
        dead = self.has_dead()
        # The deletion records of the paths this side deleted or made since the ancestor (where a
        # path held by one side only can come from on this side), so that the client need not ask
        # for them a round trip later (sync/pipeline.py deletion_records).
        ours = [*gone, *(p for p in changed if p not in base)] if dead else []
        return {"delta": True, "entries": changed, "deleted": sorted(gone), "problems": problems, "unknown": unknown,
                "fs": result.fs, "hashed": result.hashed, "dead": dead, "dead_for": self._dead_records(ours)}

    def ancestor_doc(self, peer_id: str, *, parse: bool = True,
                     convert: Callable[[dict], dict] | None = None) -> tuple[str, dict | None] | None:
        """(digest of the stored bytes, parsed document — None if not JSON) of the ancestor shared
        with `peer_id`; None when there is none.  A long-lived process (a kept agent, a keeper's
        local side) syncs again and again: a file it already read or wrote is not read again
        (at 100k files, parsing one costs ~0.12 s).  `parse=False`: only the digest is needed
        (the document part is then whatever is at hand).  `convert`: the document's entries are
        given as convert(entries) makes them (None: it failed), made a part of the copy at a time,
        and the document itself is not kept.  Callers never modify the document."""
        path = self._ancestor_file(peer_id)
        if os.path.lexists(path.parent):
            ensure_private_dir(self.ws.state)
            ensure_private_dir(path.parent)  # a link there would lead reads elsewhere
        kept = _ANCESTORS.get(str(path))
        try:
            with open(path, "rb") as f:
                key = stat_identity(os.fstat(f.fileno()))
                if kept is not None and kept[0] == key and (kept[3] or not parse):
                    return kept[1], _converted(kept[2], convert) if parse and convert is not None else kept[2]
                raw = f.read()
                digest, doc = hash_bytes(raw), None
                if parse:
                    del raw  # a good copy is read without the text held (10 MB at 100k files)
                    doc = read_copy(copy_path(path), digest, convert)
                    if doc is None:
                        f.seek(0)  # (this open file's bytes: the ones `digest` is of)
                        doc = self._parse_ancestor(f.read(), path, digest)
                        if convert is not None:
                            doc = _converted(doc, convert)
        except FileNotFoundError:
            return None
        if convert is None or not parse:
            _ANCESTORS[str(path)] = (key, digest, doc, parse)
        elif kept is None or kept[0] != key:
            _ANCESTORS[str(path)] = (key, digest, None, False)  # (the digest; a later read parses again)
        return digest, doc

    def ancestor_entries(self, peer_id: str, like: Mapping[str, Entry] | None = None
                         ) -> tuple[str, dict[str, Entry] | None] | None:
        """(digest of the stored bytes, entries as Entries — None when unreadable) of the ancestor
        shared with `peer_id`; None when there is none.  Built a part of the copy at a time, so a
        process that wants Entries holds them once, not also the document they are made from; a
        later ancestor_doc reads the file again.  `like`: entries at hand (a scan's manifest) —
        where one is equal, the ancestor holds that very object (after a sync, nearly all are: a
        cold 100k no-op's client heap then peaks at 117 MB, not 132, and the ancestor is not on it)."""
        path = self._ancestor_file(peer_id)
        before = file_identity(path)
        found = self.ancestor_doc(peer_id, convert=functools.partial(_trusted_entries, like=like or {}))
        if found is None:
            return None
        doc = found[1]
        readable = isinstance(doc, dict) and doc.get("format") in READABLE_FORMATS \
            and isinstance(doc.get("entries"), dict)
        if readable and before is not None and file_identity(path) == before:
            self._entries_read = (str(path), before, doc["entries"])  # (op_merge_bases: not read again)
        return found[0], doc["entries"] if readable else None

    def _parse_ancestor(self, raw: bytes, path: Path, digest: str) -> dict | None:
        """The ancestor file's bytes `raw` parsed (None: not JSON); its copy is written for the
        next process that reads it — not by a restricted key's session before it holds the lock
        (nothing is written to the state dir before the lock checked it)."""
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        if type(doc) is dict and (not self.restricted or self._lock is not None):
            write_copy(copy_path(path), digest, doc)
        return doc

    def _ancestor_entries(self, peer_id: str, digest: str) -> dict | None:
        doc = self._ancestor_at(peer_id, digest)
        return doc["entries"] if doc is not None else None

    def _ancestor_at(self, peer_id: str, digest: str) -> dict | None:
        """The ancestor document shared with `peer_id` while its file has `digest` (a readable
        format, its entries a dict); None otherwise."""
        try:
            found = self.ancestor_doc(peer_id)
        except OSError:
            return None
        if found is None or found[0] != digest or not isinstance(found[1], dict) \
                or found[1].get("format") not in READABLE_FORMATS:
            return None
        return found[1] if isinstance(found[1].get("entries"), dict) else None

    def op_ancestor_digest(self, peer_id: str) -> str | None:
        try:
            found = self.ancestor_doc(peer_id, parse=False)
        except OSError:
            return None
        return None if found is None else found[0]

    def _ancestor_file(self, peer_id: str) -> Path:
        if not valid_instance_id(peer_id):
            raise BadPath(f"bad instance id {str(peer_id)[:40]!r}")
        return self.ws.state / "ancestors" / f"{peer_id}.json"

    def op_ancestor_get(self, peer_id: str):
        found = self.ancestor_doc(peer_id)
        data = found[1] if found is not None else None
        if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
            return None  # none, or unreadable: nothing known (union, never deletions)
        if self.restricted:  # what another peer synced outside this client's reach stays unseen
            entries = data.get("entries")
            contains = self.store.selection.contains
            data = {**data, "entries": {p: w for p, w in entries.items() if contains(p)}
                    if isinstance(entries, dict) else {}}
        return data

    def op_merge_bases(self, paths: list) -> dict:
        """The versions of `paths` this replica has in common with any of its peers (the entries of
        all its ancestors that carry a vector) or keeps as bases of what it holds (replica/bases.py):
        {path: [[hash, vv], …]}.  A merge picks the latest version both sides descend from among
        both sides' answers (Run._merge_bases): in a mesh, the pair's own ancestor may be much
        older than what the two have in common through others."""
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ValueError("malformed request: paths must be a list of strings")
        # A restricted client learns nothing about paths outside its selection.
        wanted = {check_relpath(p) for p in paths if not self.restricted or self.store.selection.contains(p)}
        found: dict[str, dict] = {p: {} for p in wanted}
        kept = bases.load(self.ws.state) if wanted else {}  # versions copies here descend from (replica/bases.py)
        pending: dict[str, list] = {}  # and those this session was given, not written yet
        for path, digest, vv in self._pending_bases:
            pending.setdefault(path, []).append([digest, vv])
        for path in wanted:
            for item in [*(kept.get(path) or ()), *pending.get(path, ())]:
                if isinstance(item, list) and len(item) == 2 and item[1]:
                    found[path][(item[0], json.dumps(item[1]))] = item
        top = self.ws.state / "ancestors"
        if not wanted or not os.path.lexists(top):
            return {p: list(versions_of.values()) for p, versions_of in found.items()}
        ensure_private_dir(top)  # globbing a link would read elsewhere
        read = self._entries_read
        for file in sorted(top.glob("*.json")):
            if read is not None and read[0] == str(file) and file_identity(file) == read[1]:
                # The pair's own ancestor, as this session's ancestor_entries made it (the local
                # side's: its sync reads it so; ~50 ms at 100k files to read the copy again).
                entries = {p: read[2][p].to_wire() for p in wanted if p in read[2]}
            else:
                try:
                    doc = self.ancestor_doc(file.stem)
                except (OSError, BadPath):
                    continue
                entries = doc[1].get("entries") if doc is not None and isinstance(doc[1], dict) else None
                if not isinstance(entries, dict):
                    continue
            for path in wanted:
                wire = entries.get(path)
                if isinstance(wire, list) and len(wire) >= 5 and wire[4]:
                    found[path][(wire[3], json.dumps(wire[4]))] = [wire[3], wire[4]]
        return {p: list(versions_of.values()) for p, versions_of in found.items()}

    def op_bases_keep(self, items: list) -> dict:
        """Keep versions a copy here descends from as merge bases (replica/bases.py): items
        {"path", "hash", "vv", "data"}; content that does not have its hash, a malformed vector or
        a path outside a restricted client's selection is skipped."""
        if not isinstance(items, list):
            raise ValueError("malformed request: items must be a list")
        good = []
        for item in items:
            if not isinstance(item, dict):
                continue
            path, digest, data = item.get("path"), item.get("hash"), item.get("data")
            try:
                path = check_relpath(path)
                vv = versions.to_wire(versions.from_wire(item.get("vv")))
            except (BadPath, ValueError, TypeError):
                continue
            if not vv or not isinstance(data, bytes) or len(data) > bases.MAX_BASE or hash_bytes(data) != digest \
                    or (self.restricted and not self.store.selection.contains(path)):
                continue
            good.append((path, digest, vv, data))
        if not good:
            return {"kept": 0}
        # Written with the run's logbase_save (or when the session ends), not a pack and a
        # rewrite of bases.json per request: content first, then the records naming it.
        self.store.stash_bases(data for _, _, _, data in good)
        self._pending_bases += [(p, d, vv) for p, d, vv, _ in good]
        return {"kept": len(good)}

    def _save_stashed(self, items: list[tuple[str, str]] = ()) -> int:
        """Write the merge bases this session stashed (with `items`, logbase_save's), then record
        bases_keep's triples.  Best effort when the session ends (a cache: replica/bases.py)."""
        pending, self._pending_bases = self._pending_bases, []
        if not items:
            try:
                self.store.save_logbases([])
                if pending:
                    bases.remember(self.ws.state, pending)
            except (OSError, Refused, BadPath, ValueError):
                pass
            return 0
        saved = self.store.save_logbases(items)
        if pending:
            bases.remember(self.ws.state, pending)
        return saved

    def op_ancestor_put(self, peer_id: str, manifest: dict | None = None, base_digest: str | None = None,
                        delta: dict | None = None, after_records: bool = False) -> dict:
        """Store the ancestor shared with `peer_id`: the whole `manifest`, or — when this side still
        holds the ancestor whose digest is `base_digest` — only a `delta` {"set": {path: entry},
        "drop": [path]} to it (a sync that changed 10 files of 100k sends 10 entries).  Both sides
        write the same canonical bytes, so their digests agree for the next delta scan.
        `after_records`: the client sent deletion records right before (tombstones_add) without
        waiting for their answer; if they were not written, the ancestor that forgets those paths
        is not either — the records must be kept before it (sync/pipeline.py)."""
        if after_records and self._records_failed:
            raise SafetyError("not saved: the deletion records sent before this ancestor were not written here",
                              "Sync again: the next sync records them first.")
        path = self._ancestor_file(peer_id)
        moved = [*delta.get("drop", ()), *delta.get("set", {})] if delta is not None else []
        if delta is not None:
            try:
                found = self.ancestor_doc(peer_id)
            except OSError:
                return {"applied": False}
            if found is None or found[0] != base_digest or not isinstance(found[1], dict):
                return {"applied": False}
            stored = found[1]["entries"]
            entries = dict(stored)  # a copy: the stored document stays as it is
            for p in delta.get("drop", ()):
                entries.pop(p, None)
            for p, wire in delta.get("set", {}).items():
                Entry.from_wire(wire)  # well-formed, or the request fails before anything is written
                entries[check_relpath(p)] = wire
            manifest = {**found[1], "format": MANIFEST_FORMAT, "entries": entries}
        elif manifest is None:
            raise ValueError("ancestor_put needs a manifest or a delta")
        if self.restricted:
            entries = manifest.get("entries") if isinstance(manifest, dict) else None
            for p in entries if isinstance(entries, dict) else ():
                self.store.check(check_relpath(p))  # nothing recorded outside the selection
        ensure_private_dir(self.ws.state)
        ensure_private_dir(path.parent)
        again = delta is not None and str(path) in _ENCODED
        if delta is not None:
            # A long-lived process patches its own encoding; a process's first write (a CLI's only
            # one, a cold agent's) cuts it from the file as it is, where the copy said how.
            encoded = _ENCODED[str(path)] if again else _encoded_from_copy(path, found[0], found[1])
            raw, encoded = canonical_ancestor(manifest, encoded, since=stored, moved=moved)
        else:  # a whole manifest
            raw, encoded = canonical_ancestor(manifest, None)
        _ENCODED[str(path)] = encoded
        atomic_write_bytes(path, raw)
        digest = hash_bytes(raw)
        if not again:  # (a process that writes it again and again reads it from memory: no copy)
            write_copy(copy_path(path), digest, manifest, encoded)
        # What we just wrote is what the next sync reads (we hold the workspace's lock: nobody
        # else writes it meanwhile).
        _ANCESTORS[str(path)] = (stat_identity(os.stat(path)), digest, manifest, True)
        if delta is not None:
            self._carry_delta_memo(stored, entries, moved)
        return {"applied": True, "digest": digest}

    def _carry_delta_memo(self, old: dict, new: dict, moved: list[str]) -> None:
        """op_scan's memo, made against ancestor entries `old`, made against `new` — the same but at
        the paths `moved`: after a sync that changed something, the next delta scan then compares
        only what its watch names and those paths, not every entry against a new ancestor (at 100k
        files ~0.1 s of the peer's time, right on the sync's path)."""
        memo = self._delta_memo
        if memo is None or memo[0] is not old:
            return
        before, changed = memo[1], dict(memo[2])
        for p in moved:
            changed.pop(p, None)
            if (e := before.get(p)) is not None and _differs(new.get(p), e):
                changed[p] = e.to_wire()
        gone = {p for p in itertools.chain(memo[4], moved) if p not in before and p in new}
        self._delta_memo = (new, before, changed, memo[3], gone)

    # -- deletion records (peersync.replica.tombstones) -------------------------------------------
    @property
    def _dead_file(self) -> Path:
        return self.ws.state / tombstones.FILE

    def has_dead(self) -> bool:
        return tombstones.present(self._dead_file) or self.versions.has_deleted()

    def op_tombstones_get(self, paths: list | None = None) -> dict:
        """Deletion records for `paths`: the deletion versions on record (with their vectors), and
        records from before version vectors (replica/tombstones.py)."""
        return self._dead_records(paths)

    def _dead_records(self, paths: list | None) -> dict:
        if self.restricted:
            paths = [p for p in paths or () if isinstance(p, str) and self.store.selection.contains(p)]
        if paths is not None and not paths:
            return {}
        dead = tombstones.lookup(self._dead_file, paths)
        for path, entry in self.versions.deleted(paths).items():
            dead.setdefault(path, []).append(entry)
        return deletions.to_wire(dead)

    def op_versions_put(self, items: list) -> dict:
        """New vectors for versions this replica already holds (the union after both sides turned
        out to hold the same bytes, or a conflict winner that now descends from the loser too).
        Recorded only where the record still names the same content (else the next scan's new
        version, which descends from the old vector, is the truth)."""
        if not isinstance(items, list) or not all(isinstance(i, list) and len(i) == 2 for i in items):
            raise ValueError("malformed request: every item must be [path, entry]")
        parsed = [(check_relpath(p), Entry.from_wire(w)) for p, w in items]  # all valid, or none recorded
        if self.restricted:
            for p, _ in parsed:
                self.store.check(p)  # nothing recorded outside the selection
        fits = [(p, e, True) for p, e in parsed if (now := self.versions.current(p)) is not None and now.same_content(e)]
        self.versions.record(fits)
        return {"recorded": len(fits)}

    def op_tombstones_add(self, items: list) -> dict:
        """Record versions this side and a peer both no longer hold (see tombstones.py)."""
        self._records_failed = True  # until they are written (op_ancestor_put)
        parsed = [(check_relpath(p), Entry.from_wire(w)) for p, w in items]  # all valid, or none recorded
        if self.restricted:
            for p, _ in parsed:
                self.store.check(p)
        ensure_private_dir(self.ws.state)
        added = tombstones.add(self._dead_file, parsed)
        self._records_failed = False
        return {"added": added}

    # -- data ----------------------------------------------------------------------------
    def op_read(self, paths: list, keep: list | None = None) -> dict:
        """The content of each path.  `keep`: those of them (mergeable files a sync copies from
        here) whose content this side keeps as merge bases now, while it holds the bytes — the
        logbase_save after the sync then finds them kept instead of reading each file again."""
        out = self.store.read(paths)
        if isinstance(keep, list):
            self._keep_read_bases(out[p] for p in set(keep) if isinstance(p, str) and p in out)
        return out

    def _keep_read_bases(self, contents) -> None:
        """Keep these contents as merge bases, each under its own hash, with this run's logbase_save
        (Store.stash_bases).  A cache (replica/bases.py): trouble writing one only means that
        logbase_save reads the file again.  Not for a restricted key before it locked: nothing is
        written to the state dir for it until then (a read needs no lock)."""
        if self.restricted and self._lock is None:
            return
        with contextlib.suppress(OSError, Refused, BadPath):
            self.store.stash_bases(contents)

    def op_read_tail(self, items: list) -> dict:
        """For files that only grew: the bytes after `offset`, when the first `offset` bytes still
        hash to `prefix` (else None: the caller sends the whole file).  An appended log then
        travels as its new lines, not as the whole file.  Never more than TAIL_MAX of one file."""
        out = {}
        with self.store.walking():
            for item in items:
                out.update(self._read_tail(item))
        return out

    def _read_tail(self, item: dict) -> dict:
        path, offset, prefix = item["path"], int(item["offset"]), item["prefix"]
        tail = None
        try:
            with os.fdopen(self.store.open_file(path), "rb") as f:
                if os.fstat(f.fileno()).st_size - offset <= TAIL_MAX and _read_prefix(f, offset) == prefix:
                    tail = f.read(TAIL_MAX + 1)
        except (OSError, Refused):
            pass  # gone, moved or not a plain file: the whole file goes the usual way
        return {path: tail if tail is not None and len(tail) <= TAIL_MAX else None}

    def op_read_range(self, path: str, offset: int, length: int, holes: bool = False) -> dict:
        """Up to `length` bytes (at most RANGE) of the file at `path` from `offset`, and the
        file's size now: a large file travels in ranges, checked as a whole by hash where it is
        installed (a file that changed meanwhile is refused there, never installed mixed).
        `holes`: a range that starts in a hole answers {"zeros": n} (n bytes of hole) instead, so a
        sparse file travels as its data only."""
        offset, length = int(offset), min(int(length), RANGE)
        if offset < 0 or length < 0:
            raise ValueError("bad range")
        fd = self.store.open_file(path)
        try:
            size, parts = os.fstat(fd).st_size, []
            if holes and length and offset < size:
                data = next(sparse.data_extents(fd, offset, min(offset + length, size)), None)
                start = data[0] if data is not None else min(offset + length, size)
                if start > offset:
                    return {"data": b"", "zeros": start - offset, "size": size}
            while length > 0 and (part := os.pread(fd, length, offset)):
                parts.append(part)
                offset, length = offset + len(part), length - len(part)
        finally:
            os.close(fd)
        return {"data": b"".join(parts), "size": size}

    def op_stage_chunk(self, upload: str, offset: int, data: bytes, zeros: int = 0) -> dict:
        """Append `data` (or `zeros` bytes of hole) to the staged upload named `upload` (the
        client's choice), which must hold exactly `offset` bytes so far.  An install item
        {"upload": upload} then takes it, verified by size and hash like any staged file.
        Zero blocks are not written: a sparse file stays sparse (replica/sparse.py)."""
        path = self._upload(upload, create=int(offset) == 0)
        data, zeros = _data({"data": data}), int(zeros)
        if zeros < 0 or zeros > RANGE or (zeros and data):
            raise ValueError("bad hole in a staged upload")
        # Created at offset 0, unless stage_log started it (empty: a log with no common prefix).
        flags = os.O_WRONLY | os.O_NOFOLLOW | (os.O_CREAT if int(offset) == 0 else 0)
        fd = os.open(path, flags, 0o600)
        try:
            held = os.fstat(fd).st_size
            if held != int(offset):
                raise ValueError(f"upload {upload} holds {held} bytes, not {offset}")
            sparse.write_at(fd, held, data)
            sparse.extend(fd, held + zeros)
        finally:
            os.close(fd)
        return {"size": held + len(data) + zeros}

    # -- large logs, merged streamed (sync/logmerge.py) ---------------------------------------
    def op_log_digest(self, path: str, size: int, prefix: int = 0) -> dict:
        """A log's hashes, not its bytes: of its first `prefix` bytes (does it still extend the
        ancestor? None when it is shorter) and of each RANGE of it (where does it part from the
        other side's?).  Refused unless it still has the scanned `size`."""
        size, prefix = int(size), int(prefix)
        head = xxhash.xxh3_128()
        chunks = []
        fd = self.store.open_file(path)
        try:
            if os.fstat(fd).st_size != size:
                raise Refused("changed during the sync; left for the next sync")
            for offset in range(0, size, RANGE):
                data = _pread_full(fd, min(RANGE, size - offset), offset)
                if offset < prefix:
                    head.update(data[: prefix - offset])
                chunks.append(xxhash.xxh3_128_hexdigest(data))
        finally:
            os.close(fd)
        return {"prefix": head.hexdigest() if prefix <= size else None, "chunks": chunks}

    def op_stage_log(self, upload: str, path: str, size: int, length: int) -> dict:
        """Start the upload `upload` with the first `length` bytes of the file at `path` (which
        must still have the scanned `size`): a merged log is this side's common prefix, copied
        here (holes kept), then the merged lines (stage_chunk).  Never read into memory."""
        size, length = int(size), int(length)
        if not 0 <= length <= size:
            raise ValueError("bad log prefix")
        target = self._upload(upload, create=True)
        src = self.store.open_file(path)
        try:
            if os.fstat(src).st_size != size:
                raise Refused("changed during the sync; left for the next sync")
            dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                sparse.copy(src, dst, length)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        return {"size": length}

    def op_upload_digest(self, upload: str) -> dict:
        """The size and hash of a staged upload: both sides of a streamed merge must hold the
        same bytes before either installs them."""
        fd = os.open(self._upload(upload), os.O_RDONLY | os.O_NOFOLLOW)
        try:
            size = os.fstat(fd).st_size
            return {"size": size, "hash": hash_fd(fd, size)}
        finally:
            os.close(fd)

    def _upload(self, upload, *, create: bool = False) -> Path:
        if not isinstance(upload, str) or not _UPLOAD.fullmatch(upload):
            raise ValueError(f"bad upload name {str(upload)[:40]!r}")
        with self._busy:
            if self.uploads is None:
                if not create:
                    raise Refused("no such upload (transfer incomplete)")
                self.uploads = self.store.new_staging()
        return self.uploads / upload

    def _staged_tail(self, item: dict) -> Path:
        """A staged file made of this side's current file (whose first bytes must still be what
        the sender saw: size and hash of item["tail"]) plus the appended bytes."""
        tail = item["tail"]
        size, prefix = int(tail["size"]), tail["prefix"]
        staged = self.staging / f".inline-{os.urandom(8).hex()}"
        with os.fdopen(self.store.open_file(item["path"]), "rb") as src, open(staged, "wb") as dst:
            written = 0

            def sink(chunk: bytes) -> None:  # zero blocks skipped: a grown sparse file stays sparse
                nonlocal written
                sparse.write_at(dst.fileno(), written, chunk)
                written += len(chunk)

            if _read_prefix(src, size, sink) != prefix:
                raise Refused(f"{item['path']} changed here since the scan")
            sparse.write_at(dst.fileno(), written, _data(tail))
        return staged

    def op_stage(self) -> dict:
        with self._busy:  # one staging dir per session, whichever transfer asks first
            if self.staging is None:
                self.staging = self.store.new_staging()
        return {"dir": str(self.staging)}

    def op_unstage(self) -> dict:
        with self._busy:
            for staged in (self.staging, self.uploads):
                if staged is not None:
                    shutil.rmtree(staged, ignore_errors=True)
            self.staging = self.uploads = None
        return {}

    def _staged(self, item: dict, index: int) -> Path | str:
        """The file holding an item's new content: rsync-staged, or inline bytes written now."""
        if self.staging is None:
            self.op_stage()
        if "tail" in item:
            return self._staged_tail(item)
        if "upload" in item:
            return self._upload(item["upload"])
        if "data" in item:
            staged = self.staging / f".inline-{os.urandom(8).hex()}"
            staged.write_bytes(_data(item))
            return staged
        # rsync and a cloud download stage a file under its path, or a short name for a path
        # near PATH_MAX (core.paths.internal_rel): a string, one per file of a batch.
        return f"{self.staging}/{internal_rel(check_relpath(item['path']))}"

    def _write_inlines(self, jobs: list[tuple[int, bytes, Entry]]) -> dict[int, str | Exception]:
        """Staged files for (index, bytes, entry) jobs: index → staged path, or the error.

        Two threads, each creating in its own directory: a file's creation is mostly kernel time
        (inode allocation, under the directory's lock), which a second core then overlaps."""
        if self.staging is None:
            self.op_stage()
        out: dict[int, str | Exception] = {}

        def write(part, where: str) -> None:
            for index, raw, new in part:
                try:
                    out[index] = self._write_inline(raw, new, where)
                except Exception as err:  # the caller decides: a per-path error or a failed request
                    out[index] = err

        if len(jobs) < PARALLEL_WRITES_MIN:
            write(jobs, str(self.staging))
            return out
        second = self.staging / ".inline-2"
        second.mkdir(exist_ok=True)
        helper = threading.Thread(target=write, args=(jobs[1::2], str(second)))
        helper.start()
        try:
            write(jobs[0::2], str(self.staging))
        finally:
            helper.join()
        return out

    def _write_inline(self, raw: bytes, new: Entry, where: str) -> str:
        """A staged file for inline bytes, verified before it is written (the same checks as
        Store.prepare, on the bytes in hand: no reading back), with its mode and mtime."""
        if len(raw) != new.size or hash_bytes(raw) != new.hash:
            raise Refused("content changed on the sending side during the sync; left for the next sync")
        staged = f"{where}/.inline-{os.urandom(8).hex()}"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, new.mode or 0o644)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, new.mode or 0o644)  # exactly, whatever the umask
            os.utime(fd, ns=(new.mtime_ns, new.mtime_ns))
        finally:
            os.close(fd)
        return staged

    def op_install(self, items: list) -> dict:
        """Install a batch: verify every staged file, make them all durable with one flush,
        then rename them into place and fsync each touched directory once."""
        results: list[dict | None] = [None] * len(_items(items, "path", "new"))
        pending, inline, special = [], [], {}
        for index, item in enumerate(items):
            path = item.get("path")
            try:
                expect = Entry.from_wire(item["expect"]) if item.get("expect") else None
                new = Entry.from_wire(item["new"])
                if "mtime_ns" in item and item["mtime_ns"] is None and not new.kind:
                    new = Entry(new.size, time.time_ns(), new.mode, new.hash, new.vv, new.seen)
                if new.kind:  # a link or an empty directory: its content travels inline (Store.install_special)
                    special[index] = _data(item) if "data" in item else None
                    staged = special[index]
                elif "data" in item and "tail" not in item:
                    inline.append((index, _data(item), new))  # written below, checked in memory as written
                    staged = None
                else:
                    staged = self._staged(item, index)  # checks the path (inline items: install does)
                    self.store.prepare(staged, new)
                pending.append((index, path, staged, expect, new, item.get("quarantine")))
            except (Refused, BadPath, OSError, ValueError) as err:
                results[index] = {"path": path, "ok": False, "error": error_text(err)}
        written = self._write_inlines(inline) if inline else {}
        ready = []
        for index, path, staged, expect, new, quarantine in pending:
            if index in special:
                ready.append((index, path, None, expect, new, quarantine))
                continue
            if staged is None:
                staged = written[index]
                if isinstance(staged, Exception):
                    if not isinstance(staged, (Refused, OSError, ValueError)):
                        raise staged
                    results[index] = {"path": path, "ok": False, "error": error_text(staged)}
                    continue
            ready.append((index, path, staged, expect, new, quarantine))
        files = [r for r in ready if r[2] is not None]
        if files:
            flush_filesystem(files[0][2])
        self.store.deferred_dirs = set()
        held = []  # (path, version now held): recorded with its vector, which came with it
        try:
            for index, path, staged, expect, new, quarantine in ready:
                try:
                    if new.kind or (expect is not None and expect.kind):  # a link or directory is or comes here
                        res = self.store.install_special(path, expect=expect, new=new, data=special.get(index),
                                                         staged=staged, quarantine=quarantine)
                    else:
                        res = self.store.install(path, staged, expect=expect, new=new, quarantine=quarantine,
                                                 prepared=True)
                    installed = Entry.from_wire(res["entry"]).with_vv(new.vv, new.seen)
                    results[index] = {"path": path, "ok": True, **res, "entry": installed.to_wire()}
                    held.append((path, installed, True))
                except (Refused, BadPath, OSError, ValueError) as err:
                    results[index] = {"path": path, "ok": False, "error": error_text(err)}
        finally:
            self.store.flush_dirs()
            self.versions.record(held)
        # Mergeable files the sync asked to keep as merge bases (item "base"), from the bytes in hand.
        self._keep_read_bases(data for index, data, _ in inline
                              if items[index].get("base") is True and (results[index] or {}).get("ok"))
        return {"results": results}

    def op_delete(self, items: list, batch: str) -> dict:
        if not isinstance(batch, str) or not _BATCH.fullmatch(batch):
            raise BadPath(f"bad trash batch name {str(batch)[:40]!r}")
        with self.store.walking():
            return self._delete(items, batch)

    def _delete(self, items: list, batch: str) -> dict:
        results, gone = [], []
        for item in _items(items, "path", "expect"):
            path = item.get("path")
            try:
                expect = Entry.from_wire(item["expect"])
                keep = check_relpath(item["keep"]) if isinstance(item.get("keep"), str) else None
                res = self.store.delete(check_relpath(path), expect=expect, batch=batch, keep=keep)
                results.append({"path": path, "ok": True, **res})
                gone.append((path, expect, Entry.from_wire(item["dead"]) if item.get("dead") else None))
            except (Refused, BadPath, OSError, ValueError) as err:
                results.append({"path": path, "ok": False, "error": error_text(err)})
        # The deletion is a version: the one the deleting side recorded, or else a new event here
        # (its counter reserved in the same transaction).
        told = [(p, e.with_vv(dead.vv, versions.join(dead.seen, e.history)), False) for p, e, dead in gone if dead]
        own = [(p, e) for p, e, dead in gone if dead is None]

        def own_deletions(counter: int) -> list:
            return [(p, e.with_vv(versions.bump(e.history, self.versions.me, counter), ()), False) for p, e in own]

        self.versions.record(told, make=own_deletions if own else None)
        return {"results": results}

    def op_touch(self, items: list) -> dict:
        """Give files that hold the same bytes as the peer's copy the peer's (newer) mtime, so the
        pair's ancestor matches both sides exactly.  Only while a file still is `expect`; one
        that changed meanwhile is left alone (its change is for the next sync)."""
        with self.store.walking():
            return self._touch(items)

    def _touch(self, items: list) -> dict:
        results = []
        for item in _items(items, "path", "expect", "mtime_ns"):
            path = item.get("path")
            try:
                expect, mtime_ns = Entry.from_wire(item["expect"]), int(item["mtime_ns"])
                fd = self.store.open_file(path)
                try:
                    st = os.fstat(fd)
                    if (st.st_size, st.st_mtime_ns) != (expect.size, expect.mtime_ns) or hash_fd(fd, expect.size) != expect.hash:
                        raise Refused("changed since the scan")
                    os.utime(fd, ns=(st.st_atime_ns, mtime_ns))
                finally:
                    os.close(fd)
                results.append({"path": path, "ok": True,
                                "entry": Entry(expect.size, mtime_ns, expect.mode, expect.hash, expect.vv).to_wire()})
            except (Refused, BadPath, OSError, ValueError) as err:
                results.append({"path": path, "ok": False, "error": error_text(err)})
        return {"results": results}

    def op_chmod(self, items: list) -> dict:
        """Set permission bits (rwx only) merged from both sides' (core/modes.py), only while a file
        still is `expect`; one that changed meanwhile is left for the next sync."""
        results = []
        for item in _items(items, "path", "expect", "mode"):
            path = item.get("path")
            try:
                expect, mode = Entry.from_wire(item["expect"]), int(item["mode"]) & 0o777
                fd = os.open(self.store.target(check_relpath(path)), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    st = os.fstat(fd)
                    if (st.st_size, st.st_mtime_ns) != (expect.size, expect.mtime_ns) or hash_fd(fd, expect.size) != expect.hash:
                        raise Refused("changed since the scan")
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)
                results.append({"path": path, "ok": True,
                                "entry": Entry(expect.size, expect.mtime_ns, mode, expect.hash, expect.vv, expect.seen).to_wire()})
            except (Refused, BadPath, OSError, ValueError) as err:
                results.append({"path": path, "ok": False, "error": error_text(err)})
        return {"results": results}

    def op_quarantine(self, items: list) -> dict:
        results = []
        for index, item in enumerate(_items(items, "path")):
            path = item.get("path")
            try:
                staged = self._staged(item, index)
                cid = self.store.quarantine_copy(check_relpath(path), staged, item.get("info") or {})
                results.append({"path": path, "ok": True, "conflict": cid})
            except (Refused, BadPath, OSError, ValueError) as err:
                results.append({"path": path, "ok": False, "error": error_text(err)})
        return {"results": results}

    # Merge bases: the last synced content of mergeable files (logs, memory files), kept by hash
    # (Store.save_logbases); the wire names are the log bases' from before other files merged.
    def op_logbase_save(self, items: list) -> dict:
        return {"saved": self._save_stashed([(check_relpath(p), h) for p, h in items])}

    def op_logbase_get(self, hashes: list) -> dict:
        return self.store.logbases(hashes)

    def op_housekeeping(self, prune_logbases: bool = False) -> dict:
        """Age out the trash and deletion records (old-style ones and deletion versions) by this
        side's own retention (its config.yaml: never a value a peer sends), and drop unreferenced
        log bases.  Each at most once an hour: they age by days, and the retention costs a YAML
        parse."""
        out = {"trash_purged": 0}
        if (self.store.trash_dir.is_dir() or tombstones.present(self._dead_file) or self.versions.has_deleted()) \
                and self._due("trash.purged"):
            days = self._own_trash_days()
            if days is not None:
                if tombstones.present(self._dead_file):
                    tombstones.prune(self._dead_file, days)
                self.versions.prune(days)
                out["trash_purged"] = self.store.purge_trash(days)
        # Merge bases no ancestor refers to any more are dropped — deciding reads every ancestor
        # (megabytes at 100k files), and stale bases only cost disk space.
        if not prune_logbases or not self.store.logbase_dir.is_dir() or not self._due(LOGBASE_PRUNED):
            return out
        keep: set[str] = set()
        ancestors, clouds = self.ws.state / "ancestors", self.ws.state / "cloud"
        for directory in (ancestors, clouds):
            if os.path.lexists(directory):
                ensure_private_dir(directory)  # globbing a link would read elsewhere
        for path in [*ancestors.glob("*.json"), *clouds.glob("*/ancestor.json")]:
            try:
                data = read_json(path) or {}
                keep.update(w[3] for w in data.get("entries", {}).values())
            except (ValueError, AttributeError, IndexError, TypeError):
                return {**out, "logbases_pruned": 0}
        keep |= bases.hashes(self.ws.state)
        return {**out, "logbases_pruned": self.store.prune_logbases(keep)}

    def _own_trash_days(self) -> int | None:
        """sync.trash_days of this workspace's config; None when it cannot be read (then
        nothing is purged: a retention we cannot read is not guessed)."""
        try:
            days = self.ws.sync_config().trash_days
        except Exception:  # a malformed config.yaml: ConfigError, or a value of the wrong type
            return None
        return days if days >= 0 else None

    def _due(self, marker: str) -> bool:
        """True at most once per PRUNE_EVERY for `marker` (a file in the state dir, touched)."""
        path = self.ws.state / marker
        try:
            if time.time() - path.stat().st_mtime < PRUNE_EVERY:
                return False
        except OSError:
            pass
        with contextlib.suppress(OSError):
            path.touch()
        return True

    def call(self, op: str, args: dict):
        method = getattr(self, f"op_{op}", None)
        if method is None:
            raise LookupError(f"unknown operation {op!r}")
        if self.restricted and op in CHANGES and self._lock is None:
            raise PermissionError(f"'{op}' needs the workspace lock first")
        with self._busy:
            return method(**args)


def machine_name() -> str:
    """How a merge names this machine's versions in a kept passage: $PEERSYNC_MACHINE_NAME, else
    the host name without its domain."""
    return os.environ.get("PEERSYNC_MACHINE_NAME") or os.uname().nodename.split(".")[0] or "?"


def _differs(wire: list | None, e: Entry) -> bool:
    """Whether a scanned entry is not what the ancestor's entry `wire` (None: none) records — the
    content, the mtime, the permission bits or the version history."""
    return wire is None or wire[3] != e.hash or wire[0] != e.size or wire[1] != e.mtime_ns or wire[2] != e.mode \
        or ((e.vv or e.seen or len(wire) > 4) and wire[4:] != _history_wire(e.vv, e.seen))


@functools.lru_cache(maxsize=4096)
def _history_wire(vv, seen) -> list:
    """What follows an entry's hash in its wire form (Entry.to_wire) for this history: a scan's
    entries share a few histories, so a delta scan compares 100k entries without building their
    wire forms."""
    return Entry(0, 0, 0, "", vv, seen).to_wire()[4:]


def _items(items, *keys: str) -> list[dict]:
    """A request's items, each an object holding `keys`.  Anything else is a malformed request,
    refused whole before anything is done (never a per-path problem: that is for trouble with one
    path on this disk, not for a peer that speaks the protocol wrong)."""
    if not isinstance(items, list) or not all(isinstance(i, dict) and all(k in i for k in keys) for i in items):
        raise ValueError(f"malformed request: every item must be an object with {', '.join(keys)}")
    return items


def _read_prefix(f, size: int, sink=None) -> str | None:
    """The hash of the next `size` bytes of `f` (each chunk also given to `sink`), or None when
    the file is shorter."""
    h = xxhash.xxh3_128()
    while size > 0 and (chunk := f.read(min(size, 1 << 20))):
        h.update(chunk)
        if sink is not None:
            sink(chunk)
        size -= len(chunk)
    return None if size else h.hexdigest()


def _pread_full(fd: int, length: int, offset: int) -> bytes:
    """Exactly `length` bytes of `fd` from `offset` (Refused when the file is shorter now)."""
    parts, want = [], length
    while want > 0:
        part = os.pread(fd, want, offset)
        if not part:
            raise Refused("changed during the sync; left for the next sync")
        parts.append(part)
        offset, want = offset + len(part), want - len(part)
    return b"".join(parts)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              check_circular=False).encode  # (an entry each: 2.1 µs, not 2.8; same bytes)


def canonical_json(value) -> bytes:
    """The one serialisation of an ancestor: sorted keys, no spaces."""
    return (_CANONICAL(value) + "\n").encode("utf-8", "backslashreplace")


_ABSENT = object()  # (no wire value is this object)


class Encoded:
    """What canonical_ancestor made of a document's entries: the paths in order, the bytes of each
    (`"path":wire`) at the same index, and the entries dict they were made from."""

    __slots__ = ("order", "chunks", "entries")

    def __init__(self, order: list[str], chunks: list[bytes], entries: dict):
        self.order, self.chunks, self.entries = order, chunks, entries


def _encoded_entry(path: str, wire) -> bytes:
    return f"{_CANONICAL(path)}:{_CANONICAL(wire)}".encode("utf-8", "backslashreplace")


def _frame(doc: dict) -> tuple[bytes, bytes]:
    """canonical_json(doc)'s bytes before its entries' and after them (doc has "entries")."""
    out, head = [], None
    for key, value in sorted(doc.items()):
        out.append(b"," if out else b"{")
        out.append(_CANONICAL(key).encode("utf-8", "backslashreplace") + b":")
        if key == "entries":
            out.append(b"{")
            head, out = b"".join(out), [b"}"]
        else:
            out.append(_CANONICAL(value).encode("utf-8", "backslashreplace"))
    out.append(b"}\n")
    return head, b"".join(out)


def _encoded_from_copy(path: Path, digest: str, doc) -> Encoded | None:
    """The encoding of the ancestor document `doc`, read from its file at `path` (bytes of `digest`)
    through its copy — cut at the lengths the copy gave for its entries, in the order of their
    paths (write_copy): a cold process's delta write then encodes only what moved, not 100k
    entries (~0.3 s, on each side of a sync that changed something).  None when the copy read gave
    none for these bytes, or they do not fit them (the entries are then encoded anew)."""
    layout = _LAYOUTS.pop(str(copy_path(path)), None)
    entries = doc.get("entries") if type(doc) is dict else None
    if layout is None or layout[0] != digest or type(entries) is not dict:
        return None
    lengths = array.array("I")
    try:
        lengths.frombytes(layout[1])
        with open(path, "rb") as f:
            raw = f.read()
    except (OSError, ValueError):
        return None
    head, tail = _frame(doc)
    if (len(lengths) != len(entries) or hash_bytes(raw) != digest or not raw.startswith(head)
            or not raw.endswith(tail) or len(head) + sum(lengths) + max(len(lengths) - 1, 0) + len(tail) != len(raw)):
        return None
    chunks, at = [], len(head)
    for n in lengths:  # each entry's bytes begin with its name's quote and end before a comma
        chunk = raw[at:at + n]
        if chunk[:1] != b'"' or raw[at + n:at + n + 1] not in (b",", b"}"):
            return None
        chunks.append(chunk)
        at += n + 1
    return Encoded(sorted(entries), chunks, entries)  # (the copy holds them in that order: sorted at once)


def canonical_ancestor(doc: dict, encoded: Encoded | None, *, since: dict | None = None,
                       moved: list[str] | None = None) -> tuple[bytes, Encoded | None]:
    """canonical_json(doc), byte for byte, with the bytes of each entry whose wire value is the very
    object `encoded` was made from for its path taken from there (callers never modify a stored
    document); also the encoded entries for next time (`encoded` is used up).  When `encoded` was
    made from the entries `since`, and doc's differ from those only at the paths `moved` (an
    ancestor delta), only those are looked at, and the entries' bytes are one join of a list kept
    in order: at 100k files ~15 ms, where looking every path's bytes up to join them took ~70,
    sorting and comparing every entry ~60 more, and encoding one 10-million-character string 140."""
    entries = doc.get("entries")
    if not isinstance(entries, dict):
        return canonical_json(doc), None
    patched = encoded is not None and moved is not None and since is not None and encoded.entries is since
    if patched:
        order, chunks = encoded.order, encoded.chunks
        for path in moved:
            at = bisect.bisect_left(order, path)
            held = at < len(order) and order[at] == path
            wire = entries.get(path)
            if wire is None:
                if held:
                    del order[at]
                    del chunks[at]
            elif not held:
                order.insert(at, path)
                chunks.insert(at, _encoded_entry(path, wire))
            elif since.get(path, _ABSENT) is not wire:
                chunks[at] = _encoded_entry(path, wire)
        patched = len(order) == len(entries)  # (always, when `moved` is right: else encoded anew below)
    if not patched:
        order = sorted(entries)
        wires = list(map(entries.__getitem__, order))
        if encoded is not None:  # each entry's bytes kept where its wire value is the one they encode
            known = dict(zip(encoded.order, encoded.chunks))
            made = list(map(encoded.entries.get, order, itertools.repeat(_ABSENT)))
            chunks = list(map(known.get, order))
        else:
            made, chunks = [_ABSENT] * len(order), [None] * len(order)
        for i in itertools.compress(itertools.count(), map(operator.is_not, made, wires)):  # (C-level loops)
            chunks[i] = _encoded_entry(order[i], wires[i])
    head, tail = _frame(doc)
    return b"".join((head, b",".join(chunks), tail)), Encoded(order, chunks, entries)


# Beside each ancestor file `<peer>.json`, the same document in marshal's form, `<peer>.marshal`:
# a cold process reads that instead of parsing the JSON.  At 100k files it reads in 0.08 s against
# 0.13 and holds 56 MB at its peak against 100 (70 MB of objects, plus 10 MB of text decoded into
# a 20 MB string first; a copy is read a part at a time).  The JSON stays what decides (what both
# sides' digests are of, what other tools read): a copy is used only when it is ours, its header
# names the digest of the JSON's bytes as they are now, and each part has the checksum its line
# gives.  Anything else is no copy: the JSON is parsed (and the copy written anew).  A cache:
# written without fsync, lost in a crash, rebuilt.
COPY_MAGIC = b"peersync ancestor copy 1\n"
COPY_PART = 8192  # entries per part of a copy (~1 MB): what a read holds of its bytes at a time


def copy_path(path: Path) -> Path:
    """Where the marshal copy of the ancestor file `path` lives."""
    return path.with_suffix(".marshal")


def _trusted_entries(entries: dict, like: Mapping[str, Entry]) -> dict[str, Entry]:
    """Our own stored entries (their wire form) as Entries; where `like` holds an equal one, that one."""
    out = {}
    for p, w in entries.items():
        entry = Entry.trusted(w)
        same = like.get(p)
        out[p] = same if same == entry else entry
    return out


def _converted(doc, convert: Callable[[dict], dict]):
    """`doc` with its entries as convert(entries) makes them; None where it cannot."""
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), dict):
        return doc
    try:
        return {**doc, "entries": convert(doc["entries"])}
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        return None


def read_copy(path: Path, digest: str, convert: Callable[[dict], dict] | None = None) -> dict | None:
    """The document the copy at `path` holds, when it is a good copy of a JSON file whose bytes
    have `digest`; else None.  Read part by part: only one part's bytes are held at a time, and
    with `convert`, only one part's entries in their stored form (each part's are convert(part))."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_uid != os.getuid() or f.readline(64) != COPY_MAGIC:
                return None
            named, count = f.readline(64).split()
            if named != digest.encode():
                return None
            doc, entries, layout = None, {}, None
            for _ in range(int(count)):
                checksum, length = f.readline(64).split()
                body = f.read(int(length))
                if hash_bytes(body) != checksum.decode() or layout is not None:
                    return None
                part = marshal.loads(body)
                if type(part) is bytes and doc is not None:  # the last part may be the entries' lengths
                    layout = part
                    continue
                if type(part) is not dict:
                    return None
                if doc is None:
                    doc = part
                else:
                    entries.update(part if convert is None else convert(part))
            if doc is None or f.read(1):
                return None
    except (OSError, ValueError, EOFError, TypeError, IndexError, KeyError, AttributeError):
        return None  # (from `convert` too: the JSON is then read, and says the same)
    doc["entries"] = entries
    if layout is not None:
        _LAYOUTS[str(path)] = (digest, layout)
    return doc


def write_copy(path: Path, digest: str, doc: dict, encoded: Encoded | None = None) -> None:
    """Write the marshal copy of an ancestor document whose JSON's bytes have `digest` — only of a
    document in the very form json.loads gives (marshal would keep a tuple a tuple, where a reader
    of the JSON gets a list): its entries lists, as Entry.to_wire and the wire protocol make them.
    The document without its entries, then the entries COPY_PART at a time, each part with its
    length and checksum.  `encoded`: the encoding of doc's entries those bytes were joined from —
    the entries then go in its order (their paths', sorted), and a last part holds the byte length
    of each (_encoded_from_copy).  Best effort."""
    entries = doc.get("entries")
    try:
        if type(entries) is not dict or not all(type(w) is list for w in entries.values()):
            path.unlink(missing_ok=True)  # (a copy of what was there before is no copy of this)
            return
        cut = encoded is not None and encoded.entries is entries and len(encoded.chunks) == len(entries)
        items = zip(encoded.order, map(entries.__getitem__, encoded.order)) if cut else iter(entries.items())
        parts = [marshal.dumps({k: v for k, v in doc.items() if k != "entries"}, MARSHAL_VERSION)]
        parts += [marshal.dumps(dict(itertools.islice(items, COPY_PART)), MARSHAL_VERSION)
                  for _ in range(0, len(entries), COPY_PART)]
        if cut:
            parts.append(marshal.dumps(array.array("I", map(len, encoded.chunks)).tobytes(), MARSHAL_VERSION))
        out = [COPY_MAGIC, f"{digest} {len(parts)}\n".encode()]
        for body in parts:
            out += [f"{hash_bytes(body)} {len(body)}\n".encode(), body]
        atomic_write_bytes(path, b"".join(out), durable=False)
    except (OSError, ValueError):
        pass


def flush_filesystem(path: Path) -> None:
    """Make everything written so far on `path`'s file system durable: syncfs(2) where the C
    library has it (one call for a whole batch), else sync(2)."""
    global _syncfs
    if _syncfs is None:
        try:
            import ctypes  # lazy: loaded at the first flush, not at the agent's start

            _syncfs = ctypes.CDLL(None, use_errno=True).syncfs
        except (OSError, AttributeError):
            _syncfs = False
    if _syncfs:
        fd = os.open(path, os.O_RDONLY)
        try:
            if _syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


_syncfs = None


def _data(item: dict) -> bytes:
    """An item's inline content (raw bytes: see protocol.py)."""
    data = item["data"]
    if not isinstance(data, bytes):
        raise ValueError("inline data is not bytes")
    return data


def error_text(err: Exception) -> str:
    if isinstance(err, OSError):
        return f"{err.strerror or err}" + (" (disk full)" if getattr(err, "errno", None) == 28 else "")
    return str(err)


