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

__all__ = [
    "CaService",
    "ServiceConfig",
    "load_config",
    "parse_config",
    "ServiceError",
    "ConfigError",
    "UnauthenticatedError",
    "DeniedError",
    "BadRequestError",
    "RateLimitedError",
    "StreamLimitError",
    "UpstreamUnavailableError",
]


def __getattr__(name: str):
    # Lazy, so that `trustmesh --help` does not import grpc, yaml or the CA library.
    if name == "CaService":
        from ca.service.app import CaService

        return CaService
    if name in ("ServiceConfig", "load_config", "parse_config"):
        from ca.service import config

        return getattr(config, name)
    raise AttributeError(name)
