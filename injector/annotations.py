"""The ``trustmesh.io/...`` labels and annotations a pod may carry, and their validation.

Every value is checked before anything is injected; a bad value raises
:class:`~injector.errors.AnnotationError` naming the annotation, and the
webhook denies the pod with that message. An unknown ``trustmesh.io/``
annotation is refused too, so a typo (``exclude-inbound-port``) cannot
silently leave a port captured or uncaptured.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from injector.errors import AnnotationError

__all__ = [
    "INJECT_LABEL",
    "ANNOTATIONS",
    "MODES",
    "check_mode",
    "LOG_LEVELS",
    "SIDECAR_CONFIG_ANNOTATION",
    "TRUST_BUNDLE_ANNOTATION",
    "PodOverrides",
    "opt_out",
    "parse_overrides",
    "parse_ports",
    "parse_cidrs",
    "check_dns_subdomain",
]

PREFIX = "trustmesh.io/"
INJECT_LABEL = PREFIX + "inject"
EXCLUDE_INBOUND_PORTS = PREFIX + "exclude-inbound-ports"
EXCLUDE_OUTBOUND_PORTS = PREFIX + "exclude-outbound-ports"
EXCLUDE_OUTBOUND_CIDRS = PREFIX + "exclude-outbound-cidrs"
INTERCEPTION_MODE = PREFIX + "interception-mode"
POLICY = PREFIX + "policy"
LOG_LEVEL = PREFIX + "log-level"
SIDECAR_MODE = PREFIX + "sidecar-mode"
REWRITE_PROBES = PREFIX + "rewrite-probes"
#: Written by the injector, never read from the pod: the sidecar's config file.
SIDECAR_CONFIG_ANNOTATION = PREFIX + "sidecar-config"
#: Written by the injector when it copies the trust bundle into the pod.
TRUST_BUNDLE_ANNOTATION = PREFIX + "trust-bundle"

#: Annotations a pod may set (the injector's own output is accepted and ignored).
ANNOTATIONS = (
    EXCLUDE_INBOUND_PORTS,
    EXCLUDE_OUTBOUND_PORTS,
    EXCLUDE_OUTBOUND_CIDRS,
    INTERCEPTION_MODE,
    POLICY,
    LOG_LEVEL,
    SIDECAR_MODE,
    REWRITE_PROBES,
)
_KNOWN = frozenset(ANNOTATIONS) | {SIDECAR_CONFIG_ANNOTATION, TRUST_BUNDLE_ANNOTATION, INJECT_LABEL}

MODES = ("iptables", "nftables")
"""Interception modes an injected pod can use. ``trustmesh redirect`` also has
``ebpf``, but that attaches to the pod's cgroup v2 directory through bpffs,
which an injected init container is not given; such a pod is refused at
admission (:func:`check_mode`) rather than left failing in ``Init:Error``."""
EBPF_UNAVAILABLE = (
    "'ebpf' interception needs the pod's cgroup v2 directory and bpffs, which an injected "
    "init container does not get; use iptables or nftables"
)
LOG_LEVELS = ("trace", "debug", "info", "warning", "error")
_SIDECAR_MODES = ("native", "classic")
_BOOLEANS = {"true": True, "false": False}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class PodOverrides:
    """Per-pod settings from annotations; ``None`` means "use the injector's default"."""

    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_outbound_cidrs: tuple[str, ...] = ()
    mode: str | None = None
    policy_configmap: str | None = None
    log_level: str | None = None
    native_sidecar: bool | None = None
    rewrite_probes: bool = True


def parse_overrides(annotations: Mapping[str, object] | None) -> PodOverrides:
    """Validate a pod's ``trustmesh.io/`` annotations and return its overrides."""
    annotations = annotations or {}
    for key, value in annotations.items():
        if key.startswith(PREFIX) and key not in _KNOWN:
            raise AnnotationError(key, f"unknown trustmesh annotation (known: {', '.join(ANNOTATIONS)})")
        if key in _KNOWN and not isinstance(value, str):
            raise AnnotationError(key, "value must be a string")
    get = annotations.get
    native = _choice(SIDECAR_MODE, get(SIDECAR_MODE), _SIDECAR_MODES)
    rewrite = get(REWRITE_PROBES)
    if rewrite is not None and rewrite not in _BOOLEANS:
        raise AnnotationError(REWRITE_PROBES, f"{rewrite!r} is not 'true' or 'false'")
    policy = get(POLICY)
    if policy is not None:
        check_dns_subdomain(POLICY, policy)
    return PodOverrides(
        exclude_inbound_ports=parse_ports(EXCLUDE_INBOUND_PORTS, get(EXCLUDE_INBOUND_PORTS) or ""),
        exclude_outbound_ports=parse_ports(EXCLUDE_OUTBOUND_PORTS, get(EXCLUDE_OUTBOUND_PORTS) or ""),
        exclude_outbound_cidrs=parse_cidrs(EXCLUDE_OUTBOUND_CIDRS, get(EXCLUDE_OUTBOUND_CIDRS) or ""),
        mode=check_mode(INTERCEPTION_MODE, get(INTERCEPTION_MODE)),
        policy_configmap=policy,
        log_level=_choice(LOG_LEVEL, get(LOG_LEVEL), LOG_LEVELS),
        native_sidecar=None if native is None else native == "native",
        rewrite_probes=_BOOLEANS.get(rewrite, True) if rewrite is not None else True,
    )


def opt_out(metadata: Mapping[str, object]) -> str | None:
    """How the pod opts out of injection, or ``None``: ``trustmesh.io/inject: "false"`` as a label or annotation.

    The label also keeps the API server from calling the webhook at all. The
    annotation is what Linkerd (``linkerd.io/inject``) and older Istio
    (``sidecar.istio.io/inject``) users write, and it is honoured the same way
    once the webhook sees the pod. Its values are ``"true"`` and ``"false"``
    only; anything else (``disabled``) is refused, so that a pod is never
    injected against what its author meant.
    """
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    if isinstance(labels, Mapping) and labels.get(INJECT_LABEL) == "false":
        return f"the label {INJECT_LABEL}=false"
    value = annotations.get(INJECT_LABEL) if isinstance(annotations, Mapping) else None
    if value is None or value == "true":
        return None
    if value == "false":
        return f'the annotation {INJECT_LABEL}: "false"'
    raise AnnotationError(INJECT_LABEL, f"{value!r} is not 'true' or 'false' (\"false\" opts the pod out)")


def check_mode(where: str, value: str | None) -> str | None:
    """Validate an interception mode for an injected pod; ``None`` is "the default"."""
    if value == "ebpf":
        raise AnnotationError(where, EBPF_UNAVAILABLE)
    return _choice(where, value, MODES)


def _choice(where: str, value: str | None, choices: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if value not in choices:
        raise AnnotationError(where, f"{value!r} is not one of {', '.join(choices)}")
    return value


def parse_ports(where: str, text: str) -> tuple[int, ...]:
    """Parse ``"8080, 9090"`` into ports 1-65535; ``""`` is no ports."""
    ports: dict[int, None] = {}  # ordered, and linear in a long annotation
    for item in _items(where, text):
        if not item.isascii() or not item.isdigit():
            raise AnnotationError(where, f"{item!r} is not a port number")
        port = int(item)
        if not 1 <= port <= 65535:
            raise AnnotationError(where, f"port {port} is outside 1-65535")
        ports[port] = None
    return tuple(ports)


def parse_cidrs(where: str, text: str) -> tuple[str, ...]:
    """Parse ``"10.0.0.0/8, fd00::/8"`` into normalised CIDRs; host bits must be zero."""
    cidrs: dict[str, None] = {}
    for item in _items(where, text):
        try:
            network = ipaddress.ip_network(item, strict=True)
        except ValueError as err:
            raise AnnotationError(where, f"{item!r} is not a CIDR: {err}") from err
        cidrs[str(network)] = None
    return tuple(cidrs)


def check_dns_subdomain(where: str, name: str) -> str:
    """Check a Kubernetes object name (RFC 1123 subdomain, at most 253 characters)."""
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise AnnotationError(where, f"{name!r} is not a valid object name (RFC 1123 subdomain)")
    return name


def _items(where: str, text: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if items == [""]:
        return []
    if "" in items:
        raise AnnotationError(where, f"empty item in {text!r}")
    return items
