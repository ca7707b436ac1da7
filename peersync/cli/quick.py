"""`peersync sync PEER` through a warm keeper, without loading the CLI or the sync engine here.

When the peer's keeper (keeper.py) is running, it already holds the SSH connection, the remote
agent, this workspace's stat cache and the engine's code: it runs the sync itself and sends
back the report, which this process only prints.  Anything this fast path does not handle
(several peers, unusual options, a cloud peer, a workspace or peers.json the CLI must complain
about) returns None and the ordinary CLI runs it.  Without a warm keeper (none running, busy, or
failing before it starts), this process runs the sync itself through the same functions as the
CLI's `sync` (cli/outcome.py), without loading click and typer.
"""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
import _socket
import json
import os
import sys
from pathlib import Path

from peersync.cli.jsonout import dumps, sync_doc, sync_status
from peersync.core.paths import STATE_DIR
from peersync.errors import PeersyncError
from peersync.transport.keeper import env_keep, socket_for
from peersync.transport.protocol import decode, encode
from peersync.transport.sshfiles import ENV_CONFIG
from peersync.workspace.locate import check, locate

COMMANDS = ("sync", "push", "pull")
# The global options (cli/app.py), accepted before the command and anywhere after it, as there.
GLOBAL_VALUES = {"-w": "workspace", "--workspace": "workspace", "--ssh-config": "ssh_config"}
GLOBAL_FLAGS = {"--json": "json", "--init": "init"}  # --debug: in-process, where a traceback can come from


def parse(argv: list[str]) -> dict | None:
    """The command lines the fast path takes, read exactly as the full CLI reads them; None for
    anything else (several peers, --help, an unknown or misplaced option…): the full CLI then
    runs — and reports a bad command line.  tests/test_cli_args.py holds the two to the same reading."""
    out = {"workspace": None, "ssh_config": None, "json": False, "init": False,
           "peer": None, "dry_run": False, "force": False, "policy": None, "mode": None}
    args = list(argv)
    positional_only = False
    while args:
        arg = args.pop(0)
        taken = _global(arg, args, out) if not positional_only else False
        if taken is None:
            return None
        if taken:
            continue
        if out["mode"] is None:  # before the command: only global options
            if arg not in COMMANDS:
                return None
            out["mode"] = arg
        elif positional_only or not arg.startswith("-") or arg == "-":
            if out["peer"] is not None:
                return None  # several peers: the full CLI runs them concurrently
            out["peer"] = arg
        elif arg == "--":
            positional_only = True
        elif arg in ("--dry-run", "-n"):
            out["dry_run"] = True
        elif arg == "--force":
            out["force"] = True
        elif out["mode"] == "sync" and (arg == "--policy" or arg.startswith("--policy=")):
            value = arg.split("=", 1)[1] if "=" in arg else (args.pop(0) if args else None)
            if value is None:
                return None
            out["policy"] = value
        else:
            return None
    return out if out["mode"] is not None else None


def _global(arg: str, args: list[str], out: dict) -> bool | None:
    """Consume one global option (True), or not one (False); None for a malformed one."""
    if arg in GLOBAL_FLAGS:
        out[GLOBAL_FLAGS[arg]] = True
        return True
    name, eq, value = arg.partition("=")
    if name in ("--workspace", "--ssh-config") and eq:
        out[GLOBAL_VALUES[name]] = value
        return True
    if arg in GLOBAL_VALUES:
        if not args:
            return None
        out[GLOBAL_VALUES[arg]] = args.pop(0)
        return True
    if arg.startswith("-w") and len(arg) > 2:  # -wPATH, as click reads a short option
        out["workspace"] = arg[2:]
        return True
    return False


def fast_main(argv: list[str]) -> int | None:
    keep = env_keep()
    opts = parse(argv)
    if opts is None:
        return None
    if opts["ssh_config"]:
        os.environ[ENV_CONFIG] = opts["ssh_config"]
    found = locate(opts["workspace"])
    if not found.root.is_dir():
        return None
    try:
        root = check(found, init=opts["init"])
    except PeersyncError:
        return None  # the full CLI says why
    try:
        peers = json.loads((root / STATE_DIR / "peers.json").read_bytes())["peers"]
        named = opts["peer"] is not None
        if not named:
            if len(peers) != 1:
                return None
            opts["peer"] = next(iter(peers))
        raw = peers[opts["peer"]]
        if raw.get("type") == "cloud" or not isinstance(raw.get("host"), str):
            return None
        remote_root = raw.get("path") or str(root)
        path = socket_for(str(root), opts["peer"], raw["host"], raw.get("user") or None, raw.get("port"),
                          raw.get("identity"), raw.get("knownHosts"), raw.get("command"), remote_root)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    reply = None
    if path is not None and keep != 0:
        reply = _ask(path, {"op": "run", "args": {"mode": opts["mode"], "dry_run": opts["dry_run"],
                                                    "force": opts["force"], "policy": opts["policy"]}})
    if not reply or not reply.get("ok"):
        # No warm keeper: this process connects anew.  Its ssh starts now, while the engine imports.
        _start_early(opts["peer"], raw, root)
        return _in_process(opts, [opts["peer"]] if named else None)
    docs, exits = reply["reports"], [e or 1 for e in reply["exits"]]
    if opts["json"]:
        doc, code = sync_doc(opts["mode"], docs, exits, root)
        print(dumps(doc))
    else:
        code = sync_status(docs, exits)
        print(reply["text"] if isinstance(reply.get("text"), str) else _render(docs, reply["exits"]))
    sys.stdout.flush()
    return code


def _in_process(opts: dict, peers: list[str] | None) -> int:
    """The sync in this process, as `peersync sync` runs it (cli/sync.py, cli/main.py: the same
    functions), without the CLI stack: the command line is read already."""
    from peersync.cli.outcome import show_failure, sync_and_print  # lazy: the engine comes with it
    from peersync.workspace.workspace import Workspace

    resolved = []

    def workspace() -> Workspace:
        resolved.append(Workspace.resolve(opts["workspace"], init=opts["init"]))
        return resolved[-1]

    try:
        return sync_and_print(workspace, opts["mode"], opts["json"], peers, opts["mode"], opts["dry_run"],
                              opts["force"], opts["policy"])
    except (Exception, KeyboardInterrupt) as err:
        return show_failure(err, json_out=opts["json"], command=opts["mode"],
                            root=resolved[-1].root if resolved else None)


def _render(docs: list, exits: list) -> str:
    """The reports as text, where the keeper did not send them rendered: one started by a
    peersync whose code stamp (socket_for) did not change with an upgrade."""
    from peersync.core.render import reports_text  # lazy: a keeper sends the text (~20 ms of imports)
    from peersync.core.types import Report

    return reports_text([Report.from_json(d, e) for d, e in zip(docs, exits)])


def _start_early(name: str, raw: dict, root: Path) -> None:
    from peersync.transport import openssh  # lazy: only without a warm keeper
    from peersync.workspace.peer import Peer

    try:
        peer = Peer.from_json(name, raw)
    except (ValueError, TypeError, KeyError):
        return  # the full CLI says what is wrong with the entry
    openssh.start_early(peer, peer.path or str(root))  # the root open_session will ask for


def _ask(path: Path, request: dict) -> dict | None:
    """One request to the keeper, and its one-line answer (None: no keeper answered).  Through
    _socket: the socket module's wrapper costs the fast path ~3 ms of start-up."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(2)
        sock.connect(str(path))
        sock.settimeout(None)  # a sync takes as long as it takes; the keeper bounds nothing less
        sock.sendall(encode({"id": 1, **request}))
        chunks = []
        while not chunks or b"\n" not in chunks[-1]:  # (a JSON line holds no other newline)
            chunk = sock.recv(1 << 16)
            if not chunk:
                return None  # the keeper went away mid-answer
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        sock.close()
    line = b"".join(chunks)
    try:
        return decode(line[:line.index(b"\n") + 1])
    except ValueError:
        return None
