"""Forced-command mode for authorized_keys: a key that may run only the agent and a confined rsync.

    command="peersync agent --restrict /home/me/clawd",restrict ssh-ed25519 AAAA…

Whatever the client asked for (SSH_ORIGINAL_COMMAND), it gets either the agent on ROOT or, for
`rsync --server …`, rsync confined to ROOT by rrsync (shipped with rsync; its option and path
checks are maintained by the rsync authors, so we do not re-implement them).  Anything else is
refused.  A stolen key therefore cannot read ~/.ssh or /etc.
"""

from __future__ import annotations

import os
import shutil
import sys

RRSYNC_CANDIDATES = ("rrsync", "/usr/bin/rrsync", "/usr/local/bin/rrsync", "/opt/homebrew/bin/rrsync",
                     "/usr/share/doc/rsync/support/rrsync")


def find_rrsync() -> str | None:
    for candidate in RRSYNC_CANDIDATES:
        found = shutil.which(candidate) if "/" not in candidate else (candidate if os.access(candidate, os.X_OK) else None)
        if found:
            return found
    return None


def route(root: str) -> int | None:
    """What a restricted key's request gets: None for the agent (the caller serves it, restricted);
    `rsync --server …` is replaced by rrsync confined to `root` (this call does not return then), or
    refused with an exit code when rrsync is missing."""
    original = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    words = original.split()
    if words[:2] == ["rsync", "--server"]:
        rrsync = find_rrsync()
        if rrsync is None:
            print("peersync: rsync is disabled for this key (rrsync not installed); "
                  "the client falls back to the agent channel", file=sys.stderr)
            return 126
        # -absolute: our client names paths under ROOT absolutely; -no-del: peersync never asks
        # rsync to delete (deletions go to the trash through the agent); -no-lock: the agent's
        # workspace lock already serialises writers.
        os.execv(rrsync, [rrsync, "-absolute", "-no-del", "-no-lock", root])
    return None
