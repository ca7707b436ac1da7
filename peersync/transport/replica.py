"""The replica interface: what the sync pipeline (sync/pipeline.py) asks of the other side of a pair.

Four kinds implement it — the local workspace in-process (transport/local.py), an agent over SSH,
the same agent through a keeper's warm connection (transport/ssh.py, daemons/keeper.py), and a cloud
folder through rclone (cloud/session.py).  Every one answers the agent's operations by name
(`request(op, **args)`: scan, read, install, delete, quarantine, ancestor_get/put, tombstones_get/add,
logbase_get/save, lock, housekeeping…); where a kind differs, it says so in its Capabilities, and
the one pipeline follows them.  There is no second orchestration.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Mapping


@dataclass(frozen=True)
class Capabilities:
    """What a kind of replica can do; the pipeline reads these instead of asking what it is."""

    kind: str  # "local", "ssh", "kept" (an agent through a keeper), "cloud": for reports and logs
    keeps_ancestor: bool = True  # holds its own copy of the pair's ancestor (and log bases, deletion
    #   records); a cloud folder holds none: its replica object keeps them on this machine instead
    takes_mtimes: bool = True  # an mtime can be given to a file there (a cloud keeps its own modtimes)
    keeps_conflicts: bool = True  # its losing versions are kept in its own conflicts/ (a cloud's are
    #   kept in ours: copies in both directions then write our conflicts index, one after the other)
    rsync: bool = True  # rsync over SSH reaches its root (an agent that is not restricted)
    transfer: str = "agent"  # "agent": bytes travel through the agent protocol (and rsync where it
    #   reaches); "rclone": the replica moves bytes itself (uploads from our workspace on install,
    #   downloads into our staging for us)
    delta_scan: bool = True  # can answer a scan with only what differs from a shared ancestor
    lock_in_dry_run: bool = True  # taking its lock changes nothing there (a cloud lock is an object)
    may_vanish: bool = False  # can look empty without being so (an unmounted folder, an expired share)
    links: bool = True  # holds symbolic links and empty folders as such (a cloud folder does not: those
    #   of ours are left out of what it syncs, and reported once)
    raw_names: bool = True  # holds a name that is not UTF-8 as its bytes, where its volume does (rclone
    #   rewrites such bytes: a cloud folder is sent none, each reported once)
    own_retention: bool = True  # ages its trash and deletion records by its own config.yaml, never by
    #   ours (a cloud folder has no config: ours applies, and is sent)
    in_order: bool = True  # answers requests one at a time in the order sent (an agent's stream), so
    #   one that must follow another can be sent before the first is answered: a round trip saved


AGENT = Capabilities("ssh")
KEPT = Capabilities("kept")  # an agent through a keeper's warm connection
LOCAL = Capabilities("local", rsync=False, in_order=False)  # each request in a thread of its own
CLOUD = Capabilities("cloud", keeps_ancestor=False, takes_mtimes=False, keeps_conflicts=False, rsync=False,
                     transfer="rclone", delta_scan=False, lock_in_dry_run=False, may_vanish=True,
                     own_retention=False, links=False, raw_names=False, in_order=False)


def agent_caps(base: Capabilities, hello: dict) -> Capabilities:
    """An agent's capabilities as its hello tells them: rsync only where it has one for us — never
    for a restricted key, whose agent refuses rsync (large files then travel in ranges)."""
    if hello.get("rsync") and not hello.get("restricted"):
        return base
    return replace(base, rsync=False)


class Replica(abc.ABC):
    """The other side of a pair.  Subclasses provide `request` and `close`; the pipeline hooks below
    have the agent protocol's meaning by default, and a cloud folder overrides them."""

    caps: Capabilities = AGENT
    hello: dict
    offset: float = 0.0  # its clock minus ours, seconds (0 where it has no clock of its own)

    @abc.abstractmethod
    async def request(self, op: str, **args) -> Any:
        """One operation, by name, with the agent's arguments and answer (see the docstring above)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End this use of the replica: release its lock and staging (a kept agent stays up)."""

    async def scan(self, *, local: Awaitable[Mapping] | None = None, save_cache: bool = True,
                   base_peer: str | None = None, base_digest: str | None = None) -> dict:
        """Its manifest: {"entries", "problems", "dead"} (+ "delta", "deleted" for a delta scan).
        `local`: our own scan, for a replica that needs it to name its versions (a cloud folder's
        hashes); an agent scans on its own, at once."""
        return await self.request("scan", save_cache=save_cache, base_peer=base_peer, base_digest=base_digest)

    def local_view(self, entries: Mapping) -> Mapping:
        """The part of our manifest this replica syncs (a mailbox leaves its own folders out)."""
        return entries

    async def finish(self, ws, report, *, dry_run: bool) -> None:
        """After the pair's commit: whatever else this replica does in a run (a mailbox delivers)."""
