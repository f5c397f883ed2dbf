"""The injector's configuration: what to inject and how to serve.

Loaded from a YAML file (``trustmesh injector serve --config FILE``, and
``trustmesh inject --config FILE``). Every key is optional; unknown keys and
bad values are refused with the key's dotted name::

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
from decimal import ROUND_CEILING, Decimal
from dataclasses import dataclass, field, fields, replace
from typing import Any

import yaml

from injector.annotations import (
    EBPF_UNAVAILABLE,
    LOG_LEVELS,
    MODES,
    check_dns_subdomain,
    parse_cidrs,
    parse_ports,
)
from injector.errors import AnnotationError, InjectorConfigError
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
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True)
class CaBundleSettings:
    """Start-up option: patch ``caBundle`` into these webhook configurations."""

    patch: bool = False
    ca_file: str = "/etc/trustmesh/webhook/ca.crt"
    mutating: tuple[str, ...] = ("trustmesh-injector",)
    validating: tuple[str, ...] = ("trustmesh-validator",)


@dataclass(frozen=True)
class CertificateFromCaSettings:
    """Start-up option: get the serving certificate from the trustmesh CA and renew it at half life."""

    enabled: bool = False
    address: str = ""  # empty: the top-level ca_address
    server_name: str = ""  # the name checked on the CA's certificate; empty: the host of the address
    bundle_file: str = "/var/run/trustmesh/bundle/bundle.pem"  # PEM roots to verify the CA with
    token_file: str = "/var/run/secrets/trustmesh/tokens/trustmesh-ca"  # projected SA token, audience trustmesh-ca
    dns_names: tuple[str, ...] = ("trustmesh-injector.trustmesh-system.svc",)
    ttl_seconds: int = 86400
    startup_timeout_seconds: float = 60.0  # keep trying to reach the CA at start-up this long


@dataclass(frozen=True)
class ServerSettings:
    """Where and how the webhook HTTPS server listens."""

    host: str = "0.0.0.0"
    port: int = 9443
    cert_file: str = "/etc/trustmesh/webhook/tls.crt"
    key_file: str = "/etc/trustmesh/webhook/tls.key"
    max_body_bytes: int = 3 * 1024 * 1024
    read_timeout_seconds: float = 5.0
    ca_bundle: CaBundleSettings = field(default_factory=CaBundleSettings)
    certificate_from_ca: CertificateFromCaSettings = field(default_factory=CertificateFromCaSettings)


@dataclass(frozen=True)
class InjectorConfig:
    """Everything the patch builder and the validating webhook need."""

    trust_domain: str = "cluster.local"
    cluster: str = ""
    identity_template: str = "ns/{namespace}/sa/{service_account}"
    image: str = "ghcr.io/trustmesh/trustmesh-sidecar:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    ca_address: str = "trustmesh-ca.trustmesh-system.svc:15012"
    bundle_configmap: str = "trustmesh-bundle"
    #: If set, the PEM bundle in this file is copied into each pod (see docs) instead of
    #: mounting the ``bundle_configmap`` ConfigMap from the pod's namespace.
    trust_bundle_file: str = ""
    token_audience: str = "trustmesh-ca"
    token_expiration_seconds: int = 3600
    native_sidecar: bool = True
    log_level: str = "info"
    resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        }
    )
    mode: str = "iptables"
    ipv6: str = "capture"
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_outbound_cidrs: tuple[str, ...] = ()
    #: Refuse app containers that may run as root, keep SETUID/SETGID/NET_RAW or allow
    #: privilege escalation (see injector.app_security). Off by default.
    strict_app_security: bool = False
    proxy_uid: int = 1337
    proxy_gid: int = 1337
    inbound_port: int = 15006
    outbound_port: int = 15001
    health_port: int = 15021
    admin_port: int = 15000
    #: ``require_injection.host_network_namespaces``: required namespaces where
    #: ``hostNetwork`` pods (never injected) are admitted anyway.
    host_network_namespaces: tuple[str, ...] = ()
    server: ServerSettings = field(default_factory=ServerSettings)


def load_config(path: str) -> InjectorConfig:
    """Read and validate a YAML config file."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as err:
        raise InjectorConfigError(path, f"cannot read: {err.strerror or err}") from err
    return parse_config(text)


def parse_config(text: str) -> InjectorConfig:
    """Parse and validate YAML config text (empty text gives the defaults)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InjectorConfigError("(file)", f"not valid YAML: {err}") from err
    if data is None:
        data = {}
    return _from_mapping(data)


def _from_mapping(data: Any) -> InjectorConfig:
    top = _section(data, "", {f.name for f in fields(InjectorConfig)} - _FLATTENED
                   | {"sidecar", "interception", "require_injection"})
    values: dict[str, Any] = {}
    for key in ("trust_domain", "cluster", "identity_template", "image", "ca_address",
                "bundle_configmap", "trust_bundle_file", "token_audience"):
        if key in top:
            values[key] = _string(top[key], key)
    if "image_pull_policy" in top:
        values["image_pull_policy"] = _one_of(top["image_pull_policy"], "image_pull_policy", _PULL_POLICIES)
    if "bundle_configmap" in values:
        _name(values["bundle_configmap"], "bundle_configmap")
    if "token_expiration_seconds" in top:
        values["token_expiration_seconds"] = _int(top["token_expiration_seconds"], "token_expiration_seconds",
                                                  600, 86400)
    if "strict_app_security" in top:
        values["strict_app_security"] = _bool(top["strict_app_security"], "strict_app_security")
    for key in ("proxy_uid", "proxy_gid"):
        if key in top:
            values[key] = _int(top[key], key, 1, 2**31 - 1)
    for key in ("inbound_port", "outbound_port", "health_port", "admin_port"):
        if key in top:
            values[key] = _int(top[key], key, 1, 65535)
    sidecar = _section(top.get("sidecar", {}), "sidecar.", {"native", "log_level", "resources"})
    if "native" in sidecar:
        values["native_sidecar"] = _bool(sidecar["native"], "sidecar.native")
    if "log_level" in sidecar:
        values["log_level"] = _one_of(sidecar["log_level"], "sidecar.log_level", LOG_LEVELS)
    if "resources" in sidecar:
        values["resources"] = _resources(sidecar["resources"])
    values.update(_interception(top.get("interception", {})))
    required = _section(top.get("require_injection", {}), "require_injection.", {"host_network_namespaces"})
    if "host_network_namespaces" in required:
        where = "require_injection.host_network_namespaces"
        if not isinstance(required["host_network_namespaces"], list):
            raise InjectorConfigError(where, "must be a list of namespace names")
        values["host_network_namespaces"] = tuple(
            _dns_label(_string(n, where), where) for n in required["host_network_namespaces"])
    if "server" in top:
        values["server"] = _server(top["server"])
    config = replace(InjectorConfig(), **values)
    _check_rendered(config, set(values))
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
    host, sep, port_text = config.ca_address.rpartition(":")
    if not sep or not host.strip("[]") or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise InjectorConfigError("ca_address", f"must be HOST:PORT (the sidecar refuses anything else), "
                                                f"got {config.ca_address!r}")


_FLATTENED = {"native_sidecar", "log_level", "resources", "mode", "ipv6", "exclude_inbound_ports",
              "exclude_outbound_ports", "exclude_outbound_cidrs", "host_network_namespaces"}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _interception(data: Any) -> dict[str, Any]:
    section = _section(data, "interception.", {"mode", "ipv6", "exclude_inbound_ports",
                                               "exclude_outbound_ports", "exclude_outbound_cidrs"})
    values: dict[str, Any] = {}
    if "mode" in section:
        if section["mode"] == "ebpf":
            raise InjectorConfigError("interception.mode", EBPF_UNAVAILABLE)
        values["mode"] = _one_of(section["mode"], "interception.mode", MODES)
    if "ipv6" in section:
        values["ipv6"] = _one_of(section["ipv6"], "interception.ipv6", ("capture", "drop"))
    for key, parse in (("exclude_inbound_ports", parse_ports), ("exclude_outbound_ports", parse_ports),
                       ("exclude_outbound_cidrs", parse_cidrs)):
        if key in section:
            where = "interception." + key
            items = section[key]
            if not isinstance(items, list):
                raise InjectorConfigError(where, "must be a list")
            try:
                values[key] = parse(where, ",".join(str(i) for i in items))
            except AnnotationError as err:
                raise InjectorConfigError(where, str(err).split(": ", 1)[1]) from err
    return values


def _server(data: Any) -> ServerSettings:
    section = _section(data, "server.", {f.name for f in fields(ServerSettings)})
    values: dict[str, Any] = {}
    for key in ("host", "cert_file", "key_file"):
        if key in section:
            values[key] = _string(section[key], "server." + key)
    if "port" in section:
        values["port"] = _int(section["port"], "server.port", 0, 65535)
    if "max_body_bytes" in section:
        values["max_body_bytes"] = _int(section["max_body_bytes"], "server.max_body_bytes", 1024, 64 * 2**20)
    if "read_timeout_seconds" in section:
        value = section["read_timeout_seconds"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 30:
            raise InjectorConfigError("server.read_timeout_seconds", "must be a number in (0, 30]")
        values["read_timeout_seconds"] = float(value)
    if "ca_bundle" in section:
        cab = _section(section["ca_bundle"], "server.ca_bundle.", {"patch", "ca_file", "mutating", "validating"})
        cab_values: dict[str, Any] = {}
        if "patch" in cab:
            cab_values["patch"] = _bool(cab["patch"], "server.ca_bundle.patch")
        if "ca_file" in cab:
            cab_values["ca_file"] = _string(cab["ca_file"], "server.ca_bundle.ca_file")
        for key in ("mutating", "validating"):
            if key in cab:
                where = "server.ca_bundle." + key
                if not isinstance(cab[key], list):
                    raise InjectorConfigError(where, "must be a list of names")
                cab_values[key] = tuple(_name(_string(n, where), where) for n in cab[key])
        values["ca_bundle"] = replace(CaBundleSettings(), **cab_values)
    if "certificate_from_ca" in section:
        values["certificate_from_ca"] = _certificate_from_ca(section["certificate_from_ca"])
    return replace(ServerSettings(), **values)


def _certificate_from_ca(data: Any) -> CertificateFromCaSettings:
    prefix = "server.certificate_from_ca."
    section = _section(data, prefix, {f.name for f in fields(CertificateFromCaSettings)})
    values: dict[str, Any] = {}
    if "enabled" in section:
        values["enabled"] = _bool(section["enabled"], prefix + "enabled")
    for key in ("address", "server_name", "bundle_file", "token_file"):
        if key in section:
            values[key] = _string(section[key], prefix + key)
    if values.get("address"):
        host, sep, port = values["address"].rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise InjectorConfigError(prefix + "address", f"must be HOST:PORT, got {values['address']!r}")
    if "dns_names" in section:
        where = prefix + "dns_names"
        names = section["dns_names"]
        if not isinstance(names, list) or not names:
            raise InjectorConfigError(where, "must be a non-empty list of DNS names")
        values["dns_names"] = tuple(_dns_name(_string(n, where), where) for n in names)
    if "ttl_seconds" in section:
        values["ttl_seconds"] = _int(section["ttl_seconds"], prefix + "ttl_seconds", 600, 30 * 86400)
    if "startup_timeout_seconds" in section:
        value = section["startup_timeout_seconds"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
            raise InjectorConfigError(prefix + "startup_timeout_seconds", "must be a number in [0, 3600]")
        values["startup_timeout_seconds"] = float(value)
    settings = replace(CertificateFromCaSettings(), **values)
    if settings.enabled:
        for key in ("bundle_file", "token_file"):
            if not getattr(settings, key):
                raise InjectorConfigError(prefix + key, "is required when enabled")
    return settings


def _resources(data: Any) -> dict[str, dict[str, str]]:
    section = _section(data, "sidecar.resources.", {"requests", "limits"})
    out: dict[str, dict[str, str]] = {}
    for kind, amounts in section.items():
        where = f"sidecar.resources.{kind}"
        amounts = _section(amounts, where + ".", {"cpu", "memory", "ephemeral-storage"})
        out[kind] = {}
        for resource, amount in amounts.items():
            text = str(amount) if isinstance(amount, (int, float)) and not isinstance(amount, bool) else amount
            if not isinstance(text, str) or not _QUANTITY.match(text):
                raise InjectorConfigError(f"{where}.{resource}", f"{amount!r} is not a Kubernetes quantity")
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


def _section(data: Any, prefix: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InjectorConfigError(prefix.rstrip(".") or "(top level)", "must be a mapping")
    for key in data:
        if key not in allowed:
            raise InjectorConfigError(f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(allowed))})")
    return data


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InjectorConfigError(where, "must be a string")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InjectorConfigError(where, "must be true or false")
    return value


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InjectorConfigError(where, f"must be an integer in {low}-{high}")
    return value


def _one_of(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InjectorConfigError(where, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _dns_name(value: str, where: str) -> str:
    try:
        return check_dns_subdomain(where, value)
    except AnnotationError as err:
        raise InjectorConfigError(where, f"{value!r} is not a DNS name (lower-case RFC 1123)") from err


def _dns_label(value: str, where: str) -> str:
    if not _DNS_LABEL.match(value):
        raise InjectorConfigError(where, f"{value!r} is not a namespace name (RFC 1123 label)")
    return value


def _name(value: str, where: str) -> str:
    try:
        return check_dns_subdomain(where, value)
    except AnnotationError as err:
        raise InjectorConfigError(where, "not a valid object name (RFC 1123 subdomain)") from err
