"""Which ssh config files are in force (`--ssh-config`, or ssh's own defaults), and `~` as ssh reads it.

Split from sshconfig.py, which resolves destinations with `ssh -G`, because this part is needed on
the paths where start-up time counts: the CLI's fast path names a keeper's socket by stamp(), and
that must not import dataclasses, subprocess or the rest of sshconfig.py's machinery.

`--ssh-config FILE` (the CLI sets $PEERSYNC_SSH_CONFIG) is used like `ssh -F FILE` (that file only;
`none` for no file).  Without it, ssh's own default: `~/.ssh/config` and `/etc/ssh/ssh_config`,
where `~` is the home directory of the user's passwd entry, as OpenSSH reads it — not $HOME.
"""

from __future__ import annotations

import os
import pwd

ENV_CONFIG = "PEERSYNC_SSH_CONFIG"
SYSTEM_CONFIG = "/etc/ssh/ssh_config"


def ssh_home() -> str:
    """The home directory OpenSSH uses for ~/.ssh: the passwd entry's, whatever $HOME says."""
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return os.path.expanduser("~")


def expand_home(path: str) -> str:
    """`~` and `~/x` as ssh expands them (the passwd home); other paths unchanged."""
    if path == "~" or path.startswith("~/"):
        return ssh_home() + path[1:]
    return os.path.expanduser(path) if path.startswith("~") else path


def config_file() -> str | None:
    """The file given with --ssh-config / $PEERSYNC_SSH_CONFIG (`none`: no file at all), or None
    for ssh's defaults."""
    raw = os.environ.get(ENV_CONFIG)
    return (raw if raw == "none" else os.path.abspath(expand_home(raw))) if raw else None


def config_args() -> list[str]:
    """`-F FILE` for every ssh invocation when a config file was chosen; ssh's defaults otherwise."""
    chosen = config_file()
    return ["-F", chosen] if chosen else []


def config_paths() -> list[str]:
    """The files ssh reads for our settings (for stamp() and messages)."""
    chosen = config_file()
    if chosen:
        return [] if chosen == "none" else [chosen]
    return [os.path.join(ssh_home(), ".ssh", "config"), SYSTEM_CONFIG]


def shown_config() -> str:
    """The user's config file as a message names it."""
    chosen = config_file()
    if chosen == "none":
        return "no ssh config file"
    return chosen or "~/.ssh/config"


def stamp() -> str:
    """Which config files are in use and when they changed: a keeper holding a connection made
    under other settings is not used (its socket name includes this)."""
    parts = []
    for path in config_paths():
        try:
            parts.append(f"{path}@{os.stat(path).st_mtime_ns}")
        except OSError:
            parts.append(f"{path}@-")
    return "|".join(parts)
