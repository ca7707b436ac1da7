"""The `discover` command: Tailscale devices that run peersync, and `--add` to make them peers."""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
import asyncio
import io
import os
import shlex
from typing import Optional

import typer

from peersync.cli.app import state


def register(app: typer.Typer) -> None:
    app.command("discover")(discover_command)


def discover_command(
    ctx: typer.Context,
    add: bool = typer.Option(False, "--add", help="Register the devices that run peersync as peers."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Only devices with this ACL tag (e.g. peersync or tag:peersync)."),
    all_: bool = typer.Option(False, "--all", help="List offline devices too (they are not probed)."),
    user: Optional[str] = typer.Option(None, "--user", help="SSH user on the peers."),
    path: Optional[str] = typer.Option(None, "--path", help="Workspace path on the peers."),
    port: Optional[int] = typer.Option(None, "--port", min=1, max=65535, help="SSH port on the peers."),
    identity: Optional[str] = typer.Option(None, "--identity", help="SSH private key file."),
    remote_command: Optional[str] = typer.Option(None, "--remote-command", help="How to run peersync on the peers."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds to wait for each peer."),
) -> None:
    """Tailscale peers that run peersync; --add registers them."""

    app_state = state(ctx)
    ws = app_state.workspace()
    if identity:
        identity = os.path.abspath(os.path.expanduser(identity))  # as `peers add` stores it
    from peersync.discovery.discover import (  # deferred: only this command needs it
        ProbeOptions,
        discover,
    )

    opts = ProbeOptions(user=user, path=path, port=port, identity=identity, command=remote_command,
                        timeout=timeout)
    result = asyncio.run(discover(ws, tag=tag, include_offline=all_, add=add, opts=opts))
    app_state.emit(render(result, add=add, again=_again_args(tag, all_, user, path, port, identity, remote_command)),
                   result.to_json())


def render(result, *, add: bool, again: str = "") -> str:
    """Chat text: one headline, the table, then what was added and what to do about the rest."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from peersync.discovery.discover import AUTH, HOST_KEY, NO_WORKSPACE

    found = [p for p in result.probes if p.reachable]
    if not result.probes:
        return "🔎 No other devices on the tailnet match (try --all, or drop --tag)."
    lines = [f"🔎 {len(result.probes)} device(s) on the tailnet, {len(found)} with peersync"]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("name", "Tailscale IP", "OS", "online", "peersync"):
        table.add_column(column)
    for p in result.probes:
        table.add_row(p.device.name, p.device.ipv4 or "-", p.device.os or "?",
                      "yes" if p.device.online else "no", f"✅ {p.version}" if p.reachable else p.reason)
    out = io.StringIO()
    Console(file=out, width=100, color_system=None, force_terminal=False).print(table)
    lines.append("\n".join(line.rstrip() for line in out.getvalue().strip("\n").splitlines()))
    for item in result.added:
        verb = "Updated" if item.updated else "Added"
        pinned = (f" — host key pinned from Tailscale ({', '.join(item.pinned)})" if item.pinned
                  else " — host key from your known_hosts")
        lines.append(f"✅ {verb} peer {item.peer.name} ({item.peer.host}){pinned}")
    for name, why in result.skipped:
        lines.append(f"⏭️ Not added {name}: {why}")
    once: set[str] = set()
    for p in result.probes:
        if p.outcome == HOST_KEY and p.hint:
            lines.append(f"🔑 {p.hint}")  # per device: it names the address to check
        elif p.outcome in (AUTH, NO_WORKSPACE) and p.hint and p.outcome not in once:
            once.add(p.outcome)
            lines.append(f"💡 {p.hint}")
    if found and not add:
        lines.append(f"➕ Add them with: peersync discover --add{again}")
    lines.extend(f"ℹ️ {note}" for note in result.notes)
    return "\n".join(lines)


def _again_args(tag, all_, user, path, port, identity, remote_command) -> str:
    parts: list[str] = []
    for flag, value in (("--tag", tag), ("--user", user), ("--path", path), ("--port", port),
                        ("--identity", identity), ("--remote-command", remote_command)):
        if value is not None:
            parts += [flag, str(value)]
    if all_:
        parts.append("--all")
    return "".join(" " + shlex.quote(p) for p in parts)
