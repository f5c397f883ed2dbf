"""Strict app security: refuse app containers that could leave the proxy's capture.

Outbound capture exempts the proxy's uid and gid (1337). A container that
runs as root holds ``SETUID``/``SETGID`` and can simply become 1337; with
``NET_RAW`` it can send raw packets the redirect never sees. A non-root
container can still exec a set-user-ID (or set-group-ID) file owned by 1337
that its image ships, unless privilege escalation is off. So with
``strict_app_security: true`` every app container — init, regular, native
sidecar and ephemeral — must:

* never run as root: ``runAsNonRoot: true`` or a non-zero ``runAsUser``
  (its own ``securityContext``, else the pod's), and never ``runAsUser: 0``;
* drop ``ALL`` capabilities, or at least ``SETUID``, ``SETGID`` and
  ``NET_RAW``, and add none of them back;
* set ``allowPrivilegeEscalation: false`` (no set-user-ID executables).

This is what the Kubernetes ``restricted`` Pod Security level asks of every
container; the injected namespace cannot use that level itself because
``trustmesh-init`` needs ``NET_ADMIN``. Sans-I/O: the check reads a pod spec
and raises :class:`~injector.errors.PodRefusedError` naming the container.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from injector.errors import PodRefusedError

__all__ = ["check_app_security", "ESCAPE_CAPABILITIES"]

#: Capabilities that let a process act as the proxy's uid/gid or bypass the redirect.
ESCAPE_CAPABILITIES = ("SETGID", "SETUID", "NET_RAW")


def check_app_security(spec: Mapping[str, Any], containers: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """Raise :class:`PodRefusedError` for the first of ``containers`` that could escape capture.

    ``containers`` yields ``(kind, container)``, kind being ``"container"``,
    ``"init container"`` or ``"ephemeral container"``; ``spec`` gives the
    pod-level ``securityContext`` the containers inherit.
    """
    pod_ctx = spec.get("securityContext") or {}
    for kind, container in containers:
        problem = _root_problem(container.get("securityContext") or {}, pod_ctx) or _capability_problem(
            container.get("securityContext") or {})
        if problem:
            raise PodRefusedError(
                f"{kind} {container['name']!r} {problem}; strict_app_security requires every app container "
                "to run as non-root, drop ALL capabilities (at least SETUID, SETGID, NET_RAW) and set "
                "allowPrivilegeEscalation: false, or its traffic could bypass the trustmesh proxy")


def _root_problem(ctx: Mapping[str, Any], pod_ctx: Mapping[str, Any]) -> str:
    uid = _first_set(ctx.get("runAsUser"), pod_ctx.get("runAsUser"))
    if uid == 0:
        return "runs as uid 0 (root)"
    if uid is None and _first_set(ctx.get("runAsNonRoot"), pod_ctx.get("runAsNonRoot")) is not True:
        return "may run as root (no runAsNonRoot: true and no non-zero runAsUser, in it or the pod)"
    return ""


def _capability_problem(ctx: Mapping[str, Any]) -> str:
    capabilities = ctx.get("capabilities") or {}
    dropped = _names(capabilities.get("drop"))
    added = _names(capabilities.get("add"))
    back = sorted(added & {"ALL", *ESCAPE_CAPABILITIES})
    if back:
        return f"adds capability {', '.join(back)}"
    if "ALL" not in dropped:
        kept = [c for c in ESCAPE_CAPABILITIES if c not in dropped]
        if kept:
            return f"does not drop capability {', '.join(kept)}"
    if ctx.get("allowPrivilegeEscalation") is not False:
        return "does not set allowPrivilegeEscalation: false (it could exec a set-user-ID file owned by the proxy's uid)"
    return ""


def _names(values: Any) -> set[str]:
    return {str(c).upper().removeprefix("CAP_") for c in values or ()}


def _first_set(container_value: Any, pod_value: Any) -> Any:
    return pod_value if container_value is None else container_value
