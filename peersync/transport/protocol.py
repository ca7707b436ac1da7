"""The agent wire protocol: one JSON object per line, request/response, versioned at hello.

File contents travel beside the JSON, not inside it: a message holding `bytes` values is sent
as a header line `+N`, its JSON line (each bytes value written as {"/bytes": [offset, length]}),
then those N raw bytes.  No base64, and the JSON stays small however large the files are.  (The
key starts with "/": no wire path can, so a dict keyed by paths is never mistaken for bytes.)
"""

from __future__ import annotations

import json
import re

from peersync.core.limits import RANGE

PROTOCOL = 8  # bump me on any incompatible change of ops or message shapes (4: version vectors; 5: bounded
# lines, no rsync for a restricted key, each side its own trash retention; 6: large logs merged
# streamed — log_digest, stage_log, upload_digest — and holes in ranges; 7: symbolic links and empty
# directories as manifest entries — an older agent would take them for files; 8: names that are not
# UTF-8, as JSON's \udcNN escapes — an older agent's state could not store them)

# Every line is read only up to a limit, and a frame's bytes are counted before they are read:
# a peer (or a client) that never ends a line costs a bounded amount of memory and gets a
# protocol error.  Most messages are small; the few that list files scale with the workspace
# (100,000 files: a manifest line of ~12 MB, an install of as many empty files ~15 MB).
SMALL_LINE = 64 << 10
LARGE_LINE = 256 << 20  # about 2 million files
LARGE_REQUESTS = frozenset({"ancestor_put", "tombstones_add", "tombstones_get", "versions_put", "install", "read",
                            "read_tail", "delete", "touch", "quarantine", "logbase_save", "logbase_get", "selection",
                            "merge_bases", "bases_keep"})
LARGE_REPLIES = frozenset({"scan", "ancestor_get", "tombstones_get", "install", "read", "read_tail", "delete",
                           "touch", "quarantine", "logbase_get", "run", "merge_bases", "log_digest"})
MAX_BLOB = 1 << 30  # whole files in one message: an install's inline batch, a merge's files (up to
# mergefile.MEMORY_MAX each, in batches); anything larger travels in ranges
WHOLE_FILES = frozenset({"install", "quarantine", "read", "read_tail", "logbase_get", "bases_keep"})
RANGES = frozenset({"read_range", "stage_chunk"})
BYTES = "/bytes"
_OP = re.compile(rb'\{"id":[^,]{0,40},"op":"([a-z_]{1,32})"')


class TooLarge(ValueError):
    """A line or a frame's bytes beyond the limit for its operation (a protocol error)."""


def op_of(line: bytes) -> str | None:
    """The operation a request line names, read from its start (encode() writes `id` then `op`
    first); None when it does not start that way — such a request gets only the small limit."""
    found = _OP.match(line[:96])
    return found.group(1).decode() if found else None


def line_limit(op: str | None, *, reply: bool) -> int:
    return LARGE_LINE if op in (LARGE_REPLIES if reply else LARGE_REQUESTS) else SMALL_LINE


def blob_limit(op: str | None, *, reply: bool) -> int:
    """The largest frame of raw bytes a request (or its reply) for `op` may carry."""
    if op in WHOLE_FILES:
        return MAX_BLOB
    if op in RANGES:
        return 2 * RANGE
    return 0


def read_request(stream) -> tuple[bytes, bytes | None] | None:
    """One request frame from a blocking binary stream, each part read only up to its limit:
    (JSON line, bytes or None), None at EOF (also mid-frame).  TooLarge beyond a limit;
    ValueError for a malformed header."""
    line = stream.readline(SMALL_LINE + 1)
    if not line:
        return None
    size = blob_size(line) if line.endswith(b"\n") else None
    if size is not None:
        line = stream.readline(SMALL_LINE + 1)
    op = op_of(line)
    if not line.endswith(b"\n"):
        if len(line) <= SMALL_LINE:
            return None  # EOF mid-line: the client is gone
        limit = line_limit(op, reply=False)
        if limit <= SMALL_LINE:
            raise TooLarge(f"request too large (over {SMALL_LINE} bytes for {op or 'an unnamed operation'!r})")
        line += stream.readline(limit + 1 - len(line))
        if not line.endswith(b"\n"):
            if len(line) <= limit:
                return None
            raise TooLarge(f"request too large (over {limit} bytes for {op!r})")
    if size is None:
        return line, None
    if size > blob_limit(op, reply=False):
        raise TooLarge(f"request too large ({size} bytes of data for {op or 'an unnamed operation'!r})")
    blob = stream.read(size)
    return (line, blob) if len(blob) == size else None


def encode(message: dict) -> bytes:
    """One frame: the JSON line, preceded by a `+N` header and followed by N bytes when the
    message holds bytes values."""
    blobs: list[bytes] = []
    offset = 0

    def park(value):
        nonlocal offset
        if not isinstance(value, bytes):
            raise TypeError(f"{type(value).__name__} cannot travel in a message")
        blobs.append(value)
        offset += len(value)
        return {BYTES: [offset - len(value), len(value)]}

    # A name that is not UTF-8 holds lone surrogates (surrogateescape): "backslashreplace" writes each
    # as the JSON escape \udcXX, which json.loads reads back as that surrogate.
    # (No check for circular references: messages are built here, of plain values; the check's
    # bookkeeping cost ~30 % of encoding an install batch of 2,000 files.)
    line = json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=park, check_circular=False).encode(
        "utf-8", "backslashreplace") + b"\n"
    if not blobs:
        return line
    return b"".join([b"+%d\n" % offset, line, *blobs])


def blob_size(header: bytes) -> int | None:
    """N for a `+N` header line; None for a JSON line.  ValueError for a malformed header."""
    if header[:1] != b"+":
        return None
    if not header.endswith(b"\n") or not header[1:-1].isdigit() or int(header[1:-1]) > MAX_BLOB:
        raise ValueError("malformed frame header")
    return int(header[1:-1])


def decode(line: bytes, blob: bytes | None = None) -> dict:
    """A message from its JSON line and, for a `+N` frame, the N bytes that followed it."""
    if len(line) > LARGE_LINE + 1:
        raise TooLarge("message too large")
    if blob is None:
        message = json.loads(line)
    else:
        def unpark(obj: dict):
            ref = obj.get(BYTES)
            if ref is None or len(obj) != 1:
                return obj
            if (not isinstance(ref, list) or len(ref) != 2 or not all(type(x) is int and x >= 0 for x in ref)
                    or ref[0] + ref[1] > len(blob)):
                raise ValueError("bad bytes reference")
            return blob[ref[0]:ref[0] + ref[1]]

        message = json.loads(line, object_hook=unpark)
    if not isinstance(message, dict):
        raise ValueError("message is not an object")
    return message
