"""Three-way merge of text and Markdown files edited on two machines (pure: no I/O, no clock).

diff3 comes from `merge3` (Breezy's three-way merge, maintained by Jelmer Vernooĳ) with the
`patiencediff` matcher Breezy uses with it (a Rust core: a 10 MB file merges in about a
second).  Not `git merge-file`: it is a subprocess (this core does no I/O), git is not on every
agent machine, and it only hands back text with <<<<<<< markers, which would have to be parsed
apart again.  merge3 gives the aligned regions themselves (unchanged / changed on one side /
changed alike / conflict, with line ranges in all three versions), which is what the rules
below work on.  These rules decide only what to do with diff3's conflicts; each one is a row
of tests/test_textmerge.py:

- Changes that diff3 merges cleanly merge.  Within a diff3 conflict, edits that touch
  different lines (one side deleted or changed a line, the other the next one) still merge,
  and so do removals alone (one side removed two lines, the other one of them: both go).
- Both sides inserted at the same place (two agents adding bullets under the same heading):
  both land, Markdown block by block (a list item with its continuation lines, a paragraph, a
  heading), in an order that depends only on the content; a block both sides added appears
  once; blocks that continue the current section come before blocks that open a new one.
- Overlapping edits keep both versions live, in the file, between marker lines naming each
  version's machine and time (`KEPT_HEADER`), widened to whole paragraphs and list items so
  a marker never cuts a sentence.  Merging again merges the sets of versions: a version one
  side removed since the base goes; one set of one is plain text again.
- CRLF and LF: compared without the CR; the result takes the line ending a side changed to.
  A missing final newline is kept missing unless a side added it.  Mixed endings: compared as is.
- No base (a first sync): the union of both versions, block by block, shared blocks once.
- Non-UTF-8 or NUL bytes: None (the caller applies the conflict policy).

The result depends only on the two versions as a pair (they are put in a canonical order
first), never on which machine runs the merge, so both install identical bytes.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

import merge3
import patiencediff

KEPT_HEADER = ("> ⚠️ **peersync kept {n} versions of this part**: it was edited on different machines "
               "at once. Keep the right text, then delete the rest and these marker lines.\n")
KEPT_VERSION = "> **▼ {machine} · {time}{deleted}**\n"
KEPT_DELETED = ": deleted this part"
KEPT_END = "> **▲ end of the versions kept by peersync**\n"

_HEADER_START = "> ⚠️ **peersync kept ".encode()
_HEADER_RE = re.compile(re.escape(_HEADER_START) + rb"\d+ versions of this part\*\*")
_VERSION_RE = re.compile(r"^> \*\*▼ (.+) · (\d{4}-\d\d-\d\d \d\d:\d\d UTC)(: deleted this part)?\*\*\n$".encode())
_END = KEPT_END.encode()

_FENCE = re.compile(rb"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(rb"^ {0,3}#{1,6}(\s|$)")
_ITEM = re.compile(rb"^\s*([-*+]|\d{1,9}[.)])(\s|$)")
_RULE = re.compile(rb"^ {0,3}([-*_])(\s*\1){2,}\s*$")
_TABLE = re.compile(rb"^\s*\|")

_MAX_EXPANDED = 8  # versions a kept passage holding one kept block may expand to (see _versions)


@dataclass(frozen=True)
class Version:
    """One side's content, with what names it in a kept passage: its machine and its mtime."""

    data: bytes
    machine: str
    mtime_ns: int


@dataclass(frozen=True)
class Merged:
    """A merge's bytes; `kept`: passages where both versions were kept live (0: a clean merge)."""

    data: bytes
    kept: int = 0


def merge_text(base: bytes | None, x: Version, y: Version, *, markdown: bool = True) -> Merged | None:
    """Merge `x` and `y`, two edits of `base` (None: unknown).  None when a version is not text."""
    if x.data == y.data:
        return Merged(x.data)
    if base is not None and x.data == base:
        return Merged(y.data)
    if base is not None and y.data == base:
        return Merged(x.data)
    if not all(_is_text(t) for t in (base, x.data, y.data) if t is not None):
        return None
    a, b = sorted((x, y), key=lambda v: (v.data, v.machine, v.mtime_ns))
    styles = [_eol(t) for t in (base, a.data, b.data)]
    crlf = "mixed" not in styles and _three_way(*styles, default="lf") == "crlf"
    normal = "mixed" not in styles and "crlf" in styles
    finals = [None if not t else t.endswith(b"\n") for t in (base, a.data, b.data)]
    final_newline = _three_way(*finals, default=True)
    lines = [_lines(t, normal) if t is not None else [] for t in (base, a.data, b.data)]
    out, kept = _Merge(*lines, a, b, markdown).run()
    data = b"".join(out)
    if not final_newline and data.endswith(b"\n"):
        data = data[:-1]
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    return Merged(data, kept)


def merge_back(kept: bytes, live: bytes, *, markdown: bool = True) -> bytes | None:
    """A kept version merged into the live one without a base (`conflicts restore --merge`):
    the live text with every block of the kept one it lacks.  None when either is not text."""
    merged = merge_text(None, Version(live, "", 0), Version(kept, "", 0), markdown=markdown)
    return None if merged is None else merged.data


def has_kept_versions(data: bytes) -> bool:
    """True when `data` holds a passage with versions kept by a merge (it needs a look)."""
    at = data.find(_HEADER_START)
    while at >= 0:
        if (at == 0 or data[at - 1:at] == b"\n") and _HEADER_RE.match(data, at):
            return True
        at = data.find(_HEADER_START, at + 1)
    return False


def _is_text(data: bytes) -> bool:
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _eol(data: bytes | None) -> str | None:
    """A version's line ending: "lf", "crlf", "mixed", or None (no line break: no say)."""
    if not data:
        return None
    breaks = data.count(b"\n")
    if not breaks:
        return None
    crlf = data.count(b"\r\n")
    return "crlf" if crlf == breaks else "lf" if crlf == 0 else "mixed"


def _three_way(base, a, b, *, default):
    """A property of the merge from the three versions' (None: no say): what a side changed it to."""
    if a == b:
        return a if a is not None else base if base is not None else default
    if a is None or a == base:
        return b
    if b is None or b == base:
        return a
    return default


def _lines(data: bytes, crlf: bool) -> list[bytes]:
    """Lines split on LF only, each ending with LF (a missing final one added: see merge_text)."""
    if crlf:
        data = data.replace(b"\r\n", b"\n")
    if not data:
        return []
    parts = data.split(b"\n")
    last = parts.pop()
    out = [p + b"\n" for p in parts]
    if last:
        out.append(last + b"\n")
    return out


def _blank(line: bytes) -> bool:
    return not line.strip()


# -- kept passages -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Kept:
    """One version inside a kept passage."""

    lines: tuple[bytes, ...]
    machine: str
    time: str

    @property
    def order(self) -> tuple:
        return (self.time, self.machine, self.lines)


def _label_time(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _clean_name(name: str) -> str:
    name = "".join(c for c in name if c.isprintable() and c not in "*·`\\").strip()
    return name[:64] or "?"


def _kept_blocks(lines: list[bytes]) -> list[tuple[int, int, list[_Kept]]]:
    """The kept passages in `lines`: (first line, end, versions).  A passage is a header line,
    one or more (version line, its lines), and the end line; anything else is plain text."""
    found = []
    done = 0
    for i in [k for k, line in enumerate(lines) if line.startswith(_HEADER_START)]:
        if i < done or not _HEADER_RE.match(lines[i]) or i + 1 >= len(lines) or not _VERSION_RE.match(lines[i + 1]):
            continue
        versions: list[_Kept] = []
        current: list[bytes] | None = None
        label = None
        j = i + 1
        while j < len(lines):
            line = lines[j]
            match = _VERSION_RE.match(line)
            if match or line == _END:
                if current is not None:
                    versions.append(_Kept(tuple(current), *label))
                if line == _END:
                    break
                label = (match.group(1).decode(), match.group(2).decode())
                current = []
            elif _HEADER_RE.match(line):
                break  # another header before this one ended: not a passage
            else:
                current.append(line)
            j += 1
        if j < len(lines) and lines[j] == _END:
            found.append((i, j + 1, versions))
            done = j + 1
    return found


def _render(versions: list[_Kept]) -> list[bytes]:
    out = [KEPT_HEADER.format(n=len(versions)).encode()]
    for v in versions:
        deleted = KEPT_DELETED if not v.lines else ""
        out.append(KEPT_VERSION.format(machine=v.machine, time=v.time, deleted=deleted).encode())
        out += v.lines
    out.append(_END)
    return out


def _versions(lines: list[bytes], side: Version) -> list[_Kept]:
    """A passage as a set of versions: a kept passage's own versions (with the text around it,
    if any, on each); otherwise the passage itself, labelled with its side."""
    blocks = _kept_blocks(lines)
    if len(blocks) == 1:
        start, end, kept = blocks[0]
        before, after = tuple(lines[:start]), tuple(lines[end:])
        if len(kept) <= _MAX_EXPANDED:
            return [_Kept(before + v.lines + after, v.machine, v.time) for v in kept]
    return [_Kept(tuple(lines), _clean_name(side.machine), _label_time(side.mtime_ns))]


# -- Markdown structure ----------------------------------------------------------------------

class _Cuts:
    """cuts[k]: a passage may begin or end between lines k-1 and k — never inside a kept
    passage or a fenced code block, and in Markdown never inside a paragraph or a list item
    (a sentence may go on on the next line).  Worked out per boundary when asked: a merge
    asks about a few places of a file that may have 200,000 lines."""

    def __init__(self, lines: list[bytes], markdown: bool):
        self.lines, self.markdown = lines, markdown
        self.unit: dict[int, int] = {}  # lines of one kept passage or one fence share a number
        number = 0
        if any(line.startswith(_HEADER_START) for line in lines):
            for start, end, _ in _kept_blocks(lines):
                number += 1
                self.unit.update(dict.fromkeys(range(start, end), number))
        if not markdown:
            return
        fence: bytes | None = None
        for k, line in enumerate(lines):
            if fence is None and not line.lstrip(b" ").startswith((b"```", b"~~~")) or k in self.unit:
                continue
            if fence is not None:
                self.unit[k] = number
                if line.strip().startswith(fence):
                    fence = None
                continue
            opened = _FENCE.match(line)
            if opened:
                number += 1
                self.unit[k] = number
                fence = opened.group(1)[:3]

    def __getitem__(self, k: int) -> bool:
        if k <= 0 or k >= len(self.lines):
            return True
        before, after = self.unit.get(k - 1), self.unit.get(k)
        if before is not None and before == after:
            return False
        if not self.markdown or before is not None or after is not None:
            return True
        prev, line = self.lines[k - 1], self.lines[k]
        return (_blank(prev) or _blank(line) or _starts_block(line) or _HEADING.match(prev) is not None
                or _RULE.match(prev) is not None)


def _starts_block(line: bytes) -> bool:
    return any(p.match(line) for p in (_HEADING, _ITEM, _RULE, _TABLE, _FENCE)) or _HEADER_RE.match(line) is not None


def _segments(lines: list[bytes], markdown: bool) -> list[tuple[bytes, ...]]:
    """Markdown blocks: a heading, a list item with its continuation lines, a paragraph, a
    fenced block or a kept passage — each with the blank lines before it (blank lines at the
    end go with the last block).  Outside Markdown, every line is a block."""
    if not markdown:
        return [(line,) for line in lines]
    whole = {start: end for start, end, _ in _kept_blocks(lines)}
    segments: list[list[bytes]] = []
    current: list[bytes] = []
    pending: list[bytes] = []
    k = 0
    while k < len(lines):
        line = lines[k]
        if _blank(line):
            pending.append(line)
            k += 1
            continue
        if k in whole or _FENCE.match(line):
            end = whole.get(k) or _fence_end(lines, k)
            if current:
                segments.append(current)
            segments.append(pending + lines[k:end])
            current, pending, k = [], [], end
            continue
        if current and (pending or _starts_block(line) or _HEADING.match(current[-1])):
            segments.append(current)
            current = []
        current += pending + [line]
        pending = []
        k += 1
    if current:
        segments.append(current + pending)
    elif pending:
        if segments:
            segments[-1] = segments[-1] + pending
        else:
            segments.append(pending)
    return [tuple(s) for s in segments]


def _fence_end(lines: list[bytes], k: int) -> int:
    fence = _FENCE.match(lines[k]).group(1)[:3]
    for j in range(k + 1, len(lines)):
        if lines[j].strip().startswith(fence):
            return j + 1
    return len(lines)


def _union(x: list[bytes], y: list[bytes], markdown: bool) -> list[bytes]:
    """Both insertions at one place, block by block: blocks both hold once (matched in order),
    each side's other runs kept together, the runs of a gap in content order.  In Markdown, the
    blocks that continue the current section come first, then the sections each side opened
    (a new heading), matched by their blocks the same way."""
    sx, sy = _segments(x, markdown), _segments(y, markdown)
    if not markdown:
        return _flat(_union_runs(sx, sy))
    lx, ly = _lead(sx), _lead(sy)
    return _flat(_union_runs(sx[:lx], sy[:ly]) + _union_runs(sx[lx:], sy[ly:]))


def _lead(segments: list[tuple[bytes, ...]]) -> int:
    """How many blocks come before the first heading."""
    for n, seg in enumerate(segments):
        if any(_HEADING.match(line) for line in seg if not _blank(line)):
            return n
    return len(segments)


def _union_runs(sx: list[tuple], sy: list[tuple]) -> list[tuple]:
    out: list[tuple] = []
    i = j = 0
    for mi, mj, size in patiencediff.PatienceSequenceMatcher(None, sx, sy).get_matching_blocks():
        runs = sorted(r for r in (sx[i:mi], sy[j:mj]) if r)
        for run in runs:
            out += run
        out += sx[mi:mi + size]
        i, j = mi + size, mj + size
    # A block both sides hold that the matcher left unmatched (the two put it in different
    # orders): once, at its first place — unless one side itself holds it more often.
    cx, cy = Counter(sx), Counter(sy)
    limit = {s: max(cx[s], cy[s]) for s in cx.keys() & cy.keys() if not all(map(_blank, s))}
    seen: dict[tuple, int] = {}
    result = []
    for seg in out:
        if seg in limit:
            seen[seg] = seen.get(seg, 0) + 1
            if seen[seg] > limit[seg]:
                continue
        result.append(seg)
    return result


def _flat(segments) -> list[bytes]:
    return [line for seg in segments for line in seg]


# -- the merge -------------------------------------------------------------------------------

@dataclass
class _Region:
    """Aligned line ranges of base, a and b; kind as merge3.Merge3.merge_regions gives it."""

    kind: str  # "unchanged", "a", "b", "same", "conflict"
    z1: int
    z2: int
    a1: int
    a2: int
    b1: int
    b2: int


class _Merge:
    def __init__(self, base: list[bytes], a: list[bytes], b: list[bytes], va: Version, vb: Version,
                 markdown: bool):
        self.base, self.a, self.b, self.va, self.vb, self.markdown = base, a, b, va, vb, markdown
        self.cut_z, self.cut_a, self.cut_b = (_Cuts(t, markdown) for t in (base, a, b))

    def run(self) -> tuple[list[bytes], int]:
        """The merged lines, and how many kept passages this merge made or changed."""
        out: list[bytes] = []
        for unit in self._units():
            out += self._take(unit) if isinstance(unit, _Region) else self._resolve(unit)
        out = _at_most_as_often(out, self.a, self.b)
        return _canonical(out, {tuple(self.a[s:e]) for s, e, _ in _kept_blocks(self.a)}
                          | {tuple(self.b[s:e]) for s, e, _ in _kept_blocks(self.b)})

    def _regions(self) -> list[_Region]:
        """diff3's regions with all three ranges (merge3.merge_regions drops some of them):
        merge3's sync regions, and the gaps between them classified by merge_regions' rule."""
        base, a, b = self.base, self.a, self.b
        out = []
        iz = ia = ib = 0
        matcher = patiencediff.PatienceSequenceMatcher
        for z1, z2, a1, a2, b1, b2 in merge3.Merge3(base, a, b, sequence_matcher=matcher).find_sync_regions():
            if iz < z1 or ia < a1 or ib < b1:
                same = a[ia:a1] == b[ib:b1]
                equal_a, equal_b = a[ia:a1] == base[iz:z1], b[ib:b1] == base[iz:z1]
                kind = "same" if same else "b" if equal_a else "a" if equal_b else "conflict"
                out.append(_Region(kind, iz, z1, ia, a1, ib, b1))
            if z2 > z1:
                out.append(_Region("unchanged", z1, z2, a1, a2, b1, b2))
            iz, ia, ib = z2, a2, b2
        return out

    def _take(self, r: _Region) -> list[bytes]:
        if r.kind == "unchanged":
            return self.base[r.z1:r.z2]
        if r.kind == "b":
            return self.b[r.b1:r.b2]
        return self.a[r.a1:r.a2]

    def _cut(self, z: int, a: int, b: int) -> bool:
        return self.cut_z[z] and self.cut_a[a] and self.cut_b[b]

    def _units(self) -> list:
        """Regions, with each conflict widened (into a list of regions) until it begins and ends
        where a passage may, in all three versions: the neighbouring unchanged lines it needs
        are split off, changed neighbours join whole."""
        regions = self._regions()
        units: list = []
        i = 0
        while i < len(regions):
            r = regions[i]
            i += 1
            if r.kind != "conflict":
                units.append(r)
                continue
            group = [r]
            while not self._cut(group[0].z1, group[0].a1, group[0].b1):
                prev = units.pop()
                if isinstance(prev, list):
                    group[0:0] = prev
                elif prev.kind == "unchanged":
                    keep, take = self._split(prev, backwards=True)
                    group.insert(0, take)
                    if keep is not None:
                        units.append(keep)
                else:
                    group.insert(0, prev)
            while not self._cut(group[-1].z2, group[-1].a2, group[-1].b2):
                nxt = regions[i]
                if nxt.kind == "unchanged":
                    take, rest = self._split(nxt, backwards=False)
                    group.append(take)
                    if rest is not None:
                        regions[i] = rest
                        continue
                else:
                    group.append(nxt)
                i += 1
            units.append(group)
        return units

    def _split(self, r: _Region, *, backwards: bool) -> tuple[_Region | None, _Region | None]:
        """An unchanged region cut at the nearest place a passage may begin (backwards: searching
        from its end, returning (kept, taken)) or end (forwards: (taken, rest))."""
        n = r.z2 - r.z1
        steps = range(n - 1, -1, -1) if backwards else range(1, n + 1)
        at = next((k for k in steps if self._cut(r.z1 + k, r.a1 + k, r.b1 + k)), 0 if backwards else n)

        def part(lo: int, hi: int) -> _Region | None:
            return _Region("unchanged", r.z1 + lo, r.z1 + hi, r.a1 + lo, r.a1 + hi, r.b1 + lo, r.b1 + hi) if hi > lo else None

        return part(0, at), part(at, n)

    def _resolve(self, group: list[_Region]) -> list[bytes]:
        """One widened conflict: edits to different lines merge; insertions at one place are
        unioned; what still overlaps keeps both versions live in a kept passage."""
        first, last = group[0], group[-1]
        z = self.base[first.z1:last.z2]
        a = self.a[first.a1:last.a2]
        b = self.b[first.b1:last.b2]
        if any(_HEADER_RE.match(line) for line in (*z, *a, *b)):
            out_a, out_b = a, b  # kept passages merge as sets of versions, never line by line
        else:
            out_a, out_b = _weave(z, a, b, self.markdown)
        if out_a == out_b:
            return out_a
        # Only the part that differs becomes a kept passage, cut where a passage may be.
        cut_a, cut_b = _Cuts(out_a, self.markdown), _Cuts(out_b, self.markdown)
        p = 0
        limit = min(len(out_a), len(out_b))
        start = 0
        while p < limit and out_a[p] == out_b[p]:
            p += 1
            if cut_a[p] and cut_b[p]:
                start = p
        s = 0
        end = 0
        while s < limit - start and out_a[-1 - s] == out_b[-1 - s]:
            s += 1
            if cut_a[len(out_a) - s] and cut_b[len(out_b) - s]:
                end = s
        mid_a, mid_b = out_a[start:len(out_a) - end], out_b[start:len(out_b) - end]
        head, tail = out_a[:start], out_a[len(out_a) - end:]
        versions = _merge_versions(_base_versions(z), _versions(mid_a, self.va), _versions(mid_b, self.vb))
        if len(versions) == 1:
            return head + list(versions[0].lines) + tail
        return head + _render(versions) + tail


def _at_most_as_often(out: list[bytes], a: list[bytes], b: list[bytes]) -> list[bytes]:
    """A line both sides added, at places a few lines apart (one replaced a line, the other
    inserted next to it; or it reached both through other machines): once.  A line of text is
    never more often in the result than in either side (outside kept passages; blank lines and
    lines of mere punctuation, such as rules and fences, may repeat); later copies go."""
    def counts(lines: list[bytes]) -> Counter:
        inside = {k for start, end, _ in _kept_blocks(lines) for k in range(start, end)}
        return Counter(line for k, line in enumerate(lines) if k not in inside and _wordy(line))

    have = counts(out)
    allowed = counts(a) | counts(b)  # the larger count of each line
    extra = {line: n - allowed[line] for line, n in have.items() if n > allowed[line]}
    if not extra:
        return out
    inside = {k for start, end, _ in _kept_blocks(out) for k in range(start, end)}
    seen: Counter = Counter()
    result = []
    for k, line in enumerate(out):
        if line in extra and k not in inside:
            seen[line] += 1
            if seen[line] > have[line] - extra[line]:
                continue
        result.append(line)
    return result


def _wordy(line: bytes) -> bool:
    return any(c.isalnum() for c in line.decode("utf-8", "replace"))


def _canonical(lines: list[bytes], before: set[tuple]) -> tuple[list[bytes], int]:
    """Every kept passage rendered the one way (versions in order, once, the header's count
    right: a clean diff3 merge may have combined two sides' edits of one passage), and how many
    of them neither side held as they are now."""
    out: list[bytes] = []
    made = at = 0
    for start, end, kept in _kept_blocks(lines):
        out += lines[at:start]
        versions = _merge_versions(set(), kept, [])
        block = _render(versions) if len(versions) > 1 else list(versions[0].lines)
        made += len(versions) > 1 and tuple(block) not in before
        out += block
        at = end
    out += lines[at:]
    return out, made


def _base_versions(z: list[bytes]) -> set[tuple[bytes, ...]]:
    """The versions kept passages of the base held (what a side may have removed since)."""
    return {v.lines for _, _, kept in _kept_blocks(z) for v in kept}


def _merge_versions(base: set, xs: list[_Kept], ys: list[_Kept]) -> list[_Kept]:
    """Three-way merge of two sets of versions: every version of either side, once (the
    earliest label), except one of the base's that a side no longer holds (resolved there).
    When that leaves nothing (both resolved, differently), both sides' versions stay."""
    x_lines, y_lines = {v.lines for v in xs}, {v.lines for v in ys}
    union: dict[tuple, _Kept] = {}
    for v in sorted(xs + ys, key=lambda v: v.order):
        union.setdefault(v.lines, v)
    kept = [v for v in union.values() if not (v.lines in base and (v.lines not in x_lines or v.lines not in y_lines))]
    return sorted(kept or union.values(), key=lambda v: v.order)


def _weave(z: list[bytes], a: list[bytes], b: list[bytes], markdown: bool) -> tuple[list[bytes], list[bytes]]:
    """Apply both sides' edits of `z`: edits of different lines (touching is fine) both apply;
    insertions at one place are unioned; overlapping removals all apply; where other edits
    overlap, the first result has a's and the second b's (equal results: a clean merge)."""
    hunks = sorted([(s, e, tuple(lines), 0) for s, e, lines in _hunks(z, a)]
                   + [(s, e, tuple(lines), 1) for s, e, lines in _hunks(z, b)],
                   key=lambda h: (h[0], h[1] > h[0], h[1], h[3]))
    clusters: list[list[tuple]] = []
    reach = -1
    for h in hunks:
        s, e = h[0], h[1]
        if clusters and _overlaps(clusters[-1], h, reach):
            clusters[-1].append(h)
            reach = max(reach, e)
        else:
            clusters.append([h])
            reach = e
    out_a: list[bytes] = []
    out_b: list[bytes] = []
    at = 0
    for cluster in clusters:
        s = min(h[0] for h in cluster)
        e = max(h[1] for h in cluster)
        common = z[at:s]
        out_a += common
        out_b += common
        sides = {h[3] for h in cluster}
        if len(sides) == 1 or _all_same(cluster):
            # One side's edits, or the same edit on both: applied once.
            lines = _apply(z, s, e, [h for h in cluster if h[3] == cluster[0][3]])
            out_a += lines
            out_b += lines
        elif all(h[0] == h[1] == s for h in cluster):
            lines = _union([*cluster[0][2]], [*cluster[1][2]], markdown)
            out_a += lines
            out_b += lines
        elif not any(h[2] for h in cluster):
            # Only removals, overlapping (one side removed two lines, the other one of them):
            # nothing to choose between — every line either side removed goes.
            gone = {k for h in cluster for k in range(h[0], h[1])}
            lines = [z[k] for k in range(s, e) if k not in gone]
            out_a += lines
            out_b += lines
        else:
            out_a += _apply(z, s, e, [h for h in cluster if h[3] == 0])
            out_b += _apply(z, s, e, [h for h in cluster if h[3] == 1])
        at = e
    out_a += z[at:]
    out_b += z[at:]
    return out_a, out_b


def _overlaps(cluster: list[tuple], h: tuple, reach: int) -> bool:
    """Does hunk h overlap a hunk of the other side in `cluster`?  Two insertions at one place
    do; an insertion and a range only when it falls strictly inside; two ranges when they share
    a line.  Same-side hunks never overlap (they come from one diff)."""
    s, e = h[0], h[1]
    for c in cluster:
        if c[3] == h[3]:
            continue
        cs, ce = c[0], c[1]
        if s == e and cs == ce:
            if s == cs:
                return True
        elif s == e:
            if cs < s < ce:
                return True
        elif cs == ce:
            if s < cs < e:
                return True
        elif s < ce and cs < e:
            return True
    return False


def _all_same(cluster: list[tuple]) -> bool:
    mine = sorted(h[:3] for h in cluster if h[3] == 0)
    theirs = sorted(h[:3] for h in cluster if h[3] == 1)
    return mine == theirs


def _apply(z: list[bytes], s: int, e: int, hunks: list[tuple]) -> list[bytes]:
    """z[s:e] with one side's hunks (sorted, within [s, e)) applied."""
    out: list[bytes] = []
    at = s
    for hs, he, lines, _ in sorted(hunks, key=lambda h: (h[0], h[1])):
        out += z[at:hs]
        out += lines
        at = he
    out += z[at:e]
    return out


def _hunks(z: list[bytes], x: list[bytes]) -> list[tuple[int, int, list[bytes]]]:
    """x's edits of z: (start, end, new lines) in z's numbering."""
    out = []
    i = j = 0
    for mi, mj, size in patiencediff.PatienceSequenceMatcher(None, z, x).get_matching_blocks():
        if i < mi or j < mj:
            out.append((i, mi, x[j:mj]))
        i, j = mi + size, mj + size
    return out
