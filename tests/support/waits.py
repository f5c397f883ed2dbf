"""Waiting for an event in tests: bounded in time, never a bet on how fast the machine is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["until"]


async def until(condition: Callable[[], bool], limit: float = 60.0, every: float = 0.01) -> None:
    """Return once ``condition()`` holds, checking every ``every`` seconds.

    ``limit`` only bounds a test that would otherwise hang (TimeoutError); it is
    generous so that a slow, busy machine passes where a fast one does.
    """
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(every)
