"""``fetch_jwt_svid`` / ``validate_jwt_svid`` for asyncio code, with a shared source.

The first call on an event loop opens a :class:`JwtSource` for the address
(default ``$SPIFFE_ENDPOINT_SOCKET``); later calls on that loop reuse it, so
tokens are cached and bundles stay current. Call :func:`close_default_sources`
before the loop ends (apps: on shutdown)::

    from sdk.workloadapi import fetch_jwt_svid, validate_jwt_svid

    svid = await fetch_jwt_svid("spiffe://example.org/ns/prod/sa/db")
    caller = await validate_jwt_svid(token, "spiffe://example.org/ns/prod/sa/web")
"""

from __future__ import annotations

import asyncio

from sdk.jwtsvid import JwtSvid
from sdk.workloadapi.jwtsource import JwtSource

__all__ = ["close_default_sources", "default_jwt_source", "fetch_jwt_svid", "validate_jwt_svid"]

_sources: dict[tuple[asyncio.AbstractEventLoop, str | None], JwtSource] = {}
_opening: dict[tuple[asyncio.AbstractEventLoop, str | None], asyncio.Lock] = {}


async def default_jwt_source(address: str | None = None) -> JwtSource:
    """The shared, started :class:`JwtSource` of this event loop for ``address``."""
    key = (asyncio.get_running_loop(), address)
    async with _opening.setdefault(key, asyncio.Lock()):
        source = _sources.get(key)
        if source is None:
            source = _sources[key] = await JwtSource(address).start()
        return source


async def fetch_jwt_svid(
    audience: str, *more_audiences: str, address: str | None = None
) -> JwtSvid:
    """A JWT-SVID for the audience(s), cached and renewed in the background."""
    source = await default_jwt_source(address)
    return await source.fetch_jwt_svid(audience, *more_audiences)


async def validate_jwt_svid(token: str, audience: str, *, address: str | None = None) -> JwtSvid:
    """Validate ``token`` for ``audience`` with the sdk's rules and the current JWT bundles."""
    source = await default_jwt_source(address)
    return source.validate_jwt_svid(token, audience)


async def close_default_sources() -> None:
    """Close the shared sources of the running event loop."""
    loop = asyncio.get_running_loop()
    for key in [k for k in _sources if k[0] is loop]:
        _opening.pop(key, None)
        await _sources.pop(key).close()
