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

from collections.abc import Mapping
from typing import Any

from sdk.errors import SpiffeIdError, TemplateError
from sdk.spiffeid import SpiffeId, TrustDomain
from sdk.template import IdentityTemplate

from injector.annotations import INJECT_LABEL
from injector.config import InjectorConfig
from injector.containers import PROXY_NAME
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


def check_injected(pod: Mapping[str, Any], namespace: str) -> None:
    """Refuse a pod without the trustmesh sidecar (``hostNetwork`` pods excepted)."""
    metadata, spec = _parts(pod)
    if spec.get("hostNetwork") is True:
        return
    containers = list(spec.get("initContainers") or ()) + list(spec.get("containers") or ())
    if any(c.get("name") == PROXY_NAME for c in containers):
        return
    labels = metadata.get("labels") or {}
    why = (f"the pod opts out with the label {INJECT_LABEL}=false, which this namespace forbids"
           if labels.get(INJECT_LABEL) == "false"
           else "the trustmesh sidecar was not injected")
    raise PodRefusedError(f"namespace {namespace!r} requires the trustmesh sidecar ({INJECT_LABEL}=required): {why}")


def _parts(pod: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    check_pod_shape(pod)
    return pod.get("metadata") or {}, pod["spec"]
