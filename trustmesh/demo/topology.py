"""What `trustmesh demo` runs: the workloads, their SPIFFE IDs, and the scripted calls.

Pure data and pure functions (no I/O): the runner modules start what is
described here and check the outcomes against :data:`SCRIPT`.

Workloads, each an HTTP app (one a gRPC server) with its own sidecar::

    web ──mTLS──► billing            (web reads invoices)
     │  └─mTLS──► config ◄──mTLS── billing   (each app fetches its own config)
     └─gRPC/mTLS──► resources ◄──gRPC/mTLS── billing   (FetchResource, own appname only)
    analytics ──plain HTTP + JWT-SVID──► reports   (a job outside the mesh)
    outsider  ──plain HTTP──► config, reports      (no identity at all)

The analytics job does not send through its sidecar: it only uses the
sidecar's Workload API to get a JWT-SVID, then calls ``reports`` directly,
whose sidecar runs in PERMISSIVE mode so it can accept such callers. The
sidecar verifies the token for the policy; the reports app verifies it again
with the sdk's aiohttp middleware, against the JWT bundles of its own
sidecar's Workload API, and so learns the caller's SPIFFE ID.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "TRUST_DOMAIN",
    "Workload",
    "Call",
    "WORKLOADS",
    "SCRIPT",
    "OUTSIDER",
    "spiffe_id",
    "socket_path",
    "FETCH_RESOURCE",
]

TRUST_DOMAIN = "demo.example"
OUTSIDER = "outsider"  # a caller with no sidecar and no credential
# The gRPC method of the resources workload (sdk/proto/trustmesh/demo/v1/resource.proto).
FETCH_RESOURCE = "/trustmesh.demo.v1.DynamicResourceService/FetchResource"


def socket_path(socket_dir: Path, app: str) -> Path:
    """Where ``app``'s sidecar serves the Workload API (a directory of its own, like the
    pod's shared emptyDir)."""
    return socket_dir / f"{app}-sockets" / "agent.sock"


def spiffe_id(app: str) -> str:
    """The SPIFFE ID of a demo workload: its path carries the ``ns`` and ``app`` attributes."""
    return f"spiffe://{TRUST_DOMAIN}/ns/demo/app/{app}"


@dataclass(frozen=True)
class Workload:
    """One app and its sidecar.

    ``upstreams`` maps an outbound name to ``(callee, expected callee)``: the
    sidecar dials ``callee``'s inbound port and requires the server SVID to be
    ``expected``'s ID (normally the same workload).
    """

    name: str
    mode: str = "STRICT"
    upstreams: dict[str, tuple[str, str]] = field(default_factory=dict)
    workload_api: bool = False  # the sidecar serves the SPIFFE Workload API to the app
    app_checks_jwt: bool = False  # the app verifies JWT-SVIDs itself too (sdk middleware)
    grpc: bool = False  # the app is a gRPC server; its sidecar decodes its request messages for policy

    @property
    def spiffe_id(self) -> str:
        return spiffe_id(self.name)


WORKLOADS: tuple[Workload, ...] = (
    Workload("config"),
    Workload("resources", grpc=True),
    Workload("reports", mode="PERMISSIVE", workload_api=True, app_checks_jwt=True),
    Workload("analytics", workload_api=True),
    Workload("billing", upstreams={"config": ("config", "config"), "resources": ("resources", "resources")}),
    Workload(
        "web",
        upstreams={
            "config": ("config", "config"),
            "resources": ("resources", "resources"),
            "billing": ("billing", "billing"),
            # Dials billing but insists on config's identity: the client-side check refuses it.
            "billing-pinned-to-config": ("billing", "config"),
        },
    ),
)


@dataclass(frozen=True)
class Call:
    """One scripted request and the outcome the demo expects.

    ``via``: ``mtls`` (the caller's app sends to its sidecar's outbound port
    ``upstream``), ``grpc`` (the same, as a grpcio client calling ``FetchResource``
    with ``body`` as the request message), ``plain`` (plain HTTP straight to the callee's sidecar) or
    ``jwt`` (plain HTTP with ``Authorization: Bearer`` and a JWT-SVID for
    ``audience``'s ID, fetched from the caller's Workload API).
    ``expect``: ``allow``, ``deny`` (the callee's sidecar answered 403) or
    ``refused`` (no answer from the app: connection refused or closed, or
    the caller's own sidecar would not send).
    """

    caller: str
    via: str
    callee: str
    method: str
    path: str
    expect: str
    shows: str
    body: dict[str, Any] | None = None
    upstream: str | None = None
    audience: str | None = None

    @property
    def body_bytes(self) -> bytes | None:
        return None if self.body is None else json.dumps(self.body, separators=(",", ":")).encode()

    @property
    def request_text(self) -> str:
        if self.via == "grpc":
            fields = ", ".join(f"{k}={v}" for k, v in (self.body or {}).items())
            return f"{self.path.rsplit('/', 1)[-1]}({fields})"
        text = f"{self.method} {self.path}"
        if self.body is not None:
            text += " " + json.dumps(self.body, separators=(",", ":"))
        return text

    @property
    def caller_text(self) -> str:
        kind = {"mtls": "mTLS", "grpc": "gRPC", "plain": "plain", "jwt": "JWT"}[self.via]
        if self.via == "jwt" and self.audience != self.callee:
            kind = f"JWT for {self.audience}"
        return f"{self.caller} ({kind})"


def _own_config(app: str) -> dict[str, str]:
    return {"appname": app}


SCRIPT: tuple[Call, ...] = (
    Call("web", "mtls", "config", "POST", "/v1/fetch", "allow", "ABAC: an app fetches its own config",
         body=_own_config("web"), upstream="config"),
    Call("billing", "mtls", "config", "POST", "/v1/fetch", "allow", "ABAC: an app fetches its own config",
         body=_own_config("billing"), upstream="config"),
    Call("web", "mtls", "config", "POST", "/v1/fetch", "deny", "ABAC: not another app's config",
         body=_own_config("billing"), upstream="config"),
    Call("web", "mtls", "billing", "GET", "/v1/invoices/2026-11", "allow", "mTLS between workloads",
         upstream="billing"),
    Call("billing", "mtls", "config", "GET", "/v1/invoices/2026-11", "deny", "no rule allows it",
         upstream="config"),
    Call("web", "mtls", "config", "GET", "/v1/admin/keys", "deny", "a denied path",
         upstream="config"),
    Call("web", "mtls", "config", "GET", "/v1/fetch/../admin/keys", "deny", "paths are normalised before policy",
         upstream="config"),
    Call("web", "mtls", "billing", "GET", "/v1/invoices/2026-11", "refused", "client checks server ID (route wrong on purpose)",
         upstream="billing-pinned-to-config"),
    Call(OUTSIDER, "plain", "config", "POST", "/v1/fetch", "refused", "plaintext refused (STRICT mTLS)",
         body=_own_config("config")),
    Call("analytics", "jwt", "reports", "GET", "/reports/daily", "allow", "JWT-SVID caller outside the mesh",
         audience="reports"),
    Call("analytics", "jwt", "reports", "GET", "/reports/daily", "deny", "a token for another audience",
         audience="config"),
    Call(OUTSIDER, "plain", "reports", "GET", "/reports/daily", "deny", "no credential, no access"),
    Call("web", "grpc", "resources", "POST", FETCH_RESOURCE, "allow", "gRPC ABAC: its own appname",
         body={"appname": "web"}, upstream="resources"),
    Call("billing", "grpc", "resources", "POST", FETCH_RESOURCE, "allow", "gRPC ABAC: its own appname",
         body={"appname": "billing"}, upstream="resources"),
    Call("web", "grpc", "resources", "POST", FETCH_RESOURCE, "deny", "gRPC ABAC: not another app's",
         body={"appname": "billing"}, upstream="resources"),
)
