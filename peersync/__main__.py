"""Entry point: dispatches `agent`, `keeper` and a not-due `heartbeat` without importing the CLI stack, so they
start fast; a command that is done leaves without the interpreter's teardown (entry)."""

# Lazy imports: each entry imports only what it runs (start-up time is the point of this module).

import os
import sys


def entry() -> None:
    """The `peersync` program (console script, `python -m peersync`): main(), then a quick exit."""
    try:
        main()
    except SystemExit as stop:
        _leave(stop)
        raise
    _leave(SystemExit(0))


def main() -> None:
    """Run the command line in sys.argv; ends in SystemExit (callers in Python may catch it)."""
    fewer_collections()
    argv = sys.argv[1:]
    if argv[:1] == ["agent"]:
        # The remote agent must not pay for typer/rich/asyncssh imports.
        from peersync.transport.agent import main as agent_main

        sys.exit(agent_main(argv[1:]))
    if "heartbeat" not in argv:
        leaner_malloc()  # (the CLI and the keeper: not the agent's or a heartbeat's start, no gain there)
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


# The cycle collector's thresholds for every peersync process.  At Python's (700, 10, 10) it walks
# the objects a process holds again and again while a scan, a manifest or an ancestor of 100k files
# is built — hundreds of thousands of lists and tuples, none of them garbage: parsing one ancestor
# takes 0.21-0.41 s instead of 0.13, and a cold 100k no-op ~0.13 s more (1.55 s against 1.42).  At
# these it runs 70 times less often, and still runs — in the long-lived keeper, watcher and kept
# agent too (a full collection after some ten million allocations, as before after 70,000).
GC_THRESHOLDS = (50_000, 20, 10)


def fewer_collections() -> None:
    import gc  # lazy: a builtin module

    gc.set_threshold(*GC_THRESHOLDS)


# glibc's malloc, for the memory Python's own allocator does not serve (objects over 512 bytes:
# a 100k-entry dict's table, a file's bytes, SQLite's pages).  By default each new thread gets an
# arena of its own (up to eight per core), whose freed holes are seldom given back: at a cold
# 100k no-op the CLI's peak RSS was 171 MB for a heap that peaked at 117.
# One arena (the threads take turns on the GIL anyway): 158 MB.  (Large blocks mapped on their
# own as well gave 155 MB, but cost ~2% of that sync's time in mmap calls: not done.)  The agent's
# peak stayed where it was (149 MB against 148), so the agent's start does not pay the ctypes
# import; nor does a heartbeat's.  Linux with glibc only.
MALLOC_ARENA_MAX = 1


def leaner_malloc() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes  # lazy: ~2 ms, at the start of a process that will hold 100k entries

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, ImportError):
        return  # not glibc's C library, or no ctypes: Python's defaults
    mallopt(-8, MALLOC_ARENA_MAX)  # M_ARENA_MAX


def _leave(stop: SystemExit) -> None:
    """Exit without the interpreter's teardown when nothing is left to do: a one-shot sync has
    written and fsync'd all its state by now, and freeing its manifests and modules one object at
    a time costs ~45 ms of every cold sync at 10k files.  Exit functions (atexit, weakref
    finalizers: temporary directories, an unadopted ssh) still run and the output is flushed; with
    a non-daemon thread still running, or a status Python itself must print, Python exits as usual."""
    import threading  # lazy: loaded already by anything that ran threads

    code = stop.code
    if code is None:
        code = 0
    if not isinstance(code, int) or isinstance(code, bool) or sys.flags.inspect \
            or any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    import atexit  # lazy: a builtin module

    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        code = code or 120  # what Python's own exit gives when flushing stdout fails
    os._exit(code & 0xFF)


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
    entry()
