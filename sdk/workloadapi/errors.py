"""Errors of the Workload API client."""

from __future__ import annotations

from sdk.errors import TrustmeshError

__all__ = ["EndpointAddressError", "WorkloadApiError"]


class WorkloadApiError(TrustmeshError, OSError):
    """The Workload API could not be reached, or refused or botched a request.

    ``code`` is the gRPC status name (``"UNAVAILABLE"``, ``"PERMISSION_DENIED"``,
    ``"INVALID_ARGUMENT"``...) or ``"BAD_RESPONSE"`` for a malformed answer.
    """

    def __init__(self, message: str, code: str = "UNAVAILABLE") -> None:
        super().__init__(message)
        self.code = code


class EndpointAddressError(TrustmeshError, ValueError):
    """A ``SPIFFE_ENDPOINT_SOCKET`` value does not follow the Workload Endpoint standard."""
