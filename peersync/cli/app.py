"""The Typer application and its global options (-w, --json, --init, --ssh-config, --debug), which
every command also accepts anywhere on its command line; commands register on it."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Optional

import click
import typer
from typer.core import TyperGroup

from peersync import __version__
from peersync.cli import jsonout
from peersync.cli.examples import epilog
from peersync.transport.sshfiles import ENV_CONFIG
from peersync.workspace.workspace import Workspace

@dataclass
class AppState:
    """Global options, available to every command as `state(ctx)`."""

    workspace_option: str | None = None
    json: bool = False
    debug: bool = False
    init: bool = False
    command: str = ""  # "peers add": the `command` of its JSON document
    _ws: Workspace | None = field(default=None, repr=False)

    def workspace(self) -> Workspace:
        if self._ws is None:
            self._ws = Workspace.resolve(self.workspace_option, init=self.init)
        return self._ws

    @property
    def workspace_root(self):
        return self._ws.root if self._ws is not None else None

    def emit(self, human: str, doc: dict | None = None, *, error: dict | None = None) -> None:
        """Print chat-style text, or one JSON document (jsonout.document) with --json."""
        if self.json:
            print(jsonout.dumps(self.document(doc, error=error)), flush=True)
        elif human:
            print(human, flush=True)

    def document(self, doc: dict | None, *, error: dict | None = None) -> dict:
        return jsonout.document(self.command, doc, workspace=self.workspace_root, error=error)

    def event(self, fields: dict) -> None:
        """One line of a long-running command's JSON stream (watch, dashboard --serve)."""
        import json  # lazy: only streams need it here

        print(json.dumps(self.document(fields), ensure_ascii=False), flush=True)


def state(ctx: typer.Context) -> AppState:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = AppState()
    st = root.obj
    st.command = " ".join(c.info_name for c in _chain(ctx) if c.parent is not None)
    return st


def _chain(ctx: click.Context) -> list[click.Context]:
    out = []
    while ctx is not None:
        out.append(ctx)
        ctx = ctx.parent
    return list(reversed(out))


# -- global options, accepted before the command and anywhere after it -------------------------
def _setter(attr: str):
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is None or value is False:
            return value
        root = ctx.find_root()
        if root.obj is None:
            root.obj = AppState()
        if attr == "ssh_config":
            os.environ[ENV_CONFIG] = value  # read by transport/sshfiles.py here, in keepers and backups
        else:
            setattr(root.obj, attr, value)
        return value
    return callback


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        if "--json" in sys.argv[1:]:
            print(jsonout.dumps(jsonout.document("version", {"version": __version__})))
        else:
            print(f"peersync {__version__}")
        ctx.exit()


WORKSPACE_HELP = ("The agent's workspace (default: $WORKSPACE, else the current directory or the nearest one "
                  "above it holding peersync's state).")
JSON_HELP = "Print one JSON document (docs/output.schema.json) instead of chat text."
INIT_HELP = "Accept a directory that does not look like an agent workspace yet (and create a missing one)."
SSH_CONFIG_HELP = ("ssh config file to use, as `ssh -F FILE` (default: ~/.ssh/config of your account, as ssh "
                   "reads it; also $PEERSYNC_SSH_CONFIG).")
DEBUG_HELP = "Show tracebacks."


def global_params() -> list[click.Option]:
    """The options every command takes, wherever they appear on its command line."""
    return [
        click.Option(["-w", "--workspace"], metavar="PATH", expose_value=False, callback=_setter("workspace_option"),
                     help=WORKSPACE_HELP),
        click.Option(["--json"], is_flag=True, expose_value=False, callback=_setter("json"), help=JSON_HELP),
        click.Option(["--init"], is_flag=True, expose_value=False, callback=_setter("init"), help=INIT_HELP),
        click.Option(["--ssh-config"], metavar="FILE", expose_value=False, callback=_setter("ssh_config"),
                     help=SSH_CONFIG_HELP),
        click.Option(["--debug"], is_flag=True, expose_value=False, callback=_setter("debug"), help=DEBUG_HELP),
    ]


def takes_globals(cmd: click.Command) -> bool:
    """A pass-through command (`peersync rclone …`) hands every argument on untouched."""
    return not (cmd.context_settings or {}).get("ignore_unknown_options")


def add_globals(cmd: click.Command, path: str) -> None:
    """The global options and the examples (cli/examples.py) of `cmd` and the commands below it."""
    cmd.epilog = cmd.epilog or epilog(path)
    if takes_globals(cmd):
        names = {p.name for p in cmd.params}
        cmd.params.extend(p for p in global_params() if p.name not in names)
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            add_globals(sub, f"{path} {name}")


class PeersyncGroup(TyperGroup):
    """The root group: every command below it also takes the global options."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, sub in self.commands.items():
            add_globals(sub, name)


app = typer.Typer(
    cls=PeersyncGroup,
    add_completion=False,
    no_args_is_help=True,
    help="Keep AI-agent workspaces in sync over SSH, and back them up through rclone.\n\n"
         "Global options (-w, --json, --init, --ssh-config, --debug) go anywhere on the command line. "
         "Exit status: 0 done, 1 failed, 2 bad usage or input, 3 a peer could not be reached.",
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    workspace: Optional[str] = typer.Option(None, "-w", "--workspace", metavar="PATH", help=WORKSPACE_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    init: bool = typer.Option(False, "--init", help=INIT_HELP),
    ssh_config: Optional[str] = typer.Option(None, "--ssh-config", metavar="FILE", help=SSH_CONFIG_HELP),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    st = ctx.obj if isinstance(ctx.obj, AppState) else AppState()
    st.workspace_option = workspace or st.workspace_option
    st.json = json_out or st.json
    st.init = init or st.init
    st.debug = debug or st.debug
    if ssh_config:
        os.environ[ENV_CONFIG] = ssh_config
    ctx.obj = st
