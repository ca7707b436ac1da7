"""Run-level errors: each class carries the user-facing message and the exit code.

Exit status (README "Commands"): 0 done, 1 failed, 2 bad usage or bad input, 3 a peer could not be
reached (not answering, SSH key or host key refused, peersync missing there), 130 interrupted.
"""


class PeersyncError(Exception):
    """A failure the user can act on; `str(err)` is the one or two lines shown to them."""

    exit_code = 1
    kind = "error"  # a stable word for programs (Report.error_kind, --json)

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class UsageError(PeersyncError):
    """Bad command-line usage or bad input files (exit 2)."""

    kind = "usage"
    exit_code = 2


class ConfigError(UsageError):
    """A malformed or invalid peers.json / config.yaml (exit 2, file left untouched)."""

    kind = "config"


class UnknownPeer(UsageError):
    """A peer name that is not in peers.json."""

    kind = "unknown-peer"


class ConnectError(PeersyncError):
    """The peer could not be reached, authenticated, or its agent started (exit 3: scripts can
    tell a peer that is down from a sync that failed)."""

    kind = "connect"
    exit_code = 3


class HostKeyError(ConnectError):
    """The peer's host key is unknown or does not match: not a peer that is down (exit 3) but a
    refusal the user must look at (exit 1)."""

    kind = "host-key"
    exit_code = 1


class ProtocolError(PeersyncError):
    """The peer sent something peersync refuses (bad path, bad message, wrong version)."""

    kind = "protocol"


class BusyError(PeersyncError):
    """Another peersync process holds the workspace lock."""

    kind = "busy"
    exit_code = 1


class StateDirError(PeersyncError):
    """peersync's state dir (or one of its directories) is a link or another user's: not used."""

    kind = "state"


class SafetyError(PeersyncError):
    """A guard stopped the sync (mass delete, unrecovered journal); nothing was changed."""

    kind = "safety"


class DiskFullError(PeersyncError):
    """This machine's disk (or quota) filled up during the sync; what was written is consistent."""

    kind = "disk-full"

    @classmethod
    def of(cls, err: OSError, where: str) -> "DiskFullError":
        what = "disk quota is used up" if err.errno == 122 else "disk is full"
        return cls(f"this machine's {what} ({where}): the sync stopped; nothing was lost",
                   "Free some space there and sync again (an interrupted sync is finished or undone first).")


class TransferError(PeersyncError):
    """rsync / rclone failed or was cut off."""

    kind = "transfer"


class BackupError(PeersyncError):
    """A cloud backup command failed."""

    kind = "backup"
