"""The CA's network service: authenticated SVID issuance over gRPC, bundle publishing.

``trustmesh ca serve --config FILE`` runs :class:`CaService`; see
docs/ca-service.md. Workloads call it through :class:`sdk.ca_client.CaClient`.
"""

from ca.service.errors import (
    BadRequestError,
    ConfigError,
    DeniedError,
    RateLimitedError,
    StreamLimitError,
    ServiceError,
    UnauthenticatedError,
    UpstreamUnavailableError,
)
from sdk._lazy import lazy_exports

__all__ = [
    "CaService",
    "ServiceConfig",
    "load_config",
    "parse_config",
    "run_workers",
    "ServiceError",
    "ConfigError",
    "UnauthenticatedError",
    "DeniedError",
    "BadRequestError",
    "RateLimitedError",
    "StreamLimitError",
    "UpstreamUnavailableError",
]


# Lazy, so that `trustmesh --help` does not import grpc, yaml or the CA library.
__getattr__, __dir__ = lazy_exports(__name__, {
    "CaService": "ca.service.app",
    "ServiceConfig": "ca.service.config",
    "load_config": "ca.service.config",
    "parse_config": "ca.service.config",
    "run_workers": "ca.service.workers",
}, globals())
