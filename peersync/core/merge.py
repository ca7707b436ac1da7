"""Append-merge of log files that both sides only appended to (pure)."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

import xxhash

from peersync.core.types import Entry

_CHUNK = 1 << 16


def extends(data: bytes, ancestor: Entry) -> bool:
    """True when `data` starts with exactly the ancestor's content (only appended to since)."""
    return len(data) >= ancestor.size and (
        xxhash.xxh3_128_hexdigest(data[: ancestor.size]) == ancestor.hash
    )


def append_merge(
    local: bytes, remote: bytes, ancestor: Entry | None, *, local_first: bool
) -> bytes | None:
    """Merge two versions of a log: the common base, then both tails as one union of lines.

    Returns None when either side does not extend the ancestor (it rewrote or truncated
    earlier content); the caller then applies the conflict policy.  When one version is a
    prefix of the other the longer one is returned (fast-forward).  Otherwise the result is
    base + union(first tail, second tail), where `first` is local's tail when `local_first`;
    callers pass the same order on both machines so both produce identical bytes.

    Invariants: the result starts with the base (and so still extends the ancestor); every
    line of both inputs is in it, each tail's lines in their own order; a run of lines both
    tails hold (it reached both sides through a third peer) appears once, provided it has
    a distinctive line (see _union).  Merging the result again with an input that is a
    prefix of it is a fast-forward.
    """
    if ancestor is not None and not (extends(local, ancestor) and extends(remote, ancestor)):
        return None
    if remote.startswith(local):
        return remote
    if local.startswith(remote):
        return local
    # Cut the common prefix back to a line boundary so no line is split between base and tail
    # (the ancestor may have been taken while a line was half written).
    base = local[: local.rfind(b"\n", 0, common_prefix_len(local, remote)) + 1]
    return base + merge_tails(local[len(base):], remote[len(base):], local_first=local_first)


def merge_tails(local_tail: bytes, remote_tail: bytes, *, local_first: bool) -> bytes:
    """What follows the base in append_merge's result, from both sides' bytes after the base
    (which ends at a line boundary, or is empty).  A log too large to hold merges through this
    alone: only the tails are ever in memory (sync/logmerge.py), and the result is the same."""
    tails = (_lines(local_tail), _lines(remote_tail))
    first, second = tails if local_first else tails[::-1]
    return b"".join(_join(_union(first, second)))


def common_prefix_len(x: bytes, y: bytes) -> int:
    """How many leading bytes `x` and `y` share."""
    n = min(len(x), len(y))
    i = 0
    while i < n and x[i : i + _CHUNK] == y[i : i + _CHUNK]:
        i += _CHUNK
    end = min(i + _CHUNK, n)
    while i < end and x[i] == y[i]:
        i += 1
    return min(i, n)


def _lines(data: bytes) -> list[bytes]:
    """Split on b"\\n" only, keeping it; the last line may lack it."""
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _union(first: list[bytes], second: list[bytes]) -> list[bytes]:
    """Every line of both lists, each list's order kept, shared runs once.

    Shared runs are found patience-diff style: anchors are distinctive lines (not blank,
    once in each tail) matched in the longest order-consistent chain; equal lines right
    next to an anchor join its run.  Blank or repeated lines never match on their own, so
    independent "ok" lines are not collapsed and paragraphs are not interleaved, and the
    work stays O(n log n) where difflib.SequenceMatcher goes quadratic on such input.
    """
    # Compare without the newline so a last line still missing it matches its finished copy.
    a, b = [x.rstrip(b"\n") for x in first], [y.rstrip(b"\n") for y in second]
    in_a, in_b = Counter(a), Counter(b)
    b_at = {k: j for j, k in enumerate(b) if in_b[k] == 1}
    found = [(i, b_at[k]) for i, k in enumerate(a) if in_a[k] == 1 and k in b_at and k.strip()]
    anchors = [found[n] for n in _increasing([j for _, j in found])]

    def shared(i1: int, j1: int, n: int) -> list[bytes]:
        return [max(x, y, key=len) for x, y in zip(first[i1 : i1 + n], second[j1 : j1 + n])]

    out: list[bytes] = []
    i = j = 0
    for ai, bj in anchors + [(len(a), len(b))]:
        # The gap a[i:ai] / b[j:bj]: equal lines touching an anchor belong to its run.
        lead = _run(a, b, i, j, ai, bj, 1) if i or j else 0
        trail = _run(a, b, ai - 1, bj - 1, i + lead - 1, j + lead - 1, -1) if ai < len(a) else 0
        out += shared(i, j, lead)
        out += first[i + lead : ai - trail] + second[j + lead : bj - trail]
        out += shared(ai - trail, bj - trail, trail + (ai < len(a)))
        i, j = ai + 1, bj + 1
    return out


def _run(a: list[bytes], b: list[bytes], i: int, j: int, i_end: int, j_end: int, step: int) -> int:
    """How many equal lines a[i], b[j], a[i+step], b[j+step]... before either end."""
    n = 0
    while i != i_end and j != j_end and a[i] == b[j]:
        i, j, n = i + step, j + step, n + 1
    return n


def _increasing(values: list[int]) -> list[int]:
    """Indices of a longest strictly increasing subsequence of `values` (patience sorting)."""
    top: list[int] = []  # top[k]: index of the smallest value ending an increasing run of k+1
    top_values: list[int] = []
    back = [-1] * len(values)
    for n, v in enumerate(values):
        k = bisect_left(top_values, v)
        if k:
            back[n] = top[k - 1]
        top[k : k + 1], top_values[k : k + 1] = [n], [v]
    chain, n = [], top[-1] if top else -1
    while n >= 0:
        chain.append(n)
        n = back[n]
    return chain[::-1]


def _join(lines: list[bytes]) -> list[bytes]:
    """End every line but the last with a newline, so two lines are never glued together."""
    last = len(lines) - 1
    return [x if x.endswith(b"\n") or k == last else x + b"\n" for k, x in enumerate(lines)]


def insertion_merge(base: bytes, local: bytes, remote: bytes, *, local_first: bool) -> bytes | None:
    """Three-way merge of a log whose sides only INSERTED lines since `base` (anywhere, not
    just at the end): the base's lines, with each gap holding the union of both sides'
    insertions there.  None when a side removed or changed a base line (conflict policy).

    This is what keeps three or more peers merging quietly: after A merged with C, C's lines
    may sit before A's own new lines, so A no longer *extends* its A↔B base — but every base
    line is still there, in order.  Deterministic for a given `local_first`.
    """
    if local == remote:
        return local
    base_lines = _lines(base)
    gaps_l, gaps_r = _gaps(base_lines, _lines(local)), _gaps(base_lines, _lines(remote))
    if gaps_l is None or gaps_r is None:
        return None
    out: list[bytes] = []
    for k, (gap_l, gap_r) in enumerate(zip(gaps_l, gaps_r)):
        first, second = (gap_l, gap_r) if local_first else (gap_r, gap_l)
        if second[: len(first)] == first:  # one side's insertion already holds the other's
            out += second
        elif first[: len(second)] == second:
            out += first
        else:
            out += _union(first, second)
        if k < len(base_lines):
            out.append(base_lines[k])
    return b"".join(_join(out))


def _gaps(base: list[bytes], side: list[bytes]) -> list[list[bytes]] | None:
    """Split `side` around an in-order embedding of `base`: len(base)+1 runs of inserted lines.

    The embedding is greedy from the end (base lines match as late as possible), so text added
    at the end of the file stays in the last gap.  None when base is not a subsequence.
    A base last line that lacked its newline may match its finished copy.
    """
    gaps: list[list[bytes]] = [[] for _ in range(len(base) + 1)]
    j = len(side) - 1
    for k in range(len(base) - 1, -1, -1):
        want = base[k].rstrip(b"\n")
        last = k == len(base) - 1 and not base[k].endswith(b"\n")
        while j >= 0 and (side[j] != base[k] and not (last and side[j].rstrip(b"\n") == want)):
            gaps[k + 1].append(side[j])
            j -= 1
        if j < 0:
            return None
        j -= 1
    gaps[0] = side[: j + 1][::-1]
    return [g[::-1] for g in gaps]
