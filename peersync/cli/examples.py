"""One example (or a few) per command, shown at the end of its --help; tests/test_cli_help.py checks
that every command has some."""

from __future__ import annotations

EXAMPLES: dict[str, tuple[str, ...]] = {
    "peers": ("peersync peers list",),
    "peers list": ("peersync peers list", "peersync peers list --json"),
    "peers add": (
        "peersync peers add mac-mini mini --path '~/clawd'      # mini: a Host alias in ~/.ssh/config",
        "peersync peers add pi 100.95.193.55:2222 --user agent --path /home/agent/clawd",
        "peersync peers add server srv.example.org --path '~/clawd' --create   # a new, empty workspace there",
    ),
    "peers set": (
        "peersync peers set mac-mini --port 2222",
        "peersync peers set mac-mini --remote-command '/Users/agent/.local/bin/peersync'",
        "peersync peers set pi --unset port --unset identity",
    ),
    "peers remove": ("peersync peers remove mac-mini",),
    "status": ("peersync status", "peersync status mac-mini --json   # exit status 3 when it is down"),
    "sync": ("peersync sync                  # every peer, concurrently", "peersync sync mac-mini --dry-run",
             "peersync sync mac-mini --policy manual --json"),
    "push": ("peersync push mac-mini",),
    "pull": ("peersync pull mac-mini",),
    "diff": ("peersync diff mac-mini",),
    "history": ("peersync history", "peersync history --limit 50 --json"),
    "conflicts": ("peersync conflicts",),
    "conflicts list": ("peersync conflicts list",),
    "conflicts show": ("peersync conflicts show c-7f3a",),
    "conflicts diff": ("peersync conflicts diff c-7f3a",),
    "conflicts restore": ("peersync conflicts restore c-7f3a   # the live version is kept as a conflict in turn",),
    "conflicts drop": ("peersync conflicts drop c-7f3a",),
    "trash": ("peersync trash",),
    "trash list": ("peersync trash list", "peersync trash list --json"),
    "trash restore": ("peersync trash restore memory/2026-01-20.md",
                      "peersync trash restore --batch 20260126T101500-3fa2c1   # everything one sync deleted"),
    "trash empty": ("peersync trash empty                 # says what would go", "peersync trash empty --yes",
                    "peersync trash empty --older-than 7 --yes"),
    "init": ("peersync -w ~/clawd init --heartbeat", "peersync -w ~/new-agent init --init   # an empty directory"),
    "auto": ("peersync auto on --interval 600", "peersync auto off", "peersync auto status --json"),
    "heartbeat": ("peersync heartbeat", "peersync heartbeat --reason session-start"),
    "watch": ("peersync watch", "peersync watch --debounce 5 --interval 600"),
    "discover": ("peersync discover", "peersync discover --tag peersync --user agent --path '~/clawd' --add"),
    "backup": ("peersync backup now",),
    "backup now": ("peersync backup now", "peersync backup now --target r2:agent-backups/laptop"),
    "backup list": ("peersync backup list",),
    "backup status": ("peersync backup status --json",),
    "backup restore": ("peersync backup restore", "peersync backup restore --at 2026-01-25T18:00 --to /tmp/restored"),
    "backup verify": ("peersync backup verify",),
    "backup prune": ("peersync backup prune --dry-run",),
    "backup migrate": ("peersync backup migrate", "peersync backup migrate --target r2:agent-backups/laptop"),
    "cloud": ("peersync cloud list",),
    "cloud add": ("peersync cloud add share dropbox:Agent --mode mailbox",
                  "peersync cloud add nas /mnt/nas/agent --mode mirror --direction pull"),
    "cloud list": ("peersync cloud list",),
    "cloud remove": ("peersync cloud remove share",),
    "cloud unlock": ("peersync cloud unlock share",),
    "dashboard": ("peersync dashboard --open", "peersync dashboard --serve --port 8765"),
    "rclone": ("peersync rclone config                 # define a remote, e.g. r2:", "peersync rclone lsd r2:"),
}


def epilog(path: str) -> str | None:
    """The help epilog of command `path` ("peers add"): its examples, as written."""
    lines = EXAMPLES.get(path)
    if not lines:
        return None
    # Paragraphs, one per example: Typer's help joins the lines of a paragraph into one.
    return "Examples:\n\n" + "\n\n".join(lines)
