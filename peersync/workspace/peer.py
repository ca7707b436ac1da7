"""A peer as peers.json holds it, without the workspace machinery: a cold sync builds the ssh
command line from it and starts ssh before the engine (and pathspec) loads."""

from __future__ import annotations

from dataclasses import dataclass, field

from peersync.errors import UsageError

PEER_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True)
class Peer:
    """One entry of peers.json (clawdbot-sync format, extended with SSH settings)."""

    name: str
    host: str
    user: str | None = None
    path: str | None = None
    added_at: str | None = None
    port: int | None = None
    identity: str | None = None
    known_hosts: str | None = None
    command: str | None = None
    extra: dict = field(default_factory=dict, compare=False)  # unknown keys, kept on save

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def to_json(self) -> dict:
        out = dict(self.extra)
        out.update({"host": self.host, "user": self.user, "path": self.path, "addedAt": self.added_at})
        for key, value in (("port", self.port), ("identity", self.identity),
                           ("knownHosts", self.known_hosts), ("command", self.command)):
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, name: str, raw: dict) -> "Peer":
        if not isinstance(raw, dict) or not isinstance(raw.get("host"), str) or not raw["host"]:
            raise ValueError(f"peer {name!r} needs a \"host\" string")
        port = raw.get("port")
        if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
            raise ValueError(f"peer {name!r}: \"port\" must be a number from 1 to 65535")
        known = {"host", "user", "path", "addedAt", "port", "identity", "knownHosts", "command"}
        for key in known - {"port"}:
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise ValueError(f"peer {name!r}: \"{key}\" must be a string")
        return cls(
            name=name, host=raw["host"], user=raw.get("user") or None, path=raw.get("path") or None,
            added_at=raw.get("addedAt"), port=port, identity=raw.get("identity"),
            known_hosts=raw.get("knownHosts"), command=raw.get("command"),
            extra={k: v for k, v in raw.items() if k not in known},
        )


def check_peer_name(name: str) -> str:
    if not name or not set(name) <= PEER_NAME_CHARS or name.startswith((".", "-")):
        raise UsageError(f"invalid peer name {name!r}", "Use letters, digits, '-', '_' and '.'.")
    return name
