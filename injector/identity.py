"""The validating webhook's checks, as pure functions over a pod.

- :func:`check_identity` — in namespaces labelled
  ``trustmesh.io/identity=enforced``: the identity template must render for
  the pod, so every label it needs is present and a valid SPIFFE path
  segment, and the result is a valid SPIFFE ID. The refusal names the label.
- :func:`check_injected` — in namespaces labelled ``trustmesh.io/inject=required``:
  the pod must carry the trustmesh sidecar (validating webhooks run after
  every mutating one), so a pod cannot opt out with ``trustmesh.io/inject=false``.
  ``hostNetwork`` pods, which are never injected, are the one exception.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from sdk.errors import SpiffeIdError, TemplateError
from sdk.spiffeid import SpiffeId, TrustDomain
from sdk.template import IdentityTemplate

from injector.annotations import INJECT_LABEL, opt_out, parse_overrides
from injector.config import InjectorConfig
from injector.containers import INIT_NAME, PROXY_NAME, init_container, sidecar_container
from injector.errors import InjectorConfigError, PodRefusedError
from injector.shape import check_pod_shape

__all__ = ["IdentityChecker", "check_injected"]


class IdentityChecker:
    """Renders the configured identity template for pods (parsed once, at start-up)."""

    def __init__(self, config: InjectorConfig) -> None:
        try:
            self.trust_domain = TrustDomain.parse(config.trust_domain)
        except SpiffeIdError as err:
            raise InjectorConfigError("trust_domain", str(err)) from err
        try:
            self.template = IdentityTemplate.parse(config.identity_template)
        except TemplateError as err:
            raise InjectorConfigError("identity_template", str(err)) from err
        self.cluster = config.cluster

    def check_identity(self, pod: Mapping[str, Any], namespace: str) -> SpiffeId:
        """Return the SPIFFE ID the pod would get, or raise :class:`PodRefusedError` saying why not."""
        metadata, spec = _parts(pod)
        labels = metadata.get("labels") or {}
        service_account = spec.get("serviceAccountName") or "default"
        try:
            return self.template.render(
                self.trust_domain,
                namespace=namespace,
                service_account=service_account,
                labels=labels,
                cluster=self.cluster,
                pod_name=metadata.get("name") or "",
            )
        except (TemplateError, SpiffeIdError) as err:
            field = getattr(err, "field", None)
            what = f" ({field})" if field else ""
            raise PodRefusedError(
                f"namespace {namespace!r} enforces trustmesh identities and the identity template "
                f"{self.template_text!r} does not render for this pod{what}: {err}") from err

    @property
    def template_text(self) -> str:
        return str(self.template)


def check_injected(pod: Mapping[str, Any], namespace: str, config: InjectorConfig) -> None:
    """Refuse a pod without the trustmesh sidecar, for a ``trustmesh.io/inject=required`` namespace.

    A container counts as trustmesh's only if it runs what the injector would
    have put there (image, command and arguments; the proxy also its uid and
    gid), never because of its name alone, and ``trustmesh-init`` must run
    first. A ``hostNetwork`` pod (never injected: its redirect would rewrite
    the node's network) is refused too, unless its namespace is in the
    config's ``require_injection.host_network_namespaces``, a list only the
    injector's administrators can change.
    """
    metadata, spec = _parts(pod)
    if spec.get("hostNetwork") is True:
        if namespace in config.host_network_namespaces:
            return
        _require_refused(namespace, "a hostNetwork pod cannot be injected and would run outside the mesh "
                                    "(a cluster admin may exempt the namespace in the injector's config, "
                                    "require_injection.host_network_namespaces)")
    opted_out = opt_out(metadata)
    if opted_out:
        _require_refused(namespace, f"the pod opts out with {opted_out}, which this namespace forbids")
    inits, containers = list(spec.get("initContainers") or ()), list(spec.get("containers") or ())
    if not any(c.get("name") == PROXY_NAME for c in inits + containers):
        _require_refused(namespace, "the trustmesh sidecar was not injected")
    overrides = parse_overrides(metadata.get("annotations"))
    _refuse_uncaptured_family(namespace, overrides.exclude_outbound_cidrs)
    wanted_init = init_container(config, overrides)
    wanted_proxy = sidecar_container(config, overrides, True, "{}")
    init = next((c for c in inits if c.get("name") == INIT_NAME), None)
    if init is None or _differs(init, wanted_init, ("image", "command", "args")):
        _require_refused(namespace, f"init container {INIT_NAME!r} is missing or is not trustmesh's")
    if inits[0] is not init:
        _require_refused(namespace, f"{INIT_NAME!r} must be the first init container: one before it "
                                    "runs before the traffic capture is in place")
    proxy = next((c for c in inits + containers if c.get("name") == PROXY_NAME), {})
    context = proxy.get("securityContext") or {}
    if _differs(proxy, wanted_proxy, ("image", "command", "args")) or (
        context.get("runAsUser"), context.get("runAsGroup")) != (config.proxy_uid, config.proxy_gid):
        _require_refused(namespace, f"container {PROXY_NAME!r} is not trustmesh's sidecar")


def _refuse_uncaptured_family(namespace: str, cidrs: tuple[str, ...]) -> None:
    """A pod's ``exclude-outbound-cidrs`` that together cover a whole address family would
    leave the sidecar running but capturing nothing outbound there. (Ports cannot do
    that: a list holds at most 256 of them.) The injector config's own exclusions are
    the administrators' choice and are not judged here."""
    networks = [ipaddress.ip_network(c) for c in cidrs]
    for version, family, everything in ((4, "IPv4", ipaddress.ip_network("0.0.0.0/0")),
                                        (6, "IPv6", ipaddress.ip_network("::/0"))):
        if everything in ipaddress.collapse_addresses(n for n in networks if n.version == version):
            _require_refused(namespace, f"annotation trustmesh.io/exclude-outbound-cidrs excludes every {family} "
                                        "destination from the capture")


def _differs(container: Mapping[str, Any], wanted: Mapping[str, Any], fields: tuple[str, ...]) -> bool:
    return any(container.get(name) != wanted.get(name) for name in fields)


def _require_refused(namespace: str, why: str) -> None:
    raise PodRefusedError(f"namespace {namespace!r} requires the trustmesh sidecar ({INJECT_LABEL}=required): {why}")


def _parts(pod: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    check_pod_shape(pod)
    return pod.get("metadata") or {}, pod["spec"]
