"""core.changelog.ChangeLog: the bounded log behind Versions.changed_since and
TreeWatch.fresh_between.  A wrong answer there makes a scan take a folder whole, or a memo skip a
path, that changed; None only costs a full comparison."""
import random

import pytest

from peersync.core.changelog import ChangeLog


def test_answers_what_changed_and_forgets_the_oldest():
    log = ChangeLog(entries=3, paths=100)
    log.add(1, ["a"])
    log.add(2, {"b", "c"})
    assert log.between(0, 2) == {"a", "b", "c"}
    assert log.between(1, 2) == {"b", "c"}
    assert log.between(2, 2) == set()  # nothing since itself
    assert log.between(2, 1) is None and log.between(0, 3) is None  # backwards; not yet made
    log.add(3, [])
    log.add(4, ["d"])
    assert log.between(0, 4) is None  # generation 1 is forgotten
    assert log.between(1, 4) == {"b", "c", "d"}


def test_a_gap_or_a_generation_not_known_is_not_known():
    log = ChangeLog(entries=16, paths=100)
    log.add(1, ["a"])
    log.add(3, ["c"])  # 2 never added (a walk that was not recorded)
    assert log.between(0, 3) is None and log.between(1, 3) is None
    assert log.between(2, 3) == {"c"}
    log.add(4, None)
    log.add(5, ["e"])
    assert log.between(3, 5) is None and log.between(2, 4) is None
    assert log.between(4, 5) == {"e"}


def test_paths_are_bounded_over_all_generations():
    log = ChangeLog(entries=16, paths=4)
    log.add(1, ["a", "b"])
    log.add(2, ["c", "d", "e", "f", "g"])  # more than the log keeps: not known
    assert log.between(0, 1) == {"a", "b"} and log.between(1, 2) is None
    log.add(3, ["h", "i"])
    log.add(4, ["j"])  # 2 + 0 + 2 + 1 > 4: generation 1 goes
    assert log.between(0, 4) is None
    assert log.between(2, 4) == {"h", "i", "j"}
    log.add(5, [])
    assert log._total <= 4


@pytest.mark.parametrize("seed", range(6))
def test_every_answer_is_the_truth_or_none(seed):
    """Against a log that forgets nothing: every answer is exactly the paths changed in the range,
    or None; and None only where the range reaches a generation forgotten, skipped or not known."""
    rng = random.Random(seed)
    entries, limit = rng.choice([(2, 8), (4, 16), (16, 64)])
    log, truth = ChangeLog(entries, limit), {}
    gen = 0
    for _ in range(300):
        gen += 1 if rng.random() < 0.9 else 2  # a gap now and then
        paths = None if rng.random() < 0.05 else {f"p{rng.randrange(40)}" for _ in range(rng.randrange(12))}
        log.add(gen, paths)
        truth[gen] = paths
        since = rng.randrange(max(0, gen - 2 * entries), gen + 1)
        upto = rng.randrange(since, gen + 1)
        got = log.between(since, upto)
        span = [truth.get(g, "gap") for g in range(since + 1, upto + 1)]
        if not span:
            assert got == set()  # nothing since itself
            continue
        if any(p is None or p == "gap" or len(p) > limit for p in span):
            assert got is None  # a generation skipped, or not known (None, or more than kept)
            continue
        # The log still holds generation since + 1 while it and those after fit both bounds.
        after = [p for g, p in truth.items() if g > since]
        kept = sum(len(p) for p in after if p is not None and len(p) <= limit)
        if len(after) > entries or kept > limit:
            assert got is None  # forgotten
        else:
            assert got == set().union(*span)
