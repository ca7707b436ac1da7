"""Path validation and the selection (pure, no I/O)."""

import subprocess
import sys
from pathlib import Path

import pytest

from peersync.core.paths import BadPath, check_relpath
from peersync.core.selection import Selection


@pytest.mark.parametrize("path", ["MEMORY.md", "memory/2026-01-26.md", "memory/a b/ü.json", "memory/.hidden"])
def test_good_paths(path):
    assert check_relpath(path) == path


@pytest.mark.parametrize("path", [
    "", "/etc/passwd", "../x", "memory/../../x", "memory/./a", "memory//a", "memory/a/", ".",
    "memory/a\x00b", "memory/a\nb", "memory\\a", "C:/x", "memory/clawdbot-sync/peers.json",
    "memory/clawdbot-sync", "Memory/Clawdbot-Sync/x", None, 5, "memory/" + "x" * 300,
])
def test_bad_paths(path):
    with pytest.raises(BadPath):
        check_relpath(path)


SEL = Selection.from_options()


@pytest.mark.parametrize("path,expected", [
    ("MEMORY.md", True), ("USER.md", True), ("HEARTBEAT.md", True), ("memory/x/y.md", True),
    ("IDENTITY.md", False), ("config/a.json", False), ("skills/s/SKILL.md", False),
    ("memory/clawdbot-sync/history.json", False), ("memory/a.tmp", False), ("memory/.git/HEAD", False),
    ("memory/x/node_modules/p.js", False), ("memory/cache/x", False), ("memory/.DS_Store", False),
    ("AGENTS.md", False), ("notes.md", False),
])
def test_default_selection(path, expected):
    assert SEL.contains(path) is expected


def test_skills_and_includes_but_never_identity_or_config():
    sel = Selection.from_options(skills=True, include=["notes", "IDENTITY.md", "config"])
    assert sel.contains("skills/s/SKILL.md") and sel.contains("notes/a.md")
    assert not sel.contains("IDENTITY.md") and not sel.contains("config/x")


def test_custom_excludes_are_gitignore_patterns():
    sel = Selection.from_options(exclude=["*.bak", "drafts/", "!keep.bak"])
    assert not sel.contains("memory/a.bak") and sel.contains("memory/keep.bak")
    assert not sel.contains("memory/drafts/x.md") and sel.contains("memory/a.tmp")


def test_wire_round_trip():
    sel = Selection.from_options(skills=True, exclude=["*.x"])
    assert Selection.from_wire(sel.to_wire()) == sel


def test_fast_exclude_matcher_agrees_with_pathspec():
    import pathspec
    from hypothesis import given, settings
    from hypothesis import strategies as st

    patterns = ["*.tmp", ".git/", "node_modules/", "cache/", ".DS_Store", "drafts/*.md", "/memory/x"]
    sel = Selection(roots=("memory",), exclude=tuple(patterns))
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    names = st.sampled_from(["memory", "a.tmp", ".git", "cache", "node_modules", ".DS_Store", "drafts",
                             "x", "y.md", "cachex", "a.tmpx", ".gitx"])

    @settings(max_examples=300, deadline=None)
    @given(st.lists(names, min_size=1, max_size=5))
    def check(parts):
        path = "/".join(parts)
        assert sel._match(path) == spec.match_file(path)
        assert sel._match(path + "/") == spec.match_file(path + "/")

    check()


def test_unanchored_patterns_match_as_pathspec_does():
    """pathspec searches a pattern's regex: "**/" (every folder) is the unanchored "/", and "*/"
    among patterns that are not all plain names goes the same way — neither is a match at the
    path's start only."""
    import pathspec

    for patterns in (["**/", "a?"], ["*/", "b?"], ["**", "[ab]"], ["*/"], ["**/"]):
        sel = Selection(roots=("memory",), exclude=tuple(patterns))
        spec = pathspec.GitIgnoreSpec.from_lines(patterns)
        for path in ("memory/a", "memory/a/b", "memory/", "memory", "ab", "x/ab", "a/"):
            assert sel._match(path) == spec.match_file(path), (patterns, path)


def test_plain_name_patterns_match_as_pathspec_does():
    """Name patterns (the defaults, and any like them) are matched without pathspec; wherever that
    path is taken, every path — a file's, or a folder's as "dir/" — gets pathspec's own answer."""
    import pathspec
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from peersync.core.selection import DEFAULT_EXCLUDES, _plain_names

    pieces = ["a", "b", ".", "#", "~", "*", "!", "\\", " ", "tmp", "git", "x"]
    pattern = st.lists(st.sampled_from(pieces), min_size=1, max_size=4).map("".join) | st.sampled_from(
        list(DEFAULT_EXCLUDES) + ["/", "a//", " a/", "a /", "#c/", "*", "*/", "a*b", "a*b/", "\\!a", "\\#a#"])
    patterns = st.lists(st.one_of(pattern, pattern.map(lambda p: p + "/")), min_size=1, max_size=5)
    name = st.lists(st.sampled_from(["a", "b", ".", "#", "~", "tmp", "git", "x", ".git", "ab", "a.tmp", "#a#"]),
                    min_size=1, max_size=3).map("".join).filter(lambda n: n not in (".", ".."))
    paths = st.lists(name, min_size=1, max_size=4).map("/".join)  # wire paths: check_relpath passes them
    taken = []

    @settings(max_examples=1500, deadline=None)
    @given(patterns, st.lists(paths, min_size=1, max_size=6))
    def check(lines, many):
        match = _plain_names(tuple(lines))
        if match is None:
            return
        taken.append(lines)
        spec = pathspec.GitIgnoreSpec.from_lines(lines)
        sel = Selection(roots=("memory",), exclude=tuple(lines))
        for path in many:
            assert match(path) == spec.match_file(path), (lines, path)
            assert match(path + "/") == spec.match_file(path + "/"), (lines, path + "/")
            # The walker's per-file test, for a file whose folders all passed (its precondition).
            file = f"memory/{path}"
            folders = file.split("/")[:-1]
            if not any(spec.match_file("/".join(folders[:i]) + "/") for i in range(1, len(folders) + 1)):
                assert sel.excludes_child(file) == spec.match_file(file), (lines, file)

    check()
    assert len(taken) > 300  # most sets drawn were plain names: the comparison ran
    assert _plain_names(DEFAULT_EXCLUDES) is not None
    for odd in (["a?"], ["!a"], ["a/b"], ["**/a"], ["a[bc]"], ["a "], ["/"], ["a//"]):
        assert _plain_names(tuple(odd)) is None, odd  # left to pathspec


def test_the_agent_starts_without_pathspec():
    """A cold agent with the default excludes never imports pathspec (~20 ms of every new
    connection's start-up on a slow peer)."""
    code = ("import sys\nfrom peersync.transport import agent\nfrom peersync.core.selection import Selection\n"
            "s = Selection()\nassert s.excludes_dir('memory/.git') and s.contains('memory/a.md')\n"
            "print('pathspec' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False", out.stderr


def _check_relpath_by_regexes(path: str) -> bool:
    """check_relpath's verdict as it was before its substring pre-tests: each regex on every path."""
    from peersync.core.paths import _CONTROL, _NOT_NORMAL, in_state_dir

    if not path or path[0] == "/" or (len(path) > 1 and path[1] == ":"):
        return False
    if _CONTROL.search(path) or _NOT_NORMAL.search(path) or in_state_dir(path):
        return False
    raw = path.encode("utf-8", "surrogateescape")
    return not (len(raw) > 4096 or (len(raw) > 255 and any(len(p) > 255 for p in raw.split(b"/"))))


def test_check_relpath_pre_tests_refuse_exactly_what_the_regexes_do():
    from hypothesis import example, given, settings
    from hypothesis import strategies as st

    pieces = st.sampled_from([".", "..", "/", "//", "a", "memory", "x.md", ".hidden", "a.", "..b", "\\", "\x00",
                              "\n", "\x7f", "\x1f", " ", "\u00a0", "\u2028", "\u0085", "ü", "u\u0308", "C:"])

    @settings(max_examples=2000, deadline=None)
    @given(st.lists(pieces, min_size=1, max_size=8).map("".join) | st.text(max_size=12))
    @example("memory/..")
    @example("./a")
    @example("a/./b")
    @example("a/...")
    @example(".a/b")
    @example("memory/a\\b")
    def check(path):
        try:
            accepted = check_relpath(path) == path
        except BadPath:
            accepted = False
        assert accepted == _check_relpath_by_regexes(path), path

    check()
