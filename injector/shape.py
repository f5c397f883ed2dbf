"""Check that a pod has the shape of a Kubernetes Pod where the injector reads it.

The API server only sends well-formed pods, but ``trustmesh inject`` reads
any YAML and a webhook must never crash on a forged review. So every field
the injector reads or extends is type-checked first, and the first mismatch
raises :class:`~injector.errors.PodSpecError` with its path
(``spec.containers[0].env[2].name is not a string``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from injector.errors import PodSpecError

__all__ = ["check_pod_shape"]

_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_ACTIONS = ("httpGet", "tcpSocket", "grpc", "exec")


def check_pod_shape(pod: Any) -> None:
    """Raise :class:`PodSpecError` unless ``pod`` is shaped like a Pod (or pod template)."""
    if not isinstance(pod, Mapping):
        raise PodSpecError("the object is not a JSON object")
    metadata = _object(pod.get("metadata"), "metadata")
    for key in ("labels", "annotations"):
        _string_map(metadata.get(key), f"metadata.{key}")
    _optional(metadata.get("name"), str, "metadata.name", "a string")
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        raise PodSpecError("spec is missing or not an object")
    _optional(spec.get("hostNetwork"), bool, "spec.hostNetwork", "true or false")
    _optional(spec.get("serviceAccountName"), str, "spec.serviceAccountName", "a string")
    _security_context(spec.get("securityContext"), "spec.securityContext")
    pod_context = _object(spec.get("securityContext"), "spec.securityContext")
    _integer(pod_context.get("fsGroup"), "spec.securityContext.fsGroup")
    for i, group in enumerate(_list(pod_context.get("supplementalGroups"), "spec.securityContext.supplementalGroups")):
        _integer(group, f"spec.securityContext.supplementalGroups[{i}]")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise PodSpecError("spec.containers is missing or empty")
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for i, container in enumerate(_named_list(spec.get(key), f"spec.{key}")):
            _container(container, f"spec.{key}[{i}]")
    _named_list(spec.get("volumes"), "spec.volumes")


def _container(container: Mapping[str, Any], where: str) -> None:
    _security_context(container.get("securityContext"), where + ".securityContext")
    _optional(container.get("restartPolicy"), str, where + ".restartPolicy", "a string")
    _named_list(container.get("env"), where + ".env")
    for i, mount in enumerate(_named_list(container.get("volumeMounts"), where + ".volumeMounts")):
        _optional(mount.get("mountPath"), str, f"{where}.volumeMounts[{i}].mountPath", "a string")
    for i, port in enumerate(_list(container.get("ports"), where + ".ports")):
        port = _object(port, f"{where}.ports[{i}]")
        _optional(port.get("name"), str, f"{where}.ports[{i}].name", "a string")
    for field in _PROBES:
        probe = _object(container.get(field), f"{where}.{field}")
        for action in _ACTIONS:
            _object(probe.get(action), f"{where}.{field}.{action}")


def _security_context(value: Any, where: str) -> None:
    context = _object(value, where)
    _optional(context.get("privileged"), bool, where + ".privileged", "true or false")
    capabilities = _object(context.get("capabilities"), where + ".capabilities")
    for key in ("add", "drop"):
        for i, name in enumerate(_list(capabilities.get(key), f"{where}.capabilities.{key}")):
            _optional(name, str, f"{where}.capabilities.{key}[{i}]", "a string")
    for key in ("runAsNonRoot", "allowPrivilegeEscalation"):
        _optional(context.get(key), bool, f"{where}.{key}", "true or false")
    for key in ("runAsUser", "runAsGroup"):
        _integer(context.get(key), f"{where}.{key}")


def _integer(number: Any, where: str) -> None:
    if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
        raise PodSpecError(f"{where} is not an integer")


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PodSpecError(f"{where} is not an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PodSpecError(f"{where} is not a list")
    return value


def _named_list(value: Any, where: str) -> list[Mapping[str, Any]]:
    items = _list(value, where)
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise PodSpecError(f"{where}[{i}] is not an object")
        if not isinstance(item.get("name"), str):
            raise PodSpecError(f"{where}[{i}].name is missing or not a string")
    return items


def _string_map(value: Any, where: str) -> None:
    for key, item in _object(value, where).items():
        if not isinstance(item, str):
            raise PodSpecError(f"{where}[{key!r}] is not a string")


def _optional(value: Any, kind: type, where: str, what: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise PodSpecError(f"{where} is not {what}")
