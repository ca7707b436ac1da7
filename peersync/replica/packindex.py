"""The index of a pack of merge bases (Store's log base dir): where in the pack each base's bytes are.

`pack-<token>.idx`, written once beside its pack and never changed:

    MAGIC (8 bytes) | n digests, 16 bytes each, sorted | n (offset, size) pairs, little-endian u64

A process that merges a file looks up a handful of hashes.  The earlier index, JSON
(`pack-<token>.json`, hash → [offset, size]), had to be parsed whole first: ~75 ms at 100k bases
in every new process, on both sides of every sync with a changed memory file.  This one is read
as it is and searched by halving: a lookup costs ~20 comparisons, a bulk question (which of many
hashes are kept) one set of the pack's digests.

Nothing read here is trusted for content: every base read from a pack is checked against its hash
(Store._read_packed), so a damaged or forged index can only make a base missing — a union or a
conflict, never a wrong merge.  JSON indexes written by earlier versions are still read, and a
prune (Store.prune_logbases) writes them anew in this format.
"""

from __future__ import annotations

from array import array

MAGIC = b"PSLBIX1\n"
SUFFIX = ".idx"
LEGACY_SUFFIX = ".json"
_KEY = 16


def key(digest: str) -> bytes | None:
    """The 16 bytes of a base's hash (32 lower-case hex digits); None for anything else."""
    if not isinstance(digest, str) or len(digest) != 2 * _KEY:
        return None
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        return None
    return raw if raw.hex() == digest else None


class PackIndex:
    """One pack's index, read-only: `find` a hash, `holding` many, iterate the digests."""

    __slots__ = ("_keys", "_places", "_set")

    def __init__(self, keys: bytes, places: array):
        self._keys = keys  # n sorted 16-byte digests
        self._places = places  # offset, size, offset, size, …
        self._set: set[str] | None = None  # the digests as hex, once asked about many

    @classmethod
    def parse(cls, data: bytes) -> PackIndex:
        """From an index file's bytes; ValueError if they are not one."""
        if not data.startswith(MAGIC) or (len(data) - len(MAGIC)) % (2 * _KEY):
            raise ValueError("not a pack index")
        count = (len(data) - len(MAGIC)) // (2 * _KEY)
        split = len(MAGIC) + _KEY * count
        places = array("Q")
        places.frombytes(data[split:])
        if places.itemsize != 8:
            raise ValueError("no 64-bit array on this platform")
        if _BIG_ENDIAN:
            places.byteswap()
        return cls(data[len(MAGIC):split], places)

    @classmethod
    def from_places(cls, places: dict[str, tuple[int, int]] | dict[str, list]) -> PackIndex:
        """From hash → (offset, size) (a legacy JSON index, or a pack being written); entries whose
        hash or place is malformed are left out (their bases are not found)."""
        rows = []
        for digest, place in places.items():
            raw = key(digest)
            try:
                offset, size = (int(v) for v in place)
            except (TypeError, ValueError):
                continue
            if raw is not None and 0 <= offset < 1 << 63 and 0 <= size < 1 << 63:
                rows.append((raw, offset, size))
        rows.sort()
        flat = array("Q")
        for _, offset, size in rows:
            flat.append(offset)
            flat.append(size)
        return cls(b"".join(raw for raw, _, _ in rows), flat)

    def to_bytes(self) -> bytes:
        places = array("Q", self._places)
        if _BIG_ENDIAN:
            places.byteswap()
        return MAGIC + self._keys + places.tobytes()

    def __len__(self) -> int:
        return len(self._keys) // _KEY

    def find(self, digest: str) -> tuple[int, int] | None:
        """(offset, size) of the base with this hash, None when this pack does not hold it."""
        raw = key(digest)
        return None if raw is None else self._find(raw)

    def _find(self, raw: bytes) -> tuple[int, int] | None:
        keys, lo, hi = self._keys, 0, len(self._keys) // _KEY
        while lo < hi:
            mid = (lo + hi) // 2
            at = keys[mid * _KEY:mid * _KEY + _KEY]
            if at < raw:
                lo = mid + 1
            elif at > raw:
                hi = mid
            else:
                return self._places[2 * mid], self._places[2 * mid + 1]
        return None

    def holding(self, digests) -> set[str]:
        """Those of `digests` this pack holds: a search each for a few, one set for many."""
        if len(digests) * 64 < len(self):
            return {d for d in digests if self.find(d) is not None}
        if self._set is None:
            self._set = set(self.digests())
        return self._set.intersection(digests)

    def digests(self):
        """Every hash this pack holds, as hex."""
        keys = self._keys
        for i in range(0, len(keys), _KEY):
            yield keys[i:i + _KEY].hex()

    def total(self) -> int:
        """The bytes of bases the pack holds."""
        return sum(self._places[1::2])


class Packs:
    """The packs of one log base dir, by name (read-only: shared between threads)."""

    __slots__ = ("indexes",)

    def __init__(self, indexes: dict[str, PackIndex]):
        self.indexes = indexes

    def places(self, digest: str):
        """(pack name, offset, size) of each copy of this base (a prune may leave two for a moment)."""
        raw = key(digest)
        if raw is None:
            return
        for name, index in self.indexes.items():
            place = index._find(raw)
            if place is not None:
                yield name, *place

    def holding(self, digests) -> set[str]:
        """Those of `digests` some pack holds."""
        left, held = set(digests), set()
        for index in self.indexes.values():
            if not left:
                break
            found = index.holding(left)
            held |= found
            left -= found
        return held


_BIG_ENDIAN = array("H", [1]).tobytes() == b"\x00\x01"
