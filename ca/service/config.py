"""The CA service's configuration: YAML in, a frozen, validated value out.

Every problem is reported as one :class:`ConfigError` naming the field by its
dotted path (``limits.rate_per_second``), and unknown keys are errors too, so
a typo never silently falls back to a default. Example file::

    trust_domain: example.org
    ca:
      store: {kind: directory, path: /var/lib/trustmesh/ca}
    identity:
      template: "ns/{namespace}/sa/{service_account}"
    authentication:
      kubernetes:
        audience: trustmesh-ca
        verify: tokenreview            # or: jwks (offline; keys from jwks_file or the API server)
        allow_namespaces: [prod, staging]
        deny_service_accounts: ["prod/default"]
      static_tokens_file: /etc/trustmesh/static-tokens.yaml
      join_tokens: true                # single-use; join_tokens_file persists them
      svid_renewal: true               # renew X.509-SVIDs by proving the current one
    listen:
      grpc: 0.0.0.0:15012
      bundle_endpoint: 0.0.0.0:8443
      metrics: 127.0.0.1:15014
    serving_certificates:              # who may have DNS names on its certificate
      - service_account: trustmesh-system/trustmesh-injector
        dns_names: [trustmesh-injector.trustmesh-system.svc]
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ca.certs import check_dns_name
from ca.errors import IssuanceError
from ca.service.dns_policy import DnsGrant
from ca.service.errors import ConfigError
from sdk.errors import SpiffeIdError, TemplateError
from sdk.spiffeid import SpiffeId, TrustDomain
from sdk.template import DEFAULT_TEMPLATE, IdentityTemplate

__all__ = [
    "ServiceConfig",
    "StoreConfig",
    "KubernetesAuthConfig",
    "LimitsConfig",
    "ListenConfig",
    "TtlConfig",
    "FederationConfig",
    "FederationRelationship",
    "RefreshConfig",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True)
class StoreConfig:
    """Where the CA keys live: a directory, a Kubernetes Secret, or memory (tests/demo)."""

    kind: str = "memory"  # directory | secret | memory
    path: str = ""
    namespace: str = "trustmesh-system"
    name: str = "trustmesh-ca"


@dataclass(frozen=True)
class KubernetesAuthConfig:
    """ServiceAccount-token authentication against the cluster."""

    audience: str = "trustmesh-ca"
    verify: str = "tokenreview"  # tokenreview | jwks
    jwks_file: str = ""
    issuer: str = ""
    api_host: str = ""  # empty: in-cluster config, else KUBECONFIG
    api_ca_file: str = ""  # PEM CA certificates that api_host's serving certificate chains to
    api_token_file: str = ""  # bearer token for api_host, re-read whenever the file changes
    api_timeout: float = 3.0
    pod_cache_seconds: float = 2.0
    allow_namespaces: tuple[str, ...] = ()
    deny_namespaces: tuple[str, ...] = ()
    allow_service_accounts: tuple[str, ...] = ()  # "ns/sa" or "ns/*"
    deny_service_accounts: tuple[str, ...] = ()


@dataclass(frozen=True)
class TtlConfig:
    default: int
    maximum: int


@dataclass(frozen=True)
class LimitsConfig:
    rate_per_second: float = 20.0
    burst: int = 40
    max_request_bytes: int = 64 * 1024
    max_csr_bytes: int = 16 * 1024
    max_audiences: int = 8
    deadline_seconds: float = 10.0
    max_bundle_watchers_per_client: int = 16  # open WatchBundle streams per peer address


@dataclass(frozen=True)
class ListenConfig:
    grpc: str = "0.0.0.0:15012"
    bundle_endpoint: str = "0.0.0.0:8443"
    metrics: str = "127.0.0.1:15014"


@dataclass(frozen=True)
class ServiceConfig:
    """Everything ``trustmesh ca serve`` needs; built by :func:`parse_config`."""

    trust_domain: TrustDomain
    template: IdentityTemplate
    cluster: str = ""
    store: StoreConfig = field(default_factory=StoreConfig)
    kubernetes: KubernetesAuthConfig | None = None
    static_tokens_file: str = ""
    join_tokens: bool = False  # single-use join tokens (in memory, or join_tokens_file)
    join_tokens_file: str = ""
    svid_renewal: bool = False  # renew an X.509-SVID by proving the current one
    x509_ttl: TtlConfig = field(default_factory=lambda: TtlConfig(3600, 24 * 3600))
    jwt_ttl: TtlConfig = field(default_factory=lambda: TtlConfig(300, 3600))
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    serving_dns_names: tuple[str, ...] = ("trustmesh-ca.trustmesh-system.svc",)
    serving_ip_addresses: tuple[str, ...] = ("127.0.0.1",)
    serving_certificates: tuple[DnsGrant, ...] = ()  # who may have which DNS names on its SVID
    bundle_configmap_namespace: str = "trustmesh-system"
    bundle_configmap_name: str = "trustmesh-bundle"
    publish_configmap: bool = False
    audit_log: str = "-"  # a path, or "-" for stderr
    rotation_check_seconds: float = 60.0
    workers: int = 1  # service processes sharing the gRPC port (SO_REUSEPORT); see ca/service/workers.py
    federation: FederationConfig = field(default_factory=lambda: FederationConfig())  # see "Federation" below


MAX_WORKERS = 64


def load_config(path: str | Path) -> ServiceConfig:
    """Read and validate a YAML config file."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError("file", f"cannot read {path}: {err.strerror or err}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError("file", f"{path} is not valid YAML: {err}") from err
    return parse_config(data if data is not None else {})


class _Reader:
    """Typed access to one mapping of the config, tracking which keys were used."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(where or "(top level)", f"must be a mapping, got {type(data).__name__}")
        self.data, self.where, self.used = data, where, set()

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def section(self, key: str) -> _Reader | None:
        value = self.get(key)
        return None if value is None else _Reader(value, self._path(key))

    def string(self, key: str, default: str = "", *, required: bool = False) -> str:
        value = self.get(key)
        if value is None:
            if required:
                raise ConfigError(self._path(key), "is required")
            return default
        if not isinstance(value, str):
            raise ConfigError(self._path(key), f"must be a string, got {value!r}")
        return value

    def number(self, key: str, default: float, *, minimum: float | None = None, integer: bool = False) -> Any:
        """A number > 0, or >= ``minimum`` when given."""
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            kind = "an integer" if integer else "a number"
            raise ConfigError(self._path(key), f"must be {kind}, got {value!r}")
        if minimum is None and value <= 0:
            raise ConfigError(self._path(key), f"must be > 0, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(self._path(key), f"must be >= {minimum}, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self._path(key), f"must be true or false, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(self._path(key), "must be a list of non-empty strings")
        return tuple(value)

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in allowed:
            raise ConfigError(self._path(key), f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def finish(self) -> None:
        unknown = sorted(str(k) for k in self.data if k not in self.used)
        if unknown:
            raise ConfigError(self._path(unknown[0]), "unknown key")


def _address(reader: _Reader, key: str, default: str) -> str:
    value = reader.string(key, default)
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(reader._path(key), f"must be HOST:PORT, got {value!r}")
    return value


def _ttl(reader: _Reader | None, default: TtlConfig, where: str) -> TtlConfig:
    if reader is None:
        return default
    ttl = TtlConfig(
        int(reader.number("default_ttl", default.default, integer=True)),
        int(reader.number("max_ttl", default.maximum, integer=True)),
    )
    reader.finish()
    if ttl.default > ttl.maximum:
        raise ConfigError(f"{where}.default_ttl", f"must not exceed max_ttl ({ttl.maximum})")
    return ttl


def _service_account_patterns(reader: _Reader, key: str) -> tuple[str, ...]:
    patterns = reader.strings(key)
    for p in patterns:
        ns, sep, sa = p.partition("/")
        if not sep or not ns or not sa or "/" in sa:
            raise ConfigError(reader._path(key), f"entries must be NAMESPACE/SERVICEACCOUNT (or NAMESPACE/*), got {p!r}")
    return patterns


def _kubernetes(reader: _Reader | None) -> KubernetesAuthConfig | None:
    if reader is None:
        return None
    d = KubernetesAuthConfig()
    cfg = KubernetesAuthConfig(
        audience=reader.string("audience", d.audience) or d.audience,
        verify=reader.choice("verify", d.verify, ("tokenreview", "jwks")),
        jwks_file=reader.string("jwks_file"),
        issuer=reader.string("issuer"),
        api_host=reader.string("api_host"),
        api_ca_file=reader.string("api_ca_file"),
        api_token_file=reader.string("api_token_file"),
        api_timeout=float(reader.number("api_timeout", d.api_timeout)),
        pod_cache_seconds=float(reader.number("pod_cache_seconds", d.pod_cache_seconds, minimum=0.0)),
        allow_namespaces=reader.strings("allow_namespaces"),
        deny_namespaces=reader.strings("deny_namespaces"),
        allow_service_accounts=_service_account_patterns(reader, "allow_service_accounts"),
        deny_service_accounts=_service_account_patterns(reader, "deny_service_accounts"),
    )
    reader.finish()
    for key in ("api_ca_file", "api_token_file"):
        if getattr(cfg, key) and not cfg.api_host:
            raise ConfigError(reader._path(key), "applies to api_host only (in-cluster config brings its own)")
    if cfg.verify == "jwks" and cfg.jwks_file and not cfg.issuer:
        raise ConfigError(reader._path("issuer"), "verify: jwks with a jwks_file needs the issuer")
    return cfg


def _grant(data: Any, where: str, td: TrustDomain, ca_names: tuple[str, ...]) -> DnsGrant:
    entry = _Reader(data, where)
    spiffe_id_text = entry.string("spiffe_id")
    service_account = entry.string("service_account")
    names = entry.strings("dns_names")
    entry.finish()
    if bool(spiffe_id_text) == bool(service_account):
        raise ConfigError(where, "needs exactly one of spiffe_id or service_account")
    spiffe_id = None
    if spiffe_id_text:
        try:
            spiffe_id = SpiffeId.parse(spiffe_id_text)
        except SpiffeIdError as err:
            raise ConfigError(f"{where}.spiffe_id", str(err)) from err
        if not spiffe_id.member_of(td):
            raise ConfigError(f"{where}.spiffe_id", f"{spiffe_id} is not in the trust domain {td}")
    else:
        ns, sep, sa = service_account.partition("/")
        if not sep or not ns or not sa or "/" in sa or "*" in service_account:
            raise ConfigError(
                f"{where}.service_account", f"must be NAMESPACE/NAME (no wildcards), got {service_account!r}"
            )
    if not names:
        raise ConfigError(f"{where}.dns_names", "must list at least one DNS name")
    checked = []
    for name in names:
        try:
            checked.append(check_dns_name(name))
        except IssuanceError as err:
            raise ConfigError(f"{where}.dns_names", str(err)) from err
        if checked[-1] in ca_names:
            # Anyone holding a certificate with the CA's own name could impersonate the CA to its clients.
            raise ConfigError(f"{where}.dns_names", f"{name!r} is the CA's own serving name (serving.dns_names)")
    return DnsGrant(tuple(dict.fromkeys(checked)), spiffe_id=spiffe_id, service_account=service_account)


def _grants(top: _Reader, td: TrustDomain, ca_names: tuple[str, ...]) -> tuple[DnsGrant, ...]:
    value = top.get("serving_certificates")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("serving_certificates", "must be a list of {spiffe_id | service_account, dns_names}")
    return tuple(_grant(item, f"serving_certificates[{i}]", td, ca_names) for i, item in enumerate(value))


def parse_config(data: Any) -> ServiceConfig:
    """Validate a decoded config mapping; raises :class:`ConfigError` naming the field."""
    top = _Reader(data, "")
    try:
        td = TrustDomain.parse(top.string("trust_domain", required=True))
    except SpiffeIdError as err:
        raise ConfigError("trust_domain", str(err)) from err

    identity = top.section("identity") or _Reader({}, "identity")
    template_text = identity.string("template", DEFAULT_TEMPLATE)
    try:
        template = IdentityTemplate.parse(template_text)
    except (TemplateError, ValueError) as err:
        raise ConfigError("identity.template", str(err)) from err
    cluster = identity.string("cluster")
    identity.finish()

    store = StoreConfig()
    ca = top.section("ca")
    if ca is not None:
        s = ca.section("store")
        if s is not None:
            kind = s.choice("kind", "directory", ("directory", "secret", "memory"))
            store = StoreConfig(
                kind=kind,
                path=s.string("path", required=kind == "directory"),
                namespace=s.string("namespace", store.namespace),
                name=s.string("name", store.name),
            )
            s.finish()
        ca.finish()

    auth = top.section("authentication") or _Reader({}, "authentication")
    kubernetes = _kubernetes(auth.section("kubernetes"))
    static_tokens_file = auth.string("static_tokens_file")
    join_tokens_file = auth.string("join_tokens_file")
    join_tokens = auth.boolean("join_tokens", bool(join_tokens_file))
    svid_renewal = auth.boolean("svid_renewal", False)
    auth.finish()

    d = ServiceConfig(trust_domain=td, template=template)
    x509_ttl = _ttl(top.section("x509_svid"), d.x509_ttl, "x509_svid")
    jwt_ttl = _ttl(top.section("jwt_svid"), d.jwt_ttl, "jwt_svid")

    limits = d.limits
    lim = top.section("limits")
    if lim is not None:
        limits = LimitsConfig(
            rate_per_second=float(lim.number("rate_per_second", limits.rate_per_second)),
            burst=int(lim.number("burst", limits.burst, minimum=1, integer=True)),
            max_request_bytes=int(lim.number("max_request_bytes", limits.max_request_bytes, minimum=1024, integer=True)),
            max_csr_bytes=int(lim.number("max_csr_bytes", limits.max_csr_bytes, minimum=256, integer=True)),
            max_audiences=int(lim.number("max_audiences", limits.max_audiences, minimum=1, integer=True)),
            deadline_seconds=float(lim.number("deadline_seconds", limits.deadline_seconds)),
            max_bundle_watchers_per_client=int(
                lim.number("max_bundle_watchers_per_client", limits.max_bundle_watchers_per_client, minimum=1, integer=True)
            ),
        )
        lim.finish()

    listen = d.listen
    lis = top.section("listen")
    if lis is not None:
        listen = ListenConfig(
            grpc=_address(lis, "grpc", listen.grpc),
            bundle_endpoint=_address(lis, "bundle_endpoint", listen.bundle_endpoint),
            metrics=_address(lis, "metrics", listen.metrics),
        )
        lis.finish()

    serving = top.section("serving") or _Reader({}, "serving")
    dns_names = serving.strings("dns_names") or d.serving_dns_names
    ips = serving.strings("ip_addresses") or d.serving_ip_addresses
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError as err:
            raise ConfigError("serving.ip_addresses", f"{ip!r} is not an IP address") from err
    serving.finish()
    ca_names = tuple(name.lower() for name in dns_names)
    grants = _grants(top, td, ca_names)

    bundle = top.section("bundle") or _Reader({}, "bundle")
    cm = bundle.section("configmap")
    publish, cm_ns, cm_name = False, d.bundle_configmap_namespace, d.bundle_configmap_name
    if cm is not None:
        publish = cm.boolean("enabled", True)
        cm_ns = cm.string("namespace", cm_ns)
        cm_name = cm.string("name", cm_name)
        cm.finish()
    bundle.finish()

    audit_log = top.string("audit_log", "-")
    rotation_check = float(top.number("rotation_check_seconds", d.rotation_check_seconds))
    workers = int(top.number("workers", d.workers, minimum=1, integer=True))
    federation = _federation(top.section("federation"), td, store)
    top.finish()

    if kubernetes is None and not static_tokens_file and not join_tokens:
        raise ConfigError("authentication", "configure at least one of kubernetes, static_tokens_file, join_tokens")
    if store.kind == "secret" and kubernetes is None:
        raise ConfigError("ca.store.kind", "secret needs authentication.kubernetes (the API to reach)")
    if publish and kubernetes is None:
        raise ConfigError("bundle.configmap", "publishing a ConfigMap needs authentication.kubernetes")
    if workers > MAX_WORKERS:
        raise ConfigError("workers", f"must be <= {MAX_WORKERS}, got {workers}")
    if workers > 1 and store.kind == "memory":
        raise ConfigError("workers", "more than one worker needs a shared CA: set ca.store.kind to directory or secret")
    if workers > 1 and federation.federates_with and not federation.state_dir:
        raise ConfigError(
            "federation.state_dir", "with more than one worker the federated bundles reach the others through it: set it"
        )
    if workers > 1 and join_tokens and not join_tokens_file:
        raise ConfigError(
            "workers", "in-memory join tokens cannot be consumed exactly once across workers: set "
            "authentication.join_tokens_file (consumed under a file lock) or use one worker"
        )
    return ServiceConfig(
        trust_domain=td,
        template=template,
        cluster=cluster,
        store=store,
        kubernetes=kubernetes,
        static_tokens_file=static_tokens_file,
        join_tokens=join_tokens,
        join_tokens_file=join_tokens_file,
        svid_renewal=svid_renewal,
        x509_ttl=x509_ttl,
        jwt_ttl=jwt_ttl,
        limits=limits,
        listen=listen,
        serving_dns_names=dns_names,
        serving_ip_addresses=ips,
        serving_certificates=grants,
        bundle_configmap_namespace=cm_ns,
        bundle_configmap_name=cm_name,
        publish_configmap=publish,
        audit_log=audit_log,
        rotation_check_seconds=rotation_check,
        workers=workers,
        federation=federation,
    )


# -- Federation (SPIFFE Federation, sections 4-5) -------------------------------------------------
#
#   federation:
#     bundle_endpoint:
#       profile: https_spiffe                 # or https_web (the serving certificate, as before)
#       spiffe_id: spiffe://example.org/trustmesh/bundle-endpoint
#     refresh: {default_seconds: 300, min_seconds: 30, max_seconds: 3600,
#               timeout_seconds: 10, max_bytes: 262144, retry_first_seconds: 1}
#     state_dir: /var/lib/trustmesh/ca/federation   # default: <ca.store.path>/federation (directory store)
#     federates_with:
#       - trust_domain: partner.org
#         bundle_endpoint_url: https://bundle.partner.org:8443/
#         profile: https_spiffe
#         endpoint_spiffe_id: spiffe://partner.org/trustmesh/bundle-endpoint
#         bundle_file: /etc/trustmesh/federation/partner.org.jwks   # bootstrap bundle (JWKS or PEM)
#         workloads: ["spiffe://example.org/ns/billing/*"]           # only these get it (default: all)

PROFILES = ("https_web", "https_spiffe")
DEFAULT_ENDPOINT_PATH = ("trustmesh", "bundle-endpoint")


@dataclass(frozen=True)
class RefreshConfig:
    """How often and how carefully federated bundles are fetched."""

    default_seconds: float = 300.0  # when a bundle has no spiffe_refresh_hint (the standard's advice)
    min_seconds: float = 30.0  # the hint is clamped to [min_seconds, max_seconds]
    max_seconds: float = 3600.0
    timeout_seconds: float = 10.0  # one whole fetch: connect, TLS, request, response
    max_bytes: int = 256 * 1024  # response body limit
    retry_first_seconds: float = 1.0  # first retry after a failure; doubles, capped by the refresh interval


@dataclass(frozen=True)
class FederationRelationship:
    """One foreign trust domain and how to fetch its bundle."""

    trust_domain: TrustDomain
    bundle_endpoint_url: str
    profile: str = "https_web"
    endpoint_spiffe_id: SpiffeId | None = None  # https_spiffe only
    bundle_file: str = ""  # bootstrap bundle (JWKS or PEM), needed for a self-serving https_spiffe endpoint
    endpoint_ca_file: str = ""  # https_web: roots for the endpoint's certificate (default: the system's)
    workloads: tuple[str, ...] = ()  # own SPIFFE ID patterns (shell wildcards) that get this bundle; () = all

    def for_workload(self, spiffe_id: SpiffeId) -> bool:
        """Whether the workload ``spiffe_id`` is to trust this domain (SPIRE's per-entry federatesWith)."""
        return not self.workloads or any(fnmatch.fnmatchcase(str(spiffe_id), p) for p in self.workloads)

    @property
    def self_serving(self) -> bool:
        return self.endpoint_spiffe_id is not None and self.endpoint_spiffe_id.trust_domain == self.trust_domain


@dataclass(frozen=True)
class FederationConfig:
    """The bundle endpoint's profile and the trust domains this CA federates with."""

    endpoint_profile: str = "https_web"
    endpoint_spiffe_id: SpiffeId | None = None  # https_spiffe: the ID on the endpoint's SVID
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    state_dir: str = ""  # where the last good federated bundles are kept ("" = not kept)
    federates_with: tuple[FederationRelationship, ...] = ()


def _spiffe_id(reader: _Reader, key: str, td: TrustDomain | None = None) -> SpiffeId | None:
    text = reader.string(key)
    if not text:
        return None
    try:
        sid = SpiffeId.parse(text)
    except SpiffeIdError as err:
        raise ConfigError(reader._path(key), str(err)) from err
    if not sid.path:
        raise ConfigError(reader._path(key), f"{sid} has no path; an endpoint ID names a workload")
    if td is not None and not sid.member_of(td):
        raise ConfigError(reader._path(key), f"{sid} is not in the trust domain {td}")
    return sid


def _endpoint_url(reader: _Reader, key: str) -> str:
    from urllib.parse import urlsplit

    url = reader.string(key, required=True)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as err:
        raise ConfigError(reader._path(key), f"{url!r} is not a URL: {err}") from err
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(reader._path(key), f"must be an https:// URL with a host, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(reader._path(key), "must not carry userinfo (SPIFFE Federation 5.2)")
    return url


def _workload_patterns(reader: _Reader, key: str, own: TrustDomain) -> tuple[str, ...]:
    patterns = reader.strings(key)
    prefix = f"{own.id()}/"
    for pattern in patterns:
        if not pattern.startswith(prefix) or len(pattern) == len(prefix):
            raise ConfigError(reader._path(key), f"entries are SPIFFE ID patterns of this trust domain ({prefix}...), got {pattern!r}")
    return patterns


def _relationship(data: Any, where: str, own: TrustDomain) -> FederationRelationship:
    r = _Reader(data, where)
    try:
        td = TrustDomain.parse(r.string("trust_domain", required=True))
    except SpiffeIdError as err:
        raise ConfigError(f"{where}.trust_domain", str(err)) from err
    rel = FederationRelationship(
        trust_domain=td,
        bundle_endpoint_url=_endpoint_url(r, "bundle_endpoint_url"),
        profile=r.choice("profile", "https_web", PROFILES),
        endpoint_spiffe_id=_spiffe_id(r, "endpoint_spiffe_id"),
        bundle_file=r.string("bundle_file"),
        endpoint_ca_file=r.string("endpoint_ca_file"),
        workloads=_workload_patterns(r, "workloads", own),
    )
    r.finish()
    if rel.profile == "https_spiffe" and rel.endpoint_spiffe_id is None:
        raise ConfigError(f"{where}.endpoint_spiffe_id", "is required with profile https_spiffe")
    if rel.profile == "https_web" and rel.endpoint_spiffe_id is not None:
        raise ConfigError(f"{where}.endpoint_spiffe_id", "only applies to profile https_spiffe")
    if rel.profile == "https_spiffe" and rel.endpoint_ca_file:
        raise ConfigError(f"{where}.endpoint_ca_file", "only applies to profile https_web")
    if rel.self_serving and not rel.bundle_file:
        raise ConfigError(
            f"{where}.bundle_file", "a self-serving https_spiffe endpoint needs a bootstrap bundle to trust its first answer"
        )
    return rel


def _federation(reader: _Reader | None, td: TrustDomain, store: StoreConfig) -> FederationConfig:
    d = FederationConfig()
    if reader is None:
        return d
    profile, endpoint_id = d.endpoint_profile, None
    ep = reader.section("bundle_endpoint")
    if ep is not None:
        profile = ep.choice("profile", profile, PROFILES)
        endpoint_id = _spiffe_id(ep, "spiffe_id", td)
        ep.finish()
    if profile == "https_spiffe" and endpoint_id is None:
        endpoint_id = SpiffeId.from_segments(td, *DEFAULT_ENDPOINT_PATH)
    refresh = d.refresh
    rs = reader.section("refresh")
    if rs is not None:
        refresh = RefreshConfig(
            default_seconds=float(rs.number("default_seconds", refresh.default_seconds)),
            min_seconds=float(rs.number("min_seconds", refresh.min_seconds)),
            max_seconds=float(rs.number("max_seconds", refresh.max_seconds)),
            timeout_seconds=float(rs.number("timeout_seconds", refresh.timeout_seconds)),
            max_bytes=int(rs.number("max_bytes", refresh.max_bytes, minimum=1024, integer=True)),
            retry_first_seconds=float(rs.number("retry_first_seconds", refresh.retry_first_seconds)),
        )
        rs.finish()
        if refresh.min_seconds > refresh.max_seconds:
            raise ConfigError("federation.refresh.min_seconds", f"must not exceed max_seconds ({refresh.max_seconds})")
    default_state = f"{store.path.rstrip('/')}/federation" if store.kind == "directory" and store.path else ""
    state_dir = reader.string("state_dir", default_state)
    items = reader.get("federates_with")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ConfigError("federation.federates_with", "must be a list of relationships")
    relationships = tuple(_relationship(item, f"federation.federates_with[{i}]", td) for i, item in enumerate(items))
    reader.finish()
    seen: set[TrustDomain] = set()
    for i, rel in enumerate(relationships):
        where = f"federation.federates_with[{i}]"
        if rel.trust_domain == td:
            raise ConfigError(f"{where}.trust_domain", f"{td} is this CA's own trust domain")
        if rel.trust_domain in seen:
            raise ConfigError(f"{where}.trust_domain", f"{rel.trust_domain} is listed twice")
        seen.add(rel.trust_domain)
    known = {td} | seen
    for i, rel in enumerate(relationships):
        endpoint_td = rel.endpoint_spiffe_id.trust_domain if rel.endpoint_spiffe_id else None
        if endpoint_td is not None and endpoint_td not in known:
            raise ConfigError(
                f"federation.federates_with[{i}].endpoint_spiffe_id",
                f"the endpoint's trust domain {endpoint_td} is neither this CA's nor one it federates with, "
                "so its SVID cannot be verified",
            )
    return FederationConfig(profile, endpoint_id, refresh, state_dir, relationships)
