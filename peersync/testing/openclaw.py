"""A real OpenClaw for tests: a private state dir, its config, the CLI and a loopback Gateway.

Uses the OpenClaw releases scripts/setup.sh installs in .tools/openclaw/ (Node.js from the npm
registry included).  No model, no channel, no network: commands sent through the Gateway's
`chat.send` reach plugin commands, and cron command jobs run, without any LLM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "openclaw" / "bin"
CURRENT = "2026.9.6"  # the release the tests drive (setup.sh installs it)
LEGACY = "2026.7.35"  # the last line that reads HEARTBEAT.md


class OpenClawMissing(RuntimeError):
    pass


def cli_path(version: str = CURRENT) -> Path:
    path = TOOLS / f"openclaw-{version}"
    if not path.exists():
        raise OpenClawMissing(f"{path} is missing: run scripts/setup.sh (it installs OpenClaw {version})")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpenClawHome:
    """One isolated OpenClaw install: HOME and OPENCLAW_STATE_DIR under `base`, a config naming
    `workspace` as the agent's workspace, and `bin/openclaw` → the chosen release."""

    def __init__(self, base: Path, workspace: Path, version: str = CURRENT, extra_path: list[str] = ()):
        self.base = Path(base)
        self.workspace = Path(workspace)
        self.version = version
        self.home = self.base / "home"
        self.state = self.base / "state"
        self.bin = self.base / "bin"
        self.port = _free_port()
        self.token = uuid.uuid4().hex
        self.gateway: subprocess.Popen | None = None
        self.log = self.base / "gateway.log"
        for d in (self.home, self.state, self.bin, self.workspace):
            d.mkdir(parents=True, exist_ok=True)
        link = self.bin / "openclaw"
        if not link.exists():
            link.symlink_to(cli_path(version))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_") and k != "WORKSPACE"},
            "HOME": str(self.home), "OPENCLAW_STATE_DIR": str(self.state),
            "PATH": os.pathsep.join([str(self.bin), *extra_path, os.environ.get("PATH", "")]),
            "OPENCLAW_GATEWAY_TOKEN": self.token, "NO_COLOR": "1",
        }
        self.env.pop("PEERSYNC_OPENCLAW", None)
        config = self.state / "openclaw.json"
        if not config.exists():
            config.write_text(json.dumps({
                "gateway": {"mode": "local", "port": self.port, "bind": "loopback",
                            "auth": {"mode": "token", "token": self.token}},
                "agents": {"defaults": {"workspace": str(self.workspace)}},
            }, indent=2))

    def run(self, *args: str, check: bool = True, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
        proc = subprocess.run(["openclaw", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd or self.base)
        if check and proc.returncode != 0:
            raise AssertionError(f"openclaw {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        return proc

    def json(self, *args: str, timeout: float = 120):
        out = self.run(*args, timeout=timeout).stdout
        start = min((i for i in (out.find("{"), out.find("[")) if i >= 0), default=0)
        return json.loads(out[start:])

    def call(self, method: str, params: dict, timeout: float = 60):
        return self.json("gateway", "call", method, "--json", "--timeout", str(int(timeout * 1000)),
                         "--params", json.dumps(params), timeout=timeout + 30)

    # -- the Gateway ------------------------------------------------------------------------
    def start(self, timeout: float = 120) -> None:
        offset = len(self.log_text())  # a restart appends to the same log: look past what is there
        log = open(self.log, "ab")
        self.gateway = subprocess.Popen(["openclaw", "gateway", "run", "--port", str(self.port)], env=self.env,
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.base, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gateway.poll() is not None:
                raise AssertionError(f"the Gateway exited ({self.gateway.returncode}):\n{self.log_text()[-3000:]}")
            if "[gateway] ready" in self.log_text()[offset:]:
                return
            time.sleep(0.5)
        raise AssertionError(f"the Gateway was not ready within {timeout:g} s:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.gateway is None:
            return
        try:
            os.killpg(self.gateway.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.gateway.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.gateway.pid, signal.SIGKILL)
            self.gateway.wait(10)
        self.gateway = None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- chat -------------------------------------------------------------------------------
    def chat(self, message: str, session: str = "main", timeout: float = 300) -> str:
        """Send `message` as a chat message (the Control UI's path) and return the reply text."""
        before = len(self._messages(session))
        key = uuid.uuid4().hex
        self.call("chat.send", {"sessionKey": session, "message": message, "idempotencyKey": key})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = [m for m in self._messages(session)[before:] if m.get("role") == "assistant"]
            if replies:
                return "\n".join(_text(m) for m in replies)
            time.sleep(0.5)
        raise AssertionError(f"no reply to {message!r} within {timeout:g} s")

    def chat_reply_record(self, session: str = "main") -> dict:
        return [m for m in self._messages(session) if m.get("role") == "assistant"][-1]

    def _messages(self, session: str) -> list[dict]:
        return self.call("chat.history", {"sessionKey": session, "limit": 200}).get("messages", [])


def _text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))
