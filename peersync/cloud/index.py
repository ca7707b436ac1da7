"""What peersync knows about a cloud folder's objects: their listed versions, and the xxh3 each maps to."""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass
from pathlib import Path

from peersync.workspace.storage import atomic_write_json, read_json

CACHE_FORMAT = 1  # bump me when cache.json changes (an old cache is then dropped: only costs downloads)

_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def parse_time(text: str) -> int:
    """rclone's RFC 3339 ModTime → ns since the epoch (Python's datetime stops at µs)."""
    m = _TIME.match(text or "")
    if not m:
        raise ValueError(f"bad ModTime {text!r}")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    seconds = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s)))
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


@dataclass(frozen=True)
class Obj:
    """One cloud object as listed: size, modtime, and the backend hash of the session's type."""

    size: int
    mtime_ns: int
    bhash: str | None

    def same(self, other: "Obj | None") -> bool:
        """Same version: equal size and backend hash — or modtime, where either lacks a hash."""
        if other is None or other.size != self.size:
            return False
        if self.bhash and other.bhash:
            return self.bhash == other.bhash
        return self.mtime_ns == other.mtime_ns

    def to_wire(self) -> list:
        return [self.size, self.mtime_ns, self.bhash]


def parse_listing(raw: bytes, hash_type: str | None) -> dict[str, Obj]:
    out = {}
    for item in json.loads(raw or b"[]"):
        if item.get("IsDir"):
            continue
        hashes = {k.lower(): v.lower() for k, v in (item.get("Hashes") or {}).items() if v}
        out[item["Path"]] = Obj(int(item["Size"]), parse_time(item.get("ModTime", "")),
                                hashes.get(hash_type) if hash_type else None)
    return out


class HashCache:
    """path → [size, mtime_ns, backend hash, xxh3, mode] for cloud objects whose content peersync
    knows, plus the backend hash of local files (so equal files are never downloaded)."""

    def __init__(self, path: Path, root: str, hash_type: str | None):
        self.path, self.root, self.hash_type = path, root, hash_type
        self.entries: dict[str, list] = {}
        self.local: dict[str, list] = {}  # path → [size, mtime_ns, xxh3, backend hash]
        self.features: dict = {}
        try:
            data = read_json(path, default=None)
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("format") == CACHE_FORMAT and data.get("root") == root:
            self.features = data.get("features") or {}
            if data.get("hash_type") == hash_type:
                self.entries = data.get("entries") or {}
                self.local = data.get("local") or {}
        self._by_content: dict[tuple, str] | None = None

    def lookup(self, path: str, obj: Obj) -> tuple[str, int] | None:
        cached = self.entries.get(path)
        if cached and obj.same(Obj(cached[0], cached[1], cached[2])):
            return cached[3], cached[4]
        return None

    def by_content(self, obj: Obj) -> str | None:
        if not obj.bhash:
            return None
        if self._by_content is None:
            self._by_content = {(e[0], e[2]): e[3] for e in self.entries.values() if e[2]}
        return self._by_content.get((obj.size, obj.bhash))

    def record(self, path: str, obj: Obj, xxh3: str, mode: int) -> None:
        self.entries[path] = [obj.size, obj.mtime_ns, obj.bhash, xxh3, mode]
        self._by_content = None

    def forget(self, path: str) -> None:
        self.entries.pop(path, None)

    def save(self) -> None:
        atomic_write_json(self.path, {"format": CACHE_FORMAT, "root": self.root, "hash_type": self.hash_type,
                                      "features": self.features, "entries": self.entries, "local": self.local},
                          indent=None)
