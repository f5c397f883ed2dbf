"""What kube-apiserver does to a pod between two calls of a mutating webhook.

Written from the Kubernetes sources, independently of the injector: the
defaulting functions of ``pkg/apis/core/v1/defaults.go`` (``SetDefaults_PodSpec``,
``_Pod``, ``_Container``, ``_Probe``, ``_HTTPGetAction``, ``_ObjectFieldSelector``,
``_SecretVolumeSource``, ``_ConfigMapVolumeSource``, ``_DownwardAPIVolumeSource``,
``_ProjectedVolumeSource``, ``_ServiceAccountTokenProjection``, ``_Volume``, and
the declarative ``ContainerPort.protocol=TCP``), and the ServiceAccount admission
plugin (``plugin/pkg/admission/serviceaccount``), which mounts the pod's
``kube-api-access-*`` token volume into every container and init container
that does not already mount something at its path. With
``reinvocationPolicy: IfNeeded`` the apiserver re-runs these in-tree
plugins after a webhook changed the pod, then calls the webhook again.

>>> pod = {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}
>>> apiserver_defaulted(pod)["spec"]["containers"][0]["terminationMessagePolicy"]
'File'
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["SA_TOKEN_PATH", "apiserver_defaulted"]

SA_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
_FILE_MODE = 0o644  # 420: the default mode of secret, configMap, downwardAPI and projected volumes


def apiserver_defaulted(pod: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``pod`` as the API server leaves it: defaults filled in, the token mounted."""
    pod = copy.deepcopy(pod)
    spec = pod.setdefault("spec", {})
    # SetDefaults_PodSpec
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("restartPolicy", "Always")
    if spec.get("securityContext") is None:
        spec["securityContext"] = {}
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    # SetDefaults_Pod
    spec.setdefault("enableServiceLinks", True)
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or ():
            _container(container)
            resources = container.setdefault("resources", {})
            if resources.get("limits"):
                requests = resources.setdefault("requests", {})
                for name, value in resources["limits"].items():
                    requests.setdefault(name, value)
    for container in spec.get("ephemeralContainers") or ():
        _container(container)
    for volume in spec.get("volumes") or ():
        _volume(volume)
    _service_account_admission(spec)
    return pod


def _container(container: dict[str, Any]) -> None:
    # SetDefaults_Container
    if not container.get("imagePullPolicy"):
        name = container.get("image", "").rpartition("/")[2].partition("@")[0]
        tag = name.rpartition(":")[2] if ":" in name else "latest"  # no tag means :latest
        container["imagePullPolicy"] = "Always" if tag == "latest" else "IfNotPresent"
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    for port in container.get("ports") or ():
        port.setdefault("protocol", "TCP")
    for probe_key in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_key)
        if probe:
            _probe(probe)
    for env in container.get("env") or ():
        field_ref = (env.get("valueFrom") or {}).get("fieldRef")
        if field_ref is not None:
            field_ref.setdefault("apiVersion", "v1")


def _probe(probe: dict[str, Any]) -> None:
    # SetDefaults_Probe, SetDefaults_HTTPGetAction
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)):
        if not probe.get(key):
            probe[key] = value
    http = probe.get("httpGet")
    if http is not None:
        http.setdefault("path", "/")
        http.setdefault("scheme", "HTTP")


def _volume(volume: dict[str, Any]) -> None:
    sources = [k for k in volume if k != "name"]
    if not sources:  # SetDefaults_Volume
        volume["emptyDir"] = {}
    for kind in ("secret", "configMap", "downwardAPI", "projected"):
        source = volume.get(kind)
        if source is not None and source.get("defaultMode") is None:
            source["defaultMode"] = _FILE_MODE
    for item in (volume.get("downwardAPI") or {}).get("items") or ():
        _field_ref(item)
    for projection in (volume.get("projected") or {}).get("sources") or ():
        token = projection.get("serviceAccountToken")
        if token is not None:
            token.setdefault("expirationSeconds", 3600)
        for item in (projection.get("downwardAPI") or {}).get("items") or ():
            _field_ref(item)


def _field_ref(item: dict[str, Any]) -> None:
    if item.get("fieldRef") is not None:
        item["fieldRef"].setdefault("apiVersion", "v1")


def _service_account_admission(spec: dict[str, Any]) -> None:
    token = next((v["name"] for v in spec.get("volumes") or () if v["name"].startswith("kube-api-access-")), None)
    if token is None or spec.get("automountServiceAccountToken") is False:
        return
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or ():
            mounts = container.setdefault("volumeMounts", [])
            if not any(m.get("mountPath") == SA_TOKEN_PATH for m in mounts):
                mounts.append({"name": token, "readOnly": True, "mountPath": SA_TOKEN_PATH})
