"""The sidecar's errors; each also derives from the matching built-in."""

from __future__ import annotations

import os

from sdk.errors import ConfigError as _ConfigError
from sdk.errors import TrustmeshError

__all__ = [
    "SidecarError",
    "ConfigError",
    "HttpError",
    "GrpcError",
    "UpstreamError",
    "PeerVerificationError",
    "IdentityUnavailableError",
    "ListenError",
    "RedirectLoopError",
]


class SidecarError(TrustmeshError):
    """Root of the sidecar's errors."""


class ConfigError(SidecarError, _ConfigError):
    """The sidecar's configuration file is invalid; ``field`` names the offending key, ``file`` the file."""


class HttpError(SidecarError, ValueError):
    """A request broke the HTTP/1.1 rules the sidecar enforces; answered with ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class GrpcError(SidecarError, ValueError):
    """A gRPC call broke the rules the sidecar enforces (its path, message framing or
    encoding); answered with ``grpc-status: code`` (13, INTERNAL, unless said otherwise)."""

    def __init__(self, reason: str, code: int = 13) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class UpstreamError(SidecarError, OSError):
    """The app (inbound) or the remote sidecar (outbound) could not be reached or misbehaved."""


class PeerVerificationError(SidecarError, PermissionError):
    """The TLS peer's certificate chain or SPIFFE ID was not acceptable."""


class IdentityUnavailableError(SidecarError, OSError):
    """There is no valid SVID (not issued yet, or expired while the CA is unreachable)."""


class ListenError(SidecarError, OSError):
    """A listener could not be opened (port in use, address not available ...)."""

    def __init__(self, listener: str, host: str, port: int, err: OSError) -> None:
        reason = os.strerror(err.errno) if err.errno else str(err)  # asyncio's own strerror is wordy
        super().__init__(f"{listener} listener: cannot listen on {host}:{port}: {reason}")
        self.listener = listener
        self.port = port


class RedirectLoopError(SidecarError, OSError):
    """A captured connection's original destination is one of the sidecar's own ports."""

    reject_reason = "loop"
