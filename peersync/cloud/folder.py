"""A configured cloud folder: opening it as a replica, probing it for `status`, clearing our locks."""

from __future__ import annotations

import asyncio
import json
import os
import time

from peersync.cloud.config import CloudSpec, resolve
from peersync.cloud.mailbox import MailboxSession
from peersync.cloud.session import META, CloudSession, cloud_id, run_rclone
from peersync.errors import PeersyncError
from peersync.transport.rclone import Rclone
from peersync.workspace.workspace import Peer, SyncConfig, Workspace


async def open_cloud(ws: Workspace, peer: Peer, spec: CloudSpec, cfg: SyncConfig) -> CloudSession:
    target = resolve(ws, spec)
    rc = await asyncio.to_thread(Rclone, env={**os.environ, **target.env}, secrets=target.secrets)
    kind = MailboxSession if spec.mode == "mailbox" else CloudSession
    return await kind.open(ws, peer, target.root, rc, cfg.selection, mailbox=spec.mode == "mailbox", key=target.key)


async def probe_cloud(ws: Workspace, peer: Peer, *, timeout: float = 10.0) -> dict:
    """status for a cloud peer (same keys as status.probe): can rclone list the folder, how fast."""
    started = time.monotonic()
    out = {"peer": peer.name, "host": peer.host, "user": None, "path": peer.path, "reachable": False,
           "kind": "cloud", "mode": peer.extra.get("mode")}
    try:
        spec = CloudSpec.from_peer(peer)
        target = resolve(ws, spec)
        rc = await asyncio.to_thread(Rclone, env={**os.environ, **target.env}, secrets=target.secrets)
        args = ["lsjson", "--max-depth", "1", "--no-mimetype", target.root]
        asked = time.monotonic()
        code, listing, err = await asyncio.wait_for(run_rclone(rc, args, check=False), timeout)
        rtt = time.monotonic() - asked
        missing = code == 3 or "directory not found" in err
        if code != 0 and not missing:
            raise rc.error(args, code, err)
    except PeersyncError as err:
        out["error"] = str(err)
        return out
    except asyncio.TimeoutError:
        out["error"] = f"no answer from {peer.host} within {timeout:g} s"
        return out
    out.update(reachable=True, rtt_ms=round(rtt * 1000, 1), clock_offset_s=0.0,
               version="rclone " + ".".join(map(str, rc.version)),
               workspace=not missing and bool(json.loads(listing or b"[]")),  # an empty folder: nothing yet
               instance_id=cloud_id(target.key), restricted=None, seconds=round(time.monotonic() - started, 3))
    return out


async def unlock(ws: Workspace, peer: Peer, *, everyone: bool) -> list[str]:
    """Remove this instance's leftover cloud locks — or, when a person says so, every lock."""
    spec = CloudSpec.from_peer(peer)
    session = await open_cloud(ws, peer, spec, ws.sync_config())
    try:
        removed = []
        for name in sorted(await session.list_locks()):
            if everyone or name.startswith(ws.instance_id + "-"):
                await session.rclone("deletefile", session.at(META, "locks", name))
                removed.append(name)
        return removed
    finally:
        await session.close()

