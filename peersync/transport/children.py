"""Child processes that never outlive peersync: ssh running a peer's agent, rclone."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable  # (not typing: ~4 ms before a cold sync starts its ssh)


def die_with_parent() -> Callable[[], None] | None:
    """A fresh preexec_fn (Linux): the child gets SIGKILL when this process dies, so a killed sync
    leaves no ssh or rclone behind.  Made per spawn: it compares the child's parent with our pid,
    and a forked worker has its own."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
        if os.getppid() != parent:  # we died between fork and prctl: the signal would never come
            os._exit(1)

    return preexec
