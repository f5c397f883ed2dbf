"""Helpers for applications that authenticate calls with JWT-SVIDs.

Server side (aiohttp): :func:`jwt_svid_middleware` or the
:func:`require_jwt_svid` decorator admit a request only with a valid
JWT-SVID for the app's audience, and put the caller's SPIFFE ID in
``request[CALLER]``. Client side: :func:`jwt_svid_auth` (aiohttp client
middleware) or :func:`bearer_header` add ``Authorization: Bearer``. Other
frameworks use :func:`authenticate` and :func:`status_for` directly.
Apps serving mutual TLS themselves use :func:`mtls_middleware` with
:class:`sdk.workloadapi.SpiffeTls`.
"""

from sdk.app.middleware import (
    CALLER,
    CALLER_SVID,
    caller_id,
    jwt_svid_middleware,
    mtls_middleware,
    require_jwt_svid,
)
from sdk.app.auth import (
    AuthenticationError,
    JwtSvidValidator,
    authenticate,
    bearer_token,
    status_for,
)
from sdk.app.client import JwtSvidFetcher, bearer_header, jwt_svid_auth

__all__ = [
    "CALLER",
    "CALLER_SVID",
    "AuthenticationError",
    "JwtSvidFetcher",
    "JwtSvidValidator",
    "authenticate",
    "bearer_header",
    "bearer_token",
    "caller_id",
    "jwt_svid_auth",
    "jwt_svid_middleware",
    "mtls_middleware",
    "require_jwt_svid",
    "status_for",
]
