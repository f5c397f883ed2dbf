"""The CA service's errors, one per way a call can be refused.

Each maps to exactly one gRPC status code in :func:`ca.service.status.status_for`;
the message is what the caller is told, so it names the rule that failed but
never echoes secrets (tokens) or crypto internals.
"""

from __future__ import annotations

from sdk.errors import ConfigError as _ConfigError
from sdk.errors import TrustmeshError

__all__ = [
    "ServiceError",
    "ConfigError",
    "UnauthenticatedError",
    "DeniedError",
    "BadRequestError",
    "RateLimitedError",
    "StreamLimitError",
    "UpstreamUnavailableError",
    "StartupError",
    "FederationError",
]


class ServiceError(TrustmeshError):
    """Root of the CA service's errors.

    ``who`` carries what is already known about the caller when the refusal
    happens after its token was verified (namespace, ServiceAccount, pod),
    for the audit log.
    """

    def __init__(self, message: str = "", *, who: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.who = who or {}


class ConfigError(ServiceError, _ConfigError):
    """The service configuration is invalid; ``field`` names the offending key, ``file`` the file."""

    def __init__(self, field: str, message: str, *, file: str = "") -> None:
        _ConfigError.__init__(self, field, message, file=file)
        self.who: dict[str, str] = {}


class UnauthenticatedError(ServiceError, PermissionError):
    """The credential is missing, malformed, expired, for another audience or revoked."""


class DeniedError(ServiceError, PermissionError):
    """The caller is authenticated but may not have an identity (policy, pod state, template)."""


class BadRequestError(ServiceError, ValueError):
    """The request itself is unacceptable (CSR signature, key policy, size, audiences)."""


class RateLimitedError(ServiceError, PermissionError):
    """The caller exceeded its request rate."""


class StreamLimitError(ServiceError, PermissionError):
    """Too many open bundle streams: from this client, or on the whole CA."""


class UpstreamUnavailableError(ServiceError, OSError):
    """A system the decision depends on (the Kubernetes API) cannot be reached."""


class StartupError(ServiceError, OSError):
    """The service could not start (a port is taken, a file is unreadable)."""


class FederationError(ServiceError, ValueError):
    """A federated bundle was not fetched or not accepted; the last good bundle stays."""
