"""What the injector adds to a pod: the init container, the sidecar, volumes, the sidecar config.

Pure functions of the :class:`~injector.config.InjectorConfig` and the pod's
:class:`~injector.annotations.PodOverrides`; :mod:`injector.inject` decides
where they go.

Each object is written as the API server stores it: every field its
defaulting would fill in (``terminationMessagePath``, probe thresholds,
``fieldRef.apiVersion``, volume ``defaultMode``) is already there with the
default value, so the pod the webhook is called with again
(``reinvocationPolicy: IfNeeded``), or a pod injected offline and then
created, compares equal and gets no patch.

The sidecar's config file is rendered into the pod annotation
``trustmesh.io/sidecar-config`` and reaches the sidecar through a
``downwardAPI`` volume as ``/etc/trustmesh/sidecar.yaml``. That needs no
per-pod ConfigMap (the webhook has no side effects), works the same for
``trustmesh inject``, and keeps every per-pod setting visible on the pod.
"""

from __future__ import annotations

from typing import Any

import yaml

from injector.annotations import (
    EXCLUDE_INBOUND_PORTS,
    EXCLUDE_OUTBOUND_CIDRS,
    EXCLUDE_OUTBOUND_PORTS,
    SIDECAR_CONFIG_ANNOTATION,
    TRUST_BUNDLE_ANNOTATION,
    PodOverrides,
)
from injector.config import InjectorConfig
from injector.errors import AnnotationError
from sdk.redirect_limits import MAX_LIST, too_long

__all__ = [
    "INIT_NAME",
    "PROXY_NAME",
    "SOCKET_DIR",
    "SOCKET_ENV",
    "SOCKET_VOLUME",
    "init_container",
    "sidecar_container",
    "volumes",
    "sidecar_config_yaml",
]

INIT_NAME = "trustmesh-init"
PROXY_NAME = "trustmesh-proxy"

SOCKET_VOLUME = "trustmesh-sockets"
TOKEN_VOLUME = "trustmesh-token"
BUNDLE_VOLUME = "trustmesh-bundle"
CONFIG_VOLUME = "trustmesh-config"
POLICY_VOLUME = "trustmesh-policy"

SOCKET_DIR = "/run/trustmesh/sockets"
SOCKET_ENV = "SPIFFE_ENDPOINT_SOCKET"
SOCKET_URI = f"unix://{SOCKET_DIR}/agent.sock"
TOKEN_DIR = "/var/run/secrets/trustmesh/tokens"
TOKEN_FILE = "trustmesh-ca"
BUNDLE_DIR = "/var/run/secrets/trustmesh/bundle"
#: The key of the trust bundle ConfigMap the sidecar reads (PEM X.509 authorities).
BUNDLE_KEY = "bundle.pem"
CONFIG_DIR = "/etc/trustmesh"
CONFIG_FILE = "sidecar.yaml"
POLICY_DIR = "/var/run/trustmesh/policy"
#: The key of a policy ConfigMap named by ``trustmesh.io/policy``.
POLICY_KEY = "policy.policy"
LOG_LEVEL_ENV = "TRUSTMESH_LOG_LEVEL"
READY_PATH = "/healthz/ready"

_SECCOMP = {"type": "RuntimeDefault"}
# The API server's defaults (pkg/apis/core/v1/defaults.go) for what the injector writes.
_TERMINATION = {"terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
_FILE_MODE = 0o644  # defaultMode of configMap, downwardAPI and projected volumes (420)


def init_container(config: InjectorConfig, overrides: PodOverrides) -> dict[str, Any]:
    """``trustmesh-init``: installs the traffic redirect, then exits.

    Raises :class:`~injector.errors.AnnotationError` when a list it would
    pass (the pod's annotation merged with the injector's own entries) is
    one ``trustmesh redirect`` refuses.
    """
    mode = overrides.mode or config.mode
    excluded_inbound = _rendered(EXCLUDE_INBOUND_PORTS, (config.health_port, *config.exclude_inbound_ports),
                                 overrides.exclude_inbound_ports)
    args = [
        "redirect", "apply",
        "--mode", mode,
        "--proxy-uid", str(config.proxy_uid),
        "--proxy-gid", str(config.proxy_gid),
        "--inbound-port", str(config.inbound_port),
        "--outbound-port", str(config.outbound_port),
        "--inbound-ports", "*",
        "--exclude-inbound-ports", _csv(excluded_inbound),
        "--outbound-cidrs", "*",
        "--ipv6", config.ipv6,
    ]
    excluded_outbound = _rendered(EXCLUDE_OUTBOUND_PORTS, config.exclude_outbound_ports,
                                  overrides.exclude_outbound_ports)
    if excluded_outbound:
        args += ["--exclude-outbound-ports", _csv(excluded_outbound)]
    excluded_cidrs = _rendered(EXCLUDE_OUTBOUND_CIDRS, config.exclude_outbound_cidrs,
                               overrides.exclude_outbound_cidrs)
    if excluded_cidrs:
        args += ["--exclude-outbound-cidrs", _csv(excluded_cidrs)]
    return {
        "name": INIT_NAME,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["trustmesh"],
        "args": args,
        "resources": _resources(config),
        **_TERMINATION,
        "securityContext": {
            # iptables/nft need real root inside the container's user namespace;
            # the capabilities are limited to what installing rules needs.
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "seccompProfile": dict(_SECCOMP),
        },
    }


def sidecar_container(config: InjectorConfig, overrides: PodOverrides, native: bool,
                      probers_json: str) -> dict[str, Any]:
    """``trustmesh-proxy``; a native sidecar (init container, ``restartPolicy: Always``) if ``native``."""
    ready = {
        "httpGet": {"path": READY_PATH, "port": config.health_port, "scheme": "HTTP"},
        "periodSeconds": 5,
        "timeoutSeconds": 3,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    mounts = [
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR},
        {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
        {"name": BUNDLE_VOLUME, "mountPath": BUNDLE_DIR, "readOnly": True},
    ]
    if overrides.policy_configmap:
        mounts.append({"name": POLICY_VOLUME, "mountPath": POLICY_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": PROXY_NAME,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["trustmesh"],
        "args": ["sidecar", "run", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        "ports": [{"name": "tm-health", "containerPort": config.health_port, "protocol": "TCP"}],
        "env": [
            _field_env("POD_NAME", "metadata.name"),
            _field_env("POD_NAMESPACE", "metadata.namespace"),
            _field_env("POD_IP", "status.podIP"),
            _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
            {"name": LOG_LEVEL_ENV, "value": overrides.log_level or config.log_level},
            {"name": "TRUSTMESH_APP_PROBERS", "value": probers_json},
        ],
        "resources": _resources(config),
        **_TERMINATION,
        "readinessProbe": ready,
        "volumeMounts": mounts,
        "securityContext": {
            "runAsUser": config.proxy_uid,
            "runAsGroup": config.proxy_gid,
            "runAsNonRoot": True,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": dict(_SECCOMP),
        },
    }
    if native:
        container["restartPolicy"] = "Always"
        # The app's containers start only once the proxy is ready.
        container["startupProbe"] = {**ready, "periodSeconds": 1, "failureThreshold": 600}
    return container


def volumes(config: InjectorConfig, overrides: PodOverrides, *, inline_bundle: bool = False) -> list[dict[str, Any]]:
    """The volumes the sidecar and the app containers mount.

    The trust bundle comes from the ConfigMap ``config.bundle_configmap`` in
    the pod's namespace, or, with ``inline_bundle``, from the pod's
    ``trustmesh.io/trust-bundle`` annotation through the downward API.
    """
    if inline_bundle:
        bundle: dict[str, Any] = {"name": BUNDLE_VOLUME, "downwardAPI": {"items": [_annotation_item(
            BUNDLE_KEY, TRUST_BUNDLE_ANNOTATION)], "defaultMode": _FILE_MODE}}
    else:
        bundle = {"name": BUNDLE_VOLUME, "configMap": {"name": config.bundle_configmap, "defaultMode": _FILE_MODE}}
    vols: list[dict[str, Any]] = [
        {"name": SOCKET_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": config.token_audience,
            "expirationSeconds": config.token_expiration_seconds,
            "path": TOKEN_FILE,
        }}], "defaultMode": _FILE_MODE}},
        bundle,
        {"name": CONFIG_VOLUME, "downwardAPI": {"items": [_annotation_item(CONFIG_FILE, SIDECAR_CONFIG_ANNOTATION)],
                                                "defaultMode": _FILE_MODE}},
    ]
    if overrides.policy_configmap:
        vols.append({"name": POLICY_VOLUME, "configMap": {"name": overrides.policy_configmap,
                                                          "defaultMode": _FILE_MODE}})
    return vols


def sidecar_config_yaml(config: InjectorConfig, overrides: PodOverrides) -> str:
    """The sidecar's config file (``sidecar.config`` schema), as YAML text."""
    server_name = config.ca_address.rsplit(":", 1)[0]
    data: dict[str, Any] = {
        "trust_domain": config.trust_domain,
        "mode": "STRICT",
        "ca": {
            "address": config.ca_address,
            "bundle_file": f"{BUNDLE_DIR}/{BUNDLE_KEY}",
            "token_file": f"{TOKEN_DIR}/{TOKEN_FILE}",
            "server_name": server_name,
        },
        "inbound": {"port": config.inbound_port},
        "outbound": {"port": config.outbound_port},
        "admin": {"port": config.admin_port, "health_port": config.health_port, "health_address": "0.0.0.0"},
        "workload_api": {"socket": f"{SOCKET_DIR}/agent.sock"},
    }
    if overrides.policy_configmap:
        data["policy"] = {"file": f"{POLICY_DIR}/{POLICY_KEY}"}
    return yaml.safe_dump(data, sort_keys=False)


def _annotation_item(path: str, annotation: str) -> dict[str, Any]:
    return {"path": path, "fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.annotations['{annotation}']"}}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _resources(config: InjectorConfig) -> dict[str, dict[str, str]]:
    """The configured resources; a limit without a request also requests that amount, as the
    API server's defaulting of a pod (SetDefaults_Pod) would make it."""
    resources = {kind: dict(amounts) for kind, amounts in config.resources.items()}
    if resources.get("limits"):
        resources["requests"] = {**resources["limits"], **resources.get("requests", {})}
    return resources


def _rendered(annotation: str, own: tuple, from_pod: tuple) -> tuple:
    """The injector's ``own`` entries, then the pod's: one list for the redirect, within its limits."""
    merged = tuple(dict.fromkeys((*own, *from_pod)))
    if too_long(merged):
        mine = f" with the injector's own ({_csv(own) if len(own) <= 8 else f'{len(own)} of them'})" if own else ""
        raise AnnotationError(annotation, f"{len(merged)} entries{mine}; trustmesh-init accepts at most "
                                          f"{MAX_LIST}, so the pod would stay in Init:Error")
    return merged


def _csv(items) -> str:
    return ",".join(str(i) for i in items)
