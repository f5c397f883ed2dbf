"""Rewrite an app's kubelet probes through the sidecar's health port, as Istio does.

Under STRICT mTLS the kubelet cannot reach the app's own probe port: the
sidecar would demand a client certificate the kubelet does not have. So each
``httpGet``, ``tcpSocket`` or ``grpc`` probe of an app container is pointed
at the sidecar instead::

    httpGet: {path: /app-health/<container>/<livez|readyz|startupz>, port: 15021, scheme: HTTP}

and the original probe action is recorded in the sidecar's
``TRUSTMESH_APP_PROBERS`` environment variable, a JSON object keyed by that
path, e.g. ``{"/app-health/web/readyz": {"httpGet": {"path": "/ready",
"port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 1}}``. The sidecar
answers the kubelet by running the original probe against the app over
loopback. Named ports are resolved to numbers; ``exec`` probes, probes on an
excluded inbound port and probes whose named port is unknown are left alone.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

__all__ = ["PROBERS_ENV", "PROBE_KINDS", "health_path", "rewrite_probes"]

PROBERS_ENV = "TRUSTMESH_APP_PROBERS"
#: Pod-spec probe field -> the last segment of its health path.
PROBE_KINDS = {"livenessProbe": "livez", "readinessProbe": "readyz", "startupProbe": "startupz"}
_ACTIONS = ("httpGet", "tcpSocket", "grpc")


def health_path(container: str, probe_field: str) -> str:
    """``/app-health/<container>/<livez|readyz|startupz>``."""
    return f"/app-health/{container}/{PROBE_KINDS[probe_field]}"


def rewrite_probes(container: dict[str, Any], health_port: int,
                   excluded_ports: Iterable[int] = ()) -> dict[str, dict[str, Any]]:
    """Rewrite ``container``'s probes in place; return the originals by health path."""
    excluded = set(excluded_ports)
    originals: dict[str, dict[str, Any]] = {}
    for probe_field in PROBE_KINDS:
        probe = container.get(probe_field)
        if not isinstance(probe, dict):
            continue
        action = next((a for a in _ACTIONS if isinstance(probe.get(a), dict)), None)
        if action is None or _already_rewritten(probe, health_port):
            continue
        original = copy.deepcopy(probe[action])
        port = _resolve_port(original.get("port"), container)
        if port is None or port in excluded:
            continue
        original["port"] = port
        if action == "httpGet":
            original.setdefault("path", "/")
            original.setdefault("scheme", "HTTP")
        path = health_path(container["name"], probe_field)
        recorded: dict[str, Any] = {action: original}
        if "timeoutSeconds" in probe:
            recorded["timeoutSeconds"] = probe["timeoutSeconds"]
        originals[path] = recorded
        for a in _ACTIONS:
            probe.pop(a, None)
        probe["httpGet"] = {"path": path, "port": health_port, "scheme": "HTTP"}
    return originals


def _already_rewritten(probe: dict[str, Any], health_port: int) -> bool:
    http = probe.get("httpGet")
    return (isinstance(http, dict) and http.get("port") == health_port
            and str(http.get("path", "")).startswith("/app-health/"))


def _resolve_port(port: Any, container: dict[str, Any]) -> int | None:
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for declared in container.get("ports") or ():
            if isinstance(declared, dict) and declared.get("name") == port:
                number = declared.get("containerPort")
                return number if isinstance(number, int) else None
    return None
