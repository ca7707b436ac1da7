"""A real OpenSSH server on 127.0.0.1 with throw-away keys, for tests and the README demo."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
HOST = "127.0.0.1"  # never bind anything else: tests must not be reachable from outside
START_TIMEOUT = 15.0


class SSHDError(RuntimeError):
    """The loopback sshd could not be set up; the message says what to install or check."""


class LoopbackSSHD:
    """OpenSSH's sshd on a free loopback port, trusting only keys written by this object.

    Everything lives in `base_dir`: host key, client keys, authorized_keys, known_hosts,
    sshd_config and the server log.  The server runs in the foreground (`-D`) as our child,
    so `stop()` ends it — and so does the death of the thread that started it (Linux
    PR_SET_PDEATHSIG), so start it from a long-lived thread.  The ssh client reads ~/.ssh of the
    passwd user, not $HOME, so callers pass `ssh_base_args()` (or the peer fields) explicitly.
    """

    def __init__(self, base_dir: Path | str, *, sshd_path: str = SSHD):
        self.base_dir = Path(base_dir).absolute()
        self.sshd_path = sshd_path
        self.host = HOST
        self.port: int | None = None
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.host_key = self.base_dir / "ssh_host_ed25519_key"
        self.identity = self.base_dir / "id_ed25519"
        self.authorized_keys = self.base_dir / "authorized_keys"
        self.known_hosts = self.base_dir / "known_hosts"
        self.ssh_config = self.base_dir / "ssh_config"
        self.sshd_config = self.base_dir / "sshd_config"
        self.log_path = self.base_dir / "sshd.log"
        self.pid_file = self.base_dir / "sshd.pid"
        self._proc: subprocess.Popen | None = None
        self._auth_lines: list[str] = []

    # -- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> "LoopbackSSHD":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "LoopbackSSHD":
        if self.running:
            return self
        self._check_tools()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        _make_privsep_dir()
        if not self.host_key.exists():
            _keygen(self.host_key, "peersync-test-host")
        if not self.identity.exists():
            _keygen(self.identity, "peersync-test-client")
        if not self._auth_lines:
            self.add_key(self.identity.with_suffix(".pub").read_text().strip())
        # A free port can be taken between probing and binding: retry with a new one.
        last_error: SSHDError | None = None
        for _ in range(3):
            try:
                self._launch(_free_port())
                break
            except _PortTaken as err:
                last_error = SSHDError(str(err))
        else:
            raise last_error or SSHDError("sshd did not start")
        self._write_client_files()
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    # -- keys -----------------------------------------------------------------------------
    def new_client_key(self, name: str) -> tuple[Path, str]:
        """Generate a client key `name` in base_dir (not yet authorized): (private path, pub line)."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"bad key name {name!r}")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        path = self.base_dir / f"id_{name}"
        if not path.exists():
            _keygen(path, f"peersync-test-{name}")
        return path, path.with_suffix(".pub").read_text().strip()

    def add_key(self, pubkey_line: str, options: str | None = None) -> None:
        """Authorize a public key, optionally with an options prefix such as
        `command="peersync agent --restrict /ws",restrict`.  sshd re-reads the file on every
        login, so keys added while it runs take effect at once."""
        line = pubkey_line.strip()
        if not line or "\n" in line:
            raise ValueError("expected one public key line")
        self._auth_lines.append(f"{options} {line}" if options else line)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.authorized_keys, "".join(x + "\n" for x in self._auth_lines), 0o600)

    # -- client side ----------------------------------------------------------------------
    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}"

    def ssh_base_args(self, identity: Path | str | None = None,
                      known_hosts: Path | str | None = None) -> list[str]:
        """Options for the `ssh` CLI (everything but the program name and the destination)."""
        self._require_port()
        return [
            "-F", "/dev/null",
            "-p", str(self.port),
            "-i", str(identity or self.identity),
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=10",
        ]

    def ssh_command(self, *remote: str, identity: Path | str | None = None,
                    known_hosts: Path | str | None = None) -> list[str]:
        """A full argv running `remote` (a shell command line, joined with spaces) on the server."""
        return ["ssh", *self.ssh_base_args(identity, known_hosts), self.target, *remote]

    def rsh(self, identity: Path | str | None = None) -> str:
        """The value for `rsync -e` / `--rsh` using the same settings as `ssh_base_args()`."""
        return shlex.join(["ssh", *self.ssh_base_args(identity)])

    def make_peer_args(self, *, path: Path | str | None = None, command: str | None = None,
                       identity: Path | str | None = None) -> list[str]:
        """Options for `peersync peers add NAME 127.0.0.1 ...` that reach this server."""
        self._require_port()
        args = ["--user", self.user, "--port", str(self.port),
                "--identity", str(identity or self.identity), "--known-hosts", str(self.known_hosts)]
        if path is not None:
            args += ["--path", str(path)]
        if command is not None:
            args += ["--remote-command", command]
        return args

    def make_peer(self, name: str, *, path: Path | str, command: str | None = None,
                  identity: Path | str | None = None):
        """A peersync.workspace.workspace.Peer that reaches the workspace at `path` through this server."""
        from peersync.workspace.workspace import (
            Peer,  # lazy: the harness itself runs without peersync's dependencies
        )

        self._require_port()
        return Peer(name=name, host=self.host, user=self.user, path=str(path),
                    added_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), port=self.port,
                    identity=str(identity or self.identity), known_hosts=str(self.known_hosts),
                    command=command)

    def alias_config(self, *aliases: str) -> str:
        """An ssh config (what a user keeps in ~/.ssh/config) that reaches this server as `Host`
        aliases — HostName, Port, User, key and known hosts all in the file, none on a command line —
        plus a block for 127.0.0.1 itself that leaves the port out (for HOST:PORT)."""
        self._require_port()
        keys = (f"  IdentityFile {self.identity}\n  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n")
        return (f"Host {' '.join(aliases)}\n  HostName {self.host}\n  Port {self.port}\n  User {self.user}\n{keys}"
                f"Host {self.host}\n  User {self.user}\n{keys}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no sshd log)"

    # -- internals ------------------------------------------------------------------------
    def _require_port(self) -> None:
        if self.port is None:
            raise SSHDError("the loopback sshd is not started (call start() first)")

    def _check_tools(self) -> None:
        if not os.access(self.sshd_path, os.X_OK):
            raise SSHDError(f"{self.sshd_path} not found: the tests need a real OpenSSH server.\n"
                            "Install it with: apt-get install -y openssh-server")
        for tool in ("ssh", "ssh-keygen", "ssh-keyscan"):
            if not shutil.which(tool):
                raise SSHDError(f"{tool} not found on PATH.\n"
                                "Install it with: apt-get install -y openssh-client")

    def _server_config(self, port: int) -> str:
        lines = [
            f"Port {port}",
            f"ListenAddress {HOST}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"PidFile {self.pid_file}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "PermitRootLogin prohibit-password",
            "PermitUserEnvironment no",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "LogLevel VERBOSE",
            # Tests open many connections at once (several peers, retries): no random drops.
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
        ]
        if _openssh_version() >= (9, 8):
            # Newer sshd penalises addresses after failed logins; tests fail logins on purpose.
            lines.append("PerSourcePenalties no")
        return "".join(line + "\n" for line in lines)

    def _launch(self, port: int) -> None:
        _write_atomic(self.sshd_config, self._server_config(port), 0o600)
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        # stderr goes to a file, not a pipe: a pipe nobody drains could block sshd.
        stderr_path = self.base_dir / "sshd.stderr"
        with open(stderr_path, "wb") as stderr:
            self._proc = subprocess.Popen(
                [self.sshd_path, "-D", "-f", str(self.sshd_config), "-E", str(self.log_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                stderr = stderr_path.read_text(errors="replace")
                log = self._log_since(log_start)
                self._proc = None
                text = (stderr + "\n" + log).strip()
                if "Address already in use" in text or "Cannot bind any address" in text:
                    raise _PortTaken(f"port {port} was taken: {text}")
                raise SSHDError(f"sshd exited at start:\n{text or '(no output)'}")
            key = _keyscan(port) if _port_open(port) else None
            if key is not None:
                expected = self.host_key.with_suffix(".pub").read_text().split()[:2]
                if key.split()[1:3] != expected:
                    self.stop()
                    raise _PortTaken(f"another ssh server answered on port {port}")
                self.port = port
                self.known_hosts.write_text(key + "\n")
                return
            time.sleep(0.05)
        self.stop()
        raise SSHDError(f"sshd did not answer on {HOST}:{port} within {START_TIMEOUT:.0f} s:\n"
                        f"{self._log_since(log_start)}")

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace").strip()
        except FileNotFoundError:
            return ""

    def _write_client_files(self) -> None:
        self.ssh_config.write_text(
            "Host *\n"
            f"  Port {self.port}\n"
            f"  User {self.user}\n"
            f"  IdentityFile {self.identity}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            "  ConnectTimeout 10\n"
        )


class _PortTaken(SSHDError):
    pass


def _make_privsep_dir() -> None:
    # sshd refuses to start without its privilege-separation directory.
    try:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    except OSError as err:
        if not os.path.isdir("/run/sshd"):
            raise SSHDError(f"cannot create /run/sshd ({err.strerror}); sshd needs it.\n"
                            "Run the tests as root, or create it: mkdir -p /run/sshd") from None


def _keygen(path: Path, comment: str) -> None:
    result = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise SSHDError(f"ssh-keygen failed for {path}: {result.stderr.strip()}")
    path.chmod(0o600)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _keyscan(port: int) -> str | None:
    """The known_hosts line `[127.0.0.1]:PORT ssh-ed25519 KEY`, or None while sshd is not ready."""
    try:
        result = subprocess.run(["ssh-keyscan", "-T", "3", "-t", "ed25519", "-p", str(port), HOST],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return None
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#") and fields[1] == "ssh-ed25519":
            return " ".join(fields[:3])
    return None


def _openssh_version() -> tuple[int, int]:
    try:
        out = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr
    except OSError:
        return (0, 0)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _write_atomic(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM sshd when the thread that started it dies,
    so a killed test run leaves no server behind."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes  # lazy: only where a parent-death signal is asked for

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
