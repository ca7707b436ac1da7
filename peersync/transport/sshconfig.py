"""How to reach a peer over SSH exactly as OpenSSH's `ssh` would: the config file, resolved by `ssh -G`.

One source of truth for both SSH clients peersync uses.  rsync's transfers run the real `ssh`, which
reads the config itself; the control connection (asyncssh) gets the values `ssh -G` printed for the
same destination and options — host aliases, HostName, User, Port, IdentityFile, IdentitiesOnly,
UserKnownHostsFile, HostKeyAlias, ProxyJump and ProxyCommand, Match and Include — so the two can
never disagree about where a peer is.

Which config file is in force (`--ssh-config`, or ssh's defaults), and `~` as ssh expands it
(also in the values: IdentityFile…): sshfiles.py, light at import for the CLI's fast path.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field

from peersync.transport.sshfiles import config_args, expand_home, shown_config, ssh_home

TAILSCALE_SOCKETS = ("/var/run/tailscale/tailscaled.sock", "/run/tailscale/tailscaled.sock")
TAILSCALE_APP = "/Applications/Tailscale.app/Contents/MacOS/Tailscale"


def ssh_command(peer, *, connect_timeout: float = 15) -> list[str]:
    """The system `ssh` invocation for `peer` (a workspace Peer) that the agent's session and rsync
    use: the config file its destination was resolved from (resolve()), so it reaches the same
    host, port and key; strict about host keys and non-interactive."""
    args = ["ssh", *config_args(), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={max(1, round(connect_timeout))}", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
    if peer.port:
        args += ["-p", str(peer.port)]
    if peer.identity:
        args += ["-i", expand_home(peer.identity), "-o", "IdentitiesOnly=yes"]
    if peer.known_hosts:
        args += ["-o", f"UserKnownHostsFile={expand_home(peer.known_hosts)}",
                 "-o", "GlobalKnownHostsFile=/dev/null"]
    if peer.user:
        args += ["-l", peer.user]
    return args


@dataclass(frozen=True)
class Destination:
    """Where a peer is, after the ssh config: what `ssh -G` says for its host and options."""

    alias: str  # as the peer was added (a Host alias, a name or an address)
    host: str  # HostName
    port: int
    user: str
    identities: tuple[str, ...] = ()  # IdentityFile values, `~` expanded; not all need exist
    identities_only: bool = False
    known_hosts: tuple[str, ...] = ()  # UserKnownHostsFile then GlobalKnownHostsFile, `~` expanded
    host_key_alias: str | None = None
    proxy_jump: str | None = None
    proxy_command: str | None = None
    from_config: tuple[str, ...] = field(default=())  # of host/port/user: set by the config, not the peer

    @property
    def where(self) -> str:
        """`mini → 127.0.0.1 port 2222 (~/.ssh/config)`, or `host port 22`, for messages."""
        head = f"{self.alias} → {self.host}" if self.host != self.alias else self.host
        note = f" ({shown_config()})" if self.from_config else ""
        return f"{head} port {self.port}{note}"


def resolve(alias: str, *, user: str | None = None, port: int | None = None, identity: str | None = None,
            known_hosts: str | None = None) -> Destination:
    """The destination as `ssh` would reach it with these options; ValueError with ssh's own
    message when the config cannot be read."""
    if alias.startswith("-") or not alias or any(c.isspace() for c in alias):
        raise ValueError(f"bad host {alias!r}")
    args = ["ssh", "-G", *config_args()]
    args += ["-p", str(port)] if port else []
    args += ["-l", user] if user else []
    args += ["-i", identity, "-o", "IdentitiesOnly=yes"] if identity else []
    args += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"] if known_hosts else []
    try:
        proc = subprocess.run([*args, alias], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return _without_ssh(alias, user, port, identity, known_hosts)
    if proc.returncode != 0:
        message = " ".join(line for line in proc.stderr.splitlines() if "Pseudo-terminal" not in line).strip()
        raise ValueError(message or f"ssh -G {alias} failed (exit status {proc.returncode})")
    values: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key.lower(), []).append(value)

    def one(key: str) -> str | None:
        found = values.get(key)
        return found[0] if found and found[0] not in ("none", "") else None

    def files(*keys: str) -> tuple[str, ...]:
        out: list[str] = []
        for key in keys:
            for value in values.get(key, []):
                out += [expand_home(p) for p in value.split() if p != "none"]
        return tuple(dict.fromkeys(out))

    dest = Destination(
        alias=alias, host=one("hostname") or alias, port=int(one("port") or 22),
        user=one("user") or user or _local_user(),
        identities=files("identityfile"), identities_only=one("identitiesonly") == "yes",
        known_hosts=files("userknownhostsfile", "globalknownhostsfile"),
        host_key_alias=one("hostkeyalias"), proxy_jump=one("proxyjump"), proxy_command=one("proxycommand"))
    plain = _without_ssh(alias, user, port, identity, known_hosts)
    changed = tuple(name for name in ("host", "port", "user") if getattr(dest, name) != getattr(plain, name))
    return Destination(**{**dest.__dict__, "from_config": changed})


def _without_ssh(alias, user, port, identity, known_hosts) -> Destination:
    """What a destination is without any config file (also the fallback where ssh is missing)."""
    home_ssh = os.path.join(ssh_home(), ".ssh")
    return Destination(alias=alias, host=alias, port=port or 22, user=user or _local_user(),
                       identities=(identity,) if identity else tuple(
                           os.path.join(home_ssh, n) for n in ("id_rsa", "id_ecdsa", "id_ed25519")),
                       identities_only=bool(identity),
                       known_hosts=(known_hosts,) if known_hosts else (
                           os.path.join(home_ssh, "known_hosts"), "/etc/ssh/ssh_known_hosts"))


def split_port(text: str) -> tuple[str, int | None]:
    """`host:port` or `[v6]:port` → (host, port); a bare IPv6 address (several colons) has no port."""
    if text.startswith("[") and "]" in text:
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if port.isdigit() and host:
            return host, int(port)
    return text, None


def _local_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER", "")


def proxy_argv(dest: Destination) -> list[str] | None:
    """The command asyncssh runs as its transport when the config asks for ProxyJump or
    ProxyCommand: OpenSSH itself (`ssh -W host:port JUMP`), so the jump host is reached with the
    same config, keys and host keys as `ssh` would use."""
    if dest.proxy_command:
        tokens = {"%h": dest.host, "%p": str(dest.port), "%r": dest.user, "%n": dest.alias, "%%": "%"}
        text = dest.proxy_command
        for token, value in tokens.items():
            text = text.replace(token, value)
        return ["/bin/sh", "-c", f"exec {text}"]
    if dest.proxy_jump:
        *first, last = dest.proxy_jump.split(",")
        argv = ["ssh", *config_args(), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-W", f"{dest.host}:{dest.port}"]
        argv += ["-J", ",".join(first)] if first else []
        user, _, hostport = last.rpartition("@")
        host, port = split_port(hostport)
        argv += ["-p", str(port)] if port else []
        argv += ["-l", user] if user else []
        return [*argv, host]
    return None


# -- what to tell the user when a connection fails --------------------------------------------
def tailscale_installed() -> bool:
    return bool(shutil.which("tailscale")) or os.path.exists(TAILSCALE_APP) or \
        any(os.path.exists(p) for p in TAILSCALE_SOCKETS)


def unreachable_hint(dest: Destination, err: BaseException | None, peer_name: str) -> str:
    """The next step for a connection that failed before SSH spoke: a refused port is not a
    sleeping machine, and Tailscale is suggested only where it is installed."""
    code = getattr(err, "errno", None)
    if code == errno.ECONNREFUSED:
        return (f"Nothing accepts connections on port {dest.port} there: is sshd running, and is {dest.port} "
                f"its port? Set another with `peersync peers set {peer_name} --port N` or `Port` in "
                f"{shown_config()}.")
    if code is not None and isinstance(err, OSError) and err.__class__.__name__ == "gaierror":
        return (f"Check the name {dest.host!r}: it does not resolve. A Host alias belongs in "
                f"{shown_config()} (peersync reads it as ssh does).")
    tail = " Check with: tailscale status" if tailscale_installed() else ""
    return f"Is the machine on and reachable from here?{tail}"
