"""Names across two file systems that fold differently (pure): one spelling per file for the pair.

A Mac volume is usually case-insensitive (APFS, HFS+) and may store names decomposed (HFS+); a Linux
one is neither.  Each side's replica says how its volume treats names (replica/fsprobe.py) and
reports names NFC-normalised where its volume finds a name in any normal form; here the two
manifests (and the pair's ancestor) are aligned under the pair's key — case folded and NFC where
either side folds so — before reconcile sees them:

- one file held under two spellings (`Notes.md` on Linux, `notes.md` on the Mac; `projects/b.md` on
  Linux inside the Mac's `Projects/`) is one path, spelled as the side that does not fold holds it.
  Operations on the folding side find the file under that spelling too.  Where the folding side's
  own leaf name differs (a case-only rename made on the other side, or a first sync), that side
  renames its file in place (a "respell"); a name the folding side renamed itself is left to
  reconcile as a rename (delete + create), which never loses the file.  Folders are never renamed
  on the case-sensitive side because of the other side's folding.
- two names one side holds apart and the other cannot (`Notes.md` and `notes.md` on Linux, for a
  case-insensitive Mac) are a name clash: reported with both paths, and nothing is done at either
  (they are unknown for the sync, core/unknown.py) until one is renamed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from peersync.core.types import Entry, Problem, Side


@dataclass(frozen=True)
class Folding:
    """How one side's volume folds names (None stands for a volume that folds nothing)."""

    case: bool  # "Notes.md" and "notes.md" are one entry
    normalization: bool  # the NFC and NFD spellings of a name are one entry

    @classmethod
    def from_wire(cls, doc: object) -> "Folding | None":
        """From a replica's file-system description (replica/fsprobe.FsBehaviour.to_wire)."""
        if not isinstance(doc, dict):
            return None
        folding = cls(doc.get("case_sensitive") is False, doc.get("normalization_sensitive") is False)
        return folding if folding.case or folding.normalization else None

    def key(self, path: str) -> str:
        if self.normalization:
            path = unicodedata.normalize("NFC", path)
        return path.casefold() if self.case else path

    def describe(self) -> str:
        return " and ".join(w for ok, w in ((self.case, "case"), (self.normalization, "Unicode normalisation")) if ok)


@dataclass
class Alignment:
    """The three manifests under one spelling per file, and what that took."""

    ancestor: Mapping[str, Entry]
    local: Mapping[str, Entry]
    remote: Mapping[str, Entry]
    respell: dict[Side, list[tuple[str, str]]] = field(default_factory=lambda: {Side.LOCAL: [], Side.REMOTE: []})
    clashes: list[Problem] = field(default_factory=list)
    unknown: set[str] = field(default_factory=set)
    changed: bool = False  # some path was spelled differently from what a side reported


def _leaf(path: str) -> str:
    return path.rpartition("/")[2]


def align(ancestor: Mapping[str, Entry], local: Mapping[str, Entry], remote: Mapping[str, Entry], *,
          local_folding: Folding | None, remote_folding: Folding | None, peer_name: str = "the peer") -> Alignment:
    """See the module's docstring.  Returns the inputs themselves when neither side folds."""
    out = Alignment(ancestor, local, remote)
    if local_folding is None and remote_folding is None:
        return out
    pair = Folding(bool((local_folding and local_folding.case) or (remote_folding and remote_folding.case)),
                   bool((local_folding and local_folding.normalization)
                        or (remote_folding and remote_folding.normalization)))
    first: dict[str, str] = {}
    marked: set[str] = set()
    for manifest in (local, remote, ancestor):
        for path in manifest:
            k = pair.key(path)
            if first.setdefault(k, path) != path:
                marked.add(k)
    if not marked:
        return out
    groups: dict[str, tuple[list, list, list]] = {k: ([], [], []) for k in marked}
    for i, manifest in enumerate((local, remote, ancestor)):
        for path in manifest:
            k = pair.key(path)
            if k in groups:
                groups[k][i].append(path)
    new = {Side.LOCAL: dict(local), Side.REMOTE: dict(remote)}
    new_ancestor = dict(ancestor)
    folding = {Side.LOCAL: local_folding, Side.REMOTE: remote_folding}
    for k, (in_local, in_remote, in_ancestor) in sorted(groups.items()):
        held = {Side.LOCAL: sorted(in_local), Side.REMOTE: sorted(in_remote)}
        clash = _clash(held, folding, peer_name)
        if clash is not None:
            out.clashes.extend(clash)
            out.unknown.update(in_local, in_remote, in_ancestor)
            continue
        if len(held[Side.LOCAL]) != 1 or len(held[Side.REMOTE]) != 1:
            continue  # held on one side only (or twins the other side keeps apart): nothing to align
        # The anchor is the side that keeps these names apart (else ours); the other one folds them.
        f = Side.REMOTE if _folds(folding[Side.REMOTE], held[Side.LOCAL][0], held[Side.REMOTE][0]) else Side.LOCAL
        s = f.other
        p_s, p_f = held[s][0], held[f][0]
        p_a = in_ancestor[0] if len(in_ancestor) == 1 else None
        renamed_f = p_a is not None and _leaf(p_f) != _leaf(p_a)
        renamed_s = p_a is not None and _leaf(p_s) != _leaf(p_a)
        if renamed_f and not renamed_s:
            continue  # the folding side renamed it: reconcile carries that as delete + create
        if p_f != p_s:
            new[f][p_s] = new[f].pop(p_f)
            out.changed = True
            if _leaf(p_f) != _leaf(p_s):
                out.respell[f].append((p_f, p_s))
        if p_a is not None and p_a != p_s:
            new_ancestor[p_s] = new_ancestor.pop(p_a)
            out.changed = True
    if out.changed:
        out.local, out.remote, out.ancestor = new[Side.LOCAL], new[Side.REMOTE], new_ancestor
    return out


def _folds(folding: Folding | None, a: str, b: str) -> bool:
    return folding is not None and folding.key(a) == folding.key(b)


def _clash(held: dict[Side, list[str]], folding: dict[Side, Folding | None], peer_name: str) -> list[Problem] | None:
    """Two names one side holds apart that the other side's volume takes for one: both reported."""
    for side in (Side.LOCAL, Side.REMOTE):
        names = held[side]
        other = folding[side.other]
        if len(names) < 2 or other is None:
            continue
        twins = [n for n in names if any(m != n and other.key(m) == other.key(n) for m in names)]
        if not twins:
            continue
        where = peer_name if side is Side.LOCAL else "this machine"
        listed = " and ".join(twins)
        fix = f"rename one of them (on {'this machine' if side is Side.LOCAL else peer_name})"
        return [Problem(n, f"name clash: {listed} differ only in {other.describe()}, which {where}'s file system "
                           f"cannot tell apart; neither is synced until you {fix}", side) for n in twins]
    return None


# -- names that are not UTF-8 ------------------------------------------------------------------------

_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # os.fsdecode's form of a byte that is not UTF-8


def not_utf8(path: str) -> bool:
    """Whether `path` holds bytes that are not UTF-8 (Linux allows any bytes in a name)."""
    return not path.isascii() and _NOT_UTF8.search(path) is not None


def foreign_names(local: Iterable[str], remote: Iterable[str], ancestor: Iterable[str], *, local_holds: bool,
                  remote_holds: bool, peer_name: str = "the peer") -> tuple[list[Problem], set[str]]:
    """Names that are not UTF-8, where one side's volume (APFS, HFS+) or replica (a cloud folder)
    cannot hold them: (one problem per such path, the paths to leave alone on both sides).

    Between two sides that hold them (two Linux machines) they sync as any other name.  Where one
    side cannot, the path is not sent there and, being unknown for the sync, never deleted anywhere
    nor dropped from the ancestor; the problem says how to make it syncable (rename it)."""
    problems: list[Problem] = []
    unknown: set[str] = set()
    if local_holds and remote_holds:
        return problems, unknown
    for paths, side, holds_there in ((local, Side.LOCAL, remote_holds), (remote, Side.REMOTE, local_holds)):
        if holds_there:
            continue
        where = peer_name if side is Side.LOCAL else "this machine"
        fix = "" if side is Side.LOCAL else f" on {peer_name}"
        message = (f"name not synced to {where}: it is not valid UTF-8, which {where}'s file system cannot hold "
                   f"(rename it{fix}, e.g. with `convmv -f latin1 -t utf8`, to sync it)")
        for path in paths:
            if not_utf8(path) and path not in unknown:
                problems.append(Problem(path, message, side))
                unknown.add(path)
    unknown.update(p for p in ancestor if not_utf8(p))
    return problems, unknown
