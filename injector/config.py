"""The injector's configuration: what to inject and how to serve.

Loaded from a YAML file (``trustmesh injector serve --config FILE``, and
``trustmesh inject --config FILE``) by :mod:`sdk.config`. Every key is
optional; unknown keys and bad values are refused naming the file, the key's
path and what was expected::

    trust_domain: example.org
    identity_template: ns/{namespace}/sa/{service_account}
    image: ghcr.io/trustmesh/trustmesh-sidecar:0.1.0
    sidecar: {native: true, log_level: info,
              resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 256Mi}}}
    interception: {mode: iptables, ipv6: capture, exclude_outbound_cidrs: [169.254.169.254/32]}
    strict_app_security: false    # true: refuse app containers that could leave the capture
    server: {port: 9443, cert_file: /etc/trustmesh/webhook/tls.crt,
             key_file: /etc/trustmesh/webhook/tls.key}

With ``server.certificate_from_ca.enabled`` the injector has the trustmesh CA
issue that certificate (and writes ``cert_file``, ``key_file`` and
``ca_bundle.ca_file`` itself) instead of reading a mounted Secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Annotated, Any, Literal

from msgspec import Meta

from injector.annotations import (
    EBPF_UNAVAILABLE,
    LOG_LEVELS,
    MODES,
    check_dns_subdomain,
    parse_cidrs,
    parse_ports,
)
from injector.errors import AnnotationError, InjectorConfigError
from sdk.config import HostPort, Invalid, Port, convert, load, parse_yaml
from sdk.redirect_limits import ALWAYS_EXCLUDED_INBOUND, too_long

__all__ = [
    "InjectorConfig",
    "ServerSettings",
    "CaBundleSettings",
    "CertificateFromCaSettings",
    "load_config",
    "parse_config",
]

_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[KMGTPE]i?|[mkMGTPE]|n|u)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Values here end up in pod specs that are written as YAML, so they stay plain str and int
# (no value types): each is checked in its dataclass's __post_init__.


def _name(value: str, where: str) -> str:
    try:
        return check_dns_subdomain(where, value)
    except AnnotationError:
        raise Invalid(where, f"{value!r} is not a valid object name (RFC 1123 subdomain)") from None


def _host_port(text: str, where: str) -> None:
    try:
        HostPort.from_config(text)
    except (TypeError, ValueError) as err:
        raise Invalid(where, str(err)) from None




@dataclass(frozen=True)
class CaBundleSettings:
    """Start-up option: patch ``caBundle`` into these webhook configurations."""

    patch: bool = False
    ca_file: str = "/etc/trustmesh/webhook/ca.crt"
    mutating: tuple[str, ...] = ("trustmesh-injector",)
    validating: tuple[str, ...] = ("trustmesh-validator",)

    def __post_init__(self) -> None:
        for key in ("mutating", "validating"):
            for name in getattr(self, key):
                _name(name, key)


@dataclass(frozen=True)
class CertificateFromCaSettings:
    """Start-up option: get the serving certificate from the trustmesh CA and renew it at half life."""

    enabled: bool = False
    address: str = ""  # empty: the top-level ca_address
    server_name: str = ""  # the name checked on the CA's certificate; empty: the host of the address
    bundle_file: str = "/var/run/trustmesh/bundle/bundle.pem"  # PEM roots to verify the CA with
    token_file: str = "/var/run/secrets/trustmesh/tokens/trustmesh-ca"  # projected SA token, audience trustmesh-ca
    dns_names: Annotated[tuple[str, ...], Meta(min_length=1)] = ("trustmesh-injector.trustmesh-system.svc",)
    ttl_seconds: Annotated[int, Meta(ge=600, le=30 * 86400)] = 86400
    startup_timeout_seconds: Annotated[float, Meta(ge=0, le=3600)] = 60.0  # keep trying to reach the CA this long

    def __post_init__(self) -> None:
        if self.address:
            _host_port(self.address, "address")
        for name in self.dns_names:
            try:
                check_dns_subdomain("dns_names", name)
            except AnnotationError:
                raise Invalid("dns_names", f"{name!r} is not a DNS name (lower-case RFC 1123)") from None
        if self.enabled:
            for key in ("bundle_file", "token_file"):
                if not getattr(self, key):
                    raise Invalid(key, "is required when enabled")


@dataclass(frozen=True)
class ServerSettings:
    """Where and how the webhook HTTPS server listens."""

    host: str = "0.0.0.0"
    port: Annotated[int, Meta(ge=0, le=65535)] = 9443
    cert_file: str = "/etc/trustmesh/webhook/tls.crt"
    key_file: str = "/etc/trustmesh/webhook/tls.key"
    max_body_bytes: Annotated[int, Meta(ge=1024, le=64 * 2**20)] = 3 * 1024 * 1024
    read_timeout_seconds: Annotated[float, Meta(gt=0, le=30)] = 5.0
    ca_bundle: CaBundleSettings = CaBundleSettings()
    certificate_from_ca: CertificateFromCaSettings = CertificateFromCaSettings()


@dataclass(frozen=True)
class _Settings:
    """The keys at the top of the file, and of :class:`InjectorConfig`."""

    trust_domain: str = "cluster.local"
    cluster: str = ""
    identity_template: str = "ns/{namespace}/sa/{service_account}"
    image: str = "ghcr.io/trustmesh/trustmesh-sidecar:0.1.0"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    ca_address: str = "trustmesh-ca.trustmesh-system.svc:15012"
    bundle_configmap: str = "trustmesh-bundle"
    #: If set, the PEM bundle in this file is copied into each pod (see docs) instead of
    #: mounting the ``bundle_configmap`` ConfigMap from the pod's namespace.
    trust_bundle_file: str = ""
    token_audience: str = "trustmesh-ca"
    token_expiration_seconds: Annotated[int, Meta(ge=600, le=86400)] = 3600
    #: Refuse app containers that may run as root, keep SETUID/SETGID/NET_RAW or allow
    #: privilege escalation (see injector.app_security). Off by default.
    strict_app_security: bool = False
    proxy_uid: Annotated[int, Meta(ge=1, le=2**31 - 1)] = 1337
    proxy_gid: Annotated[int, Meta(ge=1, le=2**31 - 1)] = 1337
    inbound_port: Port = 15006
    outbound_port: Port = 15001
    health_port: Port = 15021
    admin_port: Port = 15000
    server: ServerSettings = ServerSettings()

    def __post_init__(self) -> None:
        _name(self.bundle_configmap, "bundle_configmap")


_Quantity = str | int | float  # a Kubernetes quantity: "50m", "64Mi", 2
_Resources = Mapping[Literal["requests", "limits"], Mapping[Literal["cpu", "memory", "ephemeral-storage"], _Quantity]]


@dataclass(frozen=True)
class _Sidecar:
    native: bool = True
    log_level: Literal[LOG_LEVELS] = "info"  # type: ignore[valid-type]
    resources: _Resources | None = None

    def __post_init__(self) -> None:
        if self.resources is not None:
            object.__setattr__(self, "resources", _resources(self.resources))


@dataclass(frozen=True)
class _Interception:
    mode: str = "iptables"
    ipv6: Literal["capture", "drop"] = "capture"
    exclude_inbound_ports: tuple[str | int, ...] = ()
    exclude_outbound_ports: tuple[str | int, ...] = ()
    exclude_outbound_cidrs: tuple[str | int, ...] = ()

    def __post_init__(self) -> None:
        if self.mode == "ebpf":
            raise Invalid("mode", EBPF_UNAVAILABLE)
        if self.mode not in MODES:
            raise Invalid("mode", f"expected one of {', '.join(MODES)}, got {self.mode!r}")
        for key, parse in (("exclude_inbound_ports", parse_ports), ("exclude_outbound_ports", parse_ports),
                           ("exclude_outbound_cidrs", parse_cidrs)):
            try:
                object.__setattr__(self, key, parse(key, ",".join(str(i) for i in getattr(self, key))))
            except AnnotationError as err:
                raise Invalid(key, str(err).split(": ", 1)[1]) from None


@dataclass(frozen=True)
class _RequireInjection:
    #: Required namespaces where ``hostNetwork`` pods (never injected) are admitted anyway.
    host_network_namespaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in self.host_network_namespaces:
            if not _DNS_LABEL.match(name):
                raise Invalid("host_network_namespaces", f"{name!r} is not a namespace name (RFC 1123 label)")


@dataclass(frozen=True)
class _File(_Settings):
    sidecar: _Sidecar = _Sidecar()
    interception: _Interception = _Interception()
    require_injection: _RequireInjection = _RequireInjection()


@dataclass(frozen=True)
class InjectorConfig(_Settings):
    """Everything the patch builder and the validating webhook need."""

    native_sidecar: bool = _Sidecar.native
    log_level: str = _Sidecar.log_level
    resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        }
    )
    mode: str = _Interception.mode
    ipv6: str = _Interception.ipv6
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_outbound_cidrs: tuple[str, ...] = ()
    #: ``require_injection.host_network_namespaces``: required namespaces where
    #: ``hostNetwork`` pods (never injected) are admitted anyway.
    host_network_namespaces: tuple[str, ...] = ()


def load_config(path: str) -> InjectorConfig:
    """Read and validate a YAML config file."""
    return load(path, _from_mapping, InjectorConfigError)


def parse_config(text: str) -> InjectorConfig:
    """Parse and validate YAML config text (empty text gives the defaults)."""
    return _from_mapping(parse_yaml(text, InjectorConfigError))


def _from_mapping(data: Any) -> InjectorConfig:
    f = convert({} if data is None else data, _File, InjectorConfigError, null_is_absent=False)
    settings = {name: getattr(f, name) for name in _Settings.__dataclass_fields__}
    sidecar, interception = f.sidecar, f.interception
    config = InjectorConfig(
        **settings,
        native_sidecar=sidecar.native,
        log_level=sidecar.log_level,
        **({} if sidecar.resources is None else {"resources": sidecar.resources}),
        mode=interception.mode,
        ipv6=interception.ipv6,
        exclude_inbound_ports=interception.exclude_inbound_ports,  # type: ignore[arg-type]
        exclude_outbound_ports=interception.exclude_outbound_ports,  # type: ignore[arg-type]
        exclude_outbound_cidrs=interception.exclude_outbound_cidrs,  # type: ignore[arg-type]
        host_network_namespaces=f.require_injection.host_network_namespaces,
    )
    _check_rendered(config, {key for key in _PORT_KEYS if key in data} if isinstance(data, Mapping) else set())
    return config


_PORT_KEYS = ("inbound_port", "outbound_port", "health_port", "admin_port")


def _check_rendered(config: InjectorConfig, given: set[str]) -> None:
    """Refuse settings that trustmesh-init (``trustmesh redirect``) or the sidecar
    would refuse in every injected pod; a colliding port is reported under the
    key this file set."""
    for key in ("inbound_port", "outbound_port"):
        port = getattr(config, key)
        if port in ALWAYS_EXCLUDED_INBOUND:
            raise InjectorConfigError(key, f"{port} is one of the sidecar's admin/health ports "
                                           f"{ALWAYS_EXCLUDED_INBOUND}, which trustmesh redirect never captures")
    seen: dict[int, str] = {}
    for key in sorted(_PORT_KEYS, key=lambda k: k in given):  # keys from the file last
        port = getattr(config, key)
        if port in seen:
            raise InjectorConfigError(key, f"{port} is also {seen[port]}; the sidecar needs four different ports")
        seen[port] = key
    for key, own in (("exclude_inbound_ports", (config.health_port, *config.exclude_inbound_ports)),
                     ("exclude_outbound_ports", config.exclude_outbound_ports),
                     ("exclude_outbound_cidrs", config.exclude_outbound_cidrs)):
        reason = too_long(own)
        if reason:
            extra = " (with health_port)" if key == "exclude_inbound_ports" else ""
            raise InjectorConfigError("interception." + key, f"{reason}{extra}: trustmesh-init would refuse it")
    _host_port_or_error(config.ca_address)


def _host_port_or_error(address: str) -> None:
    try:
        _host_port(address, "ca_address")
    except Invalid as err:
        raise InjectorConfigError("ca_address", f"{err} (the sidecar refuses anything else)") from None


def _resources(data: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for kind, amounts in data.items():
        out[kind] = {}
        for resource, amount in amounts.items():
            text = str(amount) if isinstance(amount, (int, float)) and not isinstance(amount, bool) else amount
            if not isinstance(text, str) or not _QUANTITY.match(text):
                raise Invalid(f"resources.{kind}.{resource}", f"{amount!r} is not a Kubernetes quantity")
            out[kind][resource] = canonical_quantity(text)
    return out


_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}


def canonical_quantity(text: str) -> str:
    """A quantity as the API server stores it (``0.5`` → ``500m``, ``1.5Gi`` → ``1536Mi``).

    A resource value is rounded up to a thousandth (SetDefaults_ResourceList) and
    written without fractional digits, with the largest suffix of its format
    (binary, decimal SI or exponent) that keeps it exact. Rendering the stored
    form keeps a reinvoked webhook from patching what the API server rewrote.

    >>> [canonical_quantity(q) for q in ("0.5", "1000m", "1.5Gi", "1024Mi", "0.5Ki", "1e3", "1u", "64Mi")]
    ['500m', '1', '1536Mi', '1Gi', '512', '1e3', '1m', '64Mi']
    """
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = Decimal(match.group(1)), match.group(3) or ""
    if suffix[:1] in ("e", "E") and suffix not in _DECIMAL_SUFFIXES:
        value, fmt = number * Decimal(10) ** int(suffix[1:]), "exponent"
    elif suffix in _BINARY_SUFFIXES:
        value, fmt = number * 1024 ** _BINARY_SUFFIXES[suffix], "binary"
    else:
        value, fmt = number * Decimal(10) ** _DECIMAL_SUFFIXES[suffix], "decimal"
    value = (value * 1000).to_integral_value(rounding=ROUND_CEILING) / 1000
    if fmt == "binary" and value == value.to_integral_value() and value >= 1024:
        for name, power in sorted(_BINARY_SUFFIXES.items(), key=lambda item: -item[1]):
            if value % 1024 ** power == 0:
                return f"{int(value) // 1024 ** power}{name}"
    if value == 0:
        return "0"
    exponent = max(e for e in range(-3, 19, 3) if value % Decimal(10) ** e == 0)
    mantissa = int(value / Decimal(10) ** exponent)
    if fmt == "exponent":
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    return f"{mantissa}{next(k for k, v in _DECIMAL_SUFFIXES.items() if v == exponent)}"
