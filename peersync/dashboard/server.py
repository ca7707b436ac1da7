"""The live dashboard: the page served on 127.0.0.1 only, behind a random token, with action endpoints.

Every request must name the token as the first path segment (`/TOKEN/…`); anything else gets a
bare 404, so nothing about the workspace is visible without the URL that `dashboard --serve`
printed.  The Host header must be the loopback address we listen on (no DNS rebinding), a POST
from another origin is refused, and the page may not be framed (no clickjacking of its buttons).
"""

from __future__ import annotations

import hmac
import json
import secrets
import signal
import threading
import time
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from peersync.dashboard import actions
from peersync.dashboard.data import backup_overview, gather, guarded, probe_peers
from peersync.dashboard.page import render
from peersync.errors import PeersyncError
from peersync.workspace.workspace import Workspace

HOST = "127.0.0.1"  # never anything else: the page shows conflict contents
REFRESH = 5  # seconds between the page's polls
PROBE_INTERVAL = 60.0  # seconds between background probes of the peers
BACKUP_TTL = 60.0  # seconds the backup section (asked of the target) is reused
MAX_BODY = 4096


class Dashboard:
    """The server and its background prober.  start() returns once it listens; stop() ends both."""

    def __init__(self, ws: Workspace, *, port: int = 0, probe: bool = True):
        self.ws = ws
        self.token = secrets.token_urlsafe(24)
        self.probe = probe
        self._stop = threading.Event()
        self._backups: tuple[float, dict] | None = None
        self._lock = threading.Lock()
        self.httpd = _Server((HOST, port), _Handler)
        self.httpd.dashboard = self
        self.port = self.httpd.server_address[1]
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/{self.token}/"

    def start(self) -> "Dashboard":
        serve = threading.Thread(target=self.httpd.serve_forever, name="dashboard-http", daemon=True)
        serve.start()
        self._threads.append(serve)
        if self.probe:
            prober = threading.Thread(target=self._probe_loop, name="dashboard-probe", daemon=True)
            prober.start()
            self._threads.append(prober)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=15)

    def _probe_loop(self) -> None:

        while not self._stop.is_set():
            try:
                probe_peers(self.ws)
            except Exception:  # noqa: BLE001 — a failed probe shows as "not seen"; the page goes on
                pass
            self._stop.wait(PROBE_INTERVAL)

    # -- what the endpoints return ---------------------------------------------------------------
    def document(self, *, fresh_backups: bool = False) -> dict:

        with self._lock:
            cached = self._backups
            if fresh_backups or cached is None or time.monotonic() - cached[0] > BACKUP_TTL:
                cached = (time.monotonic(), guarded(lambda: backup_overview(self.ws), "backups"))
                self._backups = cached
        return gather(self.ws, contents=True, backups=cached[1])

    def page(self) -> str:

        return render(self.document(), live={"refresh": REFRESH})

    def act(self, kind: str, ident: str, verb: str) -> tuple[int, dict]:

        handlers = {("conflicts", "restore"): actions.restore_conflict, ("conflicts", "drop"): actions.drop_conflict,
                    ("backups", "restore"): actions.restore_snapshot}
        handler = handlers.get((kind, verb))
        if handler is None:
            return HTTPStatus.NOT_FOUND, {"ok": False, "error": "no such action"}
        try:
            message = handler(self.ws, ident)
        except PeersyncError as err:
            return HTTPStatus.CONFLICT, {"ok": False, "error": str(err).replace("\n", " — "),
                                         "doc": self.document()}
        return HTTPStatus.OK, {"ok": True, "message": message,
                               "doc": self.document(fresh_backups=kind == "backups")}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False  # a port in use is an error, not shared
    dashboard: Dashboard


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "peersync-dashboard"
    sys_version = ""

    def log_message(self, format, *args) -> None:  # noqa: A002 — the request line holds the token
        pass

    def _route(self) -> list[str] | None:
        """The path's segments after a valid token, or None (answered 404 / 400 already)."""
        board = self.server.dashboard
        host = self.headers.get("Host", "")
        if host not in (f"{HOST}:{board.port}", f"localhost:{board.port}"):
            self._send(HTTPStatus.BAD_REQUEST, b"bad host\n", "text/plain")
            return None
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/")[1:]]
        if not parts or not hmac.compare_digest(parts[0].encode(), board.token.encode()):
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            return None
        return parts[1:]

    def do_GET(self) -> None:
        parts = self._route()
        if parts is None:
            return
        board = self.server.dashboard
        if parts == []:  # /TOKEN: the page's relative links need the trailing slash
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", f"/{board.token}/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts == [""]:
            self._send(HTTPStatus.OK, board.page().encode("utf-8", "backslashreplace"), "text/html; charset=utf-8")
        elif parts == ["api", "data"]:
            self._json(HTTPStatus.OK, board.document())
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        parts = self._route()
        if parts is None:
            return
        board = self.server.dashboard
        origin = self.headers.get("Origin")
        if origin is not None and origin not in (f"http://{HOST}:{board.port}", f"http://localhost:{board.port}"):
            self._json(HTTPStatus.FORBIDDEN, {"ok": False, "error": "requests from other pages are refused"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"ok": False, "error": "request too large"})
            return
        self.rfile.read(length)
        if len(parts) == 4 and parts[0] == "api":
            status, body = board.act(parts[1], parts[2], parts[3])
        else:
            status, body = HTTPStatus.NOT_FOUND, {"ok": False, "error": "no such action"}
        self._json(status, body)

    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body, ensure_ascii=False).encode("utf-8", "backslashreplace"), "application/json; charset=utf-8")

    def _send(self, status: int, data: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", "frame-ancestors 'none'")
        self.end_headers()
        self.wfile.write(data)


def serve(ws: Workspace, *, port: int = 0, open_browser: bool = False, out=print) -> int:
    """`dashboard --serve`: serve until SIGINT or SIGTERM."""

    board = Dashboard(ws, port=port).start()
    done = threading.Event()
    previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        out(f"📊 Dashboard at {board.url}\n   (this machine only; the link holds its access token — Ctrl-C stops it)")
        if open_browser:

            webbrowser.open(board.url)
        while not done.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        board.stop()
    out("👋 Dashboard stopped")
    return 0
