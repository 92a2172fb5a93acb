"""Background threads lower their own priority, and only their own."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from tastemaker.serving.priority import lower_this_thread

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is a Linux feature")


def niceness(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def in_a_thread(amount: int) -> tuple[bool, int, int]:
    """(done, the thread's niceness before, after)."""
    got: list[tuple[bool, int, int]] = []

    def run() -> None:
        before = niceness(threading.get_native_id())
        done = lower_this_thread(amount)
        got.append((done, before, niceness(threading.get_native_id())))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return got[0]


def test_a_thread_lowers_its_own_priority_and_not_the_process() -> None:
    main = niceness(threading.get_native_id())
    done, before, after = in_a_thread(5)
    assert done and after == min(before + 5, 19)
    assert niceness(threading.get_native_id()) == main  # the other threads keep theirs
    done, before, after = in_a_thread(0)
    assert not done and after == before
    done, before, after = in_a_thread(50)
    assert done and after == 19  # capped at the lowest priority
