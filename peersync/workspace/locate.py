"""Which directory is the workspace — the -w option, $WORKSPACE, the peersync workspace around the
current directory, OpenClaw's configured workspace, else the current directory — and whether it may be used.

The one way peersync locates a workspace: Workspace.resolve and the CLI's fast paths (cli/quick.py,
the heartbeat) all call locate() and check().  Light on purpose (os and pathlib; OpenClaw's module
is imported only when the earlier sources gave nothing, and answers from its cache).
"""

from __future__ import annotations

import os
import pwd
from collections import namedtuple
from pathlib import Path

from peersync.core.paths import STATE_DIR
from peersync.errors import UsageError

# What an agent workspace holds (OpenClaw's bootstrap files, Clawdbot's memory), any one of them.
MARKERS = ("MEMORY.md", "memory", "AGENTS.md", "SOUL.md", "USER.md", "IDENTITY.md", "HEARTBEAT.md", "TOOLS.md")

OPTION, ENV, CWD, OPENCLAW = "-w", "$WORKSPACE", "the current directory", "OpenClaw's config"


class Located(namedtuple("Located", "root source")):
    """A workspace root (a Path) and where the choice came from (OPTION, ENV, CWD or OPENCLAW), for
    messages.  A named tuple, not a dataclass: the CLI's fast path imports this module, and
    dataclasses costs it ~9 ms."""

    __slots__ = ()

    @property
    def said(self) -> str:
        """`/path (from -w)`: which workspace was used, in a message."""
        return f"{self.root} (from {self.source})"


def home_dirs() -> set[Path]:
    """The user's home directory as $HOME says and as the passwd entry says (they can differ)."""
    homes = {Path(os.path.expanduser("~")).absolute()}
    try:
        homes.add(Path(pwd.getpwuid(os.getuid()).pw_dir).absolute())
    except KeyError:
        pass
    return homes


def locate(option: str | None, env=os.environ, cwd: str | None = None) -> Located:
    """-w, else $WORKSPACE, else the current directory or the nearest directory above it that holds
    peersync's state dir (as git finds its repository), else the workspace OpenClaw's config gives
    the agent (OpenClaw never sets $WORKSPACE), else the current directory.
    Nothing here checks the result: see check()."""
    if option:
        return Located(Path(option).expanduser().absolute(), OPTION)
    if env.get("WORKSPACE"):
        return Located(Path(env["WORKSPACE"]).expanduser().absolute(), ENV)
    here = Path(cwd or os.getcwd()).absolute()
    homes = home_dirs()
    for candidate in (here, *here.parents):
        if candidate in homes or candidate == candidate.parent:
            break  # never above the home directory, never the root
        if (candidate / STATE_DIR).is_dir():
            return Located(candidate, CWD)
    from peersync.workspace.openclaw import configured_workspace  # lazy: only when -w and the rest gave nothing

    configured = configured_workspace()
    if configured:
        return Located(Path(configured).absolute(), OPENCLAW)
    return Located(here, CWD)


def looks_like_workspace(root: Path) -> bool:
    """peersync's state dir, or any file an agent keeps in its workspace."""
    return (root / STATE_DIR).is_dir() or any((root / name).exists() for name in MARKERS)


def check(found: Located, *, init: bool = False) -> Path:
    """The root, if it may be used as a workspace; else a UsageError that says which directory
    was chosen, why it was refused and what to do.  `init` (the --init option) accepts a
    directory that does not look like a workspace yet (and creates a missing one); the home
    directory is refused even then: a workspace there would sync ~/memory and ~/MEMORY.md."""
    root = found.root
    if root in home_dirs() or root == root.parent:
        raise UsageError(f"refusing {found.said} as a workspace: it is your home directory" if root != root.parent
                         else f"refusing {found.said} as a workspace: it is the root directory",
                         "Point -w (or $WORKSPACE) at the agent's workspace, e.g. -w ~/clawd or "
                         "-w ~/.openclaw/workspace.")
    if not root.exists() and init:
        root.mkdir(parents=True)
    if not root.is_dir():
        raise UsageError(f"workspace {found.said} does not exist",
                         "Check the path, or add --init to create it as a new workspace.")
    if not init and found.source != OPENCLAW and not looks_like_workspace(root):  # OpenClaw's is the agent's
        raise UsageError(f"{found.said} does not look like an agent workspace "
                         f"(none of {', '.join(MARKERS[:4])}… and no {STATE_DIR}/)",
                         "Use -w PATH (or $WORKSPACE) for the agent's workspace, or add --init to make "
                         "this directory one.")
    return root
