"""AdmissionReview v1 at the edge: parse a request once, build responses in one place.

Only ``admission.k8s.io/v1`` reviews are accepted (the webhook
configurations offer only ``v1``). A request that cannot be answered — not
JSON, not a v1 AdmissionReview, no ``request.uid`` — raises
:class:`~injector.errors.ReviewError` without a uid, and the server answers
HTTP 400. A request with a uid but the wrong content (not a Pod, no object)
raises :class:`ReviewError` carrying the uid, and is answered with
``allowed: false``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from injector.errors import ReviewError

__all__ = ["API_VERSION", "AdmissionRequest", "parse_review", "allow", "deny"]

API_VERSION = "admission.k8s.io/v1"
_POD_KIND = {"group": "", "version": "v1", "kind": "Pod"}


@dataclass(frozen=True)
class AdmissionRequest:
    """The parts of an AdmissionReview request the webhooks use."""

    uid: str
    operation: str
    namespace: str
    name: str
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    dry_run: bool = False


def parse_review(body: bytes) -> AdmissionRequest:
    """Parse an AdmissionReview for a Pod; raise :class:`ReviewError` saying what is wrong.

    The error's ``uid`` is set when the request can still be answered with
    ``allowed: false``.
    """
    try:
        review = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ReviewError(f"body is not JSON: {err}") from err
    if not isinstance(review, dict):
        raise ReviewError("body is not a JSON object")
    if review.get("kind") != "AdmissionReview":
        raise ReviewError(f"kind is {review.get('kind')!r}, not 'AdmissionReview'")
    if review.get("apiVersion") != API_VERSION:
        raise ReviewError(f"apiVersion is {review.get('apiVersion')!r}; only {API_VERSION} is supported")
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError("AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid is missing")
    kind = request.get("kind")
    if kind != _POD_KIND:
        raise ReviewError(f"request.kind is {_kind_text(kind)}; this webhook admits only v1 Pods", uid)
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
        raise ReviewError(f"request.operation {operation!r} is not a Kubernetes admission operation", uid)
    obj, old = request.get("object"), request.get("oldObject")
    for name, value in (("object", obj), ("oldObject", old)):
        if value is not None and not isinstance(value, dict):
            raise ReviewError(f"request.{name} is not an object", uid)
    if operation in ("CREATE", "UPDATE") and obj is None:
        raise ReviewError(f"request.object is missing for {operation}", uid)
    if obj is not None and (obj.get("kind", "Pod") != "Pod" or obj.get("apiVersion", "v1") != "v1"):
        raise ReviewError(f"request.object is a {obj.get('apiVersion')} {obj.get('kind')}, not a v1 Pod", uid)
    namespace = request.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        metadata = (obj or {}).get("metadata")
        namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
        if not isinstance(namespace, str) or not namespace:
            raise ReviewError("request.namespace is missing", uid)
    name = request.get("name")
    return AdmissionRequest(
        uid=uid,
        operation=operation,
        namespace=namespace,
        name=name if isinstance(name, str) else "",
        object=obj,
        old_object=old,
        dry_run=request.get("dryRun") is True,
    )


def allow(uid: str, patch: list[dict[str, Any]] | None = None, warnings: list[str] | None = None) -> dict[str, Any]:
    """An AdmissionReview response that admits, with a base64 JSONPatch if ``patch`` is non-empty."""
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        raw = json.dumps(patch, separators=(",", ":")).encode()
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(raw).decode("ascii")
    if warnings:
        response["warnings"] = list(warnings)
    return _review(response)


def deny(uid: str, message: str, code: int = 403) -> dict[str, Any]:
    """An AdmissionReview response that refuses, with ``message`` shown to the user."""
    reason = {400: "BadRequest", 403: "Forbidden"}.get(code, "InternalError")
    return _review({
        "uid": uid,
        "allowed": False,
        "status": {"status": "Failure", "code": code, "reason": reason, "message": message},
    })


def _review(response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def _kind_text(kind: Any) -> str:
    if isinstance(kind, dict):
        group = kind.get("group") or "core"
        return f"{group}/{kind.get('version')} {kind.get('kind')}"
    return repr(kind)
