"""Two workspaces wired to each other as peers through a loopback sshd."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from peersync.testing.sshd import LoopbackSSHD
from peersync.workspace.workspace import Workspace


def default_remote_command() -> str:
    """How a peer starts peersync over SSH: this interpreter, since a non-interactive SSH
    session has a thin PATH without the venv."""
    return f"{shlex.quote(sys.executable)} -m peersync"


@dataclass
class WorkspacePair:
    """`local` knows `remote` as peer `peer_name`; `remote` knows `local` as `back_name`."""

    local: Workspace
    remote: Workspace
    sshd: LoopbackSSHD
    command: str
    peer_name: str = "remote"
    back_name: str = "local"

    def peer(self):
        return self.local.peer(self.peer_name)

    def back_peer(self):
        return self.remote.peer(self.back_name)


def wire_pair(local_root: Path | str, remote_root: Path | str, sshd: LoopbackSSHD, *,
              command: str | None = None, peer_name: str = "remote",
              back_name: str = "local") -> WorkspacePair:
    """Create both workspace roots (if needed) and write each side's peers.json so that either
    side can start a sync with the other.  Existing peers in those files are kept."""
    command = command or default_remote_command()
    local, remote = Workspace(local_root), Workspace(remote_root)
    for ws, name, other in ((local, peer_name, remote), (remote, back_name, local)):
        ws.root.mkdir(parents=True, exist_ok=True)
        peers = ws.load_peers()
        peers[name] = sshd.make_peer(name, path=other.root, command=command)
        ws.save_peers(peers)
    return WorkspacePair(local=local, remote=remote, sshd=sshd, command=command,
                         peer_name=peer_name, back_name=back_name)
