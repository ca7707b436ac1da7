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
    if any(a in ("sync", "push", "pull") for a in argv):
        # A warm keeper runs the sync itself: this process only prints its report.
        from peersync.cli.quick import fast_main

        code = fast_main(argv)
        if code is not None:
            sys.exit(code)
    if "heartbeat" in argv:
        # A heartbeat that is not due must return at once, without the CLI stack's imports.
        from peersync.daemons.heartbeat import fast_main

        code = fast_main(argv)
        if code is not None:
            sys.exit(code)
    from peersync.cli.main import run

    run()


if __name__ == "__main__":
    main()
