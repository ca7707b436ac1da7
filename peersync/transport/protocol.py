"""The agent wire protocol: one JSON object per line, request/response, versioned at hello.

File contents travel beside the JSON, not inside it: a message holding `bytes` values is sent
as a header line `+N`, its JSON line (each bytes value written as {"/bytes": [offset, length]}),
then those N raw bytes.  No base64, and the JSON stays small however large the files are.  (The
key starts with "/": no wire path can, so a dict keyed by paths is never mistaken for bytes.)
"""

from __future__ import annotations

import json

PROTOCOL = 4  # bump me on any incompatible change of ops or message shapes (4: version vectors)
MAX_LINE = 1 << 30  # a manifest of ~1M files still fits; anything larger is refused
MAX_BLOB = 1 << 30  # the raw bytes after one message
BYTES = "/bytes"


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

    line = json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=park).encode() + b"\n"
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
    if len(line) > MAX_LINE:
        raise ValueError("message too large")
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
