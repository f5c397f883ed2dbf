"""The three webhook endpoints as pure functions from a request body to a reply.

``POST /inject`` (mutating), ``POST /validate`` (identity labels) and
``POST /validate/require-injection`` (namespaces that forbid opting out).
Errors become responses here and nowhere else:

============================================  =====================================
malformed body, not v1, no uid                HTTP 400, ``{"message": ...}``
not a Pod, bad annotation, malformed pod      ``allowed: false``, code 400
pod refused (uid 1337, identity labels, ...)  ``allowed: false``, code 403
trust bundle unreadable, anything unexpected  ``allowed: false``, code 500 (logged)
============================================  =====================================

Nothing here fails open: every path that is not an explicit decision denies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from injector.config import InjectorConfig
from injector.errors import AnnotationError, PodRefusedError, PodSpecError, ReviewError, TrustBundleError
from injector.identity import IdentityChecker, check_injected
from injector.inject import check_running_pod, inject_pod, pod_patch
from injector.review import AdmissionRequest, allow, deny, parse_review

__all__ = ["Reply", "Webhooks"]

log = logging.getLogger("trustmesh.injector")


@dataclass(frozen=True)
class Reply:
    """An HTTP status and the JSON body to send."""

    status: int
    body: dict[str, Any]


class Webhooks:
    """The injector's endpoints for one configuration."""

    def __init__(self, config: InjectorConfig, trust_bundle: Callable[[], str] | None = None) -> None:
        """``trust_bundle`` returns the PEM bundle to copy into pods (see ``trust_bundle_file``)."""
        self.config = config
        self.identity = IdentityChecker(config)
        self.trust_bundle = trust_bundle

    def inject(self, body: bytes) -> Reply:
        """Mutating webhook: answer with the JSONPatch that injects the pod (or none)."""
        return self._handle("inject", body, self._inject)

    def validate(self, body: bytes) -> Reply:
        """Validating webhook: refuse a pod whose identity template does not render."""
        return self._handle("validate", body, self._validate)

    def require_injection(self, body: bytes) -> Reply:
        """Validating webhook: refuse a pod without the sidecar."""
        return self._handle("require-injection", body, self._require_injection)

    def _inject(self, request: AdmissionRequest) -> dict[str, Any]:
        if request.operation == "UPDATE" and request.object is not None:
            check_running_pod(request.object, self.config, request.old_object)
            return allow(request.uid)
        if request.operation != "CREATE" or request.object is None:
            return allow(request.uid)
        bundle = self.trust_bundle() if self.trust_bundle is not None else None
        injection = inject_pod(request.object, self.config, trust_bundle=bundle)
        if not injection.injected:
            log.info("inject %s/%s: skipped: %s", request.namespace, _pod_name(request), injection.reason)
            # The API server selected this pod for injection: say why it was not injected.
            return allow(request.uid, warnings=[f"trustmesh: not injected: {injection.reason}"])
        patch = pod_patch(request.object, injection)
        log.info("inject %s/%s: %d patch operations", request.namespace, _pod_name(request), len(patch))
        return allow(request.uid, patch)

    def _validate(self, request: AdmissionRequest) -> dict[str, Any]:
        if request.object is None:
            return allow(request.uid)
        spiffe_id = self.identity.check_identity(request.object, request.namespace)
        log.info("validate %s/%s: identity %s", request.namespace, _pod_name(request), spiffe_id)
        return allow(request.uid)

    def _require_injection(self, request: AdmissionRequest) -> dict[str, Any]:
        if request.object is not None:
            check_injected(request.object, request.namespace, self.config)
            check_running_pod(request.object, self.config, request.old_object)
        return allow(request.uid)

    def _handle(self, endpoint: str, body: bytes,
                decide: Callable[[AdmissionRequest], dict[str, Any]]) -> Reply:
        try:
            request = parse_review(body)
        except ReviewError as err:
            log.warning("%s: bad review: %s", endpoint, err)
            if err.uid is not None:
                return Reply(200, deny(err.uid, str(err), 400))
            return Reply(400, {"message": f"bad AdmissionReview: {err}"})
        try:
            return Reply(200, decide(request))
        except (AnnotationError, PodSpecError) as err:
            log.info("%s %s/%s: denied: %s", endpoint, request.namespace, _pod_name(request), err)
            return Reply(200, deny(request.uid, f"trustmesh: {err}", 400))
        except PodRefusedError as err:
            log.info("%s %s/%s: denied: %s", endpoint, request.namespace, _pod_name(request), err)
            return Reply(200, deny(request.uid, f"trustmesh: {err}", 403))
        except TrustBundleError as err:
            log.error("%s %s/%s: %s", endpoint, request.namespace, _pod_name(request), err)
            return Reply(200, deny(request.uid, "trustmesh: the injector cannot read its trust bundle", 500))
        except Exception:  # fail closed, keep the details in the log
            log.exception("%s %s/%s: internal error", endpoint, request.namespace, _pod_name(request))
            return Reply(200, deny(request.uid, "trustmesh: internal error in the admission webhook", 500))


def _pod_name(request: AdmissionRequest) -> str:
    if request.name:
        return request.name
    metadata = (request.object or {}).get("metadata")
    if not isinstance(metadata, dict):
        return "?"
    return str(metadata.get("name") or metadata.get("generateName") or "?")
