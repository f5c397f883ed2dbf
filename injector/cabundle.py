"""Start-up option: patch the webhook CA into the webhook configurations' ``caBundle``.

When the serving certificate comes from the trustmesh CA (a Secret mounted
into the injector), the API server must be told which CA to trust for
``https://trustmesh-injector.trustmesh-system.svc:443``. At start-up the
injector reads each named Mutating/ValidatingWebhookConfiguration and sends
one JSON Patch per configuration that sets ``clientConfig.caBundle`` on every
webhook, guarded by ``test`` operations on the webhooks' names so a
configuration edited in between is refused (422) rather than patched at the
wrong index. With cert-manager's CA injector this option stays off.

Uses the official ``kubernetes`` client; RBAC needs ``get`` and ``patch`` on
the two configurations by name.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from injector.errors import CaBundlePatchError, TrustBundleError
from injector.trust_bundle import check_bundle_pem

__all__ = ["read_ca_bundle", "ca_bundle_ops", "patch_ca_bundle"]


def read_ca_bundle(path: str) -> bytes:
    """Read a PEM file of one or more CA certificates; refuse anything else."""
    try:
        with open(path, "rb") as fh:
            pem = fh.read()
    except OSError as err:
        raise CaBundlePatchError(f"cannot read the webhook CA bundle {path}: {err.strerror or err}") from err
    try:
        check_bundle_pem(pem, path)
    except TrustBundleError as err:
        raise CaBundlePatchError(str(err)) from err
    return pem


def ca_bundle_ops(webhook_names: Sequence[str], ca_pem: bytes) -> list[dict[str, Any]]:
    """JSON Patch setting ``caBundle`` on each webhook, each guarded by a ``test`` of its name."""
    value = base64.b64encode(ca_pem).decode("ascii")
    ops: list[dict[str, Any]] = []
    for i, name in enumerate(webhook_names):
        ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": name})
        ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": value})
    return ops


def patch_ca_bundle(api_client: Any, ca_pem: bytes, mutating: Sequence[str] = (),
                    validating: Sequence[str] = ()) -> list[str]:
    """Patch ``caBundle`` into the named configurations; return ``kind/name`` of each patched one."""
    from kubernetes.client import AdmissionregistrationV1Api
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = AdmissionregistrationV1Api(api_client)
    targets = [("MutatingWebhookConfiguration", name, api.read_mutating_webhook_configuration,
                api.patch_mutating_webhook_configuration) for name in mutating]
    targets += [("ValidatingWebhookConfiguration", name, api.read_validating_webhook_configuration,
                 api.patch_validating_webhook_configuration) for name in validating]
    patched = []
    for kind, name, read, patch in targets:
        try:
            current = read(name)
            names = [webhook.name for webhook in current.webhooks or ()]
            if not names:
                raise CaBundlePatchError(f"{kind} {name!r} has no webhooks to patch")
            patch(name, ca_bundle_ops(names, ca_pem), _content_type="application/json-patch+json")
        except ApiException as err:
            raise CaBundlePatchError(
                f"cannot patch caBundle into {kind} {name!r}: HTTP {err.status} {err.reason}") from err
        except (HTTPError, OSError) as err:
            raise CaBundlePatchError(f"cannot reach the Kubernetes API to patch {kind} {name!r}: {err}") from err
        patched.append(f"{kind}/{name}")
    return patched
