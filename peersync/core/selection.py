"""What gets synced: the seed's default roots, gitignore-style excludes, and the never-sync list."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from peersync.core.paths import in_state_dir

if TYPE_CHECKING:
    import pathspec

DEFAULT_ROOTS = ("memory", "MEMORY.md", "USER.md", "HEARTBEAT.md")
SKILLS_ROOT = "skills"
# Each instance has its own identity and config: never synced, even if a user includes them.
NEVER = ("IDENTITY.md", "config")
# Editors' swap, backup and lock files (vim *.swp/*.swo/*.swx, emacs *~, .#name and #name#) are
# never content: syncing them spreads half-written state and lock files between machines.
DEFAULT_EXCLUDES = ("*.tmp", ".git/", "node_modules/", "cache/", ".DS_Store",
                    "*.swp", "*.swo", "*.swx", "*~", ".#*", "\\#*#")


def _top(path: str) -> str:
    return path.split("/", 1)[0]


@dataclass(frozen=True)
class Selection:
    """The set of workspace paths peersync manages.  Paths are workspace-relative POSIX."""

    roots: tuple[str, ...] = DEFAULT_ROOTS
    exclude: tuple[str, ...] = DEFAULT_EXCLUDES
    _match: Callable[[str], bool] = field(init=False, repr=False, compare=False)
    _negated: bool = field(init=False, repr=False, compare=False)
    _by_names: bool = field(init=False, repr=False, compare=False)
    _names: Callable[[str], bool] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        roots = tuple(dict.fromkeys(r.strip("/") for r in self.roots if r.strip("/")))
        object.__setattr__(self, "roots", tuple(r for r in roots if _top(r) not in NEVER))
        match = _plain_names(self.exclude)
        negated = False
        if match is None:
            import pathspec  # lazy: plain name patterns (the defaults) need none of it — nor its ~20 ms of start-up

            spec = pathspec.GitIgnoreSpec.from_lines(self.exclude)
            negated = any(p.include is False for p in spec.patterns)
            match = matcher(spec)
        object.__setattr__(self, "_negated", negated)
        object.__setattr__(self, "_match", match)
        by_names = not negated and all(map(_by_name, self.exclude))
        object.__setattr__(self, "_by_names", by_names)
        object.__setattr__(self, "_names", _file_names(self.exclude) if by_names else None)

    @classmethod
    def from_options(cls, *, skills: bool = False, include=(), exclude=None) -> "Selection":
        roots = DEFAULT_ROOTS + ((SKILLS_ROOT,) if skills else ()) + tuple(include or ())
        return cls(roots=roots, exclude=tuple(DEFAULT_EXCLUDES if exclude is None else exclude))

    def under_root(self, path: str) -> bool:
        return any(path == r or path.startswith(r + "/") for r in self.roots)

    def excludes_dir(self, path: str) -> bool:
        """True when the directory `path` (and everything below it) is outside the selection."""
        return in_state_dir(path) or _top(path) in NEVER or self._match(path + "/")

    def excludes_file(self, path: str) -> bool:
        return in_state_dir(path) or _top(path) in NEVER or self._match(path)

    def excludes_child(self, path: str) -> bool:
        """excludes_file for a file whose directory already passed excludes_dir (the walker):
        only the patterns can still exclude it — or the state dir's own path, if a file sits there.
        When every pattern is a name pattern (the defaults), only the file's own name can match
        one: it alone is matched (twice as fast as the whole path, per file of every scan)."""
        names = self._names
        excluded = names(path[path.rfind("/") + 1:]) if names is not None else self._match(path)
        return excluded or (path.count("/") == 1 and in_state_dir(path))

    def pattern_excludes(self, path: str) -> bool:
        """True when the gitignore excludes alone exclude `path` (a directory: pass "dir/")."""
        return self._match(path)

    def contains(self, path: str) -> bool:
        """True when a file at `path` belongs to the selection (used to validate peer paths).

        A gitignore pattern that names a directory also matches every path below it, so one
        match decides — unless a `!` pattern exists, when each parent is checked as well.
        """
        if not self.under_root(path) or self.excludes_file(path):
            return False
        if not self._negated:
            return True
        parts = path.split("/")
        return not any(self.excludes_dir("/".join(parts[:i])) for i in range(1, len(parts)))

    def to_wire(self) -> dict:
        return {"roots": list(self.roots), "exclude": list(self.exclude)}

    @classmethod
    def from_wire(cls, value: dict) -> "Selection":
        return cls(roots=tuple(value["roots"]), exclude=tuple(value["exclude"]))


@dataclass(frozen=True)
class Intersection:
    """The paths two selections both hold: a restricted agent bounds the client's selection by
    its own, so a client reaches nothing this side does not sync (only `contains` is needed)."""

    first: Selection
    second: Selection

    def contains(self, path: str) -> bool:
        return self.first.contains(path) and self.second.contains(path)


def _by_name(pattern: str) -> bool:
    """A gitignore pattern that matches a name at any depth, whatever its folders (no `/` but a
    trailing one, no `**`): a file whose folders all passed can then match it by its name alone."""
    pattern = pattern.strip()
    return bool(pattern) and "/" not in pattern.rstrip("/") and "**" not in pattern and not pattern.startswith("!")


def _file_names(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """For name patterns (_by_name): is a file with this name excluded?  A folder-only pattern
    (trailing /) never excludes a file; a plain name, `*suffix`, `prefix*` or `prefix*suffix` (the
    defaults) is a set lookup or str.endswith / startswith, at C speed, per file of every scan;
    any other pattern goes through pathspec's own regex, as before."""
    *plain, rest = _classify([p for p in patterns if not p.endswith("/")])
    if not rest:
        return _name_test(*plain)
    import pathspec  # lazy: only a name pattern that is not plain needs its regex

    return _name_test(*plain, others=_combined(pathspec.GitIgnoreSpec.from_lines(rest)))


def _plain_names(patterns: tuple[str, ...]) -> Callable[[str], bool] | None:
    """The whole match of gitignore patterns that are all plain names (_classify: the defaults),
    without pathspec; None when one is anything else.  Such a pattern matches a name at any
    depth, and everything below a folder it matches: a path is excluded when one of its folders'
    names matches a pattern, or its own name (a file's, or a folder's given as "name/") one that
    is not for folders only.  tests/test_paths.py holds it to pathspec's own answers."""
    if not all(map(_by_name, patterns)):
        return None
    files = [p for p in patterns if not p.endswith("/")]
    folders_only = [p[:-1] for p in patterns if p.endswith("/")]
    if any(not p.strip() or p.endswith("/") for p in folders_only):
        return None  # "/" or "name//": left to pathspec
    *for_files, rest = _classify(files)
    *for_folders, rest_folders = _classify(folders_only)
    if rest or rest_folders:
        return None
    # One search, at C speed: a name the patterns match, whole between slashes (or the path's
    # ends); a folder-only one must be followed by a slash.
    either, folder = _name_regex(*for_files), _name_regex(*for_folders)
    alternatives = [f"(?:{either})(?:/|$)" if either else "", f"(?:{folder})/" if folder else ""]
    if not any(alternatives):
        return lambda path: False
    regex = re.compile("(?:^|/)(?:" + "|".join(a for a in alternatives if a) + ")")
    return lambda path: regex.search(path) is not None


def _name_regex(exact: set, ends: tuple, starts: tuple, around: list) -> str:
    """One regex alternation for whole names: exact, `*suffix`, `prefix*`, `prefix*suffix`."""
    some = "[^/]*"
    return "|".join([*(re.escape(n) for n in sorted(exact)), *(some + re.escape(e) for e in ends),
                     *(re.escape(b) + some for b in starts), *(re.escape(b) + some + re.escape(a) for b, a in around)])


def _classify(patterns) -> tuple[set, tuple, tuple, list, list]:
    """Name patterns by how a name is tested: (exact names, `*suffix`es, `prefix*`es,
    `prefix*suffix` pairs, the rest: any other glob, or spaces gitignore reads its own way).
    Blank lines and comments are no patterns."""
    exact, suffixes, prefixes, around, rest = set(), [], [], [], []
    for pattern in patterns:
        if not pattern.strip() or pattern.startswith("#"):  # blank or a comment: no pattern (gitignore)
            continue
        if pattern.strip() != pattern:
            rest.append(pattern)  # spaces: as gitignore reads them
            continue
        plain = pattern[1:] if pattern[:2] in ("\\#", "\\!") else pattern  # an escaped leading # or !
        if any(c in plain for c in "\\?[]") or plain.startswith("!") or plain.count("*") > 1:
            rest.append(pattern)
        elif "*" not in plain:
            exact.add(plain)
        elif plain.startswith("*"):
            suffixes.append(plain[1:])
        elif plain.endswith("*"):
            prefixes.append(plain[:-1])
        else:
            around.append(tuple(plain.split("*")))
    return exact, tuple(suffixes), tuple(prefixes), around, rest


def _name_test(exact: set, ends: tuple, starts: tuple, around: list, others=None) -> Callable[[str], bool]:
    def excluded(name: str) -> bool:
        if name in exact or name.endswith(ends) or name.startswith(starts):
            return True
        for before, after in around:
            if name.startswith(before) and name.endswith(after) and len(name) >= len(before) + len(after):
                return True
        return others is not None and others(name)
    return excluded


def matcher(spec: pathspec.PathSpec) -> Callable[[str], bool]:
    """`spec.match_file` for wire paths (normalised already): one regex pass where no `!` pattern
    asks for pathspec's own last-match-wins order."""
    return spec.match_file if any(p.include is False for p in spec.patterns) else _combined(spec)


def _combined(spec: pathspec.PathSpec) -> Callable[[str], bool]:
    """With no `!` patterns a path is excluded when ANY pattern matches: one alternation of
    pathspec's own compiled regexes does that in a single pass (about 5x faster per path)."""
    parts = [p.regex.pattern.replace("(?P<ps_d>", "(") for p in spec.patterns
             if p.include and getattr(p, "regex", None) is not None]
    if len(parts) != sum(1 for p in spec.patterns if p.include):
        return spec.match_file
    if not parts:
        return lambda path: False
    # pathspec searches each regex; most are anchored (^…), but not all ("*/" is "/": a path with
    # a folder): one searched anywhere is matched after any prefix.
    regex = re.compile("|".join(f"(?:{part})" if part.startswith("^") else f"(?s:.*?)(?:{part})" for part in parts))
    return lambda path: regex.match(path) is not None
