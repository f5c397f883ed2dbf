"""The patch builder: a pure function from a pod to the injected pod.

:func:`inject_pod` never touches its argument; it returns an
:class:`Injection` holding the new pod (or the unchanged one, with the
reason it was skipped). :func:`pod_patch` turns that into the JSON Patch the
mutating webhook returns; ``trustmesh inject`` uses the new pod directly.

Who is injected is decided first by the webhook configuration's selectors
(namespace label ``trustmesh.io/inject=enabled|required`` or pod label
``trustmesh.io/inject=true``); here, a pod is skipped if it opts out with the
label or annotation ``trustmesh.io/inject: "false"`` or uses ``hostNetwork``. Injection is
idempotent: each piece (init container, sidecar, mounts, env, probes) is
added only if it is not there, judged from the pod's containers themselves,
never from an annotation a client could set; trustmesh's volumes and its
sidecar-config annotation are (re)written every time.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from injector.annotations import (
    SIDECAR_CONFIG_ANNOTATION,
    TRUST_BUNDLE_ANNOTATION,
    PodOverrides,
    opt_out,
    parse_overrides,
)
from injector.app_security import check_app_security
from injector.config import InjectorConfig
from injector.containers import (
    INIT_NAME,
    PROXY_NAME,
    SOCKET_DIR,
    SOCKET_ENV,
    SOCKET_URI,
    SOCKET_VOLUME,
    init_container,
    sidecar_config_yaml,
    sidecar_container,
    volumes,
)
from injector.errors import PodRefusedError
from injector.patch import Patch, make_patch
from injector.probes import PROBERS_ENV, rewrite_probes
from injector.shape import check_pod_shape

__all__ = ["Injection", "inject_pod", "pod_patch", "app_containers", "check_running_pod"]

_DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
# Where the ServiceAccount admission mounts the pod's API token volume (kube-api-access-<suffix>).
_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
_TOKEN_VOLUME_PREFIX = "kube-api-access-"
# Capabilities that allow changing the pod's iptables/nftables rules.
_NETWORK_ADMIN = frozenset({"NET_ADMIN", "ALL"})


@dataclass(frozen=True)
class Injection:
    """The outcome for one pod: ``pod`` is the injected copy, or the original if skipped."""

    pod: dict[str, Any]
    injected: bool
    reason: str = ""


def pod_patch(original: Mapping[str, Any], injection: Injection) -> Patch:
    """The JSON Patch that turns ``original`` into ``injection.pod`` (empty if skipped)."""
    return make_patch(original, injection.pod) if injection.injected else []


def inject_pod(pod: Mapping[str, Any], config: InjectorConfig, *, trust_bundle: str | None = None) -> Injection:
    """Return ``pod`` with the trustmesh init container, sidecar, volumes and env added.

    With ``trust_bundle`` (PEM text), the bundle is copied into the pod's
    ``trustmesh.io/trust-bundle`` annotation and projected into the sidecar,
    instead of mounting the bundle ConfigMap of the pod's namespace.

    Raises :class:`~injector.errors.AnnotationError` for a bad ``trustmesh.io/``
    annotation, :class:`~injector.errors.PodRefusedError` for a pod that would
    bypass the proxy, and :class:`~injector.errors.PodSpecError` for something
    that is not a pod.
    """
    check_pod_shape(pod)
    spec = pod["spec"]
    metadata = pod.get("metadata") or {}
    if spec.get("hostNetwork") is True:
        if any(c.get("name") == INIT_NAME for c in spec.get("initContainers") or ()):
            # Set after an earlier injection (another webhook, then reinvocation):
            # trustmesh-init would rewrite the node's own traffic rules.
            raise PodRefusedError(
                f"a hostNetwork pod must not carry {INIT_NAME!r}: its redirect would apply to the node's network")
        return Injection(dict(pod), False, "hostNetwork pods are never injected")
    opted_out = opt_out(metadata)
    if opted_out:
        return Injection(dict(pod), False, f"the pod opts out with {opted_out}")
    overrides = parse_overrides(metadata.get("annotations"))
    _refuse_proxy_identity(spec, config)
    if config.strict_app_security:
        check_app_security(spec, _kinds(spec))

    new = copy.deepcopy(dict(pod))
    new_meta = _field(new, "metadata", dict)
    spec = new["spec"]
    native = config.native_sidecar if overrides.native_sidecar is None else overrides.native_sidecar
    probers = _rewrite_app_probes(spec, config, overrides)

    # trustmesh's containers are rebuilt on every call, never adopted by name:
    # a container the user named trustmesh-init or trustmesh-proxy is replaced.
    known_probers, token_mounts = _remove_reserved(spec)
    if not spec["containers"]:
        raise PodRefusedError(
            f"the pod's only containers use the names {INIT_NAME!r}/{PROXY_NAME!r}, which trustmesh reserves")
    init = init_container(config, overrides)
    _field(spec, "initContainers", list).insert(0, init)
    proxy = _add_sidecar(new, config, overrides, native)
    _record_probers(proxy, {**known_probers, **probers})
    for container in (init, proxy):
        _keep_token_mount(container, token_mounts.get(container["name"]), spec)
    _set_volumes(spec, volumes(config, overrides, inline_bundle=trust_bundle is not None))
    for container in app_containers(spec):
        _add_socket(container)

    annotations = _field(new_meta, "annotations", dict)
    annotations[SIDECAR_CONFIG_ANNOTATION] = sidecar_config_yaml(config, overrides)
    if trust_bundle is not None:
        annotations[TRUST_BUNDLE_ANNOTATION] = trust_bundle
    return Injection(new, True)


def _add_sidecar(pod: dict[str, Any], config: InjectorConfig, overrides: PodOverrides,
                 native: bool) -> dict[str, Any]:
    """Insert the sidecar: right after ``trustmesh-init`` if native, else as the first container."""
    spec = pod["spec"]
    proxy = sidecar_container(config, overrides, native, "{}")
    if native:
        inits = spec["initContainers"]
        inits.insert(_index(inits, INIT_NAME) + 1, proxy)
        return proxy
    first_app = spec["containers"][0]["name"]
    spec["containers"].insert(0, proxy)
    # `kubectl logs/exec` without -c should still pick the app, not the proxy.
    _field(_field(pod, "metadata", dict), "annotations", dict).setdefault(_DEFAULT_CONTAINER, first_app)
    return proxy


def _set_volumes(spec: dict[str, Any], wanted: list[dict[str, Any]]) -> None:
    """Add trustmesh's volumes; a same-named volume the pod brought (say, its own
    "trust bundle") is replaced, not trusted."""
    vols = _field(spec, "volumes", list)
    for volume in wanted:
        index = next((i for i, v in enumerate(vols) if v.get("name") == volume["name"]), None)
        if index is None:
            vols.append(volume)
        else:
            vols[index] = volume


def app_containers(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The pod's own containers and init containers, without trustmesh's."""
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or ():
            if container.get("name") not in (INIT_NAME, PROXY_NAME):
                yield container


def check_running_pod(pod: Mapping[str, Any], config: InjectorConfig,
                      old: Mapping[str, Any] | None = None) -> None:
    """On UPDATE of an injected pod: refuse any container (say, an ephemeral one
    from ``kubectl debug``) that would run as the proxy's uid or gid, a new
    ephemeral container that fails ``strict_app_security`` when it is on, and
    any change to the annotations the sidecar reads through the downward API."""
    check_pod_shape(pod)
    spec = pod["spec"]
    if not any(c.get("name") == INIT_NAME for c in spec.get("initContainers") or ()):
        return
    _refuse_proxy_identity(spec, config)
    if config.strict_app_security:
        # A running pod's containers cannot change their securityContext; only a
        # newly added ephemeral container (`kubectl debug`) is new here.
        known = {c.get("name") for c in ((old or {}).get("spec") or {}).get("ephemeralContainers") or ()}
        check_app_security(spec, [(kind, c) for kind, c in _kinds(spec)
                                  if kind == "ephemeral container" and c.get("name") not in known])
    if old is not None:
        before = (old.get("metadata") or {}).get("annotations") or {}
        after = (pod.get("metadata") or {}).get("annotations") or {}
        for key in (SIDECAR_CONFIG_ANNOTATION, TRUST_BUNDLE_ANNOTATION):
            if before.get(key) != after.get(key):
                raise PodRefusedError(
                    f"annotation {key} of a running pod is the sidecar's own input; it cannot be changed")


def _kinds(spec: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every app container with its kind, for messages: init, regular, ephemeral."""
    for key, kind in (("initContainers", "init container"), ("containers", "container"),
                      ("ephemeralContainers", "ephemeral container")):
        for container in spec.get(key) or ():
            if container.get("name") not in (INIT_NAME, PROXY_NAME):
                yield kind, container


def _refuse_proxy_identity(spec: Mapping[str, Any], config: InjectorConfig) -> None:
    """Refuse app (and ephemeral) containers that would run as the proxy's uid or gid (their traffic is not captured)."""
    pod_ctx = spec.get("securityContext") or {}
    # fsGroup and supplementalGroups are added to every container's groups; a
    # member of the proxy's group can run a setgid copy of a binary as that gid.
    groups = list(pod_ctx.get("supplementalGroups") or ()) + [pod_ctx.get("fsGroup")]
    if config.proxy_gid in groups:
        raise PodRefusedError(
            f"the pod's securityContext puts every container in group {config.proxy_gid}, the trustmesh "
            "proxy's gid (fsGroup or supplementalGroups): their traffic could bypass the proxy")
    for container in [*app_containers(spec), *(spec.get("ephemeralContainers") or ())]:
        _refuse_network_admin(container)
        ctx = container.get("securityContext") or {}
        uid = _first_set(ctx.get("runAsUser"), pod_ctx.get("runAsUser"))
        gid = _first_set(ctx.get("runAsGroup"), pod_ctx.get("runAsGroup"))
        name = container["name"]
        if uid == config.proxy_uid:
            raise PodRefusedError(
                f"container {name!r} runs as uid {uid}, the trustmesh proxy's uid: "
                "its traffic would bypass the proxy; choose another runAsUser")
        if gid == config.proxy_gid:
            raise PodRefusedError(
                f"container {name!r} runs as gid {gid}, the trustmesh proxy's gid: "
                "its traffic would bypass the proxy; choose another runAsGroup")


def _refuse_network_admin(container: Mapping[str, Any]) -> None:
    """Refuse a container that could rewrite the pod's redirect rules.

    Injected namespaces need the privileged Pod Security level for
    trustmesh-init, so nothing else keeps app containers from adding these.
    """
    ctx = container.get("securityContext") or {}
    added = (ctx.get("capabilities") or {}).get("add") or ()
    names = {str(c).upper().removeprefix("CAP_") for c in added}
    power = "privileged: true" if ctx.get("privileged") is True else (
        "capability " + " and ".join(sorted(names & _NETWORK_ADMIN)) if names & _NETWORK_ADMIN else "")
    if power:
        raise PodRefusedError(
            f"container {container['name']!r} has {power}: it could rewrite the pod's traffic redirect "
            "and bypass the trustmesh proxy")


def _first_set(container_value: Any, pod_value: Any) -> Any:
    """A container's security setting, or the pod's when the container leaves it unset (or null)."""
    return pod_value if container_value is None else container_value


def _rewrite_app_probes(spec: dict[str, Any], config: InjectorConfig,
                        overrides: PodOverrides) -> dict[str, Any]:
    if not overrides.rewrite_probes:
        return {}
    excluded = set(config.exclude_inbound_ports) | set(overrides.exclude_inbound_ports)
    probers: dict[str, Any] = {}
    # Plain init containers have no probes; the app's own native sidecars do.
    probed = [c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
    probed += list(spec.get("containers") or ())
    for container in probed:
        if container.get("name") not in (INIT_NAME, PROXY_NAME):
            probers.update(rewrite_probes(container, config.health_port, excluded))
    return probers


def _remove_reserved(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Take every container named like trustmesh's out of the pod; return the
    app probers a previous injection recorded on its sidecar (a reinvocation
    finds the app's probes already rewritten) and, by container name, the
    ServiceAccount token mount the API server gave those containers."""
    known: dict[str, Any] = {}
    token_mounts: dict[str, dict[str, Any]] = {}
    for key in ("initContainers", "containers"):
        kept = []
        for container in spec.get(key) or ():
            name = container.get("name")
            if name not in (INIT_NAME, PROXY_NAME):
                kept.append(container)
                continue
            if name == PROXY_NAME:
                known.update(_probers_of(container))
            mount = next((m for m in container.get("volumeMounts") or () if m.get("mountPath") == _TOKEN_PATH), None)
            if mount is not None:
                token_mounts[name] = mount
        if key in spec and spec[key] is not None:
            spec[key] = kept
    return known, token_mounts


def _keep_token_mount(container: dict[str, Any], mount: Mapping[str, Any] | None, spec: Mapping[str, Any]) -> None:
    """Give a rebuilt trustmesh container back the ServiceAccount token mount the API
    server's ServiceAccount admission added to it (on reinvocation it mounts the
    pod's ``kube-api-access-*`` volume into every container); removing it would be
    a patch on every call. Only that exact mount, of that volume, is kept."""
    if mount is None or set(mount) != {"name", "readOnly", "mountPath"} or mount["readOnly"] is not True:
        return
    name = mount["name"]
    volume = next((v for v in spec.get("volumes") or () if v.get("name") == name), None)
    if not (isinstance(name, str) and name.startswith(_TOKEN_VOLUME_PREFIX) and volume is not None
            and "projected" in volume):
        return
    _field(container, "volumeMounts", list).append(dict(mount))


def _probers_of(proxy: Mapping[str, Any]) -> dict[str, Any]:
    entry = next((e for e in proxy.get("env") or () if e.get("name") == PROBERS_ENV), None)
    try:
        known = json.loads((entry or {}).get("value") or "{}")
    except ValueError:
        return {}
    return known if isinstance(known, dict) else {}


def _record_probers(proxy: dict[str, Any], probers: dict[str, Any]) -> None:
    env = _field(proxy, "env", list)
    entry = next((e for e in env if e.get("name") == PROBERS_ENV), None)
    if entry is None:
        entry = {"name": PROBERS_ENV, "value": "{}"}
        env.append(entry)
    entry["value"] = json.dumps(probers, sort_keys=True, separators=(",", ":"))


def _add_socket(container: dict[str, Any]) -> None:
    mounts = _field(container, "volumeMounts", list)
    if not any(m.get("name") == SOCKET_VOLUME for m in mounts):
        clash = next((m for m in mounts if m.get("mountPath") == SOCKET_DIR), None)
        if clash is not None:
            raise PodRefusedError(
                f"container {container['name']!r} already mounts volume {clash.get('name')!r} "
                f"at {SOCKET_DIR}, where trustmesh mounts the Workload API socket")
        mounts.append({"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR, "readOnly": True})
    env = _field(container, "env", list)
    if not any(e.get("name") == SOCKET_ENV for e in env):
        env.append({"name": SOCKET_ENV, "value": SOCKET_URI})


def _field(obj: dict[str, Any], key: str, kind: type) -> Any:
    """``obj[key]``, created empty if it is missing or null."""
    if obj.get(key) is None:
        obj[key] = kind()
    return obj[key]


def _index(items: list[dict[str, Any]], name: str) -> int:
    return next(i for i, item in enumerate(items) if item.get("name") == name)
