"""`peersync sync PEER` through a warm keeper, without loading the CLI or the sync engine here.

When the peer's keeper (keeper.py) is running, it already holds the SSH connection, the remote
agent, this workspace's stat cache and the engine's code: it runs the sync itself and sends
back the report, which this process only prints.  Anything this fast path does not handle
(several peers, unusual options, no keeper, a busy keeper, a keeper that fails before it
starts) returns None and the ordinary CLI runs the sync in-process.
"""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
import json
import os
import socket
import sys
from pathlib import Path

from peersync.core.paths import STATE_DIR
from peersync.transport.keeper import env_keep, socket_for
from peersync.transport.protocol import decode, encode

COMMANDS = ("sync", "push", "pull")


def parse(argv: list[str]) -> dict | None:
    """The few command lines the fast path takes; None for anything else."""
    out = {"workspace": None, "json": False, "peer": None, "dry_run": False, "force": False, "policy": None}
    args = list(argv)
    while args and args[0] not in COMMANDS:  # global options
        opt = args.pop(0)
        if opt in ("-w", "--workspace") and args:
            out["workspace"] = args.pop(0)
        elif opt.startswith("--workspace="):
            out["workspace"] = opt.split("=", 1)[1]
        elif opt == "--json":
            out["json"] = True
        else:
            return None
    if not args:
        return None
    out["mode"] = args.pop(0)
    while args:
        arg = args.pop(0)
        if arg in ("--dry-run", "-n"):
            out["dry_run"] = True
        elif arg == "--force":
            out["force"] = True
        elif arg == "--policy" and args and out["mode"] == "sync":
            out["policy"] = args.pop(0)
        elif arg == "--json":
            out["json"] = True
        elif not arg.startswith("-") and out["peer"] is None:
            out["peer"] = arg
        else:
            return None
    return out


def fast_main(argv: list[str]) -> int | None:
    if env_keep() == 0:
        return None
    opts = parse(argv)
    if opts is None:
        return None
    if not (opts["workspace"] or os.environ.get("WORKSPACE")):
        return None  # the workspace may come from OpenClaw's config: Workspace.resolve asks it
    root = Path(opts["workspace"] or os.environ.get("WORKSPACE")).expanduser().absolute()
    try:
        peers = json.loads((root / STATE_DIR / "peers.json").read_bytes())["peers"]
        if opts["peer"] is None:
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
    if path is None:
        return None
    reply = _ask(path, {"op": "run", "args": {"mode": opts["mode"], "dry_run": opts["dry_run"],
                                                "force": opts["force"], "policy": opts["policy"]}})
    if not reply or not reply.get("ok"):
        return None
    from peersync.core.render import reports_text
    from peersync.core.types import Report

    docs, exits = reply["reports"], reply["exits"]
    reports = [Report.from_json(d, e) for d, e in zip(docs, exits)]
    if opts["json"]:
        print(json.dumps({"ok": all(r.ok for r in reports), "reports": docs}, indent=2, ensure_ascii=False,
                         default=str))
    else:
        print(reports_text(reports))
    sys.stdout.flush()
    failed = [r.error_exit or 1 for r in reports if not r.ok]
    return max(failed) if failed else 0


def _ask(path: Path, request: dict) -> dict | None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
            sock.settimeout(None)  # a sync takes as long as it takes; the keeper bounds nothing less
            sock.sendall(encode({"id": 1, **request}))
            with sock.makefile("rb") as stream:
                line = stream.readline()
    except OSError:
        return None
    try:
        return decode(line) if line.endswith(b"\n") else None
    except ValueError:
        return None
