"""The Typer application and its global options (-w, --json, --debug); commands register on it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import typer

from peersync import __version__
from peersync.workspace.workspace import Workspace

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Keep AI-agent workspaces in sync over SSH, and back them up through rclone.",
    pretty_exceptions_enable=False,
)


@dataclass
class AppState:
    """Global options, available to every command as `ctx.obj`."""

    workspace_option: str | None
    json: bool
    debug: bool

    def workspace(self) -> Workspace:
        return Workspace.resolve(self.workspace_option)

    def emit(self, human: str, doc) -> None:
        """Print chat-style text, or one JSON document with --json."""
        if self.json:
            print(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
        elif human:
            print(human)


def state(ctx: typer.Context) -> AppState:
    return ctx.find_root().obj


def _version(value: bool) -> None:
    if value:
        print(f"peersync {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    workspace: Optional[str] = typer.Option(None, "-w", "--workspace", help="Workspace (default: $WORKSPACE, else the current directory)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ctx.obj = AppState(workspace, json_out, debug)

