"""Content hashes that cloud backends report (md5, sha1, Dropbox, QuickXor…), computed locally to compare."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import xxhash

CHUNK = 1 << 20

# Backend hash types peersync can compute itself, best first.  xxh128 is peersync's own content
# hash (xxh3-128, same hex as rclone prints), so a backend that reports it needs no mapping at all.
COMPUTABLE = ("xxh128", "md5", "sha1", "sha256", "dropbox", "quickxor", "sha512", "xxh3", "crc32")


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


class _Dropbox:
    """Dropbox's content hash: SHA-256 over the SHA-256 of each 4 MiB block."""

    BLOCK = 4 << 20

    def __init__(self) -> None:
        self.outer = hashlib.sha256()
        self.block = hashlib.sha256()
        self.filled = 0

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.BLOCK - self.filled)
            self.block.update(view[:take])
            self.filled += take
            view = view[take:]
            if self.filled == self.BLOCK:
                self.outer.update(self.block.digest())
                self.block, self.filled = hashlib.sha256(), 0

    def hexdigest(self) -> str:
        outer = self.outer.copy()
        if self.filled:
            outer.update(self.block.digest())
        return outer.hexdigest()


class _QuickXor:
    """OneDrive's QuickXorHash: each byte XORed into a 160-bit ring at offset 11·position,
    then the length XORed into the last 8 bytes (little-endian), printed as hex like rclone."""

    WIDTH, SHIFT = 160, 11

    def __init__(self) -> None:
        self.lanes = 0  # XOR of all 160-byte rows, little-endian: byte r holds positions ≡ r (mod 160)
        self.length = 0
        self.carry = b""

    def update(self, data: bytes) -> None:
        self.length += len(data)
        data = self.carry + bytes(data)
        whole = len(data) - len(data) % self.WIDTH
        lanes = self.lanes
        for start in range(0, whole, self.WIDTH):
            lanes ^= int.from_bytes(data[start:start + self.WIDTH], "little")
        self.lanes = lanes
        self.carry = data[whole:]

    def hexdigest(self) -> str:
        lanes = self.lanes ^ int.from_bytes(self.carry, "little")
        length = self.length
        ring, mask = 0, (1 << self.WIDTH) - 1
        for r, byte in enumerate(lanes.to_bytes(self.WIDTH, "little")):
            if byte:
                shift = (r * self.SHIFT) % self.WIDTH
                ring ^= ((byte << shift) | (byte >> (self.WIDTH - shift))) & mask
        out = bytearray(ring.to_bytes(20, "little"))
        for i, b in enumerate(length.to_bytes(8, "little")):
            out[12 + i] ^= b
        return out.hex()


def new(kind: str):
    """A hasher with update()/hexdigest() for one of COMPUTABLE."""
    if kind == "xxh128":
        return xxhash.xxh3_128()
    if kind == "xxh3":
        return xxhash.xxh3_64()
    if kind in ("md5", "sha1", "sha256", "sha512"):
        return hashlib.new(kind)
    if kind == "crc32":
        return _Crc32()
    if kind == "dropbox":
        return _Dropbox()
    if kind == "quickxor":
        return _QuickXor()
    raise ValueError(f"cannot compute a {kind!r} hash")


def pick(available) -> str | None:
    """The best hash type a backend reports that peersync can also compute (None: none)."""
    offered = {h.lower() for h in available or ()}
    return next((kind for kind in COMPUTABLE if kind in offered), None)


def file_hashes(path: Path | str, kind: str | None) -> tuple[str, str | None]:
    """(xxh3-128, backend hash of `kind` or None) of a file, in one read."""
    ours = xxhash.xxh3_128()
    theirs = new(kind) if kind and kind != "xxh128" else None
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            ours.update(chunk)
            if theirs is not None:
                theirs.update(chunk)
    digest = ours.hexdigest()
    if kind == "xxh128":
        return digest, digest
    return digest, theirs.hexdigest() if theirs is not None else None


def bytes_hashes(data: bytes, kind: str | None) -> tuple[str, str | None]:
    ours = xxhash.xxh3_128_hexdigest(data)
    if not kind:
        return ours, None
    if kind == "xxh128":
        return ours, ours
    h = new(kind)
    h.update(data)
    return ours, h.hexdigest()
