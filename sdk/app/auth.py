"""Framework-free core: turn an ``Authorization`` header into a verified caller.

:func:`authenticate` is what the aiohttp middleware and decorator call; other
frameworks can call it directly. It raises typed errors and never returns a
caller it has not verified; :func:`status_for` maps those errors to HTTP
status codes in one place (401 unauthenticated, 403 not allowed, 503 the
validator has no bundles yet). Messages for the client stay vague; the
precise reason goes to the log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sdk.errors import AuthorizationError, BundleError, JwtSvidError, TrustmeshError
from sdk.jwtsvid import JwtSvid
from sdk.match import Matcher

__all__ = [
    "AuthenticationError",
    "JwtSvidValidator",
    "authenticate",
    "bearer_token",
    "status_for",
]


class JwtSvidValidator(Protocol):
    """Anything that validates a JWT-SVID for an audience, e.g. :class:`sdk.workloadapi.JwtSource`."""

    def validate_jwt_svid(self, token: str, audience: str, now: datetime | None = None) -> JwtSvid:
        ...


class AuthenticationError(JwtSvidError):
    """The request carries no usable ``Authorization: Bearer`` JWT-SVID."""


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        raise AuthenticationError("no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthenticationError(f"Authorization scheme is {scheme!r}, not 'Bearer'")
    token = token.strip()
    if not token or " " in token:
        raise AuthenticationError("Authorization: Bearer needs exactly one token")
    return token


def authenticate(
    authorization: str | None,
    validator: JwtSvidValidator,
    audience: str,
    authorize: Matcher | None = None,
) -> JwtSvid:
    """The verified JWT-SVID of the caller; raises if it is missing, invalid or not allowed.

    ``authorize`` (e.g. ``match_member_of(td)``) is applied to the caller's
    SPIFFE ID after validation and raises :class:`AuthorizationError`.
    """
    token = bearer_token(authorization)
    svid = validator.validate_jwt_svid(token, audience)
    if authorize is not None:
        authorize(svid.spiffe_id)
    return svid


def status_for(err: BaseException) -> tuple[int, str]:
    """The HTTP status and client-facing text for an :func:`authenticate` error."""
    if isinstance(err, AuthorizationError):
        return 403, "caller is not allowed"
    if isinstance(err, AuthenticationError):
        return 401, "a JWT-SVID bearer token is required"
    if isinstance(err, (JwtSvidError, BundleError)):
        return 401, "invalid JWT-SVID"
    if isinstance(err, TrustmeshError):
        return 503, "cannot validate credentials right now"
    return 500, "internal error"
