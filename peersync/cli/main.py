"""The command line's entry point: every command registered on the app, errors turned into one or
two readable lines (or a JSON error document under --json) and an exit code.  Commands parse,
call one function, render; no policy here."""

from __future__ import annotations

import sys

import click
import typer

from peersync.cli import auto, backup, cloud, conflicts, dashboard, discover, jsonout, peers, rclone, sync, trash
from peersync.cli.app import AppState, app
from peersync.cli.outcome import show_failure

__all__ = ["app", "run", "command"]


# Each area's commands, registered explicitly (one responsibility per module).
for _area in (peers, sync, conflicts, trash, backup, discover, auto, cloud, dashboard, rclone):
    _area.register(app)


def command() -> click.Command:
    """The click command behind the app (what the console script runs)."""
    return typer.main.get_command(app)


def run(argv: list[str] | None = None) -> None:
    """Console entry point: run the command; turn failures into one or two readable lines (and
    under --json into a document with `ok: false`) and the documented exit status."""
    argv = sys.argv[1:] if argv is None else argv
    cli = command()
    ctx_obj = AppState()
    wants_json = "--json" in _before_passthrough(argv)
    debug = "--debug" in _before_passthrough(argv)
    try:
        code = cli.main(args=argv, prog_name="peersync", standalone_mode=False, obj=ctx_obj)
    except click.ClickException as err:  # usage errors: exit 2 with click's message
        if wants_json:
            _print_error(ctx_obj, argv, "usage", err.format_message(), _usage_hint(err), err.exit_code)
        else:
            err.show()
        sys.exit(err.exit_code)
    except click.Abort:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)
    except (Exception, KeyboardInterrupt) as err:
        if debug and not isinstance(err, KeyboardInterrupt):
            raise
        if wants_json:
            ctx_obj.command = ctx_obj.command or guess_command(argv)
        sys.exit(show_failure(err, json_out=wants_json, command=ctx_obj.command, root=ctx_obj.workspace_root))
    sys.exit(code or 0)


def _before_passthrough(argv: list[str]) -> list[str]:
    """The arguments peersync itself reads: everything before `rclone` (whose own are passed on)."""
    return argv[:argv.index("rclone")] if "rclone" in argv else argv


def _usage_hint(err: click.ClickException) -> str | None:
    ctx = getattr(err, "ctx", None)
    return f"Try '{ctx.command_path} --help'." if ctx is not None else "Try 'peersync --help'."


def _print_error(st: AppState, argv: list[str], kind: str, message: str, hint: str | None, code: int) -> None:
    st.command = st.command or guess_command(argv)
    print(jsonout.dumps(st.document(None, error=jsonout.error_doc(kind, message, hint, code))))


def guess_command(argv: list[str]) -> str:
    """The command words of a command line that failed before its command ran (`peers add`)."""
    group = command()
    words: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("-w", "--workspace", "--ssh-config"):
            skip = True
            continue
        if arg.startswith("-"):
            continue
        if not isinstance(group, click.Group) or arg not in group.commands:
            break
        words.append(arg)
        group = group.commands[arg]
    return " ".join(words)
