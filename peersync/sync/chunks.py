"""Large files over the agent channel, range by range: read on one side, staged on the other, installed by hash.

This is how files travel to and from a peer that has no rsync for us (a restricted key, or no
rsync installed), and the building block for anything that must not hold a whole file in
memory: at most two ranges of core.limits.RANGE bytes are in flight per file.  The receiving agent
stages the ranges in its private staging dir (stage_chunk), and an install item naming the
upload verifies size and hash before the file appears — a source that changed while it was read
is refused there, never installed mixed.
"""

from __future__ import annotations

import asyncio
import secrets

from peersync.core.limits import RANGE
from peersync.core.paths import BadPath
from peersync.errors import ProtocolError
from peersync.replica.store import Refused

# Per-file failures (the file vanished, a disk error there): that file is left for the next
# sync.  A lost connection (ConnectError) ends the whole run, as everywhere.
FILE_ERRORS = (ProtocolError, Refused, BadPath, OSError, ValueError)


async def stage_in_ranges(source, target, path: str, size: int, *, chunk: int = RANGE,
                          upload: str | None = None, start: int = 0) -> str:
    """Copy the `size` bytes of `path` from session `source` into a new upload on session
    `target`, reading the next range while the previous one is written; the upload's name.
    `upload`, `start`: continue that upload, which holds `start` bytes, with the bytes of
    `path` from `start` on.  Holes travel as their length only (read_range's `zeros`)."""
    upload = upload or secrets.token_hex(8)
    offset, writing = start, None
    try:
        while True:
            got = await source.request("read_range", path=path, offset=offset,
                                       length=min(chunk, size - offset), holes=True)
            data = got.get("data") if isinstance(got, dict) else None
            zeros = got.get("zeros", 0) if isinstance(got, dict) else None
            if not isinstance(data, bytes) or len(data) > chunk or type(zeros) is not int \
                    or not 0 <= zeros <= chunk or (zeros and data):
                raise ProtocolError(f"bad range of {path} from the sending side")
            if writing is not None:
                await writing  # one range written while the next is read: two in memory at most
            writing = asyncio.ensure_future(target.request("stage_chunk", upload=upload, offset=offset,
                                                           data=data, zeros=zeros))
            offset += len(data) + zeros
            if offset >= size or not (data or zeros):
                break
        await writing
        writing = None
    finally:
        if writing is not None and not writing.done():
            await asyncio.gather(writing, return_exceptions=True)
    return upload


async def stage_bytes(target, upload: str, offset: int, data: bytes, *, chunk: int = RANGE) -> None:
    """Append `data` to the upload `upload` on `target`, which holds `offset` bytes, a range per request."""
    for at in range(0, len(data), chunk):
        await target.request("stage_chunk", upload=upload, offset=offset + at, data=data[at:at + chunk])


async def stage_all(source, target, items: list[dict]) -> dict[int, str]:
    """Stage every item (wire items with "path" and "new") on `target`, one file after another;
    each item that could be staged gets its "upload".  Index → error text for the others."""
    failed: dict[int, str] = {}
    for index, item in enumerate(items):
        try:
            item["upload"] = await stage_in_ranges(source, target, item["path"], int(item["new"][0]))
        except FILE_ERRORS as err:
            failed[index] = getattr(err, "message", None) or str(err) or type(err).__name__
    return failed
