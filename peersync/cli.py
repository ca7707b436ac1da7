"""The Typer CLI: parse, call one function, render.  No policy is decided here."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Optional

import typer

from peersync import __version__
from peersync.errors import PeersyncError
from peersync.workspace import Workspace

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


def _register_subcommands() -> None:
    """Each area registers its commands from its own module (one responsibility per module)."""
    import importlib

    for name in ("cli_sync", "cli_conflicts", "cli_backup", "cli_discover", "cli_auto", "cli_cloud", "cli_dashboard"):
        try:
            module = importlib.import_module(f"peersync.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"peersync.{name}":
                continue  # area not built into this version
            raise
        module.register(app)


_register_subcommands()


def run() -> None:
    """Console entry point: turn PeersyncError into one or two readable lines and an exit code."""
    debug = "--debug" in sys.argv
    try:
        app()  # standalone: usage errors exit 2 with click's message
    except PeersyncError as err:
        if debug:
            raise
        if "--json" in sys.argv:
            print(json.dumps({"ok": False, "error": err.message, "hint": err.hint}))
        print(f"❌ {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        if debug:
            raise
        print(f"❌ unexpected error: {err.__class__.__name__}: {err}\nRun again with --debug for details.",
              file=sys.stderr)
        sys.exit(1)
