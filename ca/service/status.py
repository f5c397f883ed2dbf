"""The one place typed errors become gRPC status codes.

The caller gets a clear message for refusals it can act on; anything
unexpected (including crypto failures inside the CA) is ``INTERNAL`` with an
opaque message, while the audit log gets the precise reason.
"""

from __future__ import annotations

import grpc

from ca.service.errors import (
    BadRequestError,
    DeniedError,
    RateLimitedError,
    StreamLimitError,
    UnauthenticatedError,
    UpstreamUnavailableError,
)

__all__ = ["status_for"]

_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (DeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (BadRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (RateLimitedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StreamLimitError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (UpstreamUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def status_for(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """(code, message for the caller) for ``err``."""
    for kind, code in _CODES:
        if isinstance(err, kind):
            if code is grpc.StatusCode.UNAVAILABLE:
                return code, "identity cannot be decided now (Kubernetes API unavailable); retry later"
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return code, "the CA could not finish within the call's deadline"
            return code, str(err)
    return grpc.StatusCode.INTERNAL, "internal error; see the CA's audit log"
