"""A server's background threads (the refresher, the exposure writer) ask the operating system to run them after
the threads answering requests: on two cores at 200 lists/s the cores are mostly busy, and a refresh that took
its share at the moment lists queued was what set the tail of their latency (docs/BENCHMARKS.md)."""

from __future__ import annotations

import logging
import os
import sys
import threading

__all__ = ["lower_this_thread"]

_log = logging.getLogger(__name__)


def lower_this_thread(niceness: int) -> bool:
    """Raise the calling thread's niceness by ``niceness`` (at most to 19, the lowest priority; raising it needs no
    privilege). Linux only, where each thread is its own task: elsewhere the call would reach the whole process,
    so nothing is done. Whether it was done."""
    if niceness <= 0 or sys.platform != "linux":
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + niceness, 19))
    except OSError as exc:  # (a sandbox may refuse it: the thread just keeps its priority)
        _log.warning("could not lower the priority of thread %s: %s", threading.current_thread().name, exc)
        return False
    return True
