"""Path validation and the selection (pure, no I/O)."""

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
