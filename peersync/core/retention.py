"""Which backup snapshots a retention policy keeps: restic's `forget` semantics as a pure function."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable, Mapping

UNLIMITED = -1
RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class KeepPolicy:
    """How many snapshots to keep per rule; 0 = rule off, UNLIMITED (-1) = keep all of that kind.

    `keep: 7` in config.yaml means `KeepPolicy(last=7)`; a mapping names the rules, e.g.
    `{last: 3, daily: 7, weekly: 4, monthly: 12}`.  A snapshot is kept if ANY rule keeps it.
    """

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    @property
    def empty(self) -> bool:
        return all(getattr(self, rule) == 0 for rule in RULES)

    @classmethod
    def from_config(cls, value: object) -> "KeepPolicy":
        """Parse `backup.keep`; raises ValueError with a readable reason."""
        if isinstance(value, bool):
            raise ValueError("keep must be a number or a mapping of rules, not true/false")
        if isinstance(value, int):
            return cls(last=_count("keep", value))
        if isinstance(value, Mapping):
            unknown = sorted(set(map(str, value)) - set(RULES))
            if unknown:
                raise ValueError(f"unknown keep rule(s) {', '.join(unknown)} (use {', '.join(RULES)})")
            return cls(**{rule: _count(f"keep.{rule}", value[rule]) for rule in value})
        raise ValueError("keep must be a number (keep the last N) or a mapping like {daily: 7, weekly: 4}")

    def describe(self) -> str:
        parts = [f"{'all' if n == UNLIMITED else n} {'latest' if rule == 'last' else rule}"
                 for rule in RULES if (n := getattr(self, rule))]
        return "keep " + ", ".join(parts) + " snapshots" if parts else "keep everything (no policy)"


def _count(name: str, value: object) -> int:
    if value == "unlimited":
        return UNLIMITED
    if isinstance(value, bool) or not isinstance(value, int) or value < UNLIMITED:
        raise ValueError(f"{name} must be a whole number >= 0 or 'unlimited', not {value!r}")
    return value


@dataclass(frozen=True)
class Snap:
    """What the policy needs of a snapshot: its id and its time (calendar rules use this
    datetime's own fields, so pass local time for local days and weeks)."""

    id: str
    time: datetime


@dataclass(frozen=True)
class Decision:
    """Result of applying a policy: kept snapshots newest first with their reasons, and the rest."""

    keep: tuple[Snap, ...]
    remove: tuple[Snap, ...]
    reasons: Mapping[str, tuple[str, ...]]  # snapshot id -> why it is kept


# Bucket functions: two snapshots are in the same hour/day/week/… when these agree.
_BUCKETS: dict[str, Callable[[datetime, int], object]] = {
    "last": lambda t, nr: nr,  # every snapshot is its own bucket
    "hourly": lambda t, nr: (t.year, t.month, t.day, t.hour),
    "daily": lambda t, nr: (t.year, t.month, t.day),
    "weekly": lambda t, nr: tuple(t.isocalendar()[:2]),  # ISO weeks: Monday to Sunday
    "monthly": lambda t, nr: (t.year, t.month),
    "yearly": lambda t, nr: t.year,
}


def apply_policy(snapshots: Iterable[Snap], policy: KeepPolicy, *, keep_oldest: bool = True) -> Decision:
    """Decide which snapshots `policy` keeps, the way restic's `forget` does.

    Walking from newest to oldest, each rule keeps the newest snapshot of each bucket
    (hour, day, week, …) until it has kept its count of buckets; only buckets that hold a
    snapshot count.  With `keep_oldest` (restic >= 0.16), a rule that still has count left when
    it reaches the oldest snapshot keeps that one too ("oldest"), which maximises the history
    kept; restic 0.14 and 0.15 do not.  An empty policy keeps all (like restic, which refuses to
    act on an empty policy).
    """
    ordered = sorted(snapshots, key=lambda s: (s.time, s.id), reverse=True)
    if policy.empty:
        return Decision(tuple(ordered), (), {s.id: ("no policy",) for s in ordered})
    remaining = {rule: getattr(policy, rule) for rule in RULES}
    last_bucket: dict[str, object] = {}
    keep: list[Snap] = []
    remove: list[Snap] = []
    reasons: dict[str, tuple[str, ...]] = {}
    for nr, snap in enumerate(ordered):
        oldest = keep_oldest and nr == len(ordered) - 1
        why: list[str] = []
        for rule in RULES:
            if remaining[rule] == 0:
                continue
            bucket = _BUCKETS[rule](snap.time, nr)
            if rule in last_bucket and bucket == last_bucket[rule] and not oldest:
                continue
            why.append(f"oldest {rule}" if rule in last_bucket and bucket == last_bucket[rule] else rule)
            last_bucket[rule] = bucket
            if remaining[rule] > 0:
                remaining[rule] -= 1
        if why:
            keep.append(snap)
            reasons[snap.id] = tuple(why)
        else:
            remove.append(snap)
    return Decision(tuple(keep), tuple(remove), reasons)
