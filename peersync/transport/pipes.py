"""Pipes wide enough for a Python process whose threads are busy while megabytes go through them.

A Linux pipe holds 64 KiB.  Whoever moves a large message through one — the agent's reader
thread taking an install batch from stdin, the client's event loop handing a batch to ssh — takes
the GIL back after every 64 KiB (after every 8 KiB for a default BufferedReader's readline), and
while another thread of the same process computes, each take can wait the whole switch interval
(5 ms).  Measured on the bench machine: 8 MiB through a 64 KiB pipe beside one busy thread took
0.67 s, through a 1 MiB pipe 0.06 s; a first sync of 100k files lost most of a second before each
of its last two requests reached the agent so.
"""

from __future__ import annotations

import contextlib
import fcntl

PIPE_SIZE = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size: what any user may ask for
_SET, _GET = getattr(fcntl, "F_SETPIPE_SZ", None), getattr(fcntl, "F_GETPIPE_SZ", None)


def widen(*fds: int) -> None:
    """Each pipe among `fds` holds PIPE_SIZE bytes where the system allows it (Linux); never
    narrower than it was.  A socket, a file, another system or a refusal leaves it as it is: this
    only changes speed.  (The kernel counts a wide pipe as 256 pages of its user's pipe quota,
    /proc/sys/fs/pipe-user-pages-soft, 64 MiB by default: a sync holds four, a keeper two.)"""
    if _SET is None or _GET is None:
        return
    for fd in fds:
        with contextlib.suppress(OSError, ValueError, TypeError):
            if fcntl.fcntl(fd, _GET) < PIPE_SIZE:
                fcntl.fcntl(fd, _SET, PIPE_SIZE)


def read_stream(fd: int):
    """A binary reader on `fd` that fills its buffer up to a whole widened pipe per read(2),
    where a default one reads 8 KiB at a time (the agent reads megabyte lines with readline)."""
    return open(fd, "rb", buffering=PIPE_SIZE, closefd=False)


def subprocess_fds(proc) -> list[int]:
    """The stdin and stdout pipes of an asyncio subprocess, as file descriptors (none it lacks)."""
    fds = []
    transport = getattr(proc, "_transport", None)  # (asyncio.subprocess.Process: no public accessor)
    for n in (0, 1):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            fds.append(transport.get_pipe_transport(n).get_extra_info("pipe").fileno())
    return fds
