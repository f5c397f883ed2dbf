"""trustmesh's admission webhooks and offline injection.

The core is pure: :func:`inject_pod` turns a pod into the injected pod and
:func:`pod_patch` into the JSON Patch the mutating webhook returns;
:class:`Webhooks` maps AdmissionReview bodies to replies. The aiohttp
server (:mod:`injector.server`), the ``caBundle`` patch
(:mod:`injector.cabundle`) and the serving certificate from the trustmesh CA
(:mod:`injector.ca_certificate`) are thin shells around it, imported on demand.

>>> from injector import InjectorConfig, inject_pod
>>> pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
>>> [c["name"] for c in inject_pod(pod, InjectorConfig()).pod["spec"]["initContainers"]]
['trustmesh-init', 'trustmesh-proxy']
"""

from injector.config import (
    CaBundleSettings,
    CertificateFromCaSettings,
    InjectorConfig,
    ServerSettings,
    load_config,
    parse_config,
)
from injector.errors import (
    AnnotationError,
    InjectorConfigError,
    InjectorError,
    PodRefusedError,
    PodSpecError,
    ReviewError,
)
from injector.inject import Injection, inject_pod, pod_patch
from injector.patch import make_patch
from injector.review import AdmissionRequest, parse_review
from injector.webhook import Reply, Webhooks

__all__ = [
    "AdmissionRequest",
    "AnnotationError",
    "CaBundleSettings",
    "CertificateFromCaSettings",
    "Injection",
    "InjectorConfig",
    "InjectorConfigError",
    "InjectorError",
    "PodRefusedError",
    "PodSpecError",
    "Reply",
    "ReviewError",
    "ServerSettings",
    "Webhooks",
    "inject_pod",
    "load_config",
    "make_patch",
    "parse_config",
    "parse_review",
    "pod_patch",
]
