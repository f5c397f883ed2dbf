"""Client side: send a JWT-SVID for the callee's audience with every request.

    source = await JwtSource().start()
    async with aiohttp.ClientSession(
        middlewares=(jwt_svid_auth(source, "spiffe://example.org/ns/prod/sa/db"),)
    ) as session:
        await session.get(url)          # Authorization: Bearer <JWT-SVID>

or, for any HTTP library, ``headers = await bearer_header(source, audience)``.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs

from sdk.jwtsvid import JwtSvid

__all__ = ["JwtSvidFetcher", "bearer_header", "jwt_svid_auth"]


class JwtSvidFetcher(Protocol):
    """Anything that hands out JWT-SVIDs, e.g. :class:`sdk.workloadapi.JwtSource`."""

    async def fetch_jwt_svid(self, audience: str, *more_audiences: str) -> JwtSvid:
        ...


async def bearer_header(source: JwtSvidFetcher, audience: str) -> dict[str, str]:
    """``{"Authorization": "Bearer <JWT-SVID for audience>"}``."""
    svid = await source.fetch_jwt_svid(audience)
    return {hdrs.AUTHORIZATION: f"Bearer {svid.token}"}


def jwt_svid_auth(source: JwtSvidFetcher, audience: str) -> Any:
    """An aiohttp client middleware that adds the bearer JWT-SVID to each request."""

    async def middleware(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        request.headers.update(await bearer_header(source, audience))
        return await handler(request)

    return middleware
