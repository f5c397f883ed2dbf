"""The CA service's configuration: YAML in, a frozen, validated value out.

The file is declared below as frozen dataclasses and read by :mod:`sdk.config`:
every problem is one :class:`ConfigError` naming the file, the field by its
path (``limits.rate_per_second``) and what was expected, and unknown keys are
errors too, so a typo never silently falls back to a default. Example file::

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from msgspec import Meta

from ca.certs import check_dns_name
from ca.errors import IssuanceError
from ca.service.dns_policy import DnsGrant
from ca.service.errors import ConfigError
from sdk.config import Count, Invalid, ListenAddress, NonEmpty, Positive, Seconds, convert, load
from sdk.errors import TemplateError
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

MAX_WORKERS = 64


@dataclass(frozen=True)
class StoreConfig:
    """Where the CA keys live: a directory, a Kubernetes Secret, or memory (tests/demo)."""

    kind: Literal["directory", "secret", "memory"] = "directory"  # without a ca.store section: memory
    path: str = ""
    namespace: str = "trustmesh-system"
    name: str = "trustmesh-ca"

    def __post_init__(self) -> None:
        if self.kind == "directory" and not self.path:
            raise Invalid("path", "is required with kind directory")


@dataclass(frozen=True)
class KubernetesAuthConfig:
    """ServiceAccount-token authentication against the cluster."""

    audience: str = "trustmesh-ca"  # empty: the default
    verify: Literal["tokenreview", "jwks"] = "tokenreview"
    jwks_file: str = ""
    issuer: str = ""
    api_host: str = ""  # empty: in-cluster config, else KUBECONFIG
    api_ca_file: str = ""  # PEM CA certificates that api_host's serving certificate chains to
    api_token_file: str = ""  # bearer token for api_host, re-read whenever the file changes
    api_timeout: Positive = 3.0
    pod_cache_seconds: Annotated[float, Meta(ge=0)] = 2.0
    allow_namespaces: tuple[NonEmpty, ...] = ()
    deny_namespaces: tuple[NonEmpty, ...] = ()
    allow_service_accounts: tuple[NonEmpty, ...] = ()  # "ns/sa" or "ns/*"
    deny_service_accounts: tuple[NonEmpty, ...] = ()

    def __post_init__(self) -> None:
        if not self.audience:
            object.__setattr__(self, "audience", KubernetesAuthConfig.audience)
        for key in ("allow_service_accounts", "deny_service_accounts"):
            for p in getattr(self, key):
                ns, sep, sa = p.partition("/")
                if not sep or not ns or not sa or "/" in sa:
                    raise Invalid(key, f"entries must be NAMESPACE/SERVICEACCOUNT (or NAMESPACE/*), got {p!r}")
        for key in ("api_ca_file", "api_token_file"):
            if getattr(self, key) and not self.api_host:
                raise Invalid(key, "applies to api_host only (in-cluster config brings its own)")
        if self.verify == "jwks" and self.jwks_file and not self.issuer:
            raise Invalid("issuer", "verify: jwks with a jwks_file needs the issuer")


@dataclass(frozen=True)
class TtlConfig:
    default: int
    maximum: int


@dataclass(frozen=True)
class LimitsConfig:
    rate_per_second: Positive = 20.0
    burst: Count = 40
    max_request_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024
    max_csr_bytes: Annotated[int, Meta(ge=256)] = 16 * 1024
    max_audiences: Count = 8
    deadline_seconds: Positive = 10.0
    max_bundle_watchers_per_client: Count = 16  # open WatchBundle streams per peer address


@dataclass(frozen=True)
class ListenConfig:
    grpc: ListenAddress = ListenAddress("0.0.0.0:15012")
    bundle_endpoint: ListenAddress = ListenAddress("0.0.0.0:8443")
    metrics: ListenAddress = ListenAddress("127.0.0.1:15014")


@dataclass(frozen=True)
class ServiceConfig:
    """Everything ``trustmesh ca serve`` needs; built by :func:`parse_config`."""

    trust_domain: TrustDomain
    template: IdentityTemplate
    cluster: str = ""
    store: StoreConfig = StoreConfig("memory")
    kubernetes: KubernetesAuthConfig | None = None
    static_tokens_file: str = ""
    join_tokens: bool = False  # single-use join tokens (in memory, or join_tokens_file)
    join_tokens_file: str = ""
    svid_renewal: bool = False  # renew an X.509-SVID by proving the current one
    x509_ttl: TtlConfig = TtlConfig(3600, 24 * 3600)
    jwt_ttl: TtlConfig = TtlConfig(300, 3600)
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


# -- The file's sections where they differ from the values the service runs on ----------------


class _Template(str):
    """An identity template's text, checked by parsing it."""

    @classmethod
    def from_config(cls, value: Any) -> _Template:
        if not isinstance(value, str):
            raise TypeError(f"expected an identity template (a string), got {value!r}")
        try:
            IdentityTemplate.parse(value)
        except (TemplateError, ValueError) as err:
            raise ValueError(str(err)) from err
        return cls(value)


@dataclass(frozen=True)
class _Identity:
    template: _Template = _Template(DEFAULT_TEMPLATE)
    cluster: str = ""


@dataclass(frozen=True)
class _Ca:
    store: StoreConfig = ServiceConfig.store


@dataclass(frozen=True)
class _Authentication:
    kubernetes: KubernetesAuthConfig | None = None
    static_tokens_file: str = ""
    join_tokens: bool | None = None  # unset: whether join_tokens_file is set
    join_tokens_file: str = ""
    svid_renewal: bool = False


@dataclass(frozen=True)
class _Ttl:
    default_ttl: Seconds | None = None  # 3600 or 1h
    max_ttl: Seconds | None = None


@dataclass(frozen=True)
class _Serving:
    dns_names: tuple[NonEmpty, ...] = ServiceConfig.serving_dns_names
    ip_addresses: tuple[NonEmpty, ...] = ServiceConfig.serving_ip_addresses

    def __post_init__(self) -> None:
        for ip in self.ip_addresses:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise Invalid("ip_addresses", f"{ip!r} is not an IP address") from None


@dataclass(frozen=True)
class _Grant:
    spiffe_id: SpiffeId | None = None
    service_account: str = ""
    dns_names: tuple[NonEmpty, ...] = ()

    def __post_init__(self) -> None:
        if (self.spiffe_id is None) == (not self.service_account):
            raise Invalid("", "needs exactly one of spiffe_id or service_account")
        ns, sep, sa = self.service_account.partition("/")
        if self.service_account and (not sep or not ns or not sa or "/" in sa or "*" in self.service_account):
            raise Invalid("service_account", f"must be NAMESPACE/NAME (no wildcards), got {self.service_account!r}")
        if not self.dns_names:
            raise Invalid("dns_names", "must list at least one DNS name")


@dataclass(frozen=True)
class _ConfigMap:
    enabled: bool = True
    namespace: str = ServiceConfig.bundle_configmap_namespace
    name: str = ServiceConfig.bundle_configmap_name


@dataclass(frozen=True)
class _Bundle:
    configmap: _ConfigMap | None = None


@dataclass(frozen=True)
class _File:
    trust_domain: TrustDomain
    identity: _Identity = _Identity()
    ca: _Ca = _Ca()
    authentication: _Authentication = _Authentication()
    x509_svid: _Ttl = _Ttl()
    jwt_svid: _Ttl = _Ttl()
    limits: LimitsConfig = LimitsConfig()
    listen: ListenConfig = ListenConfig()
    serving: _Serving = _Serving()
    serving_certificates: tuple[_Grant, ...] = ()
    bundle: _Bundle = _Bundle()
    audit_log: str = ServiceConfig.audit_log
    rotation_check_seconds: Positive = ServiceConfig.rotation_check_seconds
    workers: Annotated[int, Meta(ge=1, le=MAX_WORKERS)] = ServiceConfig.workers
    federation: _Federation | None = None


def load_config(path: str | Path) -> ServiceConfig:
    """Read and validate a YAML config file."""
    return load(path, lambda data: parse_config(data if data is not None else {}), ConfigError)


def parse_config(data: Any) -> ServiceConfig:
    """Validate a decoded config mapping; raises :class:`ConfigError` naming the field."""
    # As for every string of this file, an empty SPIFFE ID means not set.
    f = convert(data, _File, ConfigError, empty_is_absent=frozenset({"spiffe_id", "endpoint_spiffe_id"}))
    td, auth, d = f.trust_domain, f.authentication, ServiceConfig
    x509_ttl = _ttl(f.x509_svid, d.x509_ttl, "x509_svid")
    jwt_ttl = _ttl(f.jwt_svid, d.jwt_ttl, "jwt_svid")
    dns_names = f.serving.dns_names or d.serving_dns_names
    ca_names = tuple(name.lower() for name in dns_names)
    grants = tuple(_grant(g, f"serving_certificates[{i}]", td, ca_names) for i, g in enumerate(f.serving_certificates))
    cm = f.bundle.configmap
    publish = cm is not None and cm.enabled
    join_tokens = bool(auth.join_tokens_file) if auth.join_tokens is None else auth.join_tokens
    store = f.ca.store
    federation = _federation(f.federation, td, store)
    kubernetes, workers = auth.kubernetes, f.workers

    if kubernetes is None and not auth.static_tokens_file and not join_tokens:
        raise ConfigError("authentication", "configure at least one of kubernetes, static_tokens_file, join_tokens")
    if store.kind == "secret" and kubernetes is None:
        raise ConfigError("ca.store.kind", "secret needs authentication.kubernetes (the API to reach)")
    if publish and kubernetes is None:
        raise ConfigError("bundle.configmap", "publishing a ConfigMap needs authentication.kubernetes")
    if workers > 1 and store.kind == "memory":
        raise ConfigError("workers", "more than one worker needs a shared CA: set ca.store.kind to directory or secret")
    if workers > 1 and federation.federates_with and not federation.state_dir:
        raise ConfigError(
            "federation.state_dir", "with more than one worker the federated bundles reach the others through it: set it"
        )
    if workers > 1 and join_tokens and not auth.join_tokens_file:
        raise ConfigError(
            "workers", "in-memory join tokens cannot be consumed exactly once across workers: set "
            "authentication.join_tokens_file (consumed under a file lock) or use one worker"
        )
    return ServiceConfig(
        trust_domain=td,
        template=IdentityTemplate.parse(f.identity.template),
        cluster=f.identity.cluster,
        store=store,
        kubernetes=kubernetes,
        static_tokens_file=auth.static_tokens_file,
        join_tokens=join_tokens,
        join_tokens_file=auth.join_tokens_file,
        svid_renewal=auth.svid_renewal,
        x509_ttl=x509_ttl,
        jwt_ttl=jwt_ttl,
        limits=f.limits,
        listen=f.listen,
        serving_dns_names=dns_names,
        serving_ip_addresses=f.serving.ip_addresses or d.serving_ip_addresses,
        serving_certificates=grants,
        bundle_configmap_namespace=cm.namespace if cm else d.bundle_configmap_namespace,
        bundle_configmap_name=cm.name if cm else d.bundle_configmap_name,
        publish_configmap=publish,
        audit_log=f.audit_log,
        rotation_check_seconds=float(f.rotation_check_seconds),
        workers=workers,
        federation=federation,
    )


def _ttl(section: _Ttl, default: TtlConfig, where: str) -> TtlConfig:
    ttl = TtlConfig(int(section.default_ttl or default.default), int(section.max_ttl or default.maximum))
    if ttl.default > ttl.maximum:
        raise ConfigError(f"{where}.default_ttl", f"must not exceed max_ttl ({ttl.maximum})")
    return ttl


def _grant(grant: _Grant, where: str, td: TrustDomain, ca_names: tuple[str, ...]) -> DnsGrant:
    if grant.spiffe_id is not None and not grant.spiffe_id.member_of(td):
        raise ConfigError(f"{where}.spiffe_id", f"{grant.spiffe_id} is not in the trust domain {td}")
    checked = []
    for name in grant.dns_names:
        try:
            checked.append(check_dns_name(name))
        except IssuanceError as err:
            raise ConfigError(f"{where}.dns_names", str(err)) from err
        if checked[-1] in ca_names:
            # Anyone holding a certificate with the CA's own name could impersonate the CA to its clients.
            raise ConfigError(f"{where}.dns_names", f"{name!r} is the CA's own serving name (serving.dns_names)")
    return DnsGrant(tuple(dict.fromkeys(checked)), spiffe_id=grant.spiffe_id, service_account=grant.service_account)


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
Profile = Literal["https_web", "https_spiffe"]
DEFAULT_ENDPOINT_PATH = ("trustmesh", "bundle-endpoint")


def _endpoint_id_has_path(sid: SpiffeId | None, field: str) -> None:
    if sid is not None and not sid.path:
        raise Invalid(field, f"{sid} has no path; an endpoint ID names a workload")


@dataclass(frozen=True)
class RefreshConfig:
    """How often and how carefully federated bundles are fetched."""

    default_seconds: Positive = 300.0  # when a bundle has no spiffe_refresh_hint (the standard's advice)
    min_seconds: Positive = 30.0  # the hint is clamped to [min_seconds, max_seconds]
    max_seconds: Positive = 3600.0
    timeout_seconds: Positive = 10.0  # one whole fetch: connect, TLS, request, response
    max_bytes: Annotated[int, Meta(ge=1024)] = 256 * 1024  # response body limit
    retry_first_seconds: Positive = 1.0  # first retry after a failure; doubles, capped by the refresh interval

    def __post_init__(self) -> None:
        if self.min_seconds > self.max_seconds:
            raise Invalid("min_seconds", f"must not exceed max_seconds ({self.max_seconds})")


class _HttpsUrl(str):
    """A bundle endpoint URL: https, a host, no userinfo."""

    @classmethod
    def from_config(cls, value: Any) -> _HttpsUrl:
        from urllib.parse import urlsplit

        if not isinstance(value, str) or not value:
            raise TypeError(f"expected an https:// URL (a string), got {value!r}")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as err:
            raise ValueError(f"{value!r} is not a URL: {err}") from err
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"must be an https:// URL with a host, got {value!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry userinfo (SPIFFE Federation 5.2)")
        return cls(value)


@dataclass(frozen=True)
class FederationRelationship:
    """One foreign trust domain and how to fetch its bundle."""

    trust_domain: TrustDomain
    bundle_endpoint_url: _HttpsUrl
    profile: Profile = "https_web"
    endpoint_spiffe_id: SpiffeId | None = None  # https_spiffe only
    bundle_file: str = ""  # bootstrap bundle (JWKS or PEM), needed for a self-serving https_spiffe endpoint
    endpoint_ca_file: str = ""  # https_web: roots for the endpoint's certificate (default: the system's)
    workloads: tuple[NonEmpty, ...] = ()  # own SPIFFE ID patterns (shell wildcards) that get this bundle; () = all

    def __post_init__(self) -> None:
        _endpoint_id_has_path(self.endpoint_spiffe_id, "endpoint_spiffe_id")
        if self.profile == "https_spiffe" and self.endpoint_spiffe_id is None:
            raise Invalid("endpoint_spiffe_id", "is required with profile https_spiffe")
        if self.profile == "https_web" and self.endpoint_spiffe_id is not None:
            raise Invalid("endpoint_spiffe_id", "only applies to profile https_spiffe")
        if self.profile == "https_spiffe" and self.endpoint_ca_file:
            raise Invalid("endpoint_ca_file", "only applies to profile https_web")
        if self.self_serving and not self.bundle_file:
            raise Invalid(
                "bundle_file", "a self-serving https_spiffe endpoint needs a bootstrap bundle to trust its first answer"
            )

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
    refresh: RefreshConfig = RefreshConfig()
    state_dir: str = ""  # where the last good federated bundles are kept ("" = not kept)
    federates_with: tuple[FederationRelationship, ...] = ()


@dataclass(frozen=True)
class _BundleEndpoint:
    profile: Profile = "https_web"
    spiffe_id: SpiffeId | None = None

    def __post_init__(self) -> None:
        _endpoint_id_has_path(self.spiffe_id, "spiffe_id")


@dataclass(frozen=True)
class _Federation:
    bundle_endpoint: _BundleEndpoint = _BundleEndpoint()
    refresh: RefreshConfig = RefreshConfig()
    state_dir: str | None = None  # default: <ca.store.path>/federation with a directory store
    federates_with: tuple[FederationRelationship, ...] = ()


def _federation(f: _Federation | None, td: TrustDomain, store: StoreConfig) -> FederationConfig:
    if f is None:
        return FederationConfig()
    profile, endpoint_id = f.bundle_endpoint.profile, f.bundle_endpoint.spiffe_id
    if endpoint_id is not None and not endpoint_id.member_of(td):
        raise ConfigError("federation.bundle_endpoint.spiffe_id", f"{endpoint_id} is not in the trust domain {td}")
    if profile == "https_spiffe" and endpoint_id is None:
        endpoint_id = SpiffeId.from_segments(td, *DEFAULT_ENDPOINT_PATH)
    state_dir = f.state_dir
    if state_dir is None:
        state_dir = f"{store.path.rstrip('/')}/federation" if store.kind == "directory" and store.path else ""
    prefix = f"{td.id()}/"
    seen: set[TrustDomain] = set()
    for i, rel in enumerate(f.federates_with):
        where = f"federation.federates_with[{i}]"
        for pattern in rel.workloads:
            if not pattern.startswith(prefix) or len(pattern) == len(prefix):
                raise ConfigError(f"{where}.workloads",
                                  f"entries are SPIFFE ID patterns of this trust domain ({prefix}...), got {pattern!r}")
        if rel.trust_domain == td:
            raise ConfigError(f"{where}.trust_domain", f"{td} is this CA's own trust domain")
        if rel.trust_domain in seen:
            raise ConfigError(f"{where}.trust_domain", f"{rel.trust_domain} is listed twice")
        seen.add(rel.trust_domain)
    known = {td} | seen
    for i, rel in enumerate(f.federates_with):
        endpoint_td = rel.endpoint_spiffe_id.trust_domain if rel.endpoint_spiffe_id else None
        if endpoint_td is not None and endpoint_td not in known:
            raise ConfigError(
                f"federation.federates_with[{i}].endpoint_spiffe_id",
                f"the endpoint's trust domain {endpoint_td} is neither this CA's nor one it federates with, "
                "so its SVID cannot be verified",
            )
    return FederationConfig(profile, endpoint_id, f.refresh, state_dir, f.federates_with)
