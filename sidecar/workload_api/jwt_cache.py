"""A per-audience cache of minted JWT-SVIDs, renewed before they expire.

A cached token is handed out only while more than ``renew_fraction`` of its
lifetime remains (by default half), so callers always get a token with a
useful life left and the signer is asked at most about twice per lifetime per
audience set. Concurrent requests for the same key share one signing call.
The number of keys is bounded; the least recently used entry goes first.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from sdk.jwtsvid import parse_insecure

__all__ = ["JwtSvidCache"]

Clock = Callable[[], datetime]
_Key = tuple[str, frozenset[str]]


@dataclass(frozen=True)
class _Entry:
    token: str
    issued_at: datetime
    expires_at: datetime


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class JwtSvidCache:
    """Minted JWT-SVIDs keyed by (SPIFFE ID, set of audiences)."""

    def __init__(
        self,
        *,
        max_entries: int = 256,
        renew_fraction: float = 0.5,
        clock: Clock = _utcnow,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if not 0.0 < renew_fraction < 1.0:
            raise ValueError("renew_fraction must be between 0 and 1")
        self._max = max_entries
        self._renew_fraction = renew_fraction
        self._clock = clock
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._locks: dict[_Key, asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(
        self,
        spiffe_id: str,
        audiences: Iterable[str],
        mint: Callable[[], Awaitable[str]],
    ) -> str:
        """A fresh-enough token for ``spiffe_id`` and ``audiences``; ``mint()`` if none."""
        key: _Key = (spiffe_id, frozenset(audiences))
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if entry is not None and self._fresh(entry):
                self._entries.move_to_end(key)
                return entry.token
            try:
                token = await mint()
            except BaseException:
                if key not in self._entries:
                    self._locks.pop(key, None)
                raise
            self._store(key, token)
            return token

    def clear(self) -> None:
        """Forget every token (e.g. after the identity changed)."""
        self._entries.clear()

    def _fresh(self, entry: _Entry) -> bool:
        lifetime = entry.expires_at - entry.issued_at
        renew_at = entry.expires_at - lifetime * self._renew_fraction
        return self._clock() < renew_at

    def _store(self, key: _Key, token: str) -> None:
        svid = parse_insecure(token)
        issued = svid.claims.get("iat")
        issued_at = (
            datetime.fromtimestamp(issued, timezone.utc)
            if isinstance(issued, (int, float))
            else self._clock()
        )
        self._entries[key] = _Entry(token, issued_at, svid.expiry)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            old, _ = self._entries.popitem(last=False)
            if old != key:
                self._locks.pop(old, None)
