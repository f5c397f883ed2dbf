"""``trustmesh inject``: inject pod templates in multi-document YAML, offline.

Pods, and the pod templates of Deployments, StatefulSets, DaemonSets,
ReplicaSets, Jobs and CronJobs (also inside a ``v1 List``), go through the
same :func:`~injector.inject.inject_pod` as the webhook; every other document
passes through unchanged. Opted-out and ``hostNetwork`` pods are left as they
are. Unlike the webhook there is no namespace selection: everything given is
injected, as with ``istioctl kube-inject``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from injector.config import InjectorConfig
from injector.errors import InjectorError, PodSpecError
from injector.inject import inject_pod

__all__ = ["WORKLOAD_KINDS", "inject_documents", "inject_object"]

#: kind -> path from the object to its pod template (metadata + spec).
WORKLOAD_KINDS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def inject_documents(text: str, config: InjectorConfig, *, trust_bundle: str | None = None) -> str:
    """Inject every pod template in a multi-document YAML text; return the YAML out."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as err:
        raise PodSpecError(f"input is not valid YAML: {err}") from err
    out = []
    for index, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        try:
            out.append(inject_object(doc, config, trust_bundle=trust_bundle))
        except InjectorError as err:
            raise type(err)(*_with_context(err, f"document {index} ({_describe(doc)})")) from err
    return yaml.dump_all(out, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


class _Dumper(yaml.SafeDumper):
    """Safe YAML out, with multi-line strings (the sidecar config, a PEM bundle) as ``|`` blocks.

    A value shared by two places (the same volume mount in two containers) is
    written out in full at each, never as an ``&id001`` anchor and ``*id001``
    alias: plain manifests, as ``kubectl`` users read and diff them.
    """

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and all(line == line.rstrip() for line in value.split("\n")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def inject_object(obj: Any, config: InjectorConfig, *, trust_bundle: str | None = None) -> Any:
    """Return ``obj`` injected if it is a pod or holds a pod template, else unchanged."""
    if not isinstance(obj, dict):
        return obj
    kind = obj.get("kind")
    inject: Callable[[dict], dict] = lambda pod: inject_pod(pod, config, trust_bundle=trust_bundle).pod  # noqa: E731
    if kind == "List" and isinstance(obj.get("items"), list):
        return {**obj, "items": [inject_object(item, config, trust_bundle=trust_bundle) for item in obj["items"]]}
    if kind == "Pod" and obj.get("apiVersion") == "v1":
        return inject(obj)
    path = WORKLOAD_KINDS.get(kind) if isinstance(kind, str) else None
    if path is None:
        return obj
    template = _at(obj, path)
    injected = inject(template)
    return _replace_at(obj, path, injected)


def _at(obj: dict, path: tuple[str, ...]) -> dict:
    node: Any = obj
    for i, key in enumerate(path):
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise PodSpecError(f"{'.'.join(path[: i + 1])} is missing or not an object")
    return node


def _replace_at(obj: dict, path: tuple[str, ...], value: dict) -> dict:
    if not path:
        return value
    return {**obj, path[0]: _replace_at(obj[path[0]], path[1:], value)}


def _describe(doc: Any) -> str:
    if not isinstance(doc, dict):
        return type(doc).__name__
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    return f"{doc.get('kind', '?')} {name or '(unnamed)'}"


def _with_context(err: InjectorError, where: str) -> tuple:
    """Constructor arguments for a copy of ``err`` whose message starts with ``where``."""
    annotation = getattr(err, "annotation", None)
    if annotation is not None:  # AnnotationError(annotation, message)
        message = str(err).split(": ", 1)[1]
        return (annotation, f"{message} (in {where})")
    return (f"{where}: {err}",)
