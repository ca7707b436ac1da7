"""Adding and removing peers (peers.json stays in the clawdbot-sync format)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil

from peersync.cloud.config import (
    ENV_REMOTE,
    MODES,
    CloudSpec,
    check_folder,
    is_cloud,
    provider_settings,
    state_dir,
)
from peersync.cloud.folder import probe_cloud
from peersync.core.paths import valid_instance_id
from peersync.errors import UsageError
from peersync.peers.status import probe
from peersync.transport import keeper
from peersync.transport.rclone import join, resolve_target
from peersync.workspace.workspace import Peer, Workspace, check_peer_name


def add_peer(ws: Workspace, name: str, host: str, *, user=None, path=None, port=None, identity=None,
             known_hosts=None, command=None, test: bool = True) -> tuple[Peer, dict | None]:
    """Save the peer, then test the connection.  The peer is saved even if the test fails
    (as clawdbot-sync does): the other machine may simply be asleep."""
    check_peer_name(name)
    peers = ws.load_peers()  # a malformed peers.json stops here, untouched
    old = peers.get(name)
    expand = lambda p: os.path.abspath(os.path.expanduser(p)) if p else None  # noqa: E731
    peer = Peer(name=name, host=host, user=user, path=path,
                added_at=old.added_at if old else dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                port=port, identity=expand(identity), known_hosts=expand(known_hosts), command=command,
                extra=old.extra if old and old.host == host else {})
    peers[name] = peer
    ws.save_peers(peers)
    if old is not None and old.extra.get("type") != "cloud" and keeper.settings(old) != keeper.settings(peer):
        keeper.stop(ws, old)  # its connection was made with settings that no longer hold
    if not test:
        return peer, None
    result = asyncio.run(probe(ws, peer))
    if valid_instance_id(result.get("instance_id")):
        peer = Peer(**{**peer.__dict__, "extra": {**peer.extra, "instanceId": result["instance_id"]}})
        peers[name] = peer
        ws.save_peers(peers)
    return peer, result


def remove_peer(ws: Workspace, name: str) -> None:
    peer = ws.peer(name)  # UnknownPeer when absent
    if peer.extra.get("type") == "cloud":
        remove_cloud_peer(ws, name)
        return
    peers = ws.load_peers()
    del peers[name]
    ws.save_peers(peers)
    keeper.stop(ws, peer)  # a removed peer's warm connection goes too
    instance = peer.extra.get("instanceId")
    if isinstance(instance, str) and instance.isalnum():
        try:
            (ws.state / "ancestors" / f"{instance}.json").unlink()
        except FileNotFoundError:
            pass


# -- cloud folders as peers (cloud/) ------------------------------------------------------------
def add_cloud_peer(ws: Workspace, name: str, remote: str, *, mode: str, folder: str | None = None,
                   direction: str | None = None, provider: str | None = None, test: bool = True
                   ) -> tuple[Peer, dict | None]:
    """Save a cloud peer, then test that rclone can reach its folder (saved even if it cannot)."""
    check_peer_name(name)
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}", "Use --mode mailbox (safest), mirror or bisync.")
    if direction is not None and mode != "mirror":
        raise UsageError("--direction is for --mode mirror only",
                         "A mailbox always pushes; bisync goes both ways.")
    try:
        spec = CloudSpec(remote=remote, mode=mode, direction=direction or "push",
                         folder=check_folder(folder) if folder else None, provider=provider)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if provider:
        provider_settings(ws, provider)  # unknown provider → UsageError now, not at the first sync
        display = join(f"{provider}:{spec.remote.strip('/')}", spec.folder or "")
    else:
        display = join(resolve_target(spec.remote, env_name=ENV_REMOTE, cwd=ws.root).display, spec.folder or "")
    peers = ws.load_peers()  # a malformed peers.json stops here, untouched
    old = peers.get(name)
    if old is not None and not is_cloud(old):
        raise UsageError(f"{name} is already an SSH peer", f"Pick another name, or first: peersync peers remove {name}")
    if old is not None:
        before = CloudSpec.from_peer(old)
        if (before.remote, before.folder, before.provider) != (spec.remote, spec.folder, spec.provider):
            shutil.rmtree(state_dir(ws, name), ignore_errors=True)  # another folder: nothing known about it
    peer = Peer(name=name, host=display, path=spec.folder,
                added_at=old.added_at if old else dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                extra=spec.extra())
    peers[name] = peer
    ws.save_peers(peers)
    if not test:
        return peer, None
    return peer, asyncio.run(probe_cloud(ws, peer))


def remove_cloud_peer(ws: Workspace, name: str) -> Peer:
    peer = ws.peer(name)  # UnknownPeer when absent
    if not is_cloud(peer):
        raise UsageError(f"{name} is not a cloud peer", f"Remove it with: peersync peers remove {name}")
    peers = ws.load_peers()
    del peers[name]
    ws.save_peers(peers)
    shutil.rmtree(state_dir(ws, name), ignore_errors=True)  # ancestor, hash cache, inbox journal
    return peer

