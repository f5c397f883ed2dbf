"""The sidecar's periodic memory reclaim (sidecar/run_cli.py): a full cyclic collection, then
glibc's malloc_trim. Why it exists: closed TLS connections are reference cycles, and with the
raised mmap threshold their freed buffers stay resident unless trimmed (bench/sidecar_churn.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from sidecar.run_cli import trim_heap_forever, tune_malloc


class _Node:
    pass


async def test_the_reclaim_loop_collects_cycles_and_trims():
    trims: list[int] = []
    node = _Node()
    node.self = node  # a cycle only the cyclic collector can free
    alive = weakref.ref(node)
    del node
    gc.disable()  # so that only the loop under test can collect it
    try:
        task = asyncio.create_task(trim_heap_forever(lambda: trims.append(1), every=0.01))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(trims) >= 2:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        gc.enable()
    assert alive() is None
    assert len(trims) >= 2  # it keeps running, not once


def test_tune_malloc_hands_back_glibcs_trim():
    trim = tune_malloc()
    assert trim is not None  # Debian: glibc
    assert trim() in (0, 1)  # malloc_trim: 1 when memory was released, 0 otherwise
