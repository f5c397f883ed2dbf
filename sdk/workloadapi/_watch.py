"""Keep the latest value of a Workload API stream, reconnecting with backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

from sdk.workloadapi.errors import WorkloadApiError

__all__ = ["Latest"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# InvalidArgument means the client is broken: the standard says not to retry.
_FATAL_CODES = frozenset({"INVALID_ARGUMENT"})


class Latest(Generic[T]):
    """The newest item of a server stream, re-opened on failure until closed.

    ``generation`` counts updates; :meth:`changed` waits for the next one.
    Back-off between reconnects doubles from ``min_backoff`` to ``max_backoff``
    with jitter, and resets after a successful update.
    """

    def __init__(
        self,
        open_stream: Callable[[], AsyncIterator[T]],
        name: str,
        *,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        self._open = open_stream
        self._name = name
        self._min = min_backoff
        self._max = max_backoff
        self._value: T | None = None
        self._error: WorkloadApiError | None = None
        self._fatal: WorkloadApiError | None = None
        self._generation = 0
        self._cond = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @property
    def generation(self) -> int:
        return self._generation

    def get(self) -> T:
        """The newest item; raises the last error if none arrived yet."""
        if self._value is None:
            raise self._fatal or self._error or WorkloadApiError(
                f"Workload API {self._name}: no update received yet"
            )
        return self._value

    async def start(self, timeout: float) -> None:
        """Open the stream and wait (at most ``timeout`` s) for the first item."""
        self._task = asyncio.create_task(self._run(), name=f"workloadapi-{self._name}")
        try:
            async with asyncio.timeout(timeout):
                await self.changed(0)
        except TimeoutError:
            await self.close()
            raise WorkloadApiError(
                f"Workload API {self._name}: no answer within {timeout:g} s"
                + (f" (last error: {self._error})" if self._error else ""),
                self._error.code if self._error else "DEADLINE_EXCEEDED",
            ) from None
        except WorkloadApiError:
            await self.close()
            raise

    async def changed(self, since: int) -> int:
        """Wait until :attr:`generation` exceeds ``since``; raise if the stream gave up."""
        async with self._cond:
            await self._cond.wait_for(lambda: self._generation > since or self._fatal)
            if self._generation > since or self._fatal is None:
                return self._generation
            raise self._fatal

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        backoff = self._min
        while True:
            try:
                async for value in self._open():
                    async with self._cond:
                        self._value = value
                        self._error = None
                        self._generation += 1
                        self._cond.notify_all()
                    backoff = self._min
            except WorkloadApiError as err:
                self._error = err
                if err.code in _FATAL_CODES:
                    async with self._cond:
                        self._fatal = err
                        self._cond.notify_all()
                    log.error("%s", err)
                    return
                log.warning("%s; retrying in %.1f s", err, backoff)
            except Exception as err:  # a bug must not silently end the watch
                self._error = WorkloadApiError(f"Workload API {self._name}: {err!r}", "INTERNAL")
                log.exception("Workload API %s watch failed; retrying in %.1f s", self._name, backoff)
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self._max)
