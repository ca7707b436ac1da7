"""Three-way merge of JSON data files by key (pure): per-skill preferences edited on two machines.

Objects merge key by key, recursively: a key one side added, changed or removed since the base
takes that side's value; both sides' changes to different keys all land.  Arrays that both
sides only appended to get both tails (an item both appended once).  A key both sides changed
to different values is a conflict: `prefer` ("x" or "y", the side the conflict policy picks)
decides it, and its path is reported; with no `prefer` the merge gives up (None) and the caller
applies the conflict policy to the whole file.  A change always beats a removal.  A side that
does not parse (or is not UTF-8): None.  No base, or a base that does not parse: every key both
sides hold with different values is a conflict.

The output keeps the base's layout (indent, key order, final newline) where it can, and is the
same bytes whichever side runs the merge: the two sides are put in a canonical order first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

_MISSING = object()


@dataclass(frozen=True)
class JsonMerged:
    data: bytes
    conflicts: tuple[str, ...] = ()  # keys (dotted paths) both sides changed: `prefer`'s value kept


class _Conflict(Exception):
    pass


def merge_json(base: bytes | None, x: bytes, y: bytes, *, prefer: str | None = None) -> JsonMerged | None:
    """Merge `x` and `y`, two edits of `base` (None: unknown).  `prefer`: "x", "y" or None."""
    if x == y:
        return JsonMerged(x)
    if base is not None and x == base:
        return JsonMerged(y)
    if base is not None and y == base:
        return JsonMerged(x)
    vx, vy = _parse(x), _parse(y)
    if vx is _MISSING or vy is _MISSING:
        return None
    vb = _parse(base) if base is not None else _MISSING
    if y < x:  # a canonical order: the same result whichever side runs the merge
        x, y, vx, vy = y, x, vy, vx
        prefer = {"x": "y", "y": "x"}.get(prefer or "")
    conflicts: list[str] = []
    try:
        merged = _merge(vb, vx, vy, [], conflicts, prefer)
    except _Conflict:
        return None
    if _same(merged, vx):
        return JsonMerged(x, tuple(conflicts))
    if _same(merged, vy):
        return JsonMerged(y, tuple(conflicts))
    return JsonMerged(_dump(merged, base if vb is not _MISSING else x), tuple(conflicts))


def _parse(data: bytes):
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _MISSING


def _same(p, q) -> bool:
    """JSON equality: types kept apart (true is not 1), key order ignored."""
    if type(p) is not type(q):
        return False
    if isinstance(p, dict):
        return p.keys() == q.keys() and all(_same(p[k], q[k]) for k in p)
    if isinstance(p, list):
        return len(p) == len(q) and all(_same(i, j) for i, j in zip(p, q))
    return p == q


def _merge(b, x, y, path: list[str], conflicts: list[str], prefer: str | None):
    """The merged value of one key (_MISSING: absent) from its base, x and y values."""
    if _same(x, y) if x is not _MISSING and y is not _MISSING else x is y:
        return x
    if b is not _MISSING:
        if x is not _MISSING and _same(x, b):
            return y
        if y is not _MISSING and _same(y, b):
            return x
    if x is _MISSING or y is _MISSING:
        # Removed on one side and changed on the other (or added only on one side with no
        # base): the content stays.
        return y if x is _MISSING else x
    if isinstance(x, dict) and isinstance(y, dict):
        base = b if isinstance(b, dict) else {}
        out = {}
        for key in [*x, *(k for k in y if k not in x)]:
            value = _merge(base.get(key, _MISSING), x.get(key, _MISSING), y.get(key, _MISSING),
                           path + [key], conflicts, prefer)
            if value is not _MISSING:
                out[key] = value
        return out
    if isinstance(x, list) and isinstance(y, list) and isinstance(b, list):
        n = len(b)
        if _same(x[:n], b) and _same(y[:n], b):
            tail_x = x[n:]
            return b + tail_x + [i for i in y[n:] if not any(_same(i, j) for j in tail_x)]
    if prefer is None:
        raise _Conflict
    conflicts.append(".".join(path) or "(the whole document)")
    return x if prefer == "x" else y


def _dump(value, like: bytes) -> bytes:
    """`value` serialised in the layout of `like` (indent, separators, final newline)."""
    text = like.decode("utf-8", "replace")
    body = text.strip()
    indent = None
    if "\n" in body:
        second = body.split("\n", 1)[1]
        indent = second[: len(second) - len(second.lstrip(" \t"))] or 2
    compact = indent is None and (": " not in body and ", " not in body)
    out = json.dumps(value, indent=indent, ensure_ascii=False,
                     separators=(",", ":") if compact else None if indent is None else (",", ": "))
    return (out + ("\n" if text.endswith("\n") else "")).encode()
