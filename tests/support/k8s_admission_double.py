"""What the Kubernetes API server sends to, and offers, admission webhooks.

- :func:`pod` and :func:`admission_review` build the real JSON shapes of a
  Pod as the mutating webhook receives it (after the API server added its
  own ``kube-api-access-*`` projected volume and defaults) and of an
  AdmissionReview v1 request, as kube-apiserver 1.36 sends them.
- :func:`client_context` is the API server's TLS view of a webhook (trust only
  ``caBundle``, check the Service's DNS name, :data:`SERVICE_DNS`).
- :class:`AdmissionRegistrationDouble` is an in-process stand-in for the
  ``admissionregistration.k8s.io/v1`` part of the API server (GET and
  JSON-Patch PATCH of Mutating/ValidatingWebhookConfigurations), enough for
  the injector's start-up ``caBundle`` patch. It replaces the real API server
  in tests; everything else in those tests is real.
"""

from __future__ import annotations

import copy
import json
import ssl
import uuid
from pathlib import Path
from typing import Any

import jsonpatch
from aiohttp import web

__all__ = ["SERVICE_DNS", "client_context", "pod", "admission_review", "AdmissionRegistrationDouble"]

#: The name the API server dials (and checks in the certificate) for the injector Service.
SERVICE_DNS = "trustmesh-injector.trustmesh-system.svc"


def client_context(ca_file: str | Path) -> ssl.SSLContext:
    """A TLS client context like the API server's for a webhook: trusts only ``caBundle``."""
    return ssl.create_default_context(cafile=str(ca_file))


def pod(name: str = "web-7d4b9c-x2v9q", namespace: str = "prod", *, service_account: str = "web",
        labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
        containers: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    """A Pod as the API server hands it to a mutating webhook on CREATE."""
    containers = containers if containers is not None else [{
        "name": "web",
        "image": "registry.example/web:1.4",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }]
    for c in containers:
        c.setdefault("volumeMounts", []).append({
            "name": "kube-api-access-9zq7x",
            "readOnly": True,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        })
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "creationTimestamp": None,
        "labels": dict(labels or {"app": "web"}),
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    body: dict[str, Any] = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": {
            "volumes": [{
                "name": "kube-api-access-9zq7x",
                "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                        "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ], "defaultMode": 420},
            }],
            "containers": containers,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": service_account,
            "serviceAccount": service_account,
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                 "tolerationSeconds": 300},
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    }
    body["spec"].update(spec)
    return body


def admission_review(obj: Any, *, operation: str = "CREATE", namespace: str = "prod",
                     old: dict[str, Any] | None = None, uid: str | None = None) -> dict[str, Any]:
    """An AdmissionReview v1 request for a pod, as kube-apiserver sends it."""
    source = next((o for o in (obj, old) if isinstance(o, dict)), {})
    metadata = source.get("metadata")
    name = metadata.get("name", "") if isinstance(metadata, dict) else ""
    return {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "0e3c6e4e-9d36-4b8c-8a8d-3c5a1b8f0c11",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                           "system:authenticated"],
            },
            "object": obj,
            "oldObject": old,
            "dryRun": False,
            "options": {"kind": f"{operation.capitalize()}Options", "apiVersion": "meta.k8s.io/v1"}
            if operation in ("CREATE", "UPDATE") else None,
        },
    }


class AdmissionRegistrationDouble:
    """``/apis/admissionregistration.k8s.io/v1/{mutating,validating}webhookconfigurations``."""

    _PLURALS = {
        "mutatingwebhookconfigurations": "MutatingWebhookConfiguration",
        "validatingwebhookconfigurations": "ValidatingWebhookConfiguration",
    }

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.patch_content_types: list[str] = []
        self._runner: web.AppRunner | None = None

    def add(self, obj: dict[str, Any]) -> None:
        plural = next(p for p, k in self._PLURALS.items() if k == obj["kind"])
        stored = copy.deepcopy(obj)
        stored.setdefault("metadata", {}).setdefault("resourceVersion", "1")
        self.objects[(plural, obj["metadata"]["name"])] = stored

    async def start(self) -> str:
        app = web.Application()
        base = "/apis/admissionregistration.k8s.io/v1/{plural}/{name}"
        app.router.add_get(base, self._get)
        app.router.add_patch(base, self._patch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _lookup(self, request: web.Request) -> tuple[tuple[str, str], dict[str, Any]] | web.Response:
        plural, name = request.match_info["plural"], request.match_info["name"]
        key = (plural, name)
        if plural not in self._PLURALS or key not in self.objects:
            return web.json_response(_status(404, "NotFound", f'{plural} "{name}" not found'), status=404)
        return key, self.objects[key]

    async def _get(self, request: web.Request) -> web.Response:
        found = self._lookup(request)
        if isinstance(found, web.Response):
            return found
        return web.json_response(found[1])

    async def _patch(self, request: web.Request) -> web.Response:
        found = self._lookup(request)
        if isinstance(found, web.Response):
            return found
        key, current = found
        self.patch_content_types.append(request.content_type)
        if request.content_type != "application/json-patch+json":
            return web.json_response(_status(415, "UnsupportedMediaType", "only JSON Patch here"), status=415)
        try:
            ops = json.loads(await request.read())
            patched = jsonpatch.apply_patch(current, ops)
        except (ValueError, jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as err:
            # The real API server answers a failed "test" op with 422 Invalid.
            return web.json_response(_status(422, "Invalid", str(err)), status=422)
        patched["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
        self.objects[key] = patched
        return web.json_response(patched)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
