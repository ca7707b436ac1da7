"""Where a peer's keeper listens, whether keepers are on, and starting one (daemons/keeper.py runs it).

Light on purpose: the CLI's fast path (cli/quick.py) imports it before anything else.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

from peersync import __version__
from peersync.transport import sshfiles
from peersync.transport.protocol import PROTOCOL, encode

# The CLI's fast path (cli/quick.py) imports this module for a warm sync: keep it light (no
# typing, dataclasses or subprocess at import; those below are imported where they are used).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from peersync.workspace.workspace import Peer, Workspace


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
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base:
        import tempfile  # lazy: start-up (needed only without $XDG_RUNTIME_DIR)

        base = tempfile.gettempdir()
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
    """Newest mtime of the package's modules (its subpackages included): a changed install never
    talks to an old keeper."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    newest = 0
    for entry in os.scandir(package):
        if entry.name.endswith(".py"):
            newest = max(newest, entry.stat().st_mtime_ns)
        elif entry.is_dir() and not entry.name.startswith(("_", ".")):
            newest = max([newest, *(e.stat().st_mtime_ns for e in os.scandir(entry.path) if e.name.endswith(".py"))])
    return newest


def socket_for(root: str, name: str, host, user, port, identity, known_hosts, command, remote_root: str) -> Path | None:
    """The keeper socket for a workspace, one peer's settings, its remote root, this code and the
    ssh config in use (a keeper connected under other SSH settings is not reused)."""
    where = runtime_dir()
    if where is None:
        return None
    try:  # the very function hashlib gives, without hashlib's loading OpenSSL (~3 ms at start-up)
        from _blake2 import blake2b
    except ImportError:  # (an interpreter built without it)
        from hashlib import blake2b
    key = json.dumps([root, name, host, user, port, identity, known_hosts, command, remote_root,
                      __version__, PROTOCOL, code_stamp(), sshfiles.stamp()])
    # Short on purpose: a unix socket path must fit in 104 bytes (macOS).
    return where / (blake2b(key.encode(), digest_size=12).hexdigest() + ".sock")



DEFAULT_KEEP = 600.0
STREAM_LIMIT = 1 << 20  # a socket's buffer; longer lines are read in pieces, up to their own limit


def keep_seconds(cfg) -> float:
    """How long a keeper stays after its last use: $PEERSYNC_KEEP_CONNECTION when set, else
    sync.keep_connection (default 600).  0 means no keeper."""
    seconds = env_keep()
    return cfg.keep_connection if seconds is None else seconds


def socket_path(ws: Workspace, peer: Peer, root: str) -> Path | None:
    """The keeper's socket for this workspace, peer settings, remote root and code: a change to
    any of them simply means a new keeper (an old one idles out)."""
    return socket_for(str(ws.root), peer.name, peer.host, peer.user, peer.port, peer.identity,
                      peer.known_hosts, peer.command, root)


def spawn(ws: Workspace, peer: Peer, root: str, seconds: float) -> bool:
    """Start a keeper for this peer in the background unless one answers already."""
    path = socket_path(ws, peer, root) if seconds > 0 else None
    if path is None or _alive(path):
        return False
    import subprocess  # lazy: start-up (only a sync that found no keeper starts one)

    cmd = [sys.executable, "-P", "-m", "peersync", "keeper", "--workspace", str(ws.root), "--peer", peer.name,
           "--root", root, "--idle", f"{seconds:g}"]
    subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True, cwd="/")
    return True


def settings(peer: Peer) -> tuple:
    """What a kept connection was made with: a keeper serves only while its peer entry says the same."""
    return (peer.host, peer.user, peer.port, peer.path, peer.identity, peer.known_hosts, peer.command)


def stop(ws: Workspace, peer: Peer) -> bool:
    """Ask the keeper of `peer` (as configured until now) to leave: its peer was removed or
    changed.  It finishes a sync it is running, then exits.  True if one answered."""
    path = socket_path(ws, peer, peer.path or str(ws.root))
    if path is None:
        return False
    import socket  # lazy: the CLI's fast path imports this module at start-up

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(encode({"id": 1, "op": "stop", "args": {}}))
            sock.recv(4096)
            return True
    except OSError:
        return False


def _alive(path: Path) -> bool:
    import socket  # lazy: as in stop

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(path))
            return True
        except OSError:
            return False

