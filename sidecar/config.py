"""The sidecar's configuration: one YAML file, checked field by field.

The file is declared below as frozen dataclasses and read by :mod:`sdk.config`:
every problem is one :class:`~sidecar.errors.ConfigError` naming the file, the
path of the offending key (``inbound.ports.8080``) and what was expected.
Unknown keys are refused too, so a misspelt option never silently falls back
to a default.

Example (all keys but ``trust_domain`` and one of ``ca``/``identity`` are
optional; the values shown are the defaults where there is one)::

    trust_domain: example.org
    mode: STRICT                      # or PERMISSIVE
    ca:                               # get and renew the SVID from the CA ...
      address: 127.0.0.1:15012
      bundle_file: /etc/trustmesh/ca-bundle.pem
      token_file: /var/run/secrets/tokens/trustmesh-ca   # or token: <static/join token>
      server_name: trustmesh-ca.trustmesh-system.svc      # optional
      svid_ttl: 3600                  # seconds or a duration (1h), optional (the CA's default otherwise)
      renew_with_svid: true           # default: true with token, false with token_file
    identity:                         # ... or use a fixed SVID from files (no CA)
      cert_file: svid.pem
      key_file: svid-key.pem
      bundle_file: bundle.pem
    inbound:
      port: 15006
      address: 0.0.0.0
      app_port: 8080                  # omit for transparent mode (original destination)
      ports: {8080: auto, 5432: tcp}  # protocol per app port: auto (default), http1, http2, grpc, tcp
    outbound:
      port: 15001                     # transparent capture port (0: any free port)
      transparent: true               # default: true unless inbound.app_port is set
      trust_domains: [example.org]    # server SVIDs accepted (default: own trust domain)
      destinations: {"10.0.0.7:8080": "spiffe://example.org/ns/b/sa/b"}
      upstreams:                      # explicit mode: local port -> remote sidecar
        - {listen: 18080, address: "127.0.0.1:25006", spiffe_id: "spiffe://...", protocol: auto}
    admin: {port: 15000, health_port: 15021, health_address: 0.0.0.0}   # 0: any free port
    policy: {file: /etc/trustmesh/policy/policy.policy}
    grpc:                             # gRPC request messages as policy attributes
      descriptors: [api.binpb]        # FileDescriptorSets (protoc --include_imports --descriptor_set_out)
      max_message: 1048576            # largest request message decoded for policy (bytes)
    workload_api: {socket: /run/trustmesh/sockets/agent.sock}
    federation: {partner.org: /etc/trustmesh/federation/partner.org.json}  # SPIFFE bundle or PEM
    access_log: stdout                # stdout, off, or a file path
    access_log_omit: [source.ip, request.headers.authorization]   # never written (privacy)
    log_level: info                   # trace, debug, info, warning, error (TRUSTMESH_LOG_LEVEL wins)
    limits: {max_head_bytes: 16384, max_headers: 100, header_timeout: 10, idle_timeout: 300,
             max_connections: 4096, max_connections_per_source: 1024, max_json_body: 65536, connect_timeout: 1,
             handshake_timeout: 10, drain_grace: 10}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sdk.config import AnyPort, Count, HostPort, Invalid, NonEmpty, Port, PortKey, Positive, Seconds, convert, load
from sdk.spiffeid import SpiffeId, TrustDomain
from sidecar.errors import ConfigError

__all__ = [
    "SidecarConfig",
    "CaConfig",
    "StaticIdentityConfig",
    "Upstream",
    "Limits",
    "GrpcConfig",
    "load_config",
    "parse_config",
    "LOG_LEVELS",
]

# auto: HTTP/1.1 or HTTP/2, detected per connection (ALPN on mTLS, the preface in plaintext);
# http is the same as auto; http1/http2 (grpc: http2) fix the version; tcp: opaque bytes.
Protocol = Literal["auto", "http", "http1", "http2", "grpc", "tcp"]
_PROTOCOL_MEANS = {"auto": "auto", "http": "auto", "http1": "http1", "http2": "http2", "grpc": "http2", "tcp": "tcp"}
LOG_LEVELS = ("trace", "debug", "info", "warning", "error")


@dataclass(frozen=True)
class CaConfig:
    address: HostPort
    bundle_file: Path
    token_file: Path | None = None
    token: NonEmpty | None = None
    server_name: NonEmpty | None = None
    svid_ttl: Seconds | None = None  # 3600 or 1h
    # Renew by proving the current SVID (the CA's svid_renewal), token as fallback; unset: with `token`.
    renew_with_svid: bool | None = None

    def __post_init__(self) -> None:
        if (self.token_file is None) == (self.token is None):
            raise Invalid("token_file", "give exactly one of ca.token_file and ca.token")
        if self.svid_ttl is not None:
            object.__setattr__(self, "svid_ttl", int(self.svid_ttl))
        if self.renew_with_svid is None:
            object.__setattr__(self, "renew_with_svid", self.token is not None)


@dataclass(frozen=True)
class StaticIdentityConfig:
    cert_file: Path
    key_file: Path
    bundle_file: Path


@dataclass(frozen=True)
class Upstream:
    """Explicit outbound: connections to ``listen`` go over mTLS to ``host:port``."""

    listen: int
    host: str
    port: int
    spiffe_id: str | None = None
    protocol: str = "auto"


@dataclass(frozen=True)
class Limits:
    max_head_bytes: Count = 16384
    max_headers: Count = 100
    header_timeout: Positive = 10.0
    idle_timeout: Positive = 300.0
    max_connections: Count = 4096
    max_connections_per_source: Count = 1024  # inbound: connections one source address may hold
    max_json_body: Count = 65536
    # HTTP/2: request bytes (gRPC messages, JSON bodies) one connection's streams may hold for
    # inspection together; None: max(4 x grpc.max_message, 4 MiB)
    max_held_per_connection: Count | None = None
    connect_timeout: Positive = 1.0
    handshake_timeout: Positive = 10.0
    drain_grace: Positive = 10.0


@dataclass(frozen=True)
class GrpcConfig:
    """Where the descriptors of the app's gRPC services are, and how large a message policy may read."""

    descriptors: tuple[Path, ...] = ()  # the file also takes one path as a plain string
    max_message: Count = 1 << 20


# -- The file's sections where they differ from the values the sidecar runs on ----------------


@dataclass(frozen=True)
class _Inbound:
    port: AnyPort = 15006
    address: NonEmpty = "0.0.0.0"
    app_port: Port | None = None
    ports: Mapping[PortKey, Protocol] = field(default_factory=dict)


@dataclass(frozen=True)
class _UpstreamEntry:
    listen: AnyPort
    address: HostPort
    spiffe_id: SpiffeId | None = None
    protocol: Protocol = "auto"


@dataclass(frozen=True)
class _Outbound:
    port: AnyPort = 15001
    transparent: bool | None = None
    trust_domains: tuple[TrustDomain, ...] = ()
    destinations: Mapping[HostPort, SpiffeId] = field(default_factory=dict)
    upstreams: tuple[_UpstreamEntry, ...] = ()


@dataclass(frozen=True)
class _Admin:
    port: AnyPort = 15000
    health_port: AnyPort = 15021
    health_address: NonEmpty = "0.0.0.0"


@dataclass(frozen=True)
class _Policy:
    file: Path


@dataclass(frozen=True)
class _WorkloadApi:
    socket: Path


@dataclass(frozen=True)
class _File:
    trust_domain: TrustDomain
    mode: NonEmpty = "STRICT"
    ca: CaConfig | None = None
    identity: StaticIdentityConfig | None = None
    inbound: _Inbound = _Inbound()
    outbound: _Outbound = _Outbound()
    admin: _Admin = _Admin()
    policy: _Policy | None = None
    grpc: GrpcConfig = GrpcConfig()
    workload_api: _WorkloadApi | None = None
    federation: Mapping[TrustDomain, Path] = field(default_factory=dict)  # trust domain -> bundle file
    access_log: NonEmpty = "stdout"
    access_log_omit: tuple[NonEmpty, ...] = ()
    log_level: NonEmpty | None = None
    limits: Limits = Limits()

    def __post_init__(self) -> None:
        if self.mode.upper() not in ("STRICT", "PERMISSIVE"):
            raise Invalid("mode", f"expected STRICT or PERMISSIVE, got {self.mode!r}")
        if (self.ca is None) == (self.identity is None):
            raise Invalid("ca", "give exactly one of ca (CA-issued SVID) and identity (fixed SVID)")
        if self.log_level is not None and self.log_level.lower() not in LOG_LEVELS:
            raise Invalid("log_level", f"expected one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        omit = tuple(_attribute(text, f"access_log_omit[{i}]") for i, text in enumerate(self.access_log_omit))
        object.__setattr__(self, "access_log_omit", omit)


@dataclass(frozen=True)
class SidecarConfig:
    trust_domain: str
    ca: CaConfig | None = None
    identity: StaticIdentityConfig | None = None
    mode: str = "STRICT"
    inbound_port: int = _Inbound.port
    inbound_address: str = _Inbound.address
    app_port: int | None = None
    ports: Mapping[int, str] = field(default_factory=dict)
    outbound_port: int = _Outbound.port
    outbound_transparent: bool | None = None  # None: transparent when inbound.app_port is unset
    trust_domains: tuple[str, ...] = ()
    destinations: Mapping[tuple[str, int], str] = field(default_factory=dict)
    upstreams: tuple[Upstream, ...] = ()
    admin_port: int = _Admin.port
    health_port: int = _Admin.health_port
    health_address: str = _Admin.health_address
    policy_file: Path | None = None
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    workload_api_socket: Path | None = None
    federation: Mapping[str, Path] = field(default_factory=dict)  # trust domain -> bundle file
    access_log: str = "stdout"
    access_log_omit: tuple[str, ...] = ()  # attributes (or groups of them) whose values are never logged
    log_level: str | None = None  # None: TRUSTMESH_LOG_LEVEL, else info
    limits: Limits = field(default_factory=Limits)

    @property
    def transparent_outbound(self) -> bool:
        if self.outbound_transparent is not None:
            return self.outbound_transparent
        return self.app_port is None

    def protocol_for(self, app_port: int) -> str:
        """``auto``, ``http1``, ``http2`` or ``tcp`` (``http`` reads as ``auto``, ``grpc`` as ``http2``)."""
        return _PROTOCOL_MEANS.get(self.ports.get(app_port, "auto"), "auto")

    @property
    def accepted_trust_domains(self) -> tuple[str, ...]:
        return self.trust_domains or (self.trust_domain,)


def load_config(path: str | Path) -> SidecarConfig:
    """Read and check a YAML config file; relative paths in it are relative to its directory."""
    base = Path(path).resolve().parent
    return load(path, lambda data: parse_config(data, base), ConfigError)


def parse_config(data: Any, base: Path = Path(".")) -> SidecarConfig:
    """Check an already-decoded config document; relative paths resolve against ``base``."""
    grpc = data.get("grpc") if isinstance(data, Mapping) else None
    if isinstance(grpc, Mapping) and isinstance(grpc.get("descriptors"), str):  # one file
        data = {**data, "grpc": {**grpc, "descriptors": [grpc["descriptors"]]}}
    f = convert(data, _File, ConfigError, base=base)
    return SidecarConfig(
        trust_domain=str(f.trust_domain),
        ca=f.ca,
        identity=f.identity,
        mode=f.mode.upper(),
        inbound_port=f.inbound.port,
        inbound_address=f.inbound.address,
        app_port=f.inbound.app_port,
        ports={int(port): proto for port, proto in f.inbound.ports.items()},
        outbound_port=f.outbound.port,
        outbound_transparent=f.outbound.transparent,
        trust_domains=tuple(str(td) for td in f.outbound.trust_domains),
        destinations={(dest.host, dest.port): str(sid) for dest, sid in f.outbound.destinations.items()},
        upstreams=tuple(
            Upstream(u.listen, u.address.host, u.address.port, str(u.spiffe_id) if u.spiffe_id else None,
                     _PROTOCOL_MEANS[u.protocol])
            for u in f.outbound.upstreams
        ),
        admin_port=f.admin.port,
        health_port=f.admin.health_port,
        health_address=f.admin.health_address,
        policy_file=f.policy and f.policy.file,
        grpc=f.grpc,
        workload_api_socket=f.workload_api and f.workload_api.socket,
        federation={str(td): path for td, path in f.federation.items()},
        access_log=f.access_log,
        access_log_omit=f.access_log_omit,
        log_level=f.log_level and f.log_level.lower(),
        limits=f.limits,
    )


def _attribute(text: str, where: str) -> str:
    """An attribute as policy spells it (``request.headers.authorization``), or a group of them."""
    from policy_dsl.attributes import resolve
    from policy_dsl.record import attribute_text, parse_attribute_text

    try:
        path = parse_attribute_text(text)
    except ValueError as err:
        raise Invalid(where, str(err)) from None
    found = resolve(path)
    if found.error:
        raise Invalid(where, found.error)
    return attribute_text(path)
