"""Who is calling: the bearer token → an authenticated :class:`Caller`.

Static tokens are checked first, then join tokens, then (if configured)
Kubernetes ServiceAccount tokens. A token none of them accepts is refused
with :class:`UnauthenticatedError`.
"""

from __future__ import annotations

from collections.abc import Awaitable

from ca.service.errors import UnauthenticatedError
from ca.service.identity import Caller
from ca.service.k8s_auth import KubernetesAuthenticator
from ca.service.local_auth import JoinTokens, StaticTokens

__all__ = ["Authenticator", "bearer_token", "MAX_TOKEN_BYTES"]

MAX_TOKEN_BYTES = 16 * 1024


def bearer_token(authorization: str | None) -> str:
    """The token of an ``authorization: Bearer <token>`` metadata value."""
    if not authorization:
        raise UnauthenticatedError("missing authorization: Bearer <token> metadata")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnauthenticatedError("authorization metadata must be 'Bearer <token>'")
    if len(token) > MAX_TOKEN_BYTES or not token.isascii() or not token.isprintable() or " " in token:
        raise UnauthenticatedError("malformed bearer token")
    return token


class Authenticator:
    """Tries each configured method in turn; at least one must be configured."""

    def __init__(
        self,
        *,
        kubernetes: KubernetesAuthenticator | None = None,
        join_tokens: JoinTokens | None = None,
        static_tokens: StaticTokens | None = None,
    ) -> None:
        if kubernetes is None and join_tokens is None and static_tokens is None:
            raise ValueError("no authentication method configured")
        self.kubernetes, self.join_tokens, self.static_tokens = kubernetes, join_tokens, static_tokens

    def start(self, authorization: str | None) -> Caller | Awaitable[Caller]:
        """The caller, when no waiting is needed (a static or join token, a cached Kubernetes
        decision); otherwise the awaitable that asks the Kubernetes API. The one place the
        methods' precedence is decided."""
        token = bearer_token(authorization)
        if self.static_tokens is not None:
            caller = self.static_tokens.lookup(token)
            if caller is not None:
                return caller
        if self.join_tokens is not None and self.join_tokens.knows(token):
            return self.join_tokens.consume(token)
        if self.kubernetes is not None and token.count(".") == 2:
            cached = self.kubernetes.cached(token)
            return cached if cached is not None else self.kubernetes.authenticate(token)
        raise UnauthenticatedError("unknown token")

    async def authenticate(self, authorization: str | None) -> Caller:
        started = self.start(authorization)
        return started if isinstance(started, Caller) else await started
