"""Merging a log too large to hold in memory, with the same result as core/merge.append_merge.

Both sides keep the log's common prefix where it is: each hashes its file range by range
(log_digest), the first range that differs is compared byte by byte, and only what follows the
last line both share — the two tails — travels and is merged (core/merge.merge_tails).  Each side
then stages its own prefix (stage_log, a local copy) plus the merged lines (stage_chunk), both
check they hold the same bytes (upload_digest), and the usual install puts them in place.  Memory
is bounded by the tails (mergefile.TAIL_MAX) and a few ranges, whatever the log's size.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from peersync.core.limits import RANGE
from peersync.core.merge import common_prefix_len, merge_tails
from peersync.core.mergefile import TAIL_MAX
from peersync.core.types import Change, Side
from peersync.errors import ProtocolError
from peersync.replica.store import Refused
from peersync.sync.chunks import stage_bytes, stage_in_ranges
from peersync.sync.concurrency import gather_all


@dataclass(frozen=True)
class Streamed:
    """A streamed merge's result: `size` bytes hashing to `digest`, staged as `uploads[side]` on
    each side that must install it; a side absent from `uploads` already holds exactly it."""

    size: int
    digest: str
    uploads: dict = field(default_factory=dict)


async def merge_streamed(sessions: dict, c: Change, *, local_first: bool) -> Streamed | str | None:
    """Merge the two versions of log `c.path` (sessions: Side → Replica) without holding either.

    None: a side does not extend the ancestor (it rewrote the log: the conflict policy decides);
    a string: why this log cannot be merged (tails too large), for the report.  File errors
    (chunks.FILE_ERRORS) are this path's: the caller reports them and the rest of the run goes on.
    """
    sizes = {side: c.entry(side).size for side in Side}
    prefix = c.ancestor.size if c.ancestor is not None else 0
    found = await gather_all(*(sessions[side].request("log_digest", path=c.path, size=sizes[side], prefix=prefix)
                                   for side in Side))
    digests = dict(zip(Side, found))
    for side, answer in digests.items():
        if not isinstance(answer, dict) or not isinstance(answer.get("chunks"), list):
            raise ProtocolError(f"bad log digest of {c.path} from the {side.value} side")
    if c.ancestor is not None and any(d.get("prefix") != c.ancestor.hash for d in digests.values()):
        return None
    # Where the two part: the first range whose hashes differ, then byte by byte inside it.
    mine, theirs = digests[Side.LOCAL]["chunks"], digests[Side.REMOTE]["chunks"]
    first = next((n for n, (x, y) in enumerate(zip(mine, theirs)) if x != y), min(len(mine), len(theirs)))
    start = first * RANGE
    here, there = await gather_all(*(_read(sessions[side], c.path, start, max(0, min(RANGE, sizes[side] - start)))
                                         for side in Side))
    common = start + common_prefix_len(here, there)
    if common in sizes.values():  # one is a prefix of the other: the longer one, as it is
        return await _fast_forward(sessions, c, sizes, common)
    # The base ends at a line boundary (the ancestor may have been taken mid-line).
    cut = here.rfind(b"\n", 0, common - start)
    base = start + cut + 1 if cut >= 0 else await _line_start(sessions[Side.LOCAL], c.path, start)
    tails = {side: sizes[side] - base for side in Side}
    if sum(tails.values()) > TAIL_MAX:
        return (f"log not merged: appended by {_mb(tails[Side.LOCAL])} here and {_mb(tails[Side.REMOTE])} on the "
                f"peer since they last agreed, over the {_mb(TAIL_MAX)} peersync merges line by line; "
                f"the conflict policy decided (the other version is kept in conflicts/)")
    local_tail, remote_tail = await gather_all(*(_read(sessions[side], c.path, base, tails[side]) for side in Side))
    merged = merge_tails(local_tail, remote_tail, local_first=local_first)
    del local_tail, remote_tail
    staged = dict(zip(Side, await gather_all(*(_stage(sessions[side], c.path, sizes[side], base, merged)
                                                   for side in Side))))
    digest = {hashed for _, hashed in staged.values()}
    uploads = {side: upload for side, (upload, hashed) in staged.items()
               if (base + len(merged), hashed) != (sizes[side], c.entry(side).hash)}
    if len(digest) != 1:
        raise Refused("the two sides' copies of the log's common part differ; left for the next sync")
    return Streamed(base + len(merged), digest.pop(), uploads)


async def _stage(session, path: str, size: int, base: int, merged: bytes) -> tuple[str, str]:
    """Stage the merged log on one side (its own first `base` bytes, then `merged`): (upload, hash)."""
    upload = secrets.token_hex(8)
    await session.request("stage_log", upload=upload, path=path, size=size, length=base)
    await stage_bytes(session, upload, base, merged)
    staged = await session.request("upload_digest", upload=upload)
    if not isinstance(staged, dict) or staged.get("size") != base + len(merged) or not isinstance(staged.get("hash"), str):
        raise ProtocolError(f"bad staged merge of {path}")
    return upload, staged["hash"]


async def _fast_forward(sessions: dict, c: Change, sizes: dict, common: int) -> Streamed:
    """The shorter side takes the longer version: its own bytes, then the rest in ranges."""
    longer = max(Side, key=lambda side: sizes[side])
    if sizes[longer.other] == sizes[longer]:  # the same bytes on both sides: nothing to install
        return Streamed(sizes[longer], c.entry(longer).hash)
    shorter = longer.other
    upload = secrets.token_hex(8)
    await sessions[shorter].request("stage_log", upload=upload, path=c.path, size=sizes[shorter], length=common)
    await stage_in_ranges(sessions[longer], sessions[shorter], c.path, sizes[longer], upload=upload, start=common)
    return Streamed(sizes[longer], c.entry(longer).hash, {shorter: upload})


async def _read(session, path: str, offset: int, length: int) -> bytes:
    """`length` bytes of `path` from `offset`, a range per request."""
    parts, end = [], offset + length
    while offset < end:
        got = await session.request("read_range", path=path, offset=offset, length=min(RANGE, end - offset))
        data = got.get("data") if isinstance(got, dict) else None
        if not isinstance(data, bytes) or len(data) > RANGE:
            raise ProtocolError(f"bad range of {path}")
        if not data:
            raise Refused(f"{path} shrank during the sync; left for the next sync")
        parts.append(data)
        offset += len(data)
    return b"".join(parts)


async def _line_start(session, path: str, end: int) -> int:
    """Where the line holding byte `end` starts: after the last newline before it (0: none)."""
    while end > 0:
        start = max(0, end - RANGE)
        cut = (await _read(session, path, start, end - start)).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f} MB"
