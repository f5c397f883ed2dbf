"""Reloading the policy file when it changes, keeping the last good policy.

A mounted ConfigMap changes by swapping a symlink, so the watcher compares
the resolved file's identity (device, inode, size, mtime) every ``interval``
seconds rather than relying on inotify events.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["PolicyWatcher"]

log = logging.getLogger("trustmesh.sidecar.policy")


class PolicyWatcher:
    """Loads ``path`` into a ``policy_dsl.PolicyStore`` now and again whenever it changes."""

    def __init__(self, store: Any, path: Path, metrics: Any = None, interval: float = 1.0) -> None:
        self.store = store
        self.path = Path(path)
        self.metrics = metrics
        self.interval = interval
        self._stamp: tuple[int, ...] | None = None
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0

    def _identity(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def check(self) -> bool:
        """Reload if the file changed; True when a new policy was loaded."""
        stamp = self._identity()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        ok = bool(self.store.load_files([self.path]))
        if ok:
            self.reloads += 1
            log.info("policy loaded from %s", self.path)
        else:
            log.error("policy reload refused, keeping the last good one: %s", self.store.last_error)
            if self.metrics is not None:
                self.metrics.policy_reload_failures.inc()
        return ok

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except Exception as err:  # noqa: BLE001 - the watcher must survive anything
                log.error("policy watcher: %s", err)

    def start(self) -> None:
        self.check()
        self._task = asyncio.create_task(self._run(), name="policy-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
