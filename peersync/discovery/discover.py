"""Tailscale discovery: pick candidate devices, probe them over SSH for peersync, register them."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from peersync.discovery.tailscale import (
    Device,
    TailscaleUnavailable,
    admin_credentials,
    admin_devices,
    local_status,
    merge,
    require_running,
)
from peersync.errors import ConnectError, HostKeyError, PeersyncError
from peersync.transport.ssh import open_session
from peersync.workspace.storage import atomic_write_bytes, ensure_private_dir
from peersync.workspace.peer import check_peer_name
from peersync.workspace.workspace import Peer, Workspace

KNOWN_HOSTS_DIR = "known_hosts.d"  # inside the state dir: one pinned file per discovered peer
MAX_CONCURRENT_PROBES = 16
KEY_LINE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
                      r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,2}$")

# Probe outcomes.  Only OK devices are registered by --add.
OK = "ok"
NO_WORKSPACE = "no-workspace"
HOST_KEY = "host-key"
AUTH = "auth"
NO_PEERSYNC = "no-peersync"
UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
OFFLINE = "offline"
NO_IPV4 = "no-ipv4"
ERROR = "error"


@dataclass(frozen=True)
class ProbeOptions:
    """How to reach candidates: the `peers add` settings shared by every discovered device."""

    user: str | None = None
    path: str | None = None
    port: int | None = None
    identity: str | None = None
    command: str | None = None
    timeout: float = 5.0


@dataclass(frozen=True)
class Probe:
    """What probing one device found: a peersync version, or why there is none."""

    device: Device
    outcome: str
    version: str | None = None
    root: str | None = None
    instance_id: str | None = None
    reason: str = ""
    hint: str = ""

    @property
    def reachable(self) -> bool:
        return self.outcome == OK


@dataclass(frozen=True)
class Added:
    peer: Peer
    pinned: tuple[str, ...]  # fingerprints of the host keys written to peer.known_hosts
    updated: bool  # the peer existed (same host) and was refreshed


@dataclass(frozen=True)
class Discovery:
    source: str
    probes: tuple[Probe, ...]
    added: tuple[Added, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (device name, why --add left it out)
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        added = {a.peer.name for a in self.added}
        devices = []
        for p in self.probes:
            doc = p.device.to_json()
            doc["peersync"] = {"status": p.outcome, "version": p.version, "root": p.root,
                               "reason": p.reason or None, "hint": p.hint or None}
            doc["added"] = p.device.name in added
            devices.append(doc)
        return {"source": self.source, "devices": devices,
                "added": [{"name": a.peer.name, "host": a.peer.host, "known_hosts": a.peer.known_hosts,
                           "pinned": list(a.pinned), "updated": a.updated} for a in self.added],
                "skipped": [{"name": n, "reason": why} for n, why in self.skipped],
                "notes": list(self.notes)}


# -- pure ------------------------------------------------------------------------------------
def normalize_tag(tag: str) -> str:
    tag = tag.strip()
    return tag if tag.startswith("tag:") else f"tag:{tag}"


def select(devices: list[Device], *, tag: str | None = None, include_offline: bool = False) -> list[Device]:
    """Candidates, online first then by name: never this machine; online ones unless
    include_offline; with `tag` if given."""
    wanted = normalize_tag(tag) if tag else None
    chosen = [d for d in devices
              if not d.self and (include_offline or d.online) and (wanted is None or wanted in d.tags)]
    return sorted(chosen, key=lambda d: (not d.online, d.name))


def host_keys(device: Device) -> tuple[str, ...]:
    """The SSH host keys Tailscale reports, reduced to valid `TYPE BASE64` public keys.

    Entries with control characters, markers, patterns or undecodable keys are dropped, so
    nothing but a key for this one address can ever reach a known-hosts file.
    """
    keys = []
    for raw in device.ssh_host_keys:
        if any(ord(ch) < 32 for ch in raw):
            continue
        key = " ".join(raw.split()[:2])
        if KEY_LINE.match(key) and key not in keys and _parses(key):
            keys.append(key)
    return tuple(keys)


def _parses(key: str) -> bool:
    import asyncssh  # lazy: slow to import, and listing devices needs none of it

    try:
        asyncssh.import_public_key(key)
    except (asyncssh.KeyImportError, ValueError):
        return False
    return True


def known_hosts_lines(ip: str, keys: tuple[str, ...], port: int | None) -> list[str]:
    """`<ip> <key>` lines, plus `[ip]:port <key>` when a port is given (OpenSSH's form for it)."""
    hosts = [ip] + ([f"[{ip}]:{port}"] if port else [])
    return [f"{host} {key}" for host in hosts for key in keys]


def trust_hint(device: Device, port: int | None) -> str:
    target = f"-p {port} {device.ipv4}" if port and port != 22 else f"{device.ipv4}"
    return (f"Tailscale reports no SSH host key for {device.name}: check its fingerprint "
            f"(on {device.name}: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then run "
            f"ssh-keyscan {target} >> ~/.ssh/known_hosts")


def candidate_peer(device: Device, opts: ProbeOptions, known_hosts: str | None) -> Peer:
    return Peer(name=device.name, host=device.ipv4 or device.dns_name, user=opts.user, path=opts.path,
                port=opts.port, identity=opts.identity, known_hosts=known_hosts, command=opts.command)


def plan_additions(probes: list[Probe], existing: dict[str, Peer], opts: ProbeOptions,
                   known_hosts_dir: Path, now: str) -> tuple[dict[str, Peer], list[Added], list[tuple[str, str]]]:
    """Which probed devices become peers, and the resulting peers table (nothing is written).

    An existing peer with the same name and host is refreshed; a name or host already used by
    another peer is left alone, so --add never rewires a peer the user configured.
    """
    peers = dict(existing)
    added: list[Added] = []
    skipped: list[tuple[str, str]] = []
    for probe in probes:
        device = probe.device
        if not probe.reachable:
            continue
        name = device.name
        try:
            check_peer_name(name)
        except PeersyncError:
            skipped.append((name, "not usable as a peer name"))
            continue
        old = peers.get(name)
        if old is not None and old.host != device.ipv4:
            skipped.append((name, f"a peer named {name} already exists with host {old.host}"))
            continue
        other = next((p.name for p in peers.values() if p.host == device.ipv4 and p.name != name), None)
        if other:
            skipped.append((name, f"{device.ipv4} is already configured as peer {other}"))
            continue
        keys = host_keys(device)
        extra = dict(old.extra) if old else {}
        if probe.instance_id:
            extra["instanceId"] = probe.instance_id
        peer = replace(candidate_peer(device, opts, str(known_hosts_dir / name) if keys else None),
                       added_at=old.added_at if old and old.added_at else now, extra=extra)
        peers[name] = peer
        added.append(Added(peer=peer, pinned=tuple(fingerprint(k) for k in keys), updated=old is not None))
    return peers, added, skipped


def fingerprint(key: str) -> str:
    import asyncssh  # lazy: slow to import, and listing devices needs none of it

    try:
        return asyncssh.import_public_key(key).get_fingerprint()
    except (asyncssh.KeyImportError, ValueError):
        return key.split()[0]


# -- I/O -------------------------------------------------------------------------------------
async def probe(ws: Workspace, device: Device, opts: ProbeOptions, scratch: Path) -> Probe:
    """Open a peersync session to the device's Tailscale IPv4, trusting only the keys Tailscale
    reports when it reports some; never trust on first use."""
    if not device.online:
        return Probe(device, OFFLINE, reason="offline")
    if not device.ipv4:
        return Probe(device, NO_IPV4, reason="no Tailscale IPv4 address")
    keys = host_keys(device)
    known_hosts = None
    if keys:
        fd, known_hosts = tempfile.mkstemp(prefix="known_hosts-", dir=scratch)  # names may repeat
        with os.fdopen(fd, "w") as f:
            f.write("".join(line + "\n" for line in known_hosts_lines(device.ipv4, keys, opts.port)))
    peer = candidate_peer(device, opts, known_hosts)
    try:
        # The outer bound is a backstop: open_session enforces `timeout` itself.
        session = await asyncio.wait_for(open_session(ws, peer, timeout=opts.timeout), opts.timeout + 5)
    except HostKeyError as err:
        if keys:
            return Probe(device, HOST_KEY, reason="host key does not match the one Tailscale reports",
                         hint=f"{device.name} ({device.ipv4}) presented a host key Tailscale does not report "
                              f"for it: do not trust it until you know why ({err.message}).")
        return Probe(device, HOST_KEY, reason="host key unknown", hint=trust_hint(device, opts.port))
    except (asyncio.TimeoutError, TimeoutError):
        return Probe(device, TIMEOUT, reason=f"timed out after {opts.timeout:g} s")
    except ConnectError as err:
        outcome = classify(err)
        return Probe(device, outcome, reason=_reason(outcome, err), hint=err.hint or "")
    except PeersyncError as err:
        return Probe(device, ERROR, reason=err.message, hint=err.hint or "")
    try:
        hello = session.hello
        version = str(hello.get("version") or "?")
        root = hello.get("root") if isinstance(hello.get("root"), str) else None
        if not hello.get("workspace"):
            return Probe(device, NO_WORKSPACE, version=version, root=root,
                         reason=f"peersync {version}, but no workspace at {root or opts.path or 'the default path'}",
                         hint="Pass --path WORKSPACE, or run `peersync init` there.")
        instance = hello.get("instance_id") if isinstance(hello.get("instance_id"), str) else None
        return Probe(device, OK, version=version, root=root, instance_id=instance)
    finally:
        await session.close()


def classify(err: ConnectError) -> str:
    """Name the failure from open_session's error: a `kind` set on this very error when it
    carries one (not the class's general "connect"), else its words."""
    kind = vars(err).get("kind")
    if isinstance(kind, str) and kind:
        return kind
    text = err.message.lower()
    if "key refused" in text or "permission denied" in text or "authentication" in text:
        return AUTH
    if "timed out" in text:
        return TIMEOUT
    if "not installed" in text or "did not start" in text:
        return NO_PEERSYNC
    if "cannot reach" in text:
        return UNREACHABLE
    return ERROR


def _reason(outcome: str, err: ConnectError) -> str:
    short = {TIMEOUT: "timed out", AUTH: "auth refused", UNREACHABLE: "unreachable",
             NO_PEERSYNC: "no peersync found"}
    return short.get(outcome, err.message)


async def probe_all(ws: Workspace, devices: list[Device], opts: ProbeOptions) -> list[Probe]:
    """Probe every device concurrently (bounded), in the order given."""
    gate = asyncio.Semaphore(MAX_CONCURRENT_PROBES)
    with tempfile.TemporaryDirectory(prefix="peersync-discover-") as scratch:

        async def one(device: Device) -> Probe:
            async with gate:
                return await probe(ws, device, opts, Path(scratch))

        return list(await asyncio.gather(*(one(d) for d in devices)))


def register(ws: Workspace, probes: list[Probe], opts: ProbeOptions) -> tuple[list[Added], list[tuple[str, str]]]:
    """Save the reachable devices as peers, pinning Tailscale's host keys per peer."""
    directory = ws.state / KNOWN_HOSTS_DIR
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    peers, added, skipped = plan_additions(probes, ws.load_peers(), opts, directory, now)
    if not added:
        return added, skipped
    by_name = {p.device.name: p.device for p in probes}
    ensure_private_dir(ws.ensure_state() / KNOWN_HOSTS_DIR)
    for item in added:
        device = by_name[item.peer.name]
        if item.peer.known_hosts:
            lines = known_hosts_lines(device.ipv4, host_keys(device), opts.port)
            atomic_write_bytes(Path(item.peer.known_hosts), "".join(l + "\n" for l in lines).encode())
    ws.save_peers(peers)
    return added, skipped


async def discover(ws: Workspace, *, tag: str | None = None, include_offline: bool = False,
                   add: bool = False, opts: ProbeOptions = ProbeOptions(), api_session=None) -> Discovery:
    """List (and probe, and optionally add) the tailnet's devices that could be peers.

    The local tailscaled is the main source; with TAILSCALE_API_KEY the admin API adds the
    devices it does not list (offline ones).  `api_session` is an aiohttp session for that API.
    """
    notes: list[str] = []
    local = None
    try:
        local = await asyncio.to_thread(local_status)
        require_running(local)
    except TailscaleUnavailable as err:
        if admin_credentials() is None:
            raise
        notes.append(f"{err.message}; listing devices from the admin API only")
        local = None
    admin: list[Device] = []
    creds = admin_credentials()
    if creds:
        try:
            admin = await admin_devices(*creds, session=api_session)
        except TailscaleUnavailable as err:
            if local is None:
                raise
            notes.append(err.message)
    devices = merge(local, admin)
    source = "+".join(([local.source] if local else []) + (["admin-api"] if admin else [])) or "none"
    candidates = select(devices, tag=tag, include_offline=include_offline)
    probes = await probe_all(ws, candidates, opts)
    added: list[Added] = []
    skipped: list[tuple[str, str]] = []
    if add:
        added, skipped = register(ws, probes, opts)
    return Discovery(source=source, probes=tuple(probes), added=tuple(added),
                     skipped=tuple(skipped), notes=tuple(notes))
