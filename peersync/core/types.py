"""Values that cross pipeline stages (scan → reconcile → plan → execute → commit).

Every type here is an immutable value; `None` means "absent" (no file on that side, no
ancestor entry).  Paths are workspace-relative POSIX strings that passed
`peersync.core.paths.check_relpath`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from itertools import chain, compress, filterfalse
from operator import is_not
from typing import Iterator, Mapping, NamedTuple

from peersync.core import versions
from peersync.core.versions import VV

SECOND = 1_000_000_000
# A file system that stores whole seconds (HFS+, or 2 s on FAT) truncates the mtimes we set; such
# an mtime (no sub-second part) is compared with this much slack, everywhere (one rule).
COARSE_SLACK_NS = 2 * SECOND


def coarse(*mtimes_ns: int) -> bool:
    """Whether any of these mtimes has no sub-second part (then compare with COARSE_SLACK_NS)."""
    return any(t % SECOND == 0 for t in mtimes_ns)


# Bump me when the manifest / ancestor encoding changes.  Format 1 (no version vectors) is still
# read: its entries get the empty vector, "history unknown" (see core/versions.py).
MANIFEST_FORMAT = 2
READABLE_FORMATS = (1, 2)


# What an entry is, in the type bits of Entry.mode (as in st_mode): a regular file has none.  A
# symbolic link's content is its target string (size and hash are the target's bytes'); an empty
# directory's is nothing.  Both carry fixed permission bits and mtime 0: a link's or a directory's
# own times and bits are not synced, so they never look changed (core/links.py).
KIND_BITS = 0o170000
LINK = 0o120000
DIR = 0o040000
KINDS = (0, LINK, DIR)


_tuple_new = tuple.__new__


class Entry(NamedTuple):
    """One version of a regular file: content identity, the metadata we propagate, and its
    history (core/versions.py): `vv`, which replicas' edits the content contains (`()` for a
    version older than vectors), and `seen`, what else its holders have already seen of that path
    and set aside (the losers of conflicts it won).

    A named tuple rather than a frozen dataclass: every scan makes one per file on each side and
    reconcile compares them, and a tuple is made three times faster and compared in C."""

    size: int
    mtime_ns: int
    mode: int  # permission bits (st_mode & 0o777), plus the type bits of a link or directory (KIND_BITS)
    hash: str  # xxh3-128, lower-case hex
    vv: VV = ()
    seen: VV = ()

    def to_wire(self) -> list:
        wire = [self.size, self.mtime_ns, self.mode, self.hash]
        if self.vv or self.seen:
            wire.append(versions.to_wire(self.vv))
        if self.seen:
            wire.append(versions.to_wire(self.seen))
        return wire

    @classmethod
    def from_wire(cls, value: list) -> "Entry":
        if not isinstance(value, (list, tuple)) or len(value) not in (4, 5, 6):
            raise ValueError("an entry is [size, mtime_ns, mode, hash, version vector, seen]")
        size, mtime_ns, mode, digest = value[:4]
        if not (isinstance(size, int) and isinstance(mtime_ns, int) and isinstance(mode, int)):
            raise ValueError("entry fields must be integers")
        if not isinstance(digest, str) or len(digest) != 32:
            raise ValueError("entry hash must be a 32-digit hex string")
        vv = versions.from_wire(value[4]) if len(value) >= 5 else ()
        seen = versions.from_wire(value[5]) if len(value) == 6 else ()
        kind = mode & KIND_BITS
        if kind not in KINDS:
            raise ValueError("entry kind must be a file, a symbolic link or a directory")
        return cls(size, mtime_ns, kind | (mode & 0o777), digest, vv, seen)

    @classmethod
    def trusted(cls, value: list) -> "Entry":
        """From our own stored wire form (no checks: a keeper reads 100k of these per sync)."""
        if len(value) == 4:
            return cls(*value)
        seen = tuple((w, n) for w, n in value[5]) if len(value) == 6 else ()
        return cls(value[0], value[1], value[2], value[3], tuple((w, n) for w, n in value[4]), seen)

    def same_content(self, other: "Entry | None") -> bool:
        return (other is not None and other.hash == self.hash and other.size == self.size
                and other.mode & KIND_BITS == self.mode & KIND_BITS)

    @property
    def kind(self) -> int:
        """0 (a regular file), LINK or DIR."""
        return self.mode & KIND_BITS

    @property
    def is_file(self) -> bool:
        return not self.mode & KIND_BITS

    def with_vv(self, vv: VV, seen: VV | None = None) -> "Entry":
        # tuple.__new__ directly: half the cost of the generated __new__ (every scan, every file).
        return _tuple_new(Entry, (self[0], self[1], self[2], self[3], vv, self[5] if seen is None else seen))

    @property
    def history(self) -> VV:
        """Everything of this path its holder has seen: the content's own lineage (a version from
        before vectors stands for itself by its bytes) and the versions it won over."""
        return versions.join(versions.effective(self.vv, self.hash), self.seen)


# path -> Entry.  Plain dicts (cheap to build for 100k files); treat as read-only once built.
Manifest = Mapping[str, Entry]


def new_objects(before: Mapping, now: Mapping) -> Iterator[str]:
    """The keys of `now` whose value is not the very object `before` holds there: what a
    long-lived process compares again after a watch-fed scan (replica/scan.py) reused the rest.
    (C-level loops: at 100k entries a few milliseconds, where a Python loop takes twenty.)"""
    return compress(now, map(is_not, map(before.get, now), now.values()))


def gone_paths(ancestor: Mapping, manifest: Mapping, differ, candidates=None) -> set[str]:
    """The ancestor's paths `manifest` no longer holds, given `differ`: every path of `manifest`
    that differs from the ancestor (or more).  Counted first (the manifest's paths not in the
    ancestor are all in `differ`): none can be gone, or the `candidates` (iterables of paths: those
    a long-lived process saw go) that are gone are all of them when they are as many; else every
    path of the ancestor is looked up."""
    missing = len(ancestor) - len(manifest) + sum(1 for p in differ if p in manifest and p not in ancestor)
    if missing == 0:
        return set()
    if candidates is not None:
        found = {p for p in chain.from_iterable(candidates) if p not in manifest and p in ancestor}
        if len(found) == missing:
            return found
    return set(filterfalse(manifest.__contains__, ancestor))  # (a C-level loop)


def manifest_to_wire(manifest: Manifest) -> dict:
    return {"format": MANIFEST_FORMAT, "entries": {p: e.to_wire() for p, e in manifest.items()}}


class Side(enum.Enum):
    LOCAL = "local"
    REMOTE = "remote"

    # The other side: a plain attribute of each member (set below), not a property — a plan reads
    # it several times per path (0.16 µs each as a property, 0.03 µs as an attribute).
    other: "Side"


Side.LOCAL.other = Side.REMOTE
Side.REMOTE.other = Side.LOCAL


class Policy(str, enum.Enum):
    """How a true conflict (both sides changed, different content) is decided."""

    NEWEST = "newest"
    LOCAL = "local"
    REMOTE = "remote"
    SKIP = "skip"
    MANUAL = "manual"


class Mode(str, enum.Enum):
    """Direction of a sync run."""

    SYNC = "sync"  # two-way
    PUSH = "push"  # make the peer match local
    PULL = "pull"  # make local match the peer


class Action(str, enum.Enum):
    COPY = "copy"  # copy the file from `source` to `target`
    DELETE = "delete"  # move the file on `target` to the trash
    MERGE = "merge"  # merge both versions (peersync.mergefile); both sides receive the merged bytes
    CONFLICT = "conflict"  # unresolved (policy skip/manual): nothing is overwritten
    ADOPT = "adopt"  # both sides already agree; only the ancestor is updated


@dataclass(frozen=True, slots=True)
class Change:
    """One decision of reconcile for one path.

    `quarantine` is set when `target` holds a version the other side has never seen
    (a conflict loser): execute saves it in `conflicts/` before overwriting it, and the result is
    a new version that descends from both.  `reason` is a short machine-friendly tag (see
    reconcile.REASONS) used in reports.  `mode`: the three-way merge of both sides' permission bits,
    where they differ (core/modes.py).  `dead`: the deletion version the other side recorded,
    when there is one — for a deletion, the history the target records; for content copied over
    it, what both sides then remember as set aside.
    """

    path: str
    action: Action
    target: Side | None
    local: Entry | None
    remote: Entry | None
    ancestor: Entry | None
    reason: str
    quarantine: bool = False
    dead: "Entry | None" = None
    mode: int | None = None  # permission bits both sides end with (core/modes.py); None: as copied

    @property
    def source(self) -> Side | None:
        return self.target.other if self.target is not None else None

    def entry(self, side: Side) -> Entry | None:
        return self.local if side is Side.LOCAL else self.remote


@dataclass(frozen=True, slots=True)
class Problem:
    """Per-path trouble carried in results instead of aborting the run."""

    path: str
    message: str
    side: Side | None = None


@dataclass(frozen=True)
class Conflict:
    """A path both sides changed: which version is live now, and where the other one was kept."""

    path: str
    kept: str  # whose version is live: "local", "remote", "both" (policy skip/manual), or "merged"
    reason: str
    winner: str | None = None  # the winning side, by name ("this machine" or the peer's)
    side: str | None = None  # where the loser was overwritten: "local", "remote", "both"; None: nowhere
    saved_as: str | None = None  # the kept loser's conflict id (on `side`)
    remote_saved_as: str | None = None  # kept both (manual): the id of the copy kept on the peer
    saved_here: bool = False  # the peer's losing version is kept in THIS machine's conflicts/ (cloud)
    # kept "merged" (a merge that needs a look): passages kept live with both versions (text),
    # JSON keys both sides changed that the policy decided; the pre-merge versions are kept too.
    passages: int = 0
    keys: tuple[str, ...] = ()

    def to_json(self) -> dict:
        doc = {"path": self.path, "kept": self.kept, "winner": self.winner, "saved_as": self.saved_as,
               "side": self.side, "reason": self.reason}
        if self.remote_saved_as is not None:
            doc["remote_saved_as"] = self.remote_saved_as
        if self.saved_here:
            doc["saved_here"] = True
        if self.kept == "merged":
            doc.update(passages=self.passages, keys=list(self.keys))
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> "Conflict":
        return cls(doc["path"], doc["kept"], doc.get("reason") or "", winner=doc.get("winner"), side=doc.get("side"),
                   saved_as=doc.get("saved_as"), remote_saved_as=doc.get("remote_saved_as"),
                   saved_here=bool(doc.get("saved_here")), passages=int(doc.get("passages") or 0),
                   keys=tuple(doc.get("keys") or ()))


@dataclass(frozen=True)
class Plan:
    """Everything reconcile decided for one pair, before execution."""

    changes: tuple[Change, ...]
    problems: tuple[Problem, ...] = ()

    def of(self, action: Action) -> list[Change]:
        return [c for c in self.changes if c.action is action]

    @property
    def is_noop(self) -> bool:
        return all(c.action is Action.ADOPT for c in self.changes)


@dataclass(frozen=True)
class Outcome:
    """What execute did for one change: the entries now on each side (None = absent)."""

    change: Change
    ok: bool
    local: Entry | None = None
    remote: Entry | None = None
    conflict_id: str | None = None  # id of the quarantined loser, if any
    problem: Problem | None = None


@dataclass
class Report:
    """Result of one sync run with one peer; rendered as chat text or JSON."""

    peer: str
    host: str
    mode: Mode
    dry_run: bool = False
    seconds: float = 0.0
    pushed: list[str] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    deleted_local: list[str] = field(default_factory=list)
    deleted_remote: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things worth saying that are neither changes nor problems
    error: str | None = None
    error_exit: int = 0  # exit code the error maps to (2 = bad input, 1 = failure)
    error_kind: str | None = None  # errors.PeersyncError.kind: "busy", "connect", "safety", …
    clock_offset: float | None = None
    warm: bool = False  # went through the peer's keeper (an SSH connection kept from an earlier sync)
    in_keeper: bool = False  # run by the keeper process itself (quick.py's fast path)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def changed(self) -> bool:
        return bool(
            self.pushed or self.pulled or self.merged or self.deleted_local or self.deleted_remote
            or self.conflicts
        )

    @classmethod
    def from_json(cls, doc: dict, error_exit: int = 0) -> "Report":
        """The inverse of to_json (a keeper's run comes back this way); problems lose their side."""
        return cls(peer=doc["peer"], host=doc["host"], mode=Mode(doc["mode"]), dry_run=doc["dry_run"],
                   seconds=doc["seconds"], pushed=doc["pushed"], pulled=doc["pulled"], merged=doc["merged"],
                   deleted_local=doc["deleted_local"], deleted_remote=doc["deleted_remote"],
                   conflicts=[Conflict.from_json(c) for c in doc["conflicts"]], problems=[Problem(p["path"], p["message"]) for p in doc["problems"]],
                   notes=list(doc.get("notes") or ()),
                   error=doc["error"], error_exit=error_exit, error_kind=doc.get("error_kind"),
                   clock_offset=doc.get("clock_offset"), warm=bool(doc.get("warm_connection")),
                   in_keeper=bool(doc.get("in_keeper")))

    def to_json(self) -> dict:
        return {
            "peer": self.peer,
            "host": self.host,
            "mode": self.mode.value,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "pushed": self.pushed,
            "pulled": self.pulled,
            "merged": self.merged,
            "deleted_local": self.deleted_local,
            "deleted_remote": self.deleted_remote,
            "conflicts": [c.to_json() for c in self.conflicts],
            "problems": [{"path": p.path, "message": p.message} for p in self.problems],
            "notes": self.notes,
            "error": self.error,
            "error_kind": self.error_kind,
            "clock_offset": self.clock_offset,
            "warm_connection": self.warm,
            "in_keeper": self.in_keeper,
        }
