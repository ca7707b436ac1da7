"""The agent wire protocol: one JSON object per line, request/response, versioned at hello."""

from __future__ import annotations

import json

PROTOCOL = 3  # bump me on any incompatible change of ops or message shapes
MAX_LINE = 1 << 30  # a manifest of ~1M files still fits; anything larger is refused


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> dict:
    if len(line) > MAX_LINE:
        raise ValueError("message too large")
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("message is not an object")
    return message
