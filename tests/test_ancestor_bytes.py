"""Both sides of a pair write an ancestor's canonical bytes (their digests decide whether the next
scan may be a delta): the incremental encoder of long-lived processes must write exactly
canonical_json's bytes, whatever the names, entries and changes."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from peersync.replica import handler as handler_module
from peersync.replica.handler import Handler, canonical_ancestor, canonical_json

NAMES = st.text(alphabet=st.sampled_from(list("ab/._-é\"\\\u00e9\u0301\u4e2d") + ["\udce9", "\n", "\x7f", "\U0001f600"]),
                min_size=1, max_size=12)
HASH = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
VV = st.lists(st.tuples(st.text(alphabet="0123456789abcdef", min_size=12, max_size=12), st.integers(1, 2**63 - 1))
              .map(list), max_size=3)
WIRE = st.tuples(st.integers(0, 2**40), st.integers(0, 2**62), st.integers(0, 0o777), HASH, VV, VV).map(
    lambda t: list(t[:4]) + ([t[4]] if t[4] or t[5] else []) + ([t[5]] if t[5] else []))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(NAMES, WIRE, max_size=30), st.dictionaries(NAMES, WIRE, max_size=8),
       st.lists(NAMES, max_size=8), st.dictionaries(st.sampled_from(["format", "held", "zz", "a"]), st.integers(), max_size=3))
def test_incremental_ancestor_bytes_are_canonical_json_bytes(first, changed, dropped, extra):
    doc = {**extra, "format": 3, "entries": first}
    raw, encoded = canonical_ancestor(doc, None)
    assert raw == canonical_json(doc) == (json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                                          + "\n").encode("utf-8", "backslashreplace")
    # The next sync: the same wire objects for what did not change, new ones for what did.
    entries = dict(first)
    for path in dropped:
        entries.pop(path, None)
    entries.update({p: list(w) for p, w in changed.items()})
    nxt = {**doc, "entries": entries}
    raw2, _ = canonical_ancestor(nxt, encoded)
    assert raw2 == canonical_json(nxt)
    # As an ancestor delta writes it: only the paths the delta names are looked at, in order.
    _, encoded = canonical_ancestor(doc, None)
    raw3, again = canonical_ancestor(nxt, encoded, since=first, moved=[*dropped, *changed])
    assert raw3 == raw2 and again.order == sorted(entries)
    # And once more from there (the order kept is the one used).
    last = {**nxt, "entries": {**entries, **{p + "x": w for p, w in changed.items()}}}
    raw4, _ = canonical_ancestor(last, again, since=entries, moved=[p + "x" for p in changed])
    assert raw4 == canonical_json(last)


def test_a_kept_process_writes_the_same_ancestor_bytes_as_a_fresh_one(tmp_path):
    """op_ancestor_put with deltas, three times in one process (the third reuses encoded entries),
    against the same deltas applied by a fresh handler each time: equal digests and bytes."""
    from peersync.workspace.workspace import Workspace

    peer = "0123456789abcdef0123456789abcdef"
    kept_ws, fresh_root = Workspace(tmp_path / "kept"), tmp_path / "fresh"
    for root in (kept_ws.root, fresh_root):
        root.mkdir()
        Workspace(root).ensure_state()
    wire = lambda n: [n, 1_700_000_000_000_000_000 + n, 0o644, f"{n:032x}", [["abcdef123456", n + 1]]]  # noqa: E731
    manifest = {"format": 3, "entries": {f"memory/n{i}.md": wire(i) for i in range(50)}}
    kept = Handler(kept_ws.root)
    digest = kept.op_ancestor_put(peer, manifest=manifest)["digest"]
    assert Handler(fresh_root).op_ancestor_put(peer, manifest=manifest)["digest"] == digest
    for step in range(3):
        delta = {"set": {f"memory/n{step}.md": wire(100 + step), f"memory/new{step}.md": wire(200 + step)},
                 "drop": [f"memory/n{40 + step}.md"]}
        mine = kept.op_ancestor_put(peer, base_digest=digest, delta=delta)
        name = f"{peer}.json"
        handler_module._ENCODED.pop(str(Workspace(fresh_root).state / "ancestors" / name), None)  # canonical_json
        theirs = Handler(fresh_root).op_ancestor_put(peer, base_digest=digest, delta=delta)
        assert mine["applied"] and theirs["applied"] and mine["digest"] == theirs["digest"]
        digest = mine["digest"]
        assert (kept_ws.state / "ancestors" / name).read_bytes() == (Workspace(fresh_root).state / "ancestors" / name).read_bytes()
