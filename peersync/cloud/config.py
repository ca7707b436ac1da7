"""Cloud peers' settings: their peers.json entry, provider shortcuts from config.yaml, the rclone folder they name.

A cloud peer is an ordinary peers.json entry whose extra keys say what it is:

    "dropbox": {"host": "dropbox:Agent", "path": "work", "addedAt": "…",
                "type": "cloud", "remote": "Agent", "provider": "dropbox", "mode": "mailbox"}

`remote` is any rclone remote (a local folder, `name:path` from rclone.conf or RCLONE_CONFIG_*
variables, a `:backend,opts:path` connection string) or, with `provider`, a path inside the
remote that the provider shortcut defines.  `path` is an optional folder inside it.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import Mapping

from peersync.core.types import Mode
from peersync.errors import ConfigError, UsageError
from peersync.transport.rclone import join, resolve_target
from peersync.workspace import openclaw
from peersync.workspace.workspace import Peer, Workspace

MODES = ("mailbox", "mirror", "bisync")
DIRECTIONS = ("push", "pull")
ENV_REMOTE = "peersync_cloud"  # the rclone remote name provider shortcuts and connection strings become

# Provider shortcuts: rclone backend options, secrets as ${VAR} references resolved at run time.
# config.yaml `cloud.providers.NAME` overrides keys of these, or defines new providers.
PROVIDERS: dict[str, dict[str, str]] = {
    "dropbox": {"type": "dropbox", "token": "${DROPBOX_TOKEN}"},
    "gdrive": {"type": "drive", "scope": "drive", "token": "${GDRIVE_TOKEN}"},
    "onedrive": {"type": "onedrive", "token": "${ONEDRIVE_TOKEN}", "drive_id": "${ONEDRIVE_DRIVE_ID}",
                 "drive_type": "${ONEDRIVE_DRIVE_TYPE:-personal}"},
    "s3": {"type": "s3", "provider": "AWS", "access_key_id": "${AWS_ACCESS_KEY_ID}",
           "secret_access_key": "${AWS_SECRET_ACCESS_KEY}", "region": "${AWS_REGION:-us-east-1}"},
    "r2": {"type": "s3", "provider": "Cloudflare", "access_key_id": "${R2_ACCESS_KEY_ID}",
           "secret_access_key": "${R2_SECRET_ACCESS_KEY}",
           "endpoint": "https://${R2_ACCOUNT_ID}.r2.cloudflarestorage.com", "region": "auto",
           "no_check_bucket": "true"},
    "b2": {"type": "b2", "account": "${B2_ACCOUNT_ID}", "key": "${B2_APPLICATION_KEY}"},
}

SECRET_KEY = re.compile(r"(secret|password|pass\b|key|token|credential)", re.I)  # values never shown
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class CloudSpec:
    """What `cloud add` saved for one cloud peer."""

    remote: str
    mode: str
    direction: str = "push"
    folder: str | None = None
    provider: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.remote, str) or not self.remote.strip():
            raise ValueError("a cloud peer needs a \"remote\"")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} (got {self.mode!r})")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be push or pull (got {self.direction!r})")
        if self.folder is not None:
            check_folder(self.folder)

    @classmethod
    def from_peer(cls, peer: Peer) -> "CloudSpec":
        extra = peer.extra
        try:
            return cls(remote=extra.get("remote"), mode=extra.get("mode"), direction=extra.get("direction") or "push",
                       folder=peer.path, provider=extra.get("provider"))
        except ValueError as err:
            raise ConfigError(f"peers.json: cloud peer {peer.name!r}: {err}",
                              "Fix it with: peersync cloud add NAME REMOTE --mode mailbox|mirror|bisync") from None

    def extra(self) -> dict:
        out = {"type": "cloud", "remote": self.remote, "mode": self.mode}
        if self.mode == "mirror":
            out["direction"] = self.direction
        if self.provider:
            out["provider"] = self.provider
        return out


def check_folder(folder: str) -> str:
    norm = posixpath.normpath(folder.strip("/")) if folder.strip("/") else ""
    if not norm or norm.startswith("..") or "\\" in folder or any(ord(c) < 32 for c in folder):
        raise ValueError(f"--path must be a folder inside the remote (got {folder!r})")
    return norm


@dataclass(frozen=True)
class CloudTarget:
    """The cloud folder as rclone sees it, plus what to pass rclone and what to show the user."""

    root: str
    display: str
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    identity: str = ""  # what names the folder for peersync's memory of it (ancestor, hash cache)

    @property
    def key(self) -> str:
        return self.identity or self.root


def expand(value: str, environ: Mapping[str, str], *, where: str) -> str:
    """Replace ${VAR} and ${VAR:-default}; a missing variable without default is a ConfigError."""

    def one(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if environ.get(name):
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{where} needs the environment variable ${name}, which is not set",
                          f"Export {name} before running peersync (secrets stay out of config files).")

    return _REF.sub(one, value)


def provider_settings(ws: Workspace, provider: str) -> dict[str, str]:
    """The built-in shortcut merged with config.yaml `cloud.providers.<provider>` (unexpanded)."""
    section = cloud_section(ws).get("providers") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{ws.config_file}: cloud.providers must be a mapping of provider names")
    custom = section.get(provider) or {}
    if not isinstance(custom, dict):
        raise ConfigError(f"{ws.config_file}: cloud.providers.{provider} must be a mapping of rclone options")
    if provider not in PROVIDERS and not custom:
        known = ", ".join(sorted(set(PROVIDERS) | set(section)))
        raise UsageError(f"unknown cloud provider {provider!r} (known: {known})",
                         f"Define it in config.yaml under cloud.providers.{provider} (rclone options, "
                         "with `type`), or use an rclone remote directly.")
    merged = {**PROVIDERS.get(provider, {}), **{str(k): str(v) for k, v in custom.items() if v is not None}}
    if "type" not in merged:
        raise ConfigError(f"{ws.config_file}: cloud.providers.{provider} needs a `type` (an rclone backend)")
    return merged


def resolve(ws: Workspace, spec: CloudSpec, environ: Mapping[str, str] | None = None) -> CloudTarget:
    """Turn a cloud peer's settings into the rclone remote string of its folder."""
    environ = os.environ if environ is None else environ
    if spec.provider:
        settings = provider_settings(ws, spec.provider)
        prefix = "RCLONE_CONFIG_" + ENV_REMOTE.upper() + "_"
        env, secrets = {}, []
        for key, raw in settings.items():
            value = expand(raw, environ, where=f"cloud provider {spec.provider!r} ({key})")
            env[prefix + key.upper().replace("-", "_")] = value
            if SECRET_KEY.search(key) and value:
                secrets.append(value)
        path = spec.remote.strip("/")
        root = join(f"{ENV_REMOTE}:{path}", spec.folder or "")
        display = join(f"{spec.provider}:{path}", spec.folder or "")
        # Every provider shortcut becomes the same rclone remote name; the non-secret settings
        # (type, endpoint, region…) tell one provider's folder from another's.
        public = sorted((k, v) for k, v in env.items() if v not in secrets)
        identity = display + "|" + ";".join(f"{k}={v}" for k, v in public)
        return CloudTarget(root=root, display=display, env=env, secrets=tuple(secrets), identity=identity)
    target = resolve_target(expand(spec.remote, environ, where="the cloud remote"), env_name=ENV_REMOTE,
                            cwd=ws.root)
    display = join(target.display, spec.folder or "")
    return CloudTarget(root=join(target.remote, spec.folder or ""), display=display, env=dict(target.env),
                       secrets=target.secrets, identity=display if target.env else "")


def cloud_section(ws: Workspace) -> dict:
    section = ws.raw_config().get("cloud") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{ws.config_file}: 'cloud' must be a mapping")
    return section


def inbox_command(ws: Workspace) -> list[str] | None:
    """config.yaml `cloud.inbox.command`: a string (split like a shell would, never run by one)
    or a list of arguments.  `{files}` in an argument becomes the new names, comma-separated;
    without it the names are appended as arguments."""
    inbox = cloud_section(ws).get("inbox") or {}
    if not isinstance(inbox, dict):
        raise ConfigError(f"{ws.config_file}: cloud.inbox must be a mapping")
    command = inbox.get("command")
    notify = inbox.get("notifyOnInbox", False)
    if not isinstance(notify, bool):
        raise ConfigError(f"{ws.config_file}: cloud.inbox.notifyOnInbox must be true or false")
    if notify and not command:
        # As openclaw-workspace-sync's notifyOnInbox: wake the agent with a system event that
        # names the new files (one agent turn each time, so off by default).
        claw = openclaw.find()
        if claw is None:
            raise ConfigError(f"{ws.config_file}: cloud.inbox.notifyOnInbox needs OpenClaw's CLI on PATH",
                              "Install OpenClaw, set $PEERSYNC_OPENCLAW, or turn notifyOnInbox off.")
        return openclaw.system_event_argv(claw, "📥 New files in _inbox/: {files}")
    if command is None or command == "":
        return None
    if isinstance(command, str):
        try:
            return shlex.split(command)
        except ValueError as err:
            raise ConfigError(f"{ws.config_file}: cloud.inbox.command: {err}") from None
    if isinstance(command, list) and all(isinstance(c, str) for c in command) and command:
        return list(command)
    raise ConfigError(f"{ws.config_file}: cloud.inbox.command must be a string or a list of strings")


# -- managing cloud peers (the `cloud` commands) --------------------------------------------------

def is_cloud(peer: Peer) -> bool:
    return peer.extra.get("type") == "cloud"


def state_dir(ws: Workspace, name: str):
    return ws.state / "cloud" / name


def cloud_peers(ws: Workspace) -> dict[str, Peer]:
    return {name: peer for name, peer in ws.load_peers().items() if is_cloud(peer)}


def run_mode(peer: Peer, spec: CloudSpec, mode: Mode) -> Mode:
    """The direction of this run: mailbox always pushes; a mirror follows its direction unless the
    command names one (push / pull); bisync does what the command says."""
    if spec.mode == "mailbox":
        if mode is Mode.PULL:
            raise UsageError(f"{peer.name} is a mailbox: it only pushes; files come back through its _outbox/",
                             f"Run: peersync sync {peer.name}")
        return Mode.PUSH
    if spec.mode == "mirror" and mode is Mode.SYNC:
        return Mode(spec.direction)
    return mode
