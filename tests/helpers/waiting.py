"""Waiting in an event loop for something another task or thread brings about, for tests over
real sockets: bounded in time, an AssertionError when it does not come."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(condition: Callable[[], object], timeout: float = 20.0) -> None:
    """Return once ``condition()`` is true, checking every 10 ms; AssertionError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def wait_until(condition: Callable[[], object], timeout: float = 20.0) -> None:
    """:func:`eventually` for a plain thread: return once ``condition()`` is true, checking
    every 10 ms; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
