"""Entry point: dispatches `agent` without importing the CLI stack, so the remote side starts fast."""

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["agent"]:
        # The remote agent must not pay for typer/rich/asyncssh imports.
        from peersync.agent import main as agent_main

        sys.exit(agent_main(argv[1:]))
    from peersync.cli import run

    run()


if __name__ == "__main__":
    main()
