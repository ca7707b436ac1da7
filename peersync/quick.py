"""`peersync sync PEER` through a warm keeper, without loading the CLI or the sync engine here.

When the peer's keeper (keeper.py) is running, it already holds the SSH connection, the remote
agent, this workspace's stat cache and the engine's code: it runs the sync itself and sends
back the report, which this process only prints.  Anything this fast path does not handle
(several peers, unusual options, no keeper, a busy keeper, a keeper that fails before it
starts) returns None and the ordinary CLI runs the sync in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import sys
import tempfile
from pathlib import Path

from peersync import __version__
from peersync.protocol import PROTOCOL, decode, encode

STATE = ("memory", "clawdbot-sync")
COMMANDS = ("sync", "push", "pull")


ENV_KEEP = "PEERSYNC_KEEP_CONNECTION"


def env_keep() -> float | None:
    """$PEERSYNC_KEEP_CONNECTION in seconds (unparsable: 0, i.e. no keepers), None when unset."""
    raw = os.environ.get(ENV_KEEP)
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return 0.0


def runtime_dir() -> Path | None:
    """A private directory for keeper sockets ($XDG_RUNTIME_DIR or the temp dir), or None when
    it is not safely ours (then there are simply no keepers)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"peersync-{os.getuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = path.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return path


def code_stamp() -> int:
    """Newest mtime of this package's modules: a changed install never talks to an old keeper."""
    here = os.path.dirname(os.path.abspath(__file__))
    return max((e.stat().st_mtime_ns for e in os.scandir(here) if e.name.endswith(".py")), default=0)


def socket_for(root: str, name: str, host, user, port, identity, known_hosts, command, remote_root: str) -> Path | None:
    """The keeper socket for a workspace, one peer's settings, its remote root and this code."""
    where = runtime_dir()
    if where is None:
        return None
    key = json.dumps([root, name, host, user, port, identity, known_hosts, command, remote_root,
                      __version__, PROTOCOL, code_stamp()])
    # Short on purpose: a unix socket path must fit in 104 bytes (macOS).
    return where / (hashlib.blake2b(key.encode(), digest_size=12).hexdigest() + ".sock")


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
    root = Path(opts["workspace"] or os.environ.get("WORKSPACE") or os.getcwd()).expanduser().absolute()
    try:
        peers = json.loads((root.joinpath(*STATE) / "peers.json").read_bytes())["peers"]
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
    from peersync.render import reports_text
    from peersync.types import Report

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
