"""The per-pod data plane: mTLS termination and origination, per-request ABAC, traffic capture.

The public pieces (see docs/sidecar.md)::

    from sidecar import Sidecar, load_config, IdentityManager, StaticIdentity

``sidecar.redirect`` (the init container's traffic capture) and
``sidecar.workload_api`` (the SPIFFE Workload API server) are subpackages.
Names are loaded on first use, so importing :mod:`sidecar` (as the init
container does) pulls in nothing heavy.
"""

from __future__ import annotations

from sdk._lazy import lazy_exports
from sidecar._compiled import use_compiled_codec

CODEC_COMPILED = use_compiled_codec(__path__)
"""Whether the HTTP/2 codec runs compiled (see :mod:`sidecar._compiled`)."""

_EXPORTS = {
    "Sidecar": "sidecar.app",
    "SidecarConfig": "sidecar.config",
    "load_config": "sidecar.config",
    "parse_config": "sidecar.config",
    "IdentityManager": "sidecar.identity",
    "StaticIdentity": "sidecar.identity",
    "PolicyAuthorizer": "sidecar.attributes",
    "Verdict": "sidecar.attributes",
    "RequestReader": "sidecar.http1",
    "ResponseFramer": "sidecar.http1",
    "SidecarError": "sidecar.errors",
    "ConfigError": "sidecar.errors",
    "HttpError": "sidecar.errors",
    "UpstreamError": "sidecar.errors",
    "PeerVerificationError": "sidecar.errors",
    "IdentityUnavailableError": "sidecar.errors",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
