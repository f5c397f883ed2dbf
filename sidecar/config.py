"""The sidecar's configuration: one YAML file, checked field by field.

Every problem is reported as one :class:`~sidecar.errors.ConfigError` whose
``field`` is the dotted path of the offending key (``inbound.ports.8080``).
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
      svid_ttl: 3600                  # seconds, optional (the CA's default otherwise)
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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
PROTOCOLS = ("auto", "http", "http1", "http2", "grpc", "tcp")
_PROTOCOL_MEANS = {"auto": "auto", "http": "auto", "http1": "http1", "http2": "http2", "grpc": "http2", "tcp": "tcp"}
LOG_LEVELS = ("trace", "debug", "info", "warning", "error")


@dataclass(frozen=True)
class CaConfig:
    address: str
    bundle_file: Path
    token_file: Path | None = None
    token: str | None = None
    server_name: str | None = None
    svid_ttl: int | None = None
    renew_with_svid: bool = False  # renew by proving the current SVID (the CA's svid_renewal), token as fallback


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
    max_head_bytes: int = 16384
    max_headers: int = 100
    header_timeout: float = 10.0
    idle_timeout: float = 300.0
    max_connections: int = 4096
    max_connections_per_source: int = 1024  # inbound: connections one source address may hold
    max_json_body: int = 65536
    connect_timeout: float = 1.0
    handshake_timeout: float = 10.0
    drain_grace: float = 10.0


@dataclass(frozen=True)
class GrpcConfig:
    """Where the descriptors of the app's gRPC services are, and how large a message policy may read."""

    descriptors: tuple[Path, ...] = ()
    max_message: int = 1 << 20


@dataclass(frozen=True)
class SidecarConfig:
    trust_domain: str
    ca: CaConfig | None = None
    identity: StaticIdentityConfig | None = None
    mode: str = "STRICT"
    inbound_port: int = 15006
    inbound_address: str = "0.0.0.0"
    app_port: int | None = None
    ports: Mapping[int, str] = field(default_factory=dict)
    outbound_port: int = 15001
    outbound_transparent: bool | None = None  # None: transparent when inbound.app_port is unset
    trust_domains: tuple[str, ...] = ()
    destinations: Mapping[tuple[str, int], str] = field(default_factory=dict)
    upstreams: tuple[Upstream, ...] = ()
    admin_port: int = 15000
    health_port: int = 15021
    health_address: str = "0.0.0.0"
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
    """Read and check a YAML config file."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError("(file)", f"cannot read {path}: {err.strerror}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError("(file)", f"not valid YAML: {err}") from err
    base = Path(path).resolve().parent
    return parse_config(data, base)


def parse_config(data: Any, base: Path = Path(".")) -> SidecarConfig:
    """Check an already-decoded config document; relative paths resolve against ``base``."""
    top = _Section(data, "", base)
    td = top.str("trust_domain", required=True)
    mode = top.str("mode", default="STRICT").upper()
    if mode not in ("STRICT", "PERMISSIVE"):
        raise ConfigError("mode", f"must be STRICT or PERMISSIVE, got {mode!r}")
    ca = identity = None
    if (s := top.section("ca")) is not None:
        address = s.str("address", required=True)
        _hostport(address, "ca.address")
        ca = CaConfig(
            address=address,
            bundle_file=s.path("bundle_file", required=True),
            token_file=s.path("token_file"),
            token=s.str("token"),
            server_name=s.str("server_name"),
            svid_ttl=s.int("svid_ttl", lo=1),
        )
        if (ca.token_file is None) == (ca.token is None):
            raise ConfigError("ca.token_file", "give exactly one of ca.token_file and ca.token")
        renew_with_svid = s.bool("renew_with_svid")
        ca = replace(ca, renew_with_svid=ca.token is not None if renew_with_svid is None else renew_with_svid)
        s.done()
    if (s := top.section("identity")) is not None:
        identity = StaticIdentityConfig(
            s.path("cert_file", required=True),
            s.path("key_file", required=True),
            s.path("bundle_file", required=True),
        )
        s.done()
    if (ca is None) == (identity is None):
        raise ConfigError("ca", "give exactly one of ca (CA-issued SVID) and identity (fixed SVID)")
    kw: dict[str, Any] = {}
    if (s := top.section("inbound")) is not None:
        kw["inbound_port"] = s.port("port", default=15006, allow_zero=True)
        kw["inbound_address"] = s.str("address", default="0.0.0.0")
        kw["app_port"] = s.port("app_port")
        ports = {}
        for key, proto in s.mapping("ports").items():
            where = f"inbound.ports.{key}"
            port = _port_value(key, where)
            if proto not in PROTOCOLS:
                raise ConfigError(where, f"protocol must be one of {', '.join(PROTOCOLS)}, got {proto!r}")
            ports[port] = proto
        kw["ports"] = ports
        s.done()
    if (s := top.section("outbound")) is not None:
        kw["outbound_port"] = s.port("port", default=15001, allow_zero=True)
        kw["outbound_transparent"] = s.bool("transparent")
        kw["trust_domains"] = tuple(s.str_list("trust_domains"))
        dests = {}
        for key, sid in s.mapping("destinations").items():
            where = f"outbound.destinations.{key}"
            if not isinstance(sid, str):
                raise ConfigError(where, "must be a SPIFFE ID string")
            dests[_hostport(str(key), where)] = _spiffe_id(sid, where)
        kw["destinations"] = dests
        ups = []
        for i, item in enumerate(s.list("upstreams")):
            u = _Section(item, f"outbound.upstreams[{i}]", base)
            host, port = _hostport(u.str("address", required=True), f"{u.where}.address")
            sid = u.str("spiffe_id")
            proto = u.str("protocol", default="auto")
            if proto not in PROTOCOLS:
                raise ConfigError(f"{u.where}.protocol", f"must be one of {', '.join(PROTOCOLS)}")
            ups.append(
                Upstream(
                    u.port("listen", required=True, allow_zero=True),
                    host,
                    port,
                    _spiffe_id(sid, f"{u.where}.spiffe_id") if sid else None,
                    _PROTOCOL_MEANS[proto],
                )
            )
            u.done()
        kw["upstreams"] = tuple(ups)
        s.done()
    if (s := top.section("admin")) is not None:
        kw["admin_port"] = s.port("port", default=15000, allow_zero=True)
        kw["health_port"] = s.port("health_port", default=15021, allow_zero=True)
        kw["health_address"] = s.str("health_address", default="0.0.0.0")
        s.done()
    if (s := top.section("policy")) is not None:
        kw["policy_file"] = s.path("file", required=True)
        s.done()
    if (s := top.section("grpc")) is not None:
        descriptors = s.data.get("descriptors")
        if isinstance(descriptors, str):
            files = [s.path("descriptors")]
        else:
            files = [s.base / name for name in s.str_list("descriptors")]
        kw["grpc"] = GrpcConfig(tuple(files), s.int("max_message", default=GrpcConfig.max_message, lo=1))
        s.done()
    if (s := top.section("workload_api")) is not None:
        kw["workload_api_socket"] = s.path("socket", required=True)
        s.done()
    federation = {}
    for key, value in top.mapping("federation").items():
        where = f"federation.{key}"
        if not isinstance(value, str) or not value:
            raise ConfigError(where, "must be the path of the trust domain's bundle file")
        federation[_trust_domain(str(key), where)] = base / value
    kw["federation"] = federation
    kw["access_log"] = top.str("access_log", default="stdout")
    kw["access_log_omit"] = tuple(_attribute(text, f"access_log_omit[{i}]") for i, text in enumerate(top.str_list("access_log_omit")))
    kw["log_level"] = top.str("log_level")
    if kw["log_level"] is not None and kw["log_level"].lower() not in LOG_LEVELS:
        raise ConfigError("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {kw['log_level']!r}")
    if kw["log_level"] is not None:
        kw["log_level"] = kw["log_level"].lower()
    if (s := top.section("limits")) is not None:
        defaults = Limits()
        values = {}
        for name, default in vars(defaults).items():
            if isinstance(default, int):
                values[name] = s.int(name, default=default, lo=1)
            else:
                values[name] = s.number(name, default=default)
        kw["limits"] = Limits(**values)
        s.done()
    top.done()
    return SidecarConfig(trust_domain=_trust_domain(td), ca=ca, identity=identity, mode=mode, **kw)


class _Section:
    """A mapping being read; every key read is ticked off, ``done()`` refuses the rest."""

    def __init__(self, data: Any, where: str, base: Path) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(where or "(top)", "must be a mapping")
        self.data = data
        self.where = where
        self.base = base
        self.seen: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str, required: bool) -> Any:
        self.seen.add(key)
        value = self.data.get(key)
        if value is None and required:
            raise ConfigError(self._name(key), "is required")
        return value

    def section(self, key: str) -> _Section | None:
        value = self._get(key, False)
        return None if value is None else _Section(value, self._name(key), self.base)

    def str(self, key: str, required: bool = False, default: str | None = None) -> Any:
        value = self._get(key, required)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise ConfigError(self._name(key), "must be a non-empty string")
        return value

    def int(self, key: str, required: bool = False, default: int | None = None, lo: int = 0) -> Any:
        value = self._get(key, required)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(self._name(key), f"must be an integer >= {lo}, got {value!r}")
        return value

    def number(self, key: str, default: float) -> float:
        value = self._get(key, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(self._name(key), f"must be a positive number, got {value!r}")
        return float(value)

    def port(self, key: str, required: bool = False, default: int | None = None, allow_zero: bool = False) -> Any:
        value = self._get(key, required)
        if value is None:
            return default
        return _port_value(value, self._name(key), allow_zero)

    def bool(self, key: str) -> bool | None:
        value = self._get(key, False)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(self._name(key), f"must be true or false, got {value!r}")
        return value

    def path(self, key: str, required: bool = False) -> Path | None:
        value = self.str(key, required)
        return None if value is None else self.base / value

    def mapping(self, key: str) -> Mapping[Any, Any]:
        value = self._get(key, False)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(self._name(key), "must be a mapping")
        return value

    def list(self, key: str) -> list[Any]:
        value = self._get(key, False)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(self._name(key), "must be a list")
        return value

    def str_list(self, key: str) -> list[str]:
        items = self.list(key)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{self._name(key)}[{i}]", "must be a non-empty string")
        return items

    def done(self) -> None:
        for key in self.data:
            if key not in self.seen:
                raise ConfigError(self._name(str(key)), "unknown key")


def _attribute(text: str, where: str) -> str:
    """An attribute as policy spells it (``request.headers.authorization``), or a group of them."""
    from policy_dsl.attributes import resolve
    from policy_dsl.record import attribute_text, parse_attribute_text

    try:
        path = parse_attribute_text(text)
    except ValueError as err:
        raise ConfigError(where, str(err)) from None
    found = resolve(path)
    if found.error:
        raise ConfigError(where, found.error)
    return attribute_text(path)


def _port_value(value: Any, where: str, allow_zero: bool = False) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not (0 if allow_zero else 1) <= value <= 65535:
        raise ConfigError(where, f"must be a port number (1-65535), got {value!r}")
    return value


def _hostport(text: str, where: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise ConfigError(where, f"must be host:port, got {text!r}")
    return host, _port_value(port, where)


def _spiffe_id(text: str, where: str) -> str:
    from sdk.spiffeid import SpiffeId

    try:
        return str(SpiffeId.parse(text))
    except ValueError as err:
        raise ConfigError(where, str(err)) from err


def _trust_domain(text: str, where: str = "trust_domain") -> str:
    from sdk.spiffeid import TrustDomain

    try:
        return str(TrustDomain.parse(text))
    except ValueError as err:
        raise ConfigError(where, str(err)) from err
