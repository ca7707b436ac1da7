"""core/modes.py: permission bits merged three-way, per bit."""

import pytest

from peersync.core.modes import merge_mode

CASES = [
    ("+x here", 0o644, 0o755, 0o644, 0o755),
    ("-x there", 0o755, 0o755, 0o644, 0o644),
    ("+x here, -w for others there: both", 0o664, 0o775, 0o644, 0o755),
    ("the same change on both sides", 0o644, 0o600, 0o600, 0o600),
    ("no ancestor: a bit set on either side is kept", None, 0o600, 0o644, 0o644),
    ("unchanged", 0o640, 0o640, 0o640, 0o640),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_merge_mode(case):
    _, ancestor, local, remote, want = case
    assert merge_mode(ancestor, local, remote) == want
    assert merge_mode(ancestor, remote, local) == want  # symmetric: either side may start the sync
