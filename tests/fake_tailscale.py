"""Fakes of what cannot run here — tailscaled's LocalAPI (unix socket, macOS TCP), the `tailscale`
CLI and the admin API over HTTPS — serving ipnstate / v2-API shaped documents on loopback only."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import socket
import socketserver
import ssl
import stat
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SUFFIX = "tail4f2c1.ts.net"
ZERO_TIME = "0001-01-01T00:00:00Z"
VERSION = "1.78.1-t8f0e3c5a1-g2b9d1c7e4"


def _hex(seed: str, n: int = 64) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


def node_key(host: str) -> str:
    return "nodekey:" + _hex("node" + host)


def peer_status(host: str, ip: str, *, online: bool = True, os_name: str = "linux",
                tags: list[str] | None = None, ssh_host_keys: list[str] | None = None,
                dns_name: str | None = None, last_seen: str | None = None, **extra) -> dict:
    """One ipnstate.PeerStatus, as tailscaled marshals it (Tags and sshHostKeys are omitempty)."""
    doc = {
        "ID": "n" + _hex("id" + host, 10).upper() + "CNTRL",
        "PublicKey": node_key(host),
        "HostName": host,
        "DNSName": dns_name if dns_name is not None else f"{host.lower()}.{SUFFIX}.",
        "OS": os_name,
        "UserID": 5551234567890123,
        "TailscaleIPs": [ip, f"fd7a:115c:a1e0::{int(ip.rsplit('.', 1)[1]):x}"],
        "AllowedIPs": [f"{ip}/32", f"fd7a:115c:a1e0::{int(ip.rsplit('.', 1)[1]):x}/128"],
        "Addrs": [f"192.0.2.{int(ip.rsplit('.', 1)[1])}:41641"] if online else None,
        "CurAddr": "",
        "Relay": "fra",
        "RxBytes": 0,
        "TxBytes": 0,
        "Created": "2025-11-02T09:14:07.123456789Z",
        "LastWrite": ZERO_TIME,
        "LastSeen": last_seen or (ZERO_TIME if online else "2026-01-20T18:02:11Z"),
        "LastHandshake": ZERO_TIME,
        "Online": online,
        "ExitNode": False,
        "ExitNodeOption": False,
        "Active": False,
        "PeerAPIURL": [f"http://{ip}:39451"],
        "InNetworkMap": True,
        "InMagicSock": True,
        "InEngine": False,
        "KeyExpiry": "2026-05-01T09:14:07Z",
    }
    if tags:
        doc["Tags"] = tags
    if ssh_host_keys:
        doc["sshHostKeys"] = ssh_host_keys
    doc.update(extra)
    return doc


def status_document(self_status: dict, peers: list[dict] | None, *, backend_state: str = "Running") -> dict:
    """An ipnstate.Status; `peers=None` gives `"Peer": null` (what `--peers=false` sends)."""
    return {
        "Version": VERSION,
        "TUN": True,
        "BackendState": backend_state,
        "HaveNodeKey": True,
        "AuthURL": "",
        "TailscaleIPs": self_status["TailscaleIPs"],
        "Self": self_status,
        "Health": [],
        "MagicDNSSuffix": SUFFIX,
        "CurrentTailnet": {"Name": "agent@example.com", "MagicDNSSuffix": SUFFIX, "MagicDNSEnabled": True},
        "CertDomains": [self_status["DNSName"].rstrip(".")],
        "Peer": None if peers is None else {p["PublicKey"]: p for p in peers},
        "User": {"5551234567890123": {"ID": 5551234567890123, "LoginName": "agent@example.com",
                                      "DisplayName": "Agent", "ProfilePicURL": ""}},
        "ClientVersion": None,
    }


def self_status(host: str = "laptop", ip: str = "127.0.0.9") -> dict:
    return peer_status(host, ip, os_name="linux", Relay="fra", InEngine=True)


def without_peers(doc: dict) -> dict:
    return {**doc, "Peer": None}


# -- the daemon ------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server_version = "tailscaled"

    def log_message(self, *args) -> None:  # quiet, and unix sockets have no client address
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        fake: FakeTailscaled = self.server.fake  # type: ignore[attr-defined]
        fake.requests.append({"path": self.path, "host": self.headers.get("Host"),
                              "authorization": self.headers.get("Authorization")})
        if self.headers.get("Host") != "local-tailscaled.sock" and not (
                fake.token and self.headers.get("Host", "").startswith("127.0.0.1:")):
            return self._send(403, b"invalid localapi request\n", "text/plain")
        if fake.token is not None:
            expected = "Basic " + base64.b64encode(f":{fake.token}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                return self._send(403, b"bad password\n", "text/plain")
        url = urlsplit(self.path)
        if url.path != "/localapi/v0/status":
            return self._send(404, b"404 page not found\n", "text/plain")
        doc = fake.document
        if parse_qs(url.query).get("peers") == ["false"]:
            doc = without_peers(doc)
        self._send(200, json.dumps(doc, indent="\t").encode())


class _UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = super().get_request()
        return conn, ("local", 0)  # BaseHTTPRequestHandler wants a (host, port) pair


class FakeTailscaled:
    """tailscaled's LocalAPI on a unix socket, or (token set) on 127.0.0.1 like the macOS app."""

    def __init__(self, document: dict, *, socket_path: Path | None = None, token: str | None = None):
        self.document = document
        self.token = token
        self.requests: list[dict] = []
        if socket_path is not None:
            self.server = _UnixHTTPServer(str(socket_path), _Handler)
        else:
            self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        self.socket_path = socket_path
        self.port = None if socket_path is not None else self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "FakeTailscaled":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)


# -- the CLI ---------------------------------------------------------------------------------
CLI_SCRIPT = '''#!{python}
"""Fake `tailscale`: prints {doc} for `status --json`, like the real CLI."""
import json, sys
args = sys.argv[1:]
doc = json.load(open({doc!r}))
if doc.get("_down"):
    sys.stderr.write("failed to connect to local tailscaled; it doesn't appear to be running "
                     "(sudo systemctl start tailscaled ?)\\n")
    sys.exit(1)
if args[:1] != ["status"] or "--json" not in args:
    sys.stderr.write("fake tailscale: only `status --json` is faked\\n")
    sys.exit(2)
if "--peers=false" in args:
    doc["Peer"] = None
print(json.dumps(doc, indent="\\t"))
'''


def write_fake_cli(directory: Path, document: dict | None, name: str = "tailscale") -> Path:
    """An executable `tailscale` in `directory`; `document=None` fakes a daemon that is down."""
    doc_path = directory / f"{name}-status.json"
    doc_path.write_text(json.dumps(document if document is not None else {"_down": True}))
    script = directory / name
    script.write_text(CLI_SCRIPT.format(python=sys.executable, doc=str(doc_path)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


# -- the admin API ---------------------------------------------------------------------------
def admin_device(host: str, ip: str, *, online: bool, os_name: str = "linux", tags: list[str] | None = None,
                 last_seen: str = "2026-01-26T08:00:00Z") -> dict:
    """One device of GET /api/v2/tailnet/{tailnet}/devices?fields=all."""
    return {
        "addresses": [ip, f"fd7a:115c:a1e0::{int(ip.rsplit('.', 1)[1]):x}"],
        "authorized": True,
        "blocksIncomingConnections": False,
        "clientVersion": "1.78.1-t8f0e3c5a1-g2b9d1c7e4",
        "connectedToControl": online,
        "created": "2025-11-02T09:14:07Z",
        "expires": "2026-05-01T09:14:07Z",
        "hostname": host,
        "id": str(int(_hex("id" + host, 12), 16)),
        "isExternal": False,
        "keyExpiryDisabled": False,
        "lastSeen": last_seen,
        "machineKey": "mkey:" + _hex("machine" + host),
        "name": f"{host.lower()}.{SUFFIX}",
        "nodeId": "n" + _hex("id" + host, 10).upper() + "CNTRL",
        "nodeKey": node_key(host),
        "os": os_name,
        "tags": tags or [],
        "tailnetLockError": "",
        "tailnetLockKey": "nlpub:" + _hex("lock" + host),
        "updateAvailable": False,
        "user": "agent@example.com",
    }


def make_certificate(directory: Path, hostname: str = "api.tailscale.com") -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for `hostname`: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peersync test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(paths[2], 0o600)
    return paths


class _AdminHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _json(self, status: int, doc) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        fake: FakeAdminAPI = self.server.fake  # type: ignore[attr-defined]
        fake.requests.append({"path": self.path, "host": self.headers.get("Host")})
        if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            return self._json(401, {"message": "API token invalid"})
        url = urlsplit(self.path)
        if url.path != f"/api/v2/tailnet/{fake.tailnet}/devices":
            return self._json(404, {"message": "not found"})
        self._json(200, {"devices": fake.devices})


class FakeAdminAPI:
    """The admin API's device list over HTTPS on 127.0.0.1, with a certificate for
    api.tailscale.com from a throwaway CA; `client_session()` is the only client that trusts it."""

    def __init__(self, directory: Path, devices: list[dict], *, api_key: str = "tskey-api-test",
                 tailnet: str = "-"):
        self.devices = devices
        self.api_key = api_key
        self.tailnet = tailnet
        self.requests: list[dict] = []
        self.ca, cert, key = make_certificate(directory)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _AdminHandler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "FakeAdminAPI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def client_session(self):
        """An aiohttp session (create it inside the event loop) that sends api.tailscale.com to
        this server and verifies TLS against the throwaway CA — nothing is disabled globally."""
        import aiohttp
        from aiohttp.abc import AbstractResolver

        port = self.port

        class LoopbackResolver(AbstractResolver):
            async def resolve(self, host, port_=0, family=socket.AF_INET):
                if host != "api.tailscale.com":
                    raise OSError(f"fake resolver: {host} is not faked")
                return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET,
                         "proto": 0, "flags": socket.AI_NUMERICHOST}]

            async def close(self) -> None:
                pass

        trust = ssl.create_default_context(cafile=str(self.ca))
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=LoopbackResolver(), ssl=trust))
