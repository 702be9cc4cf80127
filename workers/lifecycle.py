"""Process life cycle shared by the worker and the track server."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def children_stop_with_this_process() -> None:
    """Have every child this process forks from now on get SIGTERM when it dies.

    A child of a process killed outright (the OOM killer, SIGKILL from a supervisor)
    would otherwise live on as an orphan; with this, it stops as it would on a normal
    shutdown. Linux only; elsewhere nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    os.register_at_fork(after_in_child=arm)
