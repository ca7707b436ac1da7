"""Entry point: dispatches `agent`, `keeper` and a not-due `heartbeat` without importing the CLI stack, so they start fast."""

# Lazy imports: each entry imports only what it runs (start-up time is the point of this module).

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["agent"]:
        # The remote agent must not pay for typer/rich/asyncssh imports.
        from peersync.transport.agent import main as agent_main

        sys.exit(agent_main(argv[1:]))
    if argv[:1] == ["keeper"]:
        # Started in the background by a sync (keeper.spawn): no CLI stack either.
        from peersync.daemons.keeper import main as keeper_main

        sys.exit(keeper_main(argv[1:]))
    _printable_names("--json" in argv)
    if any(a in ("sync", "push", "pull") for a in argv):
        # A warm keeper runs the sync itself: this process only prints its report.
        from peersync.cli.quick import fast_main

        code = fast_main(argv)
        if code is not None:
            sys.exit(code)
    if "heartbeat" in argv:
        # A heartbeat that is not due must return at once, without the CLI stack's imports.
        from peersync.daemons.due import fast_main

        code = fast_main(argv)
        if code is not None:
            sys.exit(code)
    from peersync.cli.main import run

    run()


def _printable_names(json_out: bool) -> None:
    """A path whose name is not UTF-8 holds a lone surrogate per byte (os.fsdecode's form): printed,
    each is \\xNN (as problems show such names), never a UnicodeEncodeError; in --json output it is
    \\udcNN, the JSON escape that reads back as the same character."""
    if not json_out:
        import codecs  # lazy: a builtin module, for the one handler

        def shown(err: UnicodeError):
            bad = err.object[err.start:err.end]
            return "".join(f"\\x{ord(c) - 0xdc00:02x}" if 0xdc80 <= ord(c) <= 0xdcff else f"\\u{ord(c):04x}"
                           for c in bad), err.end

        codecs.register_error("peersync.shown", shown)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace" if json_out else "peersync.shown")


if __name__ == "__main__":
    main()
