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
from peersync.transport.sshconfig import split_port
from peersync.workspace.peer import check_peer_name
from peersync.workspace.workspace import Peer, Workspace


FIELDS = ("host", "user", "path", "port", "identity", "known_hosts", "command")


def split_host(host: str, user: str | None, port: int | None) -> tuple[str, str | None, int | None]:
    """`[user@]host[:port]` (or `[v6]:port`) as typed in `peers add` or the chat shim → (host, user,
    port).  An explicit --user/--port must agree with it."""
    given_user, at, rest = host.rpartition("@")
    name, given_port = split_port(rest if at else host)
    if not name or name.startswith("-") or any(c.isspace() or c in "/'\"`;" for c in name):
        raise UsageError(f"bad host {host!r}", "Give a host name, an address or a Host alias from ~/.ssh/config.")
    for what, given, option in (("user", given_user or None, user), ("port", given_port, port)):
        if given is not None and option is not None and given != option:
            raise UsageError(f"the {what} in {host!r} differs from --{what} {option}")
    return name, user or given_user or None, port or given_port


def add_peer(ws: Workspace, name: str, host: str, *, user=None, path=None, port=None, identity=None,
             known_hosts=None, command=None, test: bool = True, create: bool = False,
             replace: bool = False) -> tuple[Peer, dict | None]:
    """Check the peer (when it answers: its workspace path must exist and look like an agent's
    workspace, or `create` makes it one), then save it.  A peer that does not answer is saved
    anyway (as clawdbot-sync does: the other machine may simply be asleep); a wrong path is not."""
    check_peer_name(name)
    host, user, port = split_host(host, user, port)
    peers = ws.load_peers()  # a malformed peers.json stops here, untouched
    old = peers.get(name)
    if old is not None and not replace:
        raise UsageError(f"peer {name!r} already exists in {ws.root} ({old.target}:{old.path or '(same path)'})",
                         f"Change it with: peersync peers set {name} --port N (or --user, --path, …); "
                         f"replace it with: peers add {name} {host} … --replace")
    peer = Peer(name=name, host=host, user=user, path=path,
                added_at=old.added_at if old else _now(), port=port, identity=_expand(identity),
                known_hosts=_expand(known_hosts), command=command,
                extra=old.extra if old and old.host == host else {})
    return _check_and_save(ws, peer, test=test, create=create)


def set_peer(ws: Workspace, name: str, *, unset: tuple[str, ...] = (), test: bool = True, create: bool = False,
             **changes) -> tuple[Peer, dict | None]:
    """Change some settings of a peer and keep the others (`unset` clears fields); then check
    and save it as add_peer does."""
    old = ws.peer(name)  # UnknownPeer when absent
    if old.extra.get("type") == "cloud":
        raise UsageError(f"{name} is a cloud peer", f"Change it with: peersync cloud add {name} REMOTE --mode … --replace")
    bad = [f for f in unset if f not in FIELDS or f == "host"]
    if bad:
        raise UsageError(f"cannot unset {', '.join(bad)}",
                         "Unset one of: user, path, port, identity, known_hosts, command.")
    if changes.get("host"):
        changes["host"], changes["user"], changes["port"] = split_host(changes["host"], changes.get("user"),
                                                                       changes.get("port"))
    fields = {f: getattr(old, f) for f in FIELDS}
    fields.update({f: v for f, v in changes.items() if f in FIELDS and v is not None})
    fields.update({f: None for f in unset})
    for key in ("identity", "known_hosts"):
        if changes.get(key):
            fields[key] = _expand(changes[key])
    if not any(v is not None for f, v in changes.items() if f in FIELDS) and not unset:
        raise UsageError(f"nothing to change for {name}",
                         "Give what to change, e.g.: peersync peers set NAME --port 2222 (see --help).")
    extra = old.extra if fields["host"] == old.host else {k: v for k, v in old.extra.items() if k != "instanceId"}
    peer = Peer(name=name, added_at=old.added_at, extra=extra, **fields)
    return _check_and_save(ws, peer, test=test, create=create)


def _check_and_save(ws: Workspace, peer: Peer, *, test: bool, create: bool) -> tuple[Peer, dict | None]:
    result = asyncio.run(probe(ws, peer, create=create)) if test else None
    if result is not None and result.get("reachable"):
        problem = path_problem(peer, result, local_home=os.path.expanduser("~"))
        if problem is not None:
            raise problem
        if valid_instance_id(result.get("instance_id")):
            peer = Peer(**{**peer.__dict__, "extra": {**peer.extra, "instanceId": result["instance_id"]}})
    peers = ws.load_peers()
    old = peers.get(peer.name)
    peers[peer.name] = peer
    ws.save_peers(peers)
    if old is not None and old.extra.get("type") != "cloud" and keeper.settings(old) != keeper.settings(peer):
        keeper.stop(ws, old)  # its connection was made with settings that no longer hold
    return peer, result


def path_problem(peer: Peer, result: dict, *, local_home: str) -> UsageError | None:
    """Why the workspace path a peer answered about cannot be used (None when it can): missing
    (a typo, or a `~` this machine's shell expanded), the peer's home directory, or a directory
    that does not look like an agent's workspace.  Pure: the probe's answer in, a verdict out."""
    root, home = result.get("root") or peer.path or "?", result.get("home")
    where = f"{root} on {peer.name}"
    local_tilde = bool(peer.path) and (peer.path == local_home or peer.path.startswith(local_home + "/")) \
        and home is not None and home != local_home
    tilde_hint = (f"{peer.path} is in THIS machine's home directory: your shell expanded ~ before peersync saw "
                  f"it. Quote it for the peer's own home: --path '~{peer.path[len(local_home):]}'")
    if root == home:
        return UsageError(f"refusing {where} as a workspace: it is the home directory there",
                          tilde_hint if local_tilde else "Give the agent's workspace with --path, e.g. --path '~/clawd'.")
    if result.get("created"):
        return None
    if not result.get("workspace"):
        return UsageError(f"{where} does not exist",
                          tilde_hint if local_tilde else
                          "Check the path (--path); to start a new workspace there, add --create.")
    if not result.get("agent_workspace"):
        return UsageError(f"{where} does not look like an agent workspace (no MEMORY.md, memory/, AGENTS.md…)",
                          tilde_hint if local_tilde else
                          "Check the path (--path); to sync into this directory anyway, add --create.")
    return None


def _expand(path: str | None) -> str | None:
    return os.path.abspath(os.path.expanduser(path)) if path else None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


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
        for suffix in ("json", "marshal"):  # the ancestor, and its copy (replica/handler.py)
            (ws.state / "ancestors" / f"{instance}.{suffix}").unlink(missing_ok=True)


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
                added_at=old.added_at if old else _now(),
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

