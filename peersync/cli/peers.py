"""CLI commands for the peers of this workspace: peers list|add|set|remove."""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
from typing import List, Optional

import typer

from peersync.cli.app import state
from peersync.cli.jsonout import error_doc
from peersync.errors import ConnectError

peers_app = typer.Typer(help="The peers of this workspace (peers.json).", no_args_is_help=True)

NAME = typer.Argument(..., help="The peer's name here (letters, digits, '-', '_', '.'), e.g. mac-mini.")
HOST_HELP = ("The peer's SSH destination: a host name, an address or a Host alias from ~/.ssh/config "
             "(HostName, User, Port, IdentityFile… come from there, as for ssh); [USER@]HOST[:PORT] also works.")
USER = typer.Option(None, "--user", "-u", help="SSH user on the peer (default: from the ssh config, else yours).")
PATH_HELP = ("The workspace path on the peer (default: the same path as here). Quote a ~ so that the peer's own "
             "home is meant: --path '~/clawd'.")
PORT = typer.Option(None, "--port", min=1, max=65535, help="SSH port (default: from the ssh config, else 22).")
IDENTITY = typer.Option(None, "--identity", "-i", help="SSH private key file (default: from the ssh config / ssh-agent).")
KNOWN_HOSTS = typer.Option(None, "--known-hosts", help="known_hosts file for this peer (default: the ssh config's).")
REMOTE_COMMAND = typer.Option(None, "--remote-command",
                              help="How to run peersync on the peer when it is not on its PATH, e.g. "
                                   "'/home/me/.local/bin/peersync'.")
CREATE = typer.Option(False, "--create", help="Make the workspace on the peer when the path does not exist "
                                              "or does not look like an agent workspace yet.")
UNSET_NAMES = {"remote_command": "command", "remote-command": "command", "known-hosts": "known_hosts"}
NO_TEST = typer.Option(False, "--no-test", help="Do not connect now (nor check the path).")


def peer_json(name: str, peer) -> dict:
    """A peer in the CLI's JSON (snake_case; peers.json keeps clawdbot-sync's camelCase)."""
    out = {"name": name, "host": peer.host, "user": peer.user, "path": peer.path, "port": peer.port,
           "identity": peer.identity, "known_hosts": peer.known_hosts, "remote_command": peer.command,
           "added_at": peer.added_at, "type": peer.extra.get("type", "ssh"),
           "instance_id": peer.extra.get("instanceId")}
    if out["type"] == "cloud":
        out.update(mode=peer.extra.get("mode"), direction=peer.extra.get("direction"),
                   provider=peer.extra.get("provider"))
    return out


def probe_doc(result: dict | None) -> dict | None:
    """A connection test (peers.status.probe) in the CLI's JSON."""
    if result is None:
        return None
    keep = ("reachable", "rtt_ms", "clock_offset_s", "version", "workspace", "agent_workspace", "created", "root",
            "restricted", "seconds")
    doc = {k: result.get(k) for k in keep if k in result}
    doc["error"] = error_doc(result.get("error_kind") or "connect", result["error"], None, 3) \
        if result.get("error") else None
    return doc


def _saved(ctx: typer.Context, verb: str, name: str, peer, result: dict | None) -> None:
    """The outcome of add/set: saved, connected or not (exit 3 when the test failed)."""
    st = state(ctx)
    ws = st.workspace()
    where = f"{peer.target}:{peer.path or '(same path)'}" + (f" port {peer.port}" if peer.port else "")
    if result is None:
        human = f"✅ {verb} {name} ({where}) in {ws.root} — not tested"
    elif result["reachable"]:
        made = "; created the workspace there" if result.get("created") else ""
        human = (f"✅ {verb} {name} ({where}) in {ws.root} — connected in {_ms(result['rtt_ms'])}, "
                 f"peersync {result['version']}{made}")
    else:
        human = (f"⚠️ {verb} {name} ({where}) in {ws.root}, but the connection test failed:\n{result['error']}\n"
                 f"The peer is saved; `peersync status {name}` tests it again.")
    error = None
    if result is not None and not result["reachable"]:
        error = error_doc(result.get("error_kind") or "connect", result["error"].splitlines()[0],
                          "\n".join(result["error"].splitlines()[1:]) or None, ConnectError.exit_code)
    st.emit(human, {"peer": peer_json(name, peer), "saved": True, "test": probe_doc(result)}, error=error)
    if error is not None:
        raise typer.Exit(ConnectError.exit_code)


def _ms(value: float) -> str:
    from peersync.core.render import milliseconds

    return milliseconds(value)


@peers_app.command("list")
def peers_list(ctx: typer.Context) -> None:
    """The peers of this workspace."""
    st = state(ctx)
    ws = st.workspace()
    peers = ws.load_peers()
    lines = [f"• {p.name} — {p.target}:{p.path or '(same path)'}" + (f" port {p.port}" if p.port else "")
             for p in peers.values()]
    head = f"📂 {ws.root}: {len(peers)} peer{'s' if len(peers) != 1 else ''}"
    st.emit("\n".join([head, *lines]) if lines else
            f"📂 {ws.root}: no peers yet. Add one: peersync peers add NAME HOST --path P",
            {"peers": [peer_json(n, p) for n, p in sorted(peers.items())]})


@peers_app.command("add")
def peers_add(ctx: typer.Context, name: str = NAME,
              host: str = typer.Argument(..., help=HOST_HELP),
              user: Optional[str] = USER,
              path: Optional[str] = typer.Option(None, "--path", "-p", help=PATH_HELP),
              port: Optional[int] = PORT, identity: Optional[str] = IDENTITY,
              known_hosts: Optional[str] = KNOWN_HOSTS, remote_command: Optional[str] = REMOTE_COMMAND,
              create: bool = CREATE, no_test: bool = NO_TEST,
              replace: bool = typer.Option(False, "--replace", help="Replace a peer of the same name entirely "
                                                                  "(to change some settings: peers set).")) -> None:
    """Add a peer: connect, check its workspace path, then save it (a peer that does not answer is
    saved too, with exit status 3; a wrong path is not saved)."""
    from peersync.peers.manage import add_peer

    st = state(ctx)
    peer, result = add_peer(st.workspace(), name, host, user=user, path=path, port=port, identity=identity,
                            known_hosts=known_hosts, command=remote_command, test=not no_test, create=create,
                            replace=replace)
    _saved(ctx, "Added", name, peer, result)


@peers_app.command("set")
def peers_set(ctx: typer.Context, name: str = NAME,
              host: Optional[str] = typer.Option(None, "--host", help=HOST_HELP),
              user: Optional[str] = USER,
              path: Optional[str] = typer.Option(None, "--path", "-p", help=PATH_HELP),
              port: Optional[int] = PORT, identity: Optional[str] = IDENTITY,
              known_hosts: Optional[str] = KNOWN_HOSTS, remote_command: Optional[str] = REMOTE_COMMAND,
              unset: Optional[List[str]] = typer.Option(None, "--unset", help="Clear a setting (user, path, port, "
                                                        "identity, known_hosts or command); repeatable."),
              create: bool = CREATE, no_test: bool = NO_TEST) -> None:
    """Change some settings of a peer and keep the others; then test it as `peers add` does."""
    from peersync.peers.manage import set_peer

    st = state(ctx)
    peer, result = set_peer(st.workspace(), name, host=host, user=user, path=path, port=port, identity=identity,
                            known_hosts=known_hosts, command=remote_command,
                            unset=tuple(UNSET_NAMES.get(u, u) for u in unset or ()),
                            test=not no_test, create=create)
    _saved(ctx, "Updated", name, peer, result)


@peers_app.command("remove")
def peers_remove(ctx: typer.Context, name: str = typer.Argument(..., help="The peer to remove.")) -> None:
    """Remove a peer (what this workspace knew of it goes too; its files stay where they are)."""
    from peersync.peers.manage import remove_peer

    st = state(ctx)
    remove_peer(st.workspace(), name)
    st.emit(f"🗑️ Removed {name} from {st.workspace().root}", {"removed": name})


def register(app: typer.Typer) -> None:
    app.add_typer(peers_app, name="peers")
