"""The tailnet's devices, as the local tailscaled (or, optionally, the admin API) reports them."""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from peersync.errors import ConnectError

LOCALAPI_HOST = "local-tailscaled.sock"  # tailscaled checks the Host header against this name
STATUS_PATH = "/localapi/v0/status"
# Linux (and most Unix) packages; the open-source tailscaled on macOS.
DEFAULT_SOCKETS = ("/var/run/tailscale/tailscaled.sock", "/var/run/tailscaled.socket")
MACSYS_DIR = Path("/Library/Tailscale")  # the standalone macOS app
APP_STORE_GLOB = "Library/Group Containers/*.io.tailscale.ipn.macos"  # under $HOME
MACOS_APP_CLI = "/Applications/Tailscale.app/Contents/MacOS/Tailscale"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, sent for "never"
MAX_STATUS_BYTES = 64 << 20


class TailscaleUnavailable(ConnectError):
    """No source of tailnet status answered, or Tailscale is not logged in / running here (exit 1:
    no peer was tried, so not "a peer could not be reached")."""

    kind = "tailscale"
    exit_code = 1


@dataclass(frozen=True)
class Device:
    """One node of the tailnet."""

    name: str  # MagicDNS short name (peer-name safe), else a cleaned HostName
    dns_name: str  # FQDN without the trailing dot ("" when unknown)
    ips: tuple[str, ...]
    ipv4: str | None
    os: str
    online: bool
    tags: tuple[str, ...] = ()
    ssh_host_keys: tuple[str, ...] = ()
    last_seen: str | None = None
    self: bool = False

    def to_json(self) -> dict:
        return {"name": self.name, "dns_name": self.dns_name, "ips": list(self.ips), "ipv4": self.ipv4,
                "os": self.os, "online": self.online, "tags": list(self.tags),
                "ssh_host_keys": list(self.ssh_host_keys), "last_seen": self.last_seen, "self": self.self}


@dataclass(frozen=True)
class Status:
    """What one status source said: the backend state and the devices (self first)."""

    backend_state: str
    version: str
    devices: tuple[Device, ...]
    source: str

    @property
    def running(self) -> bool:
        return self.backend_state == "Running"


# -- parsing (pure) -------------------------------------------------------------------------
def parse_status(doc: object, source: str = "") -> Status:
    """Parse an ipnstate.Status document (LocalAPI or `tailscale status --json`).

    `"Peer": null` (no peers, `--peers=false`, logged out) gives no peers.  Sharee nodes and
    location-based exit nodes (Mullvad) are dropped, as `tailscale status` hides them too.
    """
    if not isinstance(doc, dict):
        raise TailscaleUnavailable(f"{source or 'tailscaled'} sent a status that is not a JSON object")
    devices: list[Device] = []
    if isinstance(doc.get("Self"), dict):
        devices.append(_status_device(doc["Self"], is_self=True))
    peers = doc.get("Peer") or {}
    if not isinstance(peers, dict):
        raise TailscaleUnavailable(f"{source or 'tailscaled'} sent a status whose \"Peer\" is not a map")
    for key in sorted(peers):
        raw = peers[key]
        if not isinstance(raw, dict) or raw.get("ShareeNode"):
            continue
        if raw.get("Location") and raw.get("ExitNodeOption") and not raw.get("ExitNode"):
            continue
        devices.append(_status_device(raw, is_self=False))
    return Status(backend_state=_str(doc.get("BackendState")) or "NoState",
                  version=_str(doc.get("Version")), devices=tuple(devices), source=source)


def _status_device(raw: dict, *, is_self: bool) -> Device:
    dns_name = _str(raw.get("DNSName")).rstrip(".")
    ips = _ips(raw.get("TailscaleIPs"))
    last_seen = _str(raw.get("LastSeen"))
    return Device(
        name=device_name(dns_name, _str(raw.get("HostName"))),
        dns_name=dns_name,
        ips=ips,
        ipv4=_first_ipv4(ips),
        os=_str(raw.get("OS")),
        online=bool(raw.get("Online")) or is_self,
        tags=_strs(raw.get("Tags")),
        ssh_host_keys=_strs(raw.get("sshHostKeys")),
        last_seen=None if not last_seen or last_seen == ZERO_TIME else last_seen,
        self=is_self,
    )


def admin_device(dev) -> Device:
    """Map a `tailscale.models.Device` (admin API) onto Device; the API reports no SSH keys."""
    dns_name = (dev.name or "").rstrip(".")
    ips = _ips(list(dev.addresses or ()))
    return Device(
        name=device_name(dns_name, dev.hostname or ""),
        dns_name=dns_name,
        ips=ips,
        ipv4=_first_ipv4(ips),
        os=dev.os or "",
        online=bool(dev.connected_to_control),
        tags=_strs(list(dev.tags or ())),
        last_seen=dev.last_seen.isoformat().replace("+00:00", "Z") if dev.last_seen else None,
    )


def device_name(dns_name: str, host_name: str) -> str:
    """A peer name for a device: its MagicDNS label (unique in the tailnet), else its HostName."""
    base = dns_name.split(".", 1)[0] if dns_name else host_name
    cleaned = re.sub(r"[^a-z0-9_.-]+", "-", base.lower()).strip("-.")
    return cleaned or "device"


def merge(local: Status | None, admin: list[Device]) -> list[Device]:
    """Local status first (live online state, SSH keys); then admin-API devices it lacks."""
    devices = list(local.devices) if local else []
    seen = {d.ipv4 for d in devices if d.ipv4} | {d.dns_name for d in devices if d.dns_name}
    for dev in admin:
        if (dev.ipv4 and dev.ipv4 in seen) or (dev.dns_name and dev.dns_name in seen):
            continue
        devices.append(dev)
    return devices


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _strs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str) and v)


def _ips(value: object) -> tuple[str, ...]:
    out = []
    for v in _strs(value):
        try:
            out.append(str(ipaddress.ip_address(v)))
        except ValueError:
            continue
    return tuple(out)


def _first_ipv4(ips: tuple[str, ...]) -> str | None:
    return next((ip for ip in ips if ipaddress.ip_address(ip).version == 4), None)


# -- local sources ----------------------------------------------------------------------------
class _Unavailable(Exception):
    """One source did not answer; the message says why (collected for the final error)."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__(LOCALAPI_HOST, timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _get_status(conn: http.client.HTTPConnection, headers: dict[str, str], where: str) -> dict:
    try:
        conn.request("GET", STATUS_PATH, headers={"Host": LOCALAPI_HOST, **headers})
        resp = conn.getresponse()
        body = resp.read(MAX_STATUS_BYTES + 1)
    except (OSError, http.client.HTTPException) as err:
        raise _Unavailable(f"{where}: {_os_reason(err)}") from None
    finally:
        conn.close()
    if resp.status != 200:
        text = body[:200].decode("utf-8", "replace").strip()
        raise _Unavailable(f"{where}: HTTP {resp.status} {text}".rstrip())
    try:
        return json.loads(body)
    except ValueError:
        raise _Unavailable(f"{where}: answered with something that is not JSON") from None


def _os_reason(err: BaseException) -> str:
    if isinstance(err, FileNotFoundError):
        return "no such socket"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (tailscaled not running?)"
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, (socket.timeout, TimeoutError)):
        return "timed out"
    return getattr(err, "strerror", None) or str(err) or err.__class__.__name__


def socket_paths() -> list[str]:
    override = os.environ.get("PEERSYNC_TAILSCALE_SOCKET")
    return [override] if override else list(DEFAULT_SOCKETS)


def from_socket(path: str, timeout: float) -> dict:
    """GET /localapi/v0/status over tailscaled's unix socket."""
    if not os.path.exists(path):
        raise _Unavailable(f"socket {path}: not there")
    return _get_status(_UnixHTTPConnection(path, timeout), {}, f"socket {path}")


def macos_credentials(home: Path | None = None) -> list[tuple[int, str]]:
    """(port, token) pairs the macOS apps leave for same-user LocalAPI access over TCP, newest first.

    The App Store app names files `sameuserproof-PORT-TOKEN` in its group container; the
    standalone app keeps `sameuserproof-PORT` (token inside) in /Library/Tailscale.
    """
    home = home if home is not None else Path.home()
    dirs = [MACSYS_DIR, *sorted(home.glob(APP_STORE_GLOB))]
    found: list[tuple[float, int, str]] = []
    for directory in dirs:
        try:
            entries = list(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            parts = entry.name.split("-", 2)
            if parts[0] != "sameuserproof" or len(parts) < 2 or not parts[1].isdigit():
                continue
            if len(parts) == 3:
                token = parts[2]
            else:
                try:
                    token = entry.read_text().strip()
                except OSError:
                    continue
            try:
                mtime = entry.lstat().st_mtime
            except OSError:
                mtime = 0.0
            if token:
                found.append((mtime, int(parts[1]), token))
    found.sort(reverse=True)
    return [(port, token) for _, port, token in found]


def from_macos_app(port: int, token: str, timeout: float) -> dict:
    """GET the status from the macOS app's LocalAPI on 127.0.0.1:PORT (basic auth, empty user)."""
    auth = base64.b64encode(f":{token}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    return _get_status(conn, {"Authorization": f"Basic {auth}"}, f"macOS app on port {port}")


def cli_path() -> str | None:
    override = os.environ.get("PEERSYNC_TAILSCALE_CLI")
    if override:
        return override
    return shutil.which("tailscale") or (MACOS_APP_CLI if os.path.exists(MACOS_APP_CLI) else None)


def from_cli(binary: str, timeout: float) -> dict:
    """Run `tailscale status --json`."""
    try:
        proc = subprocess.run([binary, "status", "--json"], capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise _Unavailable(f"CLI {binary}: not found") from None
    except subprocess.TimeoutExpired:
        raise _Unavailable(f"{binary} status --json: timed out after {timeout:g} s") from None
    except OSError as err:
        raise _Unavailable(f"CLI {binary}: {_os_reason(err)}") from None
    try:
        return json.loads(proc.stdout)
    except ValueError:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        why = lines[0] if lines else f"exit status {proc.returncode}, no JSON"
        raise _Unavailable(f"{binary} status --json: {why}") from None


def local_status(timeout: float = 3.0) -> Status:
    """Status from the first local source that answers: socket, macOS app, then the CLI.

    Raises TailscaleUnavailable listing why each source failed.
    """
    tried: list[str] = []
    for path in socket_paths():
        try:
            return parse_status(from_socket(path, timeout), "localapi")
        except _Unavailable as err:
            tried.append(str(err))
    for port, token in macos_credentials():
        try:
            return parse_status(from_macos_app(port, token, timeout), "macos-app")
        except _Unavailable as err:
            tried.append(str(err))
    binary = cli_path()
    if binary:
        try:
            return parse_status(from_cli(binary, timeout), "cli")
        except _Unavailable as err:
            tried.append(str(err))
    else:
        tried.append("no tailscale CLI on PATH")
    raise TailscaleUnavailable("could not read Tailscale's status here (" + "; ".join(tried) + ")",
                               "Is Tailscale installed and running? Try: tailscale status")


def require_running(status: Status) -> None:
    if status.running:
        return
    hints = {"NeedsLogin": "Log in with: tailscale up", "Stopped": "Start it with: tailscale up",
             "NeedsMachineAuth": "Approve this machine in the Tailscale admin console."}
    raise TailscaleUnavailable(f"Tailscale is not connected here (state: {status.backend_state})",
                               hints.get(status.backend_state, "Check: tailscale status"))


# -- admin API (optional) ---------------------------------------------------------------------
def admin_credentials() -> tuple[str, str] | None:
    key = os.environ.get("TAILSCALE_API_KEY")
    return (key, os.environ.get("TAILSCALE_TAILNET") or "-") if key else None


async def admin_devices(api_key: str, tailnet: str = "-", *, session=None, timeout: float = 8.0) -> list[Device]:
    """All devices of the tailnet, offline ones too, through the PyPI `tailscale` client.

    `session` (an aiohttp.ClientSession) is used when given and left open for its owner.
    """
    from tailscale import (  # deferred: aiohttp is slow to import
        Tailscale,
        TailscaleError,
    )

    try:
        async with Tailscale(api_key=api_key, tailnet=tailnet, session=session,
                             request_timeout=timeout) as client:
            found = await client.devices()
    except TailscaleError as err:
        raise TailscaleUnavailable(f"the Tailscale admin API refused or failed: {err}",
                                   "Check TAILSCALE_API_KEY and TAILSCALE_TAILNET.") from None
    return sorted((admin_device(d) for d in found.values()), key=lambda d: d.name)
