"""Adding and removing peers (peers.json stays in the clawdbot-sync format)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os

from peersync.workspace import Peer, Workspace, check_peer_name


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
    if old is not None and old.extra.get("type") != "cloud":
        from peersync import keeper

        if keeper.settings(old) != keeper.settings(peer):
            keeper.stop(ws, old)  # its connection was made with settings that no longer hold
    if not test:
        return peer, None
    from peersync.agent import valid_instance_id
    from peersync.status import probe

    result = asyncio.run(probe(ws, peer))
    if valid_instance_id(result.get("instance_id")):
        peer = Peer(**{**peer.__dict__, "extra": {**peer.extra, "instanceId": result["instance_id"]}})
        peers[name] = peer
        ws.save_peers(peers)
    return peer, result


def remove_peer(ws: Workspace, name: str) -> None:
    peer = ws.peer(name)  # UnknownPeer when absent
    if peer.extra.get("type") == "cloud":
        from peersync.cloud_config import remove_cloud_peer

        remove_cloud_peer(ws, name)
        return
    peers = ws.load_peers()
    del peers[name]
    ws.save_peers(peers)
    from peersync import keeper

    keeper.stop(ws, peer)  # a removed peer's warm connection goes too
    instance = peer.extra.get("instanceId")
    if isinstance(instance, str) and instance.isalnum():
        try:
            (ws.state / "ancestors" / f"{instance}.json").unlink()
        except FileNotFoundError:
            pass
