"""Forced-command mode for authorized_keys: a key that may run the peersync agent on ROOT and nothing else.

    command="peersync agent --restrict /home/me/clawd",restrict ssh-ed25519 AAAA…

Whatever root the client names, the agent serves ROOT, bounded by ROOT's own selection
(config.yaml): such a key can sync the files this side syncs, and nothing else.  It gets no
rsync and no shell: an rsync server, even confined to ROOT by rrsync, could read and write the
state dir (peers.json, config.yaml, which can name commands to run), IDENTITY.md and config/, or
plant symbolic links for the agent to follow.  Files of any size travel over the agent channel
instead (read_range / stage_chunk), verified by hash before they are installed.
"""

from __future__ import annotations

import os
import sys

AGENT = " agent --root "  # what every command peersync's client sends contains (transport.openssh.agent_command)


def route(root: str) -> int | None:
    """What a restricted key's request gets: None for the agent (the caller serves it,
    restricted); anything else — a shell, rsync, sftp, any command — is refused with an exit code."""
    original = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    if AGENT in f" {original} ":
        return None
    asked = original.split()[0] if original.split() else "a login shell"
    print(f"peersync: this key may only run the peersync agent on {root} (asked for {asked!r}); refused",
          file=sys.stderr)
    return 1
