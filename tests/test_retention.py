"""retention.apply_policy: restic's documented `forget` examples reproduced exactly, then edge cases and properties."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from peersync.core.retention import UNLIMITED, KeepPolicy, Snap, apply_policy


def ids(snaps) -> list[str]:
    return [s.id for s in snaps]


# -- restic documentation, "Removing snapshots according to a policy" ------------------------------

# "Suppose you have only made one backup every Sunday for 12 weeks" (restic's own ids and times).
RESTIC_SUNDAYS = [
    ("0a1f9759", "2019-09-01 11:00:00"), ("46cfe4d5", "2019-09-08 11:00:00"),
    ("f6b1f037", "2019-09-15 11:00:00"), ("eb430a5d", "2019-09-22 11:00:00"),
    ("8cf1cb9a", "2019-09-29 11:00:00"), ("5d33b116", "2019-10-06 11:00:00"),
    ("b9553125", "2019-10-13 11:00:00"), ("e1a7b58b", "2019-10-20 11:00:00"),
    ("8f8018c0", "2019-10-27 11:00:00"), ("59403279", "2019-11-03 11:00:00"),
    ("dfee9fb4", "2019-11-10 11:00:00"), ("e1ae2f40", "2019-11-17 11:00:00"),
]


def snaps_of(rows) -> list[Snap]:
    return [Snap(i, datetime.fromisoformat(t)) for i, t in rows]


def test_restic_doc_twelve_sundays_keep_daily_4():
    """`forget --keep-daily 4` keeps the last four Sundays and removes the other eight."""
    decision = apply_policy(snaps_of(RESTIC_SUNDAYS), KeepPolicy(daily=4))
    assert ids(decision.keep) == ["e1ae2f40", "dfee9fb4", "59403279", "8f8018c0"]  # newest first
    assert sorted(ids(decision.remove)) == sorted(["0a1f9759", "46cfe4d5", "f6b1f037", "eb430a5d",
                                                   "8cf1cb9a", "5d33b116", "b9553125", "e1a7b58b"])
    assert all(decision.reasons[i] == ("daily",) for i in ids(decision.keep))


def test_restic_doc_keep_last_1():
    """`forget --keep-last 1`: of 4bba301e (10:49:18) and 8c02b94b (10:48:33), keep the newer."""
    decision = apply_policy(snaps_of([("8c02b94b", "2017-02-21 10:48:33"), ("4bba301e", "2017-02-21 10:49:18")]),
                            KeepPolicy(last=1))
    assert ids(decision.keep) == ["4bba301e"]
    assert ids(decision.remove) == ["8c02b94b"]


def test_restic_doc_daily_for_100_years():
    """"Suppose you make one backup every day for 100 years.  Then forget --keep-daily 7
    --keep-weekly 5 --keep-monthly 12 --keep-yearly 75 would keep the most recent 7 daily
    snapshots and 4 last-day-of-the-week ones (since the 7 dailies already include 1 weekly).
    Additionally, 12 or 11 last-day-of-the-month snapshots will be kept … And finally 75 or 74
    last-day-of-the-year snapshots are kept … All other snapshots are removed."

    The newest backup here is on Sunday 2019-12-29, so the dailies hold exactly one weekly and
    the counts come out at the doc's "4", "11" and "74"."""
    newest = date(2019, 12, 29)
    assert newest.isoweekday() == 7
    days = [newest - timedelta(days=n) for n in range(36525)]
    snaps = [Snap(d.isoformat(), datetime(d.year, d.month, d.day, 3, 0)) for d in days]
    decision = apply_policy(snaps, KeepPolicy(daily=7, weekly=5, monthly=12, yearly=75))
    kept = {s.id: s.time.date() for s in decision.keep}

    def with_reason(rule):
        return sorted((kept[i] for i, why in decision.reasons.items() if rule in why), reverse=True)

    daily, weekly = with_reason("daily"), with_reason("weekly")
    monthly, yearly = with_reason("monthly"), with_reason("yearly")
    assert daily == [newest - timedelta(days=n) for n in range(7)]
    assert weekly == [newest - timedelta(weeks=n) for n in range(5)]  # Sundays: last day of each ISO week
    assert len(set(weekly) - set(daily)) == 4
    assert monthly[0] == newest and len(monthly) == 12
    assert all((d + timedelta(days=1)).day == 1 for d in monthly[1:])  # last days of the 11 previous months
    assert len(set(monthly) - set(daily) - set(weekly)) == 11
    assert yearly[0] == newest and len(yearly) == 75
    assert yearly[1:] == [date(y, 12, 31) for y in range(2018, 1944, -1)]
    assert len(set(yearly) - set(daily) - set(weekly) - set(monthly)) == 74
    assert len(kept) == 7 + 4 + 11 + 74
    assert len(decision.remove) == len(snaps) - len(kept)


# -- restic semantics beyond the doc examples (snapshot_policy.go) -------------------------------

def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


CASES = [
    # (description, snapshots as (id, time), policy, expected kept ids newest first)
    ("several per day: keep-daily keeps the newest of each day",
     [("a1", "2026-03-01 08:00"), ("a2", "2026-03-01 20:00"), ("b1", "2026-03-02 09:00"), ("b2", "2026-03-02 10:00")],
     KeepPolicy(daily=2), ["b2", "a2"]),
    ("count left at the oldest snapshot: it is kept too ('oldest daily')",
     [("a1", "2026-03-01 08:00"), ("a2", "2026-03-01 20:00"), ("b1", "2026-03-02 09:00")],
     KeepPolicy(daily=5), ["b1", "a2", "a1"]),
    ("no count left at the oldest: it goes",
     [("a1", "2026-03-01 08:00"), ("a2", "2026-03-01 20:00"), ("b1", "2026-03-02 09:00")],
     KeepPolicy(daily=2), ["b1", "a2"]),
    ("only buckets that hold a snapshot count: a gap of days costs nothing",
     [("jan", "2026-01-05 10:00"), ("feb", "2026-02-10 10:00"), ("mar", "2026-03-15 10:00")],
     KeepPolicy(daily=2), ["mar", "feb"]),
    ("hourly buckets are clock hours",
     [("h1", "2026-03-01 10:05"), ("h2", "2026-03-01 10:55"), ("h3", "2026-03-01 11:01"), ("h4", "2026-03-01 12:30")],
     KeepPolicy(hourly=2), ["h4", "h3"]),
    ("ISO weeks run Monday to Sunday, across a new year (2020-12-31 and 2021-01-03 are week 53)",
     [("thu", "2020-12-31 10:00"), ("sun", "2021-01-03 10:00"), ("mon", "2021-01-04 10:00")],
     KeepPolicy(weekly=2), ["mon", "sun"]),
    ("monthly and yearly",
     [("y1", "2024-06-01 00:00"), ("y2a", "2025-01-31 00:00"), ("y2b", "2025-07-04 00:00"), ("y3", "2026-02-01 00:00")],
     KeepPolicy(monthly=1, yearly=2), ["y3", "y2b"]),
    ("rules are ORed: last keeps the newest two, daily reaches back further",
     [("d1", "2026-03-01 10:00"), ("d2", "2026-03-02 10:00"), ("d3a", "2026-03-03 09:00"), ("d3b", "2026-03-03 10:00")],
     KeepPolicy(last=2, daily=3), ["d3b", "d3a", "d2", "d1"]),
    ("unlimited keeps every bucket, and the oldest snapshot too (restic's oldest rule)",
     [("a1", "2026-03-01 08:00"), ("a2", "2026-03-01 20:00"), ("b1", "2026-03-02 09:00")],
     KeepPolicy(daily=UNLIMITED), ["b1", "a2", "a1"]),
    ("an empty policy keeps everything (restic refuses to act on one)",
     [("a", "2026-03-01 08:00"), ("b", "2026-03-02 08:00")],
     KeepPolicy(), ["b", "a"]),
]


@pytest.mark.parametrize("description, rows, policy, expected", CASES, ids=[c[0] for c in CASES])
def test_policy_cases(description, rows, policy, expected):
    decision = apply_policy([Snap(i, at(t)) for i, t in rows], policy)
    assert ids(decision.keep) == expected
    assert sorted(ids(decision.remove)) == sorted(i for i, _ in rows if i not in expected)


def test_oldest_reason_is_named():
    decision = apply_policy([Snap("a1", at("2026-03-01 08:00")), Snap("a2", at("2026-03-01 20:00"))],
                            KeepPolicy(daily=3))
    assert decision.reasons == {"a2": ("daily",), "a1": ("oldest daily",)}


def test_input_order_does_not_matter():
    rows = [Snap(f"s{i}", datetime(2026, 1, 1) + timedelta(hours=7 * i)) for i in range(40)]
    policy = KeepPolicy(last=2, daily=3, weekly=2)
    assert apply_policy(rows, policy) == apply_policy(list(reversed(rows)), policy)


# -- config parsing ----------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (7, KeepPolicy(last=7)),
    ({"daily": 7, "weekly": 4}, KeepPolicy(daily=7, weekly=4)),
    ({"last": 3, "hourly": 24, "daily": 7, "weekly": 4, "monthly": 12, "yearly": "unlimited"},
     KeepPolicy(3, 24, 7, 4, 12, UNLIMITED)),
])
def test_from_config(value, expected):
    assert KeepPolicy.from_config(value) == expected


@pytest.mark.parametrize("value, message", [
    ("7", "number"), (True, "true/false"), (-2, ">= 0"), ({"dayly": 7}, "unknown keep rule"),
    ({"daily": 1.5}, "whole number"),
])
def test_from_config_refuses(value, message):
    with pytest.raises(ValueError, match=message):
        KeepPolicy.from_config(value)


def test_describe():
    assert KeepPolicy(last=2, daily=7).describe() == "keep 2 latest, 7 daily snapshots"
    assert KeepPolicy(yearly=UNLIMITED).describe() == "keep all yearly snapshots"


# -- properties ---------------------------------------------------------------------------------

times = st.lists(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2027, 1, 1)),
                 min_size=1, max_size=60, unique=True)
counts = st.integers(min_value=0, max_value=6)
policies = st.builds(KeepPolicy, last=counts, hourly=counts, daily=counts, weekly=counts, monthly=counts,
                     yearly=counts)


@settings(max_examples=200, deadline=None)
@given(times, policies)
def test_partition_and_newest_kept(moments, policy):
    snaps = [Snap(f"s{i}", t) for i, t in enumerate(moments)]
    decision = apply_policy(snaps, policy)
    assert sorted(ids(decision.keep) + ids(decision.remove)) == sorted(ids(snaps))
    assert not set(ids(decision.keep)) & set(ids(decision.remove))
    newest = max(snaps, key=lambda s: s.time)
    assert newest in decision.keep  # a non-empty policy always keeps the newest; an empty one keeps all


@settings(max_examples=200, deadline=None)
@given(times, policies, st.sampled_from(["last", "hourly", "daily", "weekly", "monthly", "yearly"]))
def test_more_is_never_less(moments, policy, rule):
    """Raising any count never removes a snapshot that was kept (an empty policy keeps all)."""
    assume(not policy.empty)
    snaps = [Snap(f"s{i}", t) for i, t in enumerate(moments)]
    bigger = KeepPolicy(**{**policy.__dict__, rule: getattr(policy, rule) + 1})
    assert set(ids(apply_policy(snaps, policy).keep)) <= set(ids(apply_policy(snaps, bigger).keep))


@settings(max_examples=100, deadline=None)
@given(times, st.integers(min_value=1, max_value=70))
def test_keep_last_n_is_the_n_newest(moments, n):
    snaps = [Snap(f"s{i}", t) for i, t in enumerate(moments)]
    newest = sorted(snaps, key=lambda s: s.time, reverse=True)[:n]
    assert list(apply_policy(snaps, KeepPolicy(last=n)).keep) == newest


def test_restic_before_0_16_has_no_oldest_rule():
    """restic 0.14 (Debian 12) keeps only the newest of each bucket even when a rule has count
    left: the backup layer passes keep_oldest=False for it, so peersync explains what restic does."""
    from peersync.backup.restic import keep_flags, keep_oldest

    snaps = [Snap("a1", datetime(2026, 1, 1, 8)), Snap("a2", datetime(2026, 1, 1, 20))]
    assert apply_policy(snaps, KeepPolicy(daily=5), keep_oldest=False).reasons == {"a2": ("daily",)}
    assert not keep_oldest((0, 14, 0)) and keep_oldest((0, 16, 2))
    assert keep_flags(KeepPolicy(last=3, daily=UNLIMITED), (0, 14, 0)) == ["--keep-last", "3", "--keep-daily", "1000000000"]
    assert keep_flags(KeepPolicy(daily=UNLIMITED), (0, 17, 0)) == ["--keep-daily", "-1"]
