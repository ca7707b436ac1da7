"""How a file changed on both sides becomes one version (pure): which files merge, with which
merge, and what the outcome means — the one place where merge decisions are made.

A file merges when it matches `sync.logs` (append-merge, then insertion-merge: merge.py) or
`sync.merge` (three-way merge against the last synced content: textmerge.py for text and
Markdown, jsonmerge.py for `.json`).  A log that also matches `sync.merge` (daily notes) falls
back to the text merge when a side rewrote it.  None from merge_file means no merge applies:
the caller applies the conflict policy.

A merged version descends from both sides' versions (for per-file causal history: both
inputs are its parents); both sides install the same bytes.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Mapping

import pathspec

from peersync.core import versions
from peersync.core.jsonmerge import merge_json
from peersync.core.merge import append_merge, insertion_merge
from peersync.core.selection import matcher
from peersync.core.textmerge import Version, merge_back as merge_text_back, merge_text
from peersync.core.types import Entry, Side
from peersync.core.versions import VV

BASE_MAX = 16 << 20  # files up to this size keep their last synced content, the next merge's base
# A log over STREAM_MIN merges streamed where the peer is an agent (sync/logmerge.py): its common
# prefix stays where it is, and only the two tails after it are held, up to TAIL_MAX together (the
# union of lines costs about four times its input).  Other merges (text, JSON, a cloud folder's
# logs) hold both versions in memory, up to MEMORY_MAX each.  Beyond either bound a file is not
# merged: the conflict policy decides, and it is reported.
STREAM_MIN = 16 << 20
MEMORY_MAX = 256 << 20
TAIL_MAX = 4 << 20

APPEND, INSERT, TEXT, JSON = "append", "insert", "text", "json"
MARKDOWN_SUFFIXES = (".md", ".markdown")
# Paths whose strategies a MergeRules remembers: above a tree's file count, a sync asking about
# each path four times (plan, copy, bases) would match every pattern each time.
KNOWN_MAX = 1 << 18
_SHAPES: dict[tuple, tuple] = {}


def log_matcher(patterns: tuple[str, ...]):
    """Log-file patterns (sync.logs): a pattern with '/' matches the whole path, else the file name."""
    by_path = [fnmatch.translate(p) for p in patterns if "/" in p]
    by_name = [fnmatch.translate(p) for p in patterns if "/" not in p]
    path_re = re.compile("|".join(by_path)) if by_path else None
    name_re = re.compile("|".join(by_name)) if by_name else None

    def is_log(path: str) -> bool:
        if name_re is not None and name_re.match(path.rsplit("/", 1)[-1]):
            return True
        return path_re is not None and path_re.match(path) is not None

    return is_log


class MergeRules:
    """Which merges a path gets, in order, from the `sync.logs` and `sync.merge` patterns
    (`sync.merge` patterns are gitignore-style: `memory/**/*.md` also matches `memory/x.md`)."""

    def __init__(self, logs: tuple[str, ...], merge: tuple[str, ...]):
        self.is_log = log_matcher(logs)
        # (~0.8 µs a path, not pathspec's 2.6: a first sync of 100k files asks for each before its first batch)
        self._merge = matcher(pathspec.GitIgnoreSpec.from_lines(merge))
        self._known: dict[str, tuple[str, ...]] = {}  # a sync asks about the same paths again and again

    def strategies(self, path: str) -> tuple[str, ...]:
        found = self._known.get(path)
        if found is None:
            found = (APPEND, INSERT) if self.is_log(path) else ()
            if self._merge(path):
                found += (JSON,) if path.endswith(".json") else (TEXT,)
            if len(self._known) >= KNOWN_MAX:
                self._known.clear()
            self._known[path] = _SHAPES.setdefault(found, found)  # a few tuples, shared
        return found

    def mergeable(self, path: str) -> bool:
        return bool(self.strategies(path))

    def keeps_base(self, path: str, entry: Entry) -> bool:
        """Does the last synced content of `path` stay on both sides, as the next merge's base?"""
        return entry.size <= BASE_MAX and self.mergeable(path)

    def streams(self, path: str, *sizes: int) -> bool:
        """Does a merge of versions of these sizes go streamed (sync/logmerge.py), not in memory?"""
        return self.is_log(path) and max(sizes) > STREAM_MIN

    def is_text(self, path: str) -> bool:
        """A text merge may leave kept passages in this file (see textmerge.has_kept_versions)."""
        return TEXT in self.strategies(path)


@dataclass(frozen=True)
class Merged:
    """A merge's outcome.  `kept`: passages where both versions were kept live (text);
    `keys`: JSON keys both sides changed, decided by the conflict policy.  Either means the
    file needs a look, and the pre-merge versions are kept in conflicts/ too."""

    data: bytes
    how: str
    kept: int = 0
    keys: tuple[str, ...] = ()

    @property
    def needs_look(self) -> bool:
        return bool(self.kept or self.keys)


def merge_file(path: str, strategies: tuple[str, ...], *, ancestor: Entry | None, base: bytes | None,
               local: Version, remote: Version, local_first: bool, prefer: Side | None = None) -> Merged | None:
    """The merged bytes of `local` and `remote`, the first of `strategies` that applies.

    `ancestor`: the pair's ancestor entry (None: unknown); `base`: its content when kept (None
    otherwise: the text and JSON merges then take the union).  `local_first` orders log tails
    (callers pass the same on both machines).  `prefer`: the side whose value a JSON key both
    sides changed keeps (the conflict policy's winner); None: such a file is not merged.
    """
    for how in strategies:
        if how == APPEND:
            data = append_merge(local.data, remote.data, ancestor, local_first=local_first)
            if data is not None:
                return Merged(data, how)
        elif how == INSERT:
            if base is not None:
                data = insertion_merge(base, local.data, remote.data, local_first=local_first)
                if data is not None:
                    return Merged(data, how)
        elif how == TEXT:
            text = merge_text(base, local, remote, markdown=path.endswith(MARKDOWN_SUFFIXES))
            if text is not None:
                return Merged(text.data, how, kept=text.kept)
        elif how == JSON:
            side = {Side.LOCAL: "x", Side.REMOTE: "y"}.get(prefer) if prefer is not None else None
            doc = merge_json(base, local.data, remote.data, prefer=side)
            if doc is not None:
                return Merged(doc.data, how, keys=doc.conflicts)
    return None


def merge_base(path: str, strategies: tuple[str, ...], common: list[tuple[str, VV]],
               content: Mapping[str, bytes | None]) -> bytes | None:
    """The base of a merge: the content of the latest version both sides descend from, among
    `common` ((hash, vector) pairs both sides' vectors contain; `content`: the kept bytes by hash,
    None where none was kept).  None when none of them is kept.

    Of several latest ones (criss-cross merges: two machines each merged the same two versions,
    and then edits of their merges meet), their own merge — against their latest common version,
    found the same way — is the base, as git's recursive strategy makes a virtual one: both sides
    descend from that merge, and a base that is one of its inputs would make the other input's
    changes (a line removed since, say) look like new edits of one side.  Without a common version
    of theirs kept (one from before version vectors, or pruned), their merge is their union, as a
    first sync's: both sides descend from each, so a line one of them lacks is one it removed, and
    in the base it stays removed wherever a side lacks it.  When they do not merge cleanly (not
    text, or kept passages), the one with the most events."""
    known = sorted({(h, vv) for h, vv in common if content.get(h) is not None},
                   key=lambda hv: (sum(n for _, n in hv[1]), hv[0]))
    latest = [(h, vv) for h, vv in known if not any(o != vv and versions.seen(vv, o) for _, o in known)]
    if not latest:
        return None
    strategies = tuple(how for how in strategies if how in (TEXT, JSON))
    data, vv = content[latest[-1][0]], latest[-1][1]
    for h, other in reversed(latest[:-1]):
        below = [(b, bvv) for b, bvv in known if bvv != other and bvv != vv
                 and versions.seen(bvv, vv) and versions.seen(bvv, other)]
        base = merge_base(path, strategies, below, content) if below else None
        merged = merge_file(path, strategies, ancestor=None, base=base, local=Version(data, "", 0),
                            remote=Version(content[h], "", 0), local_first=True)
        if merged is None or merged.needs_look:  # no clean merge: the one with the most events
            return content[latest[-1][0]]
        data, vv = merged.data, versions.join(vv, other)
    return data


def merge_back(path: str, kept: bytes, live: bytes) -> bytes | None:
    """A kept version (conflicts/) merged into the live one, without a base: what the live one
    lacks comes back — text block by block (blocks both hold once), JSON key by key (the live
    value where both hold the key).  None when they cannot be merged (not text, or not JSON)."""
    if path.endswith(".json"):
        doc = merge_json(None, live, kept, prefer="x")
        return None if doc is None else doc.data
    return merge_text_back(kept, live, markdown=path.endswith(MARKDOWN_SUFFIXES))
