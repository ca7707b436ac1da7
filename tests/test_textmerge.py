"""The merge rules for memory files, one table row per rule (textmerge, jsonmerge, mergefile).

Every text row is checked both ways round (either machine may run the merge: same bytes).
"""

from __future__ import annotations

import json
import random
from datetime import datetime

import pytest
from hypothesis import given, settings, strategies as st

from peersync.core.jsonmerge import merge_json
from peersync.core.mergefile import APPEND, INSERT, JSON, TEXT, MergeRules, merge_back, merge_file
from peersync.core.textmerge import KEPT_DELETED, KEPT_END, KEPT_HEADER, KEPT_VERSION, Version, has_kept_versions, merge_text
from peersync.core.types import Entry, Side
from peersync.workspace.workspace import DEFAULT_LOGS, DEFAULT_MERGE


def at(hhmm: str) -> int:
    return int(datetime.fromisoformat(f"2026-01-26T{hhmm}:00+00:00").timestamp() * 1e9)


LAPTOP, MINI = at("14:03"), at("14:05")


def kept(*versions: tuple[str, str, str]) -> str:
    """A kept passage as merge_text writes it: (machine, HH:MM, text) per version, in order."""
    out = KEPT_HEADER.format(n=len(versions))
    for machine, hhmm, text in versions:
        out += KEPT_VERSION.format(machine=machine, time=f"2026-01-26 {hhmm} UTC", deleted="" if text else KEPT_DELETED)
        out += text
    return out + KEPT_END


def merge(base, x, y, *, markdown=True, tx=LAPTOP, ty=MINI, nx="laptop", ny="mac-mini"):
    """merge_text both ways round: the result must not depend on which side runs it."""
    enc = (lambda t: t if isinstance(t, bytes) or t is None else t.encode())
    vx, vy = Version(enc(x), nx, tx), Version(enc(y), ny, ty)
    one = merge_text(enc(base), vx, vy, markdown=markdown)
    other = merge_text(enc(base), vy, vx, markdown=markdown)
    assert one == other, "the result depends on which side runs the merge"
    return one


MEM = "# Memory\n\n## People\n- Alice\n\n## Places\n- Lisbon\n"

TEXT_ROWS = [
    # (name, base, x, y, expected, kept passages)
    ("append/append: both tails land, in content order",
     MEM, MEM + "- Porto\n", MEM + "- Faro\n", MEM + "- Faro\n- Porto\n", 0),
    ("edit/edit in different sections",
     MEM, MEM.replace("Alice", "Alice (sister)"), MEM.replace("Lisbon", "Porto"),
     MEM.replace("Alice", "Alice (sister)").replace("Lisbon", "Porto"), 0),
    ("two agents add bullets under the same heading: both land",
     MEM, MEM.replace("- Alice\n", "- Alice\n- Bob\n"), MEM.replace("- Alice\n", "- Alice\n- Carol\n"),
     MEM.replace("- Alice\n", "- Alice\n- Bob\n- Carol\n"), 0),
    ("same bullet added on both sides: once",
     MEM, MEM + "- Dana moved to Porto\n", MEM + "- Dana moved to Porto\n- Eve\n",
     MEM + "- Dana moved to Porto\n- Eve\n", 0),
    ("a bullet added on both sides among others: once",
     MEM, MEM + "- Bob\n- Dana moved to Porto\n", MEM + "- Dana moved to Porto\n- Carol\n",
     MEM + "- Bob\n- Dana moved to Porto\n- Carol\n", 0),
    ("a list item keeps its continuation lines",
     MEM, MEM + "- Zoe\n  (a cousin)\n", MEM + "- Ann\n",
     MEM + "- Ann\n- Zoe\n  (a cousin)\n", 0),
    ("a line both added a line apart (one replaced a line, the other inserted beside it): once",
     "- N\n", "- N\n- C\n", "- C\n", "- C\n", 0),
    ("same section, one side edits a bullet, the other adds the next one",
     MEM, MEM.replace("- Alice\n", "- Alice\n- Bob\n"), MEM.replace("- Alice\n", "- Alice (sister)\n"),
     MEM.replace("- Alice\n", "- Alice (sister)\n- Bob\n"), 0),
    ("same section, one side removes a bullet, the other edits the next one",
     "- a\n- b\n- c\n", "- b\n- c\n", "- a\n- b (edited)\n- c\n", "- b (edited)\n- c\n", 0),
    ("bullets continuing a section come before a section the other side opened",
     MEM, MEM + "- Bob\n", MEM + "\n## Health\n- fine\n", MEM + "- Bob\n\n## Health\n- fine\n", 0),
    ("both open the same new section: its bullets merge under it",
     MEM, MEM + "\n## Travel\n- Oslo\n", MEM + "\n## Travel\n- Rome\n", MEM + "\n## Travel\n- Oslo\n- Rome\n", 0),
    ("both add a paragraph at one place: two paragraphs, never glued",
     "Intro.\n", "Intro.\n\nFrom x.\n", "Intro.\n\nFrom y.\n", "Intro.\n\nFrom x.\n\nFrom y.\n", 0),
    ("same line edited differently: both versions kept live, marked with machine and time",
     MEM, MEM.replace("Lisbon", "Porto"), MEM.replace("Lisbon", "Lisbon, with her cat"),
     MEM.replace("- Lisbon\n", kept(("laptop", "14:03", "- Porto\n"), ("mac-mini", "14:05", "- Lisbon, with her cat\n"))), 1),
    ("an edit inside a wrapped paragraph keeps the whole paragraph twice, never half a sentence",
     "Dana lives in Lisbon and\nworks at the harbour.\n\nEnd.\n",
     "Dana lives in Lisbon and\nworks at the port.\n\nEnd.\n", "Dana lives in Lisbon and\nworks at the docks.\n\nEnd.\n",
     kept(("laptop", "14:03", "Dana lives in Lisbon and\nworks at the port.\n"),
          ("mac-mini", "14:05", "Dana lives in Lisbon and\nworks at the docks.\n")) + "\nEnd.\n", 1),
    ("deletion vs edit: the edit stays live, beside a note of the deletion",
     MEM, MEM.replace("- Alice\n", ""), MEM.replace("- Alice\n", "- Alice (sister)\n"),
     MEM.replace("- Alice\n", kept(("laptop", "14:03", ""), ("mac-mini", "14:05", "- Alice (sister)\n"))), 1),
    ("deletion vs no change: deleted",
     MEM, MEM.replace("- Alice\n", ""), MEM + "- Faro\n", MEM.replace("- Alice\n", "") + "- Faro\n", 0),
    ("deleted on both sides: deleted",
     MEM, MEM.replace("- Alice\n", ""), MEM.replace("- Alice\n", ""), MEM.replace("- Alice\n", ""), 0),
    ("overlapping deletions (two bullets on one side, one of them on the other): all deleted",
     "- a\n- b\n- c\n- d\n", "- a\n- d\n", "- a\n- c\n- d\n", "- a\n- d\n", 0),
    ("a fenced code block is one unit",
     "```\na\nb\n```\n", "```\na2\nb\n```\n", "```\na3\nb\n```\n",
     kept(("laptop", "14:03", "```\na2\nb\n```\n"), ("mac-mini", "14:05", "```\na3\nb\n```\n")), 1),
    ("CRLF on both sides: stays CRLF",
     MEM.replace("\n", "\r\n"), (MEM + "- Porto\n").replace("\n", "\r\n"), (MEM + "- Faro\n").replace("\n", "\r\n"),
     (MEM + "- Faro\n- Porto\n").replace("\n", "\r\n"), 0),
    ("CRLF vs LF: one side converted the file, the other added a line: both changes",
     MEM, MEM.replace("\n", "\r\n"), MEM + "- Faro\n", (MEM + "- Faro\n").replace("\n", "\r\n"), 0),
    ("CRLF vs LF without a base conversion: lines compare without the CR",
     MEM.replace("\n", "\r\n"), MEM.replace("\n", "\r\n") + "- Bob\r\n", MEM + "- Carol\n", MEM + "- Bob\n- Carol\n", 0),
    ("a file without a trailing newline: both appended, still without one",
     "a\nb", "a\nb\nc", "x\na\nb", "x\na\nb\nc", 0),
    ("a file without a trailing newline: a side added one",
     "a\nb", "a\nb\n", "x\na\nb", "x\na\nb\n", 0),
    ("no base (first sync): every block of both, shared ones once",
     None, "# M\n- a\n- b\n", "# M\n- c\n- a\n", "# M\n- c\n- a\n- b\n", 0),
    ("not Markdown: line by line",
     "a\nb\n", "a\nx\nb\n", "a\ny\nb\n", "a\nx\ny\nb\n", 0),
]


@pytest.mark.parametrize("name,base,x,y,expected,passages", TEXT_ROWS, ids=[r[0] for r in TEXT_ROWS])
def test_text_merge_table(name, base, x, y, expected, passages):
    markdown = not name.startswith("not Markdown")
    result = merge(base, x, y, markdown=markdown)
    assert result.data.decode() == expected
    assert result.kept == passages
    assert has_kept_versions(result.data) == bool(passages)


@pytest.mark.parametrize("base,x,y", [
    (b"a\n", b"a\xff\n", b"b\n"),  # not UTF-8
    (b"a\n", b"a\n\0\n", b"b\n"),  # a NUL byte: binary
    (b"\xfe\xff", b"a\n", b"b\n"),  # the base is not text
])
def test_non_text_falls_back_to_the_conflict_policy(base, x, y):
    assert merge(base, x, y) is None


def test_one_side_unchanged_or_both_equal_is_not_a_merge():
    assert merge(MEM, MEM, MEM + "- x\n").data == (MEM + "- x\n").encode()
    assert merge(MEM, "same\n", "same\n").data == b"same\n"


def test_mixed_line_endings_merge_as_they_are():
    base = "a\r\nb\nc\n"
    assert merge(base, base + "x\n", "y\r\n" + base).data == ("y\r\n" + base + "x\n").encode()


# -- merges of merges: three and more machines ---------------------------------------------

PLACE = "# M\n\nDana lives in Lisbon.\n\nEnd.\n"


def lives(city: str) -> str:
    return PLACE.replace("Lisbon", city)


def test_a_third_version_joins_the_kept_passage_and_merges_of_merges_converge():
    ab = merge(PLACE, lives("Porto"), lives("Faro")).data
    abc = merge(PLACE, ab, lives("Braga"), ty=at("14:13"), ny="server").data
    assert abc.decode() == ("# M\n\n" + kept(("laptop", "14:03", "Dana lives in Porto.\n"),
                                             ("mac-mini", "14:05", "Dana lives in Faro.\n"),
                                             ("server", "14:13", "Dana lives in Braga.\n")) + "\nEnd.\n")
    # The machine that held only A and B's merge meets the three-version one: no change, no new passage.
    again = merge(PLACE, ab, abc)
    assert again.data == abc and again.kept == 0


def test_a_version_removed_on_one_machine_stays_removed_when_another_brings_a_new_one():
    ab = merge(PLACE, lives("Porto"), lives("Faro")).data
    abc = merge(PLACE, ab, lives("Braga"), ty=at("14:13"), ny="server").data
    sorted_out = lives("Porto").encode()  # the user on the laptop kept Porto and deleted the rest
    result = merge(ab, sorted_out, abc)
    assert result.data.decode() == ("# M\n\n" + kept(("laptop", "14:03", "Dana lives in Porto.\n"),
                                                     ("server", "14:13", "Dana lives in Braga.\n")) + "\nEnd.\n")


def test_sorted_out_differently_on_two_machines_keeps_both():
    ab = merge(PLACE, lives("Porto"), lives("Faro")).data
    result = merge(ab, lives("Porto"), lives("Faro"), tx=at("15:00"), ty=at("15:01"))
    assert result.kept == 1 and b"Porto" in result.data and b"Faro" in result.data


def test_a_kept_passage_left_with_one_version_becomes_plain_text_at_the_next_merge():
    ab = merge(PLACE, lives("Porto"), lives("Faro")).data.decode()
    # The user deleted the Faro version's lines but left the marker lines.
    one = ab.replace("> **▼ mac-mini · 2026-01-26 14:05 UTC**\nDana lives in Faro.\n", "")
    result = merge(ab, one, ab + "- more\n")
    assert result.data.decode() == lives("Porto") + "- more\n"


# -- the heavy cases -------------------------------------------------------------------------

def ten_megabytes() -> bytes:
    rng = random.Random(18)
    parts = []
    for s in range(3500):
        parts.append(f"## Section {s}\n\n")
        parts += [f"- item {s}.{i} " + "word " * rng.randint(2, 20) + "\n" for i in range(40)]
        parts.append("\nA paragraph that wraps\nover two lines.\n\n")
    return "".join(parts).encode()


def test_a_10_mb_file_merges():
    base = ten_megabytes()
    assert len(base) > 10_000_000
    x = base.replace(b"- item 10.5 ", b"- item 10.5 on x ").replace(b"## Section 3499\n", b"## Section 3499\n- new on x\n")
    y = base.replace(b"- item 10.5 ", b"- item 10.5 on y ").replace(b"- item 500.1 ", b"- item 500.1 on y ") + b"- tail y\n"
    result = merge(base, x, y)
    assert result.kept == 1
    for line in (b"- new on x\n", b"- tail y\n", b"- item 500.1 on y "):
        assert line in result.data
    assert b"- item 10.5 on x " in result.data and b"- item 10.5 on y " in result.data
    assert merge(None, x, y).kept == 0  # no base: a union, every block once


# -- properties ------------------------------------------------------------------------------

lines_st = st.lists(st.sampled_from(["- a", "- b", "text", "", "## H", "- c"]), max_size=8)


def edit(base: list[str], ops, tag: str) -> tuple[list[str], set[str]]:
    """Apply random line edits; returns the new lines and the (unique) lines added that remain."""
    out, added = list(base), set()
    for n, (kind, pos) in enumerate(ops):
        pos = pos % (len(out) + 1)
        if kind == "insert":
            line = f"- {tag} added {n}"
            out.insert(pos, line)
            added.add(line)
        elif kind == "delete" and pos < len(out):
            del out[pos]
        elif kind == "replace" and pos < len(out):
            out[pos] = f"{tag} changed {n}"
            added.add(out[pos])
    return out, added & set(out)  # what a later edit on the same side removed is not owed


ops_st = st.lists(st.tuples(st.sampled_from(["insert", "delete", "replace"]), st.integers(0, 20)), max_size=5)


@settings(max_examples=300, deadline=None)
@given(base=lines_st, ops_x=ops_st, ops_y=ops_st, markdown=st.booleans())
def test_no_added_line_is_lost_and_either_side_may_merge(base, ops_x, ops_y, markdown):
    x, added_x = edit(base, ops_x, "x")
    y, added_y = edit(base, ops_y, "y")
    text = (lambda lines: "".join(line + "\n" for line in lines))
    result = merge(text(base), text(x), text(y), markdown=markdown)
    merged = result.data.decode().splitlines()
    assert added_x | added_y <= set(merged)
    # Merging the result with either input again (the result as both the new base and one side) changes nothing.
    assert merge(result.data, result.data, result.data).data == result.data


# -- JSON by key -----------------------------------------------------------------------------

PREFS = {"theme": "dark", "lang": "en", "shows": ["Dark"], "volume": 5}


def js(value) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


JSON_ROWS = [
    # (name, base, x, y, prefer, expected value or None for a fallback, conflicting keys)
    ("different keys changed on both sides: both land",
     PREFS, {**PREFS, "theme": "light"}, {**PREFS, "lang": "pt"}, None, {**PREFS, "theme": "light", "lang": "pt"}, ()),
    ("keys added on both sides: both land",
     PREFS, {**PREFS, "a": 1}, {**PREFS, "b": 2}, None, {**PREFS, "a": 1, "b": 2}, ()),
    ("nested objects merge by key",
     {"s": {"x": 1, "y": 1}}, {"s": {"x": 2, "y": 1}}, {"s": {"x": 1, "y": 3}}, None, {"s": {"x": 2, "y": 3}}, ()),
    ("arrays both sides appended to: both tails, shared items once",
     PREFS, {**PREFS, "shows": ["Dark", "Ozark", "Severance"]}, {**PREFS, "shows": ["Dark", "Severance"]}, None,
     {**PREFS, "shows": ["Dark", "Ozark", "Severance"]}, ()),
    ("a key removed on one side, unchanged on the other: removed",
     PREFS, {k: v for k, v in PREFS.items() if k != "volume"}, {**PREFS, "lang": "pt"}, None,
     {"theme": "dark", "lang": "pt", "shows": ["Dark"]}, ()),
    ("a key removed on one side, changed on the other: the change stays",
     PREFS, {k: v for k, v in PREFS.items() if k != "volume"}, {**PREFS, "volume": 7}, None, {**PREFS, "volume": 7}, ()),
    ("the same key changed differently, no policy winner: the whole file goes to the policy",
     PREFS, {**PREFS, "theme": "light"}, {**PREFS, "theme": "blue"}, None, None, ()),
    ("the same key changed differently: the policy's winner keeps that key, the rest merges",
     PREFS, {**PREFS, "theme": "light", "a": 1}, {**PREFS, "theme": "blue", "lang": "pt"}, "y",
     {**PREFS, "theme": "blue", "lang": "pt", "a": 1}, ("theme",)),
    ("true is not 1",
     {"k": 1}, {"k": True}, {"k": 1, "j": 0}, None, {"k": True, "j": 0}, ()),
    ("no base: keys of both, differing ones to the policy",
     None, {"a": 1, "c": 3}, {"b": 2, "c": 3}, None, {"a": 1, "c": 3, "b": 2}, ()),
]


@pytest.mark.parametrize("name,base,x,y,prefer,expected,conflicts", JSON_ROWS, ids=[r[0] for r in JSON_ROWS])
def test_json_merge_table(name, base, x, y, prefer, expected, conflicts):
    b = js(base) if base is not None else None
    result = merge_json(b, js(x), js(y), prefer=prefer)
    swapped = merge_json(b, js(y), js(x), prefer={"x": "y", "y": "x"}.get(prefer))
    assert result == swapped, "the result depends on which side runs the merge"
    if expected is None:
        assert result is None
        return
    assert json.loads(result.data) == expected and result.conflicts == conflicts


def test_json_that_does_not_parse_falls_back():
    assert merge_json(js(PREFS), b"{not json", js(PREFS | {"a": 1})) is None
    assert merge_json(js(PREFS), js(PREFS | {"a": 1}), b"\xff\xfe") is None


def test_json_keeps_the_file_layout():
    base = b'{"a": 1, "b": 2}'
    result = merge_json(base, b'{"a": 5, "b": 2}', b'{"a": 1, "b": 2, "c": 3}')
    assert result.data == b'{"a": 5, "b": 2, "c": 3}'
    base = js(PREFS)
    result = merge_json(base, js({**PREFS, "theme": "x"}), js({**PREFS, "volume": 9}))
    assert result.data == js({**PREFS, "theme": "x", "volume": 9})


# -- which files merge, and how (mergefile) --------------------------------------------------

RULES = MergeRules(DEFAULT_LOGS, DEFAULT_MERGE)


@pytest.mark.parametrize("path,strategies", [
    ("MEMORY.md", (TEXT,)), ("USER.md", (TEXT,)), ("HEARTBEAT.md", (TEXT,)),
    ("memory/people/dana.md", (TEXT,)), ("memory/notes.md", (TEXT,)),
    ("memory/streaming-buddy/preferences.json", (JSON,)),
    ("memory/2026-01-26.md", (APPEND, INSERT, TEXT)),  # a daily note: a log first, text when rewritten
    ("memory/agent/events.jsonl", (APPEND, INSERT)),
    ("memory/notes/plan.txt", ()), ("skills/x/SKILL.md", ()),
])
def test_which_files_merge(path, strategies):
    assert RULES.strategies(path) == strategies


@pytest.mark.parametrize("merge", [DEFAULT_MERGE, ("*.md", "/notes/**", "memory/a?c/*.json", "[Mm]emo*.md"),
                                   ("memory/**/*.md", "!memory/private/*.md", "memory/private/keep.md")])
def test_merge_patterns_match_as_pathspec_does(merge):
    """The merge patterns go through one regex where none is negated (selection.matcher): the same
    paths merge as pathspec's own matching gives, and a `!` pattern keeps pathspec's order."""
    import pathspec
    from hypothesis import example, given, settings
    from hypothesis import strategies as st

    rules, spec = MergeRules((), merge), pathspec.GitIgnoreSpec.from_lines(merge)
    names = st.sampled_from(["memory", "MEMORY.md", "USER.md", "a.md", "abc", "x.json", "notes", "private",
                             "keep.md", "Memo1.md", "memo.md", "b.txt", "md", ".md", "2026-01-26.md"])

    @settings(max_examples=400, deadline=None)
    @given(st.lists(names, min_size=1, max_size=5))
    @example(["memory", "private", "a.md"])
    @example(["memory", "private", "keep.md"])
    @example(["memory", "abc", "x.json"])
    def check(parts):
        path = "/".join(parts)
        assert rules.mergeable(path) == spec.match_file(path), path

    check()


def version(data: bytes, machine: str, mtime: int) -> Version:
    return Version(data, machine, mtime)


def entry(data: bytes) -> Entry:
    from peersync.replica.scan import hash_bytes

    return Entry(len(data), 0, 0o644, hash_bytes(data))


def test_a_rewritten_daily_note_merges_as_text_and_a_rewritten_jsonl_does_not():
    base = b"# 2026-01-26\n- a\n- b\n"
    local, remote = b"# 2026-01-26\n- A (fixed)\n- b\n", base + b"- c\n"
    merged = merge_file("memory/2026-01-26.md", RULES.strategies("memory/2026-01-26.md"), ancestor=entry(base),
                        base=base, local=version(local, "l", 0), remote=version(remote, "r", 0), local_first=True)
    assert merged.how == TEXT and merged.data == b"# 2026-01-26\n- A (fixed)\n- b\n- c\n"
    log = "memory/agent/events.jsonl"
    assert merge_file(log, RULES.strategies(log), ancestor=entry(base), base=base, local=version(local, "l", 0),
                      remote=version(remote, "r", 0), local_first=True) is None
    appended = merge_file(log, RULES.strategies(log), ancestor=entry(base), base=base,
                          local=version(base + b"- x\n", "l", 0), remote=version(remote, "r", 0), local_first=True)
    assert appended.how == APPEND and appended.data == base + b"- x\n- c\n"


def test_json_key_conflicts_follow_the_policy_winner():
    path = "memory/s/preferences.json"
    kwargs = dict(ancestor=entry(js(PREFS)), base=js(PREFS), local=version(js({**PREFS, "theme": "l"}), "l", 0),
                  remote=version(js({**PREFS, "theme": "r", "a": 1}), "r", 0), local_first=True)
    assert merge_file(path, (JSON,), **kwargs, prefer=None) is None
    won = merge_file(path, (JSON,), **kwargs, prefer=Side.REMOTE)
    assert json.loads(won.data) == {**PREFS, "theme": "r", "a": 1} and won.keys == ("theme",) and won.needs_look


def test_merge_back_restores_what_the_live_version_lacks():
    assert merge_back("MEMORY.md", b"# M\n- a\n- b\n", b"# M\n- a\n- c\n") == b"# M\n- a\n- b\n- c\n"
    assert json.loads(merge_back("memory/p.json", js({"a": 1, "b": 2}), js({"a": 5}))) == {"a": 5, "b": 2}
    assert merge_back("MEMORY.md", b"\xff", b"x\n") is None
