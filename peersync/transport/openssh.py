"""The system OpenSSH client running a peer's agent: its command line, and a new connection's ssh
started before this process's heavy imports.

`peersync sync PEER` with no warm keeper (cli/quick.py) starts `ssh PEER <agent>` first thing; the
session (transport/ssh.py) adopts that process when it asks for exactly the same command line, so
the SSH handshake and the peer's start-up overlap this side's imports instead of following them.
One never adopted is killed at exit (and dies with us in any case: children.die_with_parent).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import subprocess

from peersync.transport import sshconfig
from peersync.transport.children import die_with_parent
from peersync.transport.pipes import widen

NOT_FOUND = "peersync-not-found"
CLIENT_ENV = "PEERSYNC_SSH_CLIENT"  # "openssh" or "asyncssh"; default: openssh where `ssh` is installed
DEFAULT_TIMEOUT = 15.0


def use_openssh() -> bool:
    """Whether sessions run the system `ssh`.  Measured (issue 17): importing asyncssh and
    connecting costs more than an `ssh` subprocess's whole handshake, and a sync on a new
    connection pays it every time."""
    if os.environ.get(CLIENT_ENV, "").strip().lower() == "asyncssh":
        return False
    return shutil.which("ssh") is not None


def agent_command(peer, root: str) -> str:
    """One remote shell command that starts the agent, trying the usual install places.

    Non-interactive SSH has a thin PATH, so a bare `peersync` is often not found.
    """
    r = shlex.quote(root)
    tries = []
    if peer.command:
        first = shlex.split(peer.command)[0]
        # `~/…` means the peer's home (the shell expands it in `exec`; quoted for the test it would not be)
        found = f'"$HOME"/{shlex.quote(first[2:])}' if first.startswith("~/") else shlex.quote(first)
        tries.append((f"command -v {found} >/dev/null 2>&1", f"exec {peer.command} agent --root {r}"))
    tries += [
        ("command -v peersync >/dev/null 2>&1", f"exec peersync agent --root {r}"),
        ('[ -x "$HOME/.local/bin/peersync" ]', f'exec "$HOME/.local/bin/peersync" agent --root {r}'),
        # -P: the login shell starts in the home folder; a `peersync/` folder there is not the agent.
        ("python3 -P -c 'import peersync' >/dev/null 2>&1", f"exec python3 -P -m peersync agent --root {r}"),
    ]
    script = "; el".join(f"if {test}; then {run}" for test, run in tries)
    return f"{script}; else echo {NOT_FOUND} >&2; exit 127; fi"


def argv(peer, root: str, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """`ssh … PEER <agent command>`: rsync's ssh settings (sshconfig.ssh_command), no tty, no
    escape character, no forwardings."""
    return [*sshconfig.ssh_command(peer, connect_timeout=timeout), "-T", "-e", "none",
            "-o", "ClearAllForwardings=yes", "-o", "LogLevel=ERROR", "--", peer.host, agent_command(peer, root)]


def spawn(args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=die_with_parent())
    widen(proc.stdin.fileno(), proc.stdout.fileno())  # megabyte batches both ways (transport/pipes.py)
    return proc


# -- started early -------------------------------------------------------------------------------
_EARLY: dict[tuple[str, ...], subprocess.Popen] = {}


def start_early(peer, root: str) -> None:
    """Start the session's ssh now, for open_session to adopt (best effort: never raises)."""
    if not use_openssh():
        return
    args = argv(peer, root)
    if tuple(args) in _EARLY:
        return
    try:
        _EARLY[tuple(args)] = spawn(args)
    except OSError:
        return
    if len(_EARLY) == 1:
        atexit.register(_kill_unadopted)


def adopt(args: list[str]) -> subprocess.Popen | None:
    """The ssh started early with exactly this command line, if any (each is adopted once)."""
    return _EARLY.pop(tuple(args), None)


def _kill_unadopted() -> None:
    for proc in _EARLY.values():
        with contextlib.suppress(OSError):
            proc.kill()
            proc.wait(5)
    _EARLY.clear()
