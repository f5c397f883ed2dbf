"""strict_app_security: app containers that could leave the capture are refused.

A root container can setuid/setgid to the proxy's 1337 (whose traffic the
redirect exempts) or open raw sockets; a non-root one can exec a set-user-ID
file owned by 1337 unless privilege escalation is off. Pods are real API
shapes (``tests.support.k8s_admission_double``); injected pods are checked
against the Kubernetes schema by the ``injected`` fixture.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import jsonpatch
import pytest

from injector.config import parse_config
from injector.errors import PodRefusedError, PodSpecError
from injector.inject import inject_pod
from injector.webhook import Webhooks
from tests.support.k8s_admission_double import admission_review
from tests.support.k8s_admission_double import pod as make_pod

# What the Kubernetes "restricted" Pod Security level asks of a container.
RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _container(name: str = "web", **security) -> dict:
    return {"name": name, "image": "registry.example/web:1.4", "securityContext": security}


def _strict(config):
    return replace(config, strict_app_security=True)


def _refusal(pod: dict, config) -> str:
    with pytest.raises(PodRefusedError) as info:
        inject_pod(pod, _strict(config))
    return str(info.value)


def test_off_by_default_a_root_container_is_still_injected(config, injected):
    assert config.strict_app_security is False
    patched = injected(make_pod(), config)  # no securityContext at all: may run as root
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["trustmesh-init", "trustmesh-proxy"]


def test_a_container_without_any_security_context_is_refused_naming_it(config):
    message = _refusal(make_pod(), config)
    assert message.startswith("container 'web' may run as root (no runAsNonRoot: true and no non-zero runAsUser")
    assert "strict_app_security" in message


def test_a_restricted_pod_is_injected_and_still_valid(config, injected):
    pod = make_pod(containers=[_container(**RESTRICTED)])
    patched = injected(pod, _strict(config))
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["trustmesh-init", "trustmesh-proxy"]


def test_pod_level_identity_with_container_level_capabilities_is_accepted(config, injected):
    pod = make_pod(
        containers=[_container(allowPrivilegeEscalation=False, capabilities={"drop": ["SETUID", "SETGID", "NET_RAW"]})],
        securityContext={"runAsUser": 1000, "runAsGroup": 1000},
    )
    injected(pod, _strict(config))
    pod["spec"]["securityContext"] = {"runAsNonRoot": True}
    injected(pod, _strict(config))


@pytest.mark.parametrize(
    ("container_ctx", "pod_ctx", "problem"),
    [
        ({"runAsUser": 0}, {"runAsNonRoot": True}, "runs as uid 0 (root)"),
        ({}, {"runAsUser": 0, "runAsNonRoot": True}, "runs as uid 0 (root)"),
        ({"runAsNonRoot": False}, {"runAsNonRoot": True}, "may run as root"),
        ({}, {"runAsGroup": 1000}, "may run as root"),
    ],
)
def test_containers_that_may_run_as_root_are_refused(config, container_ctx, pod_ctx, problem):
    ctx = {**{k: v for k, v in RESTRICTED.items() if k != "runAsNonRoot"}, **container_ctx}
    pod = make_pod(containers=[_container(**ctx)], securityContext=pod_ctx)
    assert f"container 'web' {problem}" in _refusal(pod, config)


def test_a_container_uid_overrides_a_root_pod_uid(config, injected):
    ctx = {**RESTRICTED, "runAsUser": 1000}
    del ctx["runAsNonRoot"]
    pod = make_pod(containers=[_container(**ctx)], securityContext={"runAsUser": 0})
    injected(pod, _strict(config))


@pytest.mark.parametrize(
    ("capabilities", "problem"),
    [
        (None, "does not drop capability SETGID, SETUID, NET_RAW"),
        ({"drop": ["NET_RAW"]}, "does not drop capability SETGID, SETUID"),
        ({"drop": ["SETUID", "SETGID"]}, "does not drop capability NET_RAW"),
        ({"drop": ["ALL"], "add": ["SETUID"]}, "adds capability SETUID"),
        ({"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "cap_net_raw"]}, "adds capability NET_RAW"),
        ({"drop": ["ALL"], "add": ["CAP_SETGID"]}, "adds capability SETGID"),
    ],
)
def test_containers_keeping_escape_capabilities_are_refused(config, capabilities, problem):
    ctx = {**RESTRICTED, "capabilities": capabilities}
    assert f"container 'web' {problem}" in _refusal(make_pod(containers=[_container(**ctx)]), config)


def test_capability_names_are_read_like_the_runtime_does(config, injected):
    ctx = {**RESTRICTED, "capabilities": {"drop": ["cap_setuid", "CAP_SETGID", "net_raw"], "add": ["NET_BIND_SERVICE"]}}
    injected(make_pod(containers=[_container(**ctx)]), _strict(config))


def test_privilege_escalation_must_be_off(config):
    ctx = {k: v for k, v in RESTRICTED.items() if k != "allowPrivilegeEscalation"}
    message = _refusal(make_pod(containers=[_container(**ctx)]), config)
    assert "container 'web' does not set allowPrivilegeEscalation: false" in message


def test_app_init_containers_and_native_sidecars_are_checked_too(config):
    migrate = _container("migrate")  # a plain init container that may run as root
    pod = make_pod(containers=[_container(**RESTRICTED)], initContainers=[migrate])
    assert "init container 'migrate' may run as root" in _refusal(pod, config)
    logs = {**_container("log-shipper", **{**RESTRICTED, "allowPrivilegeEscalation": True}), "restartPolicy": "Always"}
    pod = make_pod(containers=[_container(**RESTRICTED)], initContainers=[logs])
    assert "init container 'log-shipper' does not set allowPrivilegeEscalation: false" in _refusal(pod, config)


def test_malformed_security_fields_are_precise_errors(config):
    pod = make_pod(containers=[_container(**{**RESTRICTED, "runAsNonRoot": "true"})])
    with pytest.raises(PodSpecError, match=r"spec\.containers\[0\]\.securityContext\.runAsNonRoot is not true or false"):
        inject_pod(pod, _strict(config))
    pod = make_pod(containers=[_container(**{**RESTRICTED, "capabilities": {"drop": "ALL"}})])
    with pytest.raises(PodSpecError, match=r"spec\.containers\[0\]\.securityContext\.capabilities\.drop is not a list"):
        inject_pod(pod, _strict(config))


def _review(hooks: Webhooks, pod: dict, **kwargs) -> dict:
    return hooks.inject(json.dumps(admission_review(pod, **kwargs)).encode()).body["response"]


def test_the_webhook_refuses_with_403_naming_the_container(config):
    hooks = Webhooks(parse_config("trust_domain: example.org\nstrict_app_security: true\n"))
    response = _review(hooks, make_pod())
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert response["status"]["message"].startswith("trustmesh: container 'web' may run as root")
    assert _review(hooks, make_pod(containers=[_container(**RESTRICTED)]))["allowed"] is True


def test_a_new_ephemeral_container_is_checked_on_update(config):
    hooks = Webhooks(_strict(config))
    created = make_pod(containers=[_container(**RESTRICTED)])
    response = _review(hooks, created)
    running = jsonpatch.apply_patch(created, json.loads(base64.b64decode(response["patch"])))
    debugged = json.loads(json.dumps(running))
    debugged["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox", "targetContainerName": "web"}]
    for endpoint in (hooks.inject, hooks.require_injection):
        review = admission_review(debugged, operation="UPDATE", old=running)
        review["request"]["subResource"] = "ephemeralcontainers"
        answer = endpoint(json.dumps(review).encode()).body["response"]
        assert answer["allowed"] is False
        assert "ephemeral container 'debugger' may run as root" in answer["status"]["message"]
    debugged["spec"]["ephemeralContainers"][0]["securityContext"] = RESTRICTED
    assert _review(hooks, debugged, operation="UPDATE", old=running)["allowed"] is True


def test_an_update_of_a_pod_admitted_before_strict_mode_is_not_refused(config):
    # Turning strict mode on must not block label changes on pods already running.
    running = _review_patched(Webhooks(config), make_pod())
    relabelled = json.loads(json.dumps(running))
    relabelled["metadata"]["labels"]["tier"] = "frontend"
    assert _review(Webhooks(_strict(config)), relabelled, operation="UPDATE", old=running)["allowed"] is True


def _review_patched(hooks: Webhooks, pod: dict) -> dict:
    response = _review(hooks, pod)
    return jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
