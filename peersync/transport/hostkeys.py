"""What to say when a peer's SSH host key is not the one on record: a changed key is a possible attack.

An unknown key is the normal first contact: the message shows the fingerprint the peer presents,
for the user to check on that machine before trusting it.  A key that differs from the one on
record is what a man-in-the-middle looks like (or a reinstalled machine): it is refused loudly,
with the old and the new fingerprints, and with no advice to append the new key — which would
trust the attacker.  The control connection (the system ssh, or asyncssh) and rsync's ssh end up here.
The peer is looked at as `ssh` reaches it (transport/sshconfig.py: HostName, Port, the known_hosts
files of ~/.ssh/config), so the fingerprints and hints name what ssh really checked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from pathlib import Path

from peersync.errors import HostKeyError
from peersync.transport import sshconfig, sshfiles

_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
CHANGED_MARK = "REMOTE HOST IDENTIFICATION HAS CHANGED"


def as_reached(peer):
    """The peer with the host, port and known_hosts file `ssh -G` resolves for it (the peer as
    given when its config cannot be read: the connection itself then says why)."""
    try:
        dest = sshconfig.resolve(peer.host, user=peer.user, port=peer.port,
                                 identity=sshfiles.expand_home(peer.identity) if peer.identity else None,
                                 known_hosts=sshfiles.expand_home(peer.known_hosts) if peer.known_hosts else None)
    except ValueError:
        return peer
    known = peer.known_hosts or next((p for p in dest.known_hosts if os.path.isfile(p)), None)
    return dataclasses.replace(peer, host=dest.host, port=dest.port, known_hosts=known)


def known_hosts_file(peer) -> str | None:
    """The known_hosts file the connections to `peer` check against (None: none exists)."""
    if peer.known_hosts:
        return os.path.expanduser(peer.known_hosts)
    default = Path.home() / ".ssh" / "known_hosts"
    return str(default) if default.exists() else None


def recorded_fingerprints(peer) -> list[str]:
    """SHA256 fingerprints of the host keys (and CA keys) recorded for the peer's host and port."""
    import asyncssh  # lazy: start-up of the processes that never need it

    path = known_hosts_file(peer)
    if path is None:
        return []
    try:
        found = asyncssh.match_known_hosts(path, peer.host, peer.host, peer.port or 22)
    except (OSError, ValueError, asyncssh.Error):
        return []
    return list(dict.fromkeys(key.get_fingerprint("sha256") for key in [*found[0], *found[1]]))


async def presented_fingerprint(peer, timeout: float = 10.0) -> str | None:
    """The fingerprint of the key the peer presents now (a second connection that only asks
    for the host key and authenticates nothing); None when it cannot be had."""
    import asyncssh  # lazy: start-up of the processes that never need it

    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(peer.host, peer.port or 22), timeout)
    except (OSError, asyncssh.Error, asyncio.TimeoutError):
        return None
    return key.get_fingerprint("sha256") if key is not None else None


def refusal(peer, presented: str | None, recorded: list[str]) -> HostKeyError:
    """The error for a host key that could not be verified: changed (a key is on record, and the
    presented one is not it) or unknown."""
    where = f"{peer.host}" + (f" port {peer.port}" if peer.port and peer.port != 22 else "")
    file = known_hosts_file(peer) or "~/.ssh/known_hosts"
    if recorded and presented not in recorded:
        new = presented or "(could not be read)"
        return HostKeyError(
            f"HOST KEY CHANGED for {peer.name} ({where}): it now presents {new}, but {file} records "
            f"{', '.join(recorded)}. Someone may be intercepting the connection (a man-in-the-middle); "
            f"refusing to connect.",
            "Do not trust the new key unless the peer's owner confirms that fingerprint (a reinstalled "
            f"machine has a new key); only then remove the old entry: ssh-keygen -R {_host_pattern(peer)} -f {file}")
    shown = f": it presents {presented}" if presented else ""
    port = f"-p {peer.port} " if peer.port and peer.port != 22 else ""
    target = peer.known_hosts or "~/.ssh/known_hosts"
    return HostKeyError(
        f"host key of {peer.name} ({where}) is not known{shown}",
        (f"Check that fingerprint on the peer itself (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then "
         if presented else "Check the peer's fingerprint on the peer itself, then ")
        + f"trust it: ssh-keyscan {port}{peer.host} >> {target} (or use the key Tailscale reports: "
          "peersync discover --add).")


async def refusal_for(peer) -> HostKeyError:
    """The control connection's host key check failed: find out how, and say so."""
    peer = await asyncio.to_thread(as_reached, peer)
    presented = await presented_fingerprint(peer)
    recorded = await asyncio.to_thread(recorded_fingerprints, peer)
    return refusal(peer, presented, recorded)


async def from_openssh(peer, stderr: str) -> HostKeyError | None:
    """The refusal for OpenSSH's own host key failure in `stderr` (rsync's ssh), else None."""
    changed = CHANGED_MARK in stderr
    if not changed and "Host key verification failed" not in stderr:
        return None
    peer = await asyncio.to_thread(as_reached, peer)
    recorded = await asyncio.to_thread(recorded_fingerprints, peer)
    found = [f for f in _FINGERPRINT.findall(stderr) if f not in recorded]
    presented = found[0] if found else await presented_fingerprint(peer)
    if changed and not recorded:
        recorded = ["(the key on record)"]
    return refusal(peer, presented, recorded)


def _host_pattern(peer) -> str:
    return f"'[{peer.host}]:{peer.port}'" if peer.port and peer.port != 22 else peer.host
