"""restic as the backup engine: find it, check its version, and run it on a repository reached through rclone.

Every repository is `rclone:<remote>` with `rclone.program` set to the rclone peersync uses, so
any rclone remote works and restic needs no credentials of its own.  Secrets never reach argv:
the passphrase travels as RESTIC_PASSWORD / RESTIC_PASSWORD_FILE, remote options as
RCLONE_CONFIG_* variables (restic hands its environment to the rclone it starts).

What restic versions change here (peersync needs >= 0.14, Debian 12's):
- 0.14: repository format 2 (compressed), `--json` for backup, snapshots, ls, find, forget,
  stats; check and restore print text only; stale locks still block until `unlock`.
- 0.15 ignores the locks of dead processes on the same host by itself.
- 0.16 accepts -1 ("unlimited") for --keep-* and keeps the oldest snapshot while a rule has
  count left (peersync.core.retention mirrors either behaviour: see keep_oldest()).
- 0.17 adds `snapshots --json` summaries (files and bytes per snapshot), used when present.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from peersync.core.retention import RULES, UNLIMITED
from peersync.errors import BackupError, BusyError, PeersyncError, UsageError
from peersync.transport.rclone import Rclone, classify, summarise_stderr

MIN_VERSION = (0, 14)
RESTIC_ENV = "PEERSYNC_RESTIC"  # explicit path to the binary (overrides PATH)
UNLIMITED_SINCE = (0, 16)  # --keep-* -1 means "all"; older versions read -1 as "keep none"
OLDEST_SINCE = (0, 16)  # forget keeps the oldest snapshot while a rule still has count left
HUGE = 1_000_000_000  # "unlimited" for restic < 0.16
EXIT_INCOMPLETE = 3  # `restic backup`: snapshot written, but some files could not be read


def install_hint(platform: str = sys.platform) -> str:
    if platform == "darwin":
        return "Install it with: brew install restic"
    return ("Install it with: sudo apt install restic   (Debian/Ubuntu; or brew install restic, "
            f"or set ${RESTIC_ENV} to its path)")


class ResticError(BackupError):
    """restic failed; `stderr` holds its output with secrets removed."""

    def __init__(self, message: str, hint: str | None = None, *, stderr: str = "", returncode: int | None = None):
        super().__init__(message, hint)
        self.stderr = stderr
        self.returncode = returncode


class ResticMissing(ResticError):
    """No usable restic (absent, or older than MIN_VERSION)."""


class WrongPassphrase(ResticError):
    """The repository does not open with the passphrase given, or none is set (bad input: exit 2)."""

    exit_code = 2
    kind = "usage"


class NoRepository(ResticError):
    """Nothing at the target yet."""


@dataclass(frozen=True)
class Locked:
    """Who holds the lock that stopped a command (parsed from restic's message)."""

    pid: int
    host: str
    exclusive_wanted: bool
    storage_id: str = ""


class RepositoryLocked(ResticError, BusyError):
    kind = "busy"

    def __init__(self, message: str, hint: str | None, lock: Locked, **kw):
        super().__init__(message, hint, **kw)
        self.lock = lock


# -- finding the binary -------------------------------------------------------------------------

_versions: dict[str, tuple[int, ...]] = {}
_versions_lock = threading.Lock()


def find_restic(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    explicit = env.get(RESTIC_ENV)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ResticMissing(f"restic not found at ${RESTIC_ENV}={explicit}", install_hint())
        return explicit
    found = shutil.which("restic", path=env.get("PATH", os.defpath))
    if not found:
        raise ResticMissing("restic is not installed (peersync's backups are restic repositories)", install_hint())
    return found


def parse_version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"restic (\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part or 0) for part in match.groups()) if match else None


def check_version(binary: str) -> tuple[int, ...]:
    with _versions_lock:
        if binary in _versions:
            return _versions[binary]
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
    except OSError as err:
        raise ResticMissing(f"cannot run restic at {binary}: {err.strerror or err}", install_hint()) from None
    except subprocess.TimeoutExpired:
        raise ResticMissing(f"restic at {binary} did not answer `restic version`", install_hint()) from None
    version = parse_version(out.stdout)
    if out.returncode != 0 or version is None:
        raise ResticMissing(f"{binary} does not look like restic (`restic version` failed)", install_hint())
    if version[:2] < MIN_VERSION:
        raise ResticMissing(f"restic {'.'.join(map(str, version))} at {binary} is too old (peersync needs >= "
                            f"{MIN_VERSION[0]}.{MIN_VERSION[1]})", install_hint())
    with _versions_lock:
        _versions[binary] = version
    return version


def tool_check() -> dict:
    """For `init`, `backup status` and the skill: {"ok", "version", "path", "fix"}."""
    try:
        binary = find_restic()
        version = check_version(binary)
    except ResticMissing as err:
        return {"ok": False, "version": None, "path": None, "fix": f"{err.message}. {err.hint}"}
    return {"ok": True, "version": ".".join(map(str, version)), "path": binary, "fix": None}


# -- running restic ---------------------------------------------------------------------------------

LineCallback = Callable[[dict], None]


@dataclass
class Restic:
    """restic bound to one repository: `rclone:<remote>`, its passphrase and the env that reaches it.

    `umask` 077 for restic and the rclone it starts: on a local target every file of the
    repository is 0600 and every directory 0700 (rclone's local backend creates them with the
    process umask)."""

    rclone: Rclone
    remote: str  # an rclone remote string with no secret in it, e.g. "peersync_target:bucket/ws"
    password_env: Mapping[str, str] = field(repr=False, default_factory=dict)  # RESTIC_PASSWORD[_FILE]
    secrets: tuple[str, ...] = field(repr=False, default=())
    binary: str = ""
    version: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.binary = self.binary or find_restic(self.rclone.env)
        self.version = self.version or check_version(self.binary)

    @property
    def repository(self) -> str:
        return f"rclone:{self.remote}"

    def argv(self, args: Iterable[str]) -> list[str]:
        argv = [self.binary, "-r", self.repository, "-o", f"rclone.program={self.rclone.binary}", *args]
        if any(s in arg for s in self.secrets if len(s) >= 6 for arg in argv):
            raise ResticError("refusing to put a secret on restic's command line (it would be visible in ps)")
        return argv

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in self.rclone.env.items() if not k.startswith("RESTIC_")}
        env.update(self.password_env)
        env["RESTIC_PROGRESS_FPS"] = "2"  # --json status lines: twice a second is plenty
        env.update(extra or {})
        return env

    def run(self, args: list[str], *, cwd: str | None = None, check: bool = True, timeout: float | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(self.argv(args), env=self.env(env), cwd=cwd, capture_output=True,
                                  stdin=subprocess.DEVNULL, timeout=timeout, umask=0o077)
        except subprocess.TimeoutExpired:
            raise ResticError(f"restic {args[0]} timed out after {timeout:.0f} s") from None
        if check and proc.returncode != 0:
            raise self.error(args, proc.returncode, proc.stderr.decode(errors="replace"))
        return proc

    def json(self, args: list[str], **kw):
        out = self.run([*args, "--json"], **kw).stdout.decode()
        return json.loads(out) if out.strip() else None

    def json_lines(self, args: list[str], **kw) -> list[dict]:
        out = self.run([*args, "--json"], **kw).stdout.decode()
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def stream(self, args: list[str], on_line: LineCallback, *, cwd: str | None = None,
               ok_codes: tuple[int, ...] = (0,)) -> tuple[int, str]:
        """Run a --json command, handing each JSON line of stdout to `on_line` as it comes.
        Returns (exit code, stderr)."""
        proc = subprocess.Popen(self.argv([*args, "--json"]), env=self.env(), cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, umask=0o077)
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
        reader.start()
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                if raw.startswith(b"{"):
                    try:
                        on_line(json.loads(raw))
                    except ValueError:
                        pass
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        code = proc.wait()
        reader.join()
        stderr = b"".join(errors).decode(errors="replace")
        if code not in ok_codes:
            raise self.error(args, code, stderr)
        return code, stderr

    # -- errors -----------------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        return self.rclone.scrub(text)

    def error(self, args: list[str], returncode: int, stderr: str) -> PeersyncError:
        stderr = self.scrub(stderr)
        low = stderr.lower()
        where = self.remote
        if "wrong password or no key found" in low:
            return WrongPassphrase(f"wrong passphrase for the backups at {where}",
                                   "Check PEERSYNC_BACKUP_PASSPHRASE, backup.passphrase or the passphrase file "
                                   "(see `peersync backup status`); nothing was read or written.",
                                   stderr=stderr, returncode=returncode)
        if "unexpected http response (5" in low:
            # rclone's backend failed (bad credentials, endpoint down…) and restic only saw a 500:
            # ask rclone itself, whose error names the cause.
            probe = self.rclone.run(["lsf", self.remote, "--max-depth", "1"], check=False, timeout=120)
            if probe.returncode != 0:
                err = self.rclone.error(["lsf"], probe.returncode, probe.stderr.decode(errors="replace"))
                err.message = f"cannot reach the backups at {where}: {err.message.split(': ', 1)[-1]}"
                return err
        if "unable to open config file" in low and "does not exist" in low:
            return NoRepository(f"no backups at {where} yet", "Run `peersync backup now` first, or check "
                                "--target / backup.target.", stderr=stderr, returncode=returncode)
        locked = parse_lock(stderr)
        if locked is not None:
            return RepositoryLocked(f"the backups at {where} are locked by restic PID {locked.pid} on {locked.host}",
                                    "Another backup, prune or verify is running; try again when it ends.",
                                    locked, stderr=stderr, returncode=returncode)
        rclone_lines = "\n".join(line[len("rclone: "):] for line in stderr.splitlines() if line.startswith("rclone: "))
        cls, hint = classify(stderr)
        if rclone_lines.strip():
            summary = summarise_stderr(rclone_lines)
        else:
            summary = "; ".join(dict.fromkeys(
                line.removeprefix("Fatal: ").strip() for line in stderr.splitlines()
                if line.startswith("Fatal: ") or "error" in line.lower()))[:400]
        if cls.__name__ == "UnknownRemote":
            return _Usage(f"restic {args[0]} failed: {summary}", hint, stderr=stderr, returncode=returncode)
        return ResticError(f"restic {args[0]} failed: {summary or f'exit status {returncode}'}", hint,
                           stderr=stderr, returncode=returncode)


class _Usage(ResticError, UsageError):
    exit_code = 2
    kind = "usage"


def parse_lock(stderr: str) -> Locked | None:
    """restic 0.14's "repository is already locked [exclusively] by PID N on HOST by USER …
    storage ID abcd1234" message, or None."""
    match = re.search(r"already locked (exclusively )?by PID (\d+) on (\S+) by ", stderr)
    if match is None:
        return None
    storage = re.search(r"storage ID ([0-9a-f]+)", stderr)
    return Locked(int(match.group(2)), match.group(3), bool(match.group(1)), storage.group(1) if storage else "")


def keep_flags(policy, version: tuple[int, ...]) -> list[str]:
    """restic forget flags for a peersync.core.retention.KeepPolicy (UNLIMITED as restic understands it)."""
    flags: list[str] = []
    for rule in RULES:
        n = getattr(policy, rule)
        if n:
            n = (-1 if version[:2] >= UNLIMITED_SINCE else HUGE) if n == UNLIMITED else n
            flags += [f"--keep-{rule}", str(n)]
    return flags


def keep_oldest(version: tuple[int, ...]) -> bool:
    """Whether this restic's forget keeps the oldest snapshot while a rule still has count left."""
    return version[:2] >= OLDEST_SINCE
