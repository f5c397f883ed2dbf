"""Security review: pods that try to evade injection or the traffic capture.

Each test is an attack a pod author could try against the mutating webhook
(``/inject``) or the require-injection webhook, with real AdmissionReview
shapes from the in-process API server double (``tests.support.k8s_admission_double``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import jsonpatch
import pytest

from injector.errors import PodRefusedError
from injector.inject import inject_pod
from injector.webhook import Webhooks
from tests.support.k8s_admission_double import admission_review
from tests.support.k8s_admission_double import pod as make_pod

FAKE = {"name": "", "image": "attacker.example/no-capture:1", "command": ["sleep", "infinity"]}


def _injected_by_webhook(hooks: Webhooks, pod: dict) -> dict:
    review = admission_review(pod)
    response = hooks.inject(json.dumps(review).encode()).body["response"]
    assert response["allowed"] is True, response
    return jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))


def _app(name: str = "web") -> dict:
    return {"name": name, "image": "registry.example/web:1.4"}


@pytest.mark.parametrize("native", [True, False])
def test_a_user_container_named_trustmesh_init_does_not_replace_the_capture(config, native, by_name):
    config = replace(config, native_sidecar=native)
    fake_init = {**FAKE, "name": "trustmesh-init"}
    pod = make_pod(containers=[_app()], initContainers=[_app("migrate"), fake_init])
    patched = _injected_by_webhook(Webhooks(config), pod)
    inits = patched["spec"]["initContainers"]
    init = by_name(inits, "trustmesh-init")
    assert [c["name"] for c in inits].count("trustmesh-init") == 1
    assert init["image"] == config.image and init["args"][:2] == ["redirect", "apply"]
    # The capture is installed before any of the user's init containers runs.
    assert inits[0]["name"] == "trustmesh-init"


@pytest.mark.parametrize("native", [True, False])
def test_a_user_container_named_trustmesh_proxy_is_not_taken_for_the_sidecar(config, native):
    config = replace(config, native_sidecar=native)
    fake_proxy = {**FAKE, "name": "trustmesh-proxy",
                  "securityContext": {"runAsUser": config.proxy_uid, "runAsGroup": config.proxy_gid}}
    pod = make_pod(containers=[_app(), fake_proxy])
    patched = _injected_by_webhook(Webhooks(config), pod)
    spec = patched["spec"]
    proxies = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "trustmesh-proxy"]
    assert len(proxies) == 1
    assert proxies[0]["image"] == config.image
    assert proxies[0]["args"][:2] == ["sidecar", "run"]


def test_a_pod_whose_only_container_is_named_trustmesh_proxy_is_refused(config):
    pod = make_pod(containers=[{**FAKE, "name": "trustmesh-proxy"}])
    with pytest.raises(PodRefusedError, match="trustmesh-proxy"):
        inject_pod(pod, replace(config, native_sidecar=False))


def test_reinjecting_an_injected_pod_still_changes_nothing(config, injected):
    for native in (True, False):
        cfg = replace(config, native_sidecar=native)
        once = injected(make_pod(initContainers=[_app("migrate")]), cfg)
        assert injected(once, cfg) == once


@pytest.mark.parametrize("context", [
    {"supplementalGroups": [1000, 1337]},
    {"fsGroup": 1337},
])
def test_membership_of_the_proxy_group_through_the_pod_security_context_is_refused(config, context):
    # A process in group 1337 can make a setgid-1337 copy of any binary and run
    # it: its sockets then carry gid 1337, which the capture lets through.
    pod = make_pod(securityContext=context)
    with pytest.raises(PodRefusedError, match="1337"):
        inject_pod(pod, config)


def test_a_container_null_run_as_user_does_not_hide_the_pod_level_proxy_uid(config):
    app = {**_app(), "securityContext": {"runAsUser": None}}
    pod = make_pod(containers=[app], securityContext={"runAsUser": config.proxy_uid})
    with pytest.raises(PodRefusedError, match="uid 1337"):
        inject_pod(pod, config)


def _require(hooks: Webhooks, pod: dict) -> dict:
    review = admission_review(pod)
    return hooks.require_injection(json.dumps(review).encode()).body["response"]


def test_require_injection_is_not_fooled_by_containers_that_only_borrow_the_names(config):
    hooks = Webhooks(config)
    # Opted out, so the mutating webhook left it alone; the names alone must not pass.
    forged = make_pod(
        labels={"app": "web", "trustmesh.io/inject": "false"},
        containers=[_app()],
        initContainers=[{**FAKE, "name": "trustmesh-init"}, {**FAKE, "name": "trustmesh-proxy",
                                                             "restartPolicy": "Always"}],
    )
    response = _require(hooks, forged)
    assert response["allowed"] is False
    # Without the opt-out label too: a proxy that is not trustmesh's is not the sidecar.
    forged["metadata"]["labels"] = {"app": "web"}
    response = _require(hooks, forged)
    assert response["allowed"] is False
    assert "trustmesh-proxy" in response["status"]["message"] or "trustmesh-init" in response["status"]["message"]


def test_require_injection_admits_what_the_injector_produced(config):
    hooks = Webhooks(config)
    for native in (True, False):
        cfg = replace(config, native_sidecar=native)
        pod = _injected_by_webhook(Webhooks(cfg), make_pod(annotations={"trustmesh.io/exclude-inbound-ports": "9090"}))
        assert _require(hooks, pod)["allowed"] is True


@pytest.mark.parametrize("cidrs, family", [
    ("0.0.0.0/0", "IPv4"),
    ("0.0.0.0/1,128.0.0.0/1", "IPv4"),
    ("10.0.0.0/8,::/0", "IPv6"),
    ("::/1,8000::/1", "IPv6"),
])
def test_require_injection_refuses_an_annotation_that_sends_all_outbound_traffic_around(config, cidrs, family):
    # The sidecar would run, but capture nothing outbound: a way out of a required namespace.
    hooks = Webhooks(config)
    pod = _injected_by_webhook(hooks, make_pod(annotations={"trustmesh.io/exclude-outbound-cidrs": cidrs}))
    response = _require(hooks, pod)
    assert response["allowed"] is False
    assert f"every {family} destination" in response["status"]["message"]
    # Where injection is only enabled, the pod's author may choose that.
    assert _injected_by_webhook(hooks, make_pod(annotations={"trustmesh.io/exclude-outbound-cidrs": cidrs}))


def test_require_injection_wants_trustmesh_init_first(config):
    # A later mutating webhook that puts an init container before trustmesh-init
    # lets it run before the capture is in place.
    hooks = Webhooks(config)
    pod = _injected_by_webhook(hooks, make_pod())
    pod["spec"]["initContainers"].insert(0, {**FAKE, "name": "early"})
    response = _require(hooks, pod)
    assert response["allowed"] is False
    assert "'trustmesh-init' must be the first init container" in response["status"]["message"]


def test_a_pod_made_host_network_after_injection_is_refused_on_reinvocation(config):
    # Another mutating webhook sets hostNetwork after ours; reinvocation must not
    # admit a pod whose trustmesh-init would rewrite the node's own iptables.
    hooks = Webhooks(config)
    injected = _injected_by_webhook(hooks, make_pod())
    injected["spec"]["hostNetwork"] = True
    review = admission_review(injected)
    response = hooks.inject(json.dumps(review).encode()).body["response"]
    assert response["allowed"] is False
    assert "hostNetwork" in response["status"]["message"]


def _update(pod: dict, *, subresource: str = "") -> bytes:
    review = admission_review(pod, operation="UPDATE", old=pod)
    if subresource:
        review["request"]["subResource"] = subresource
    return json.dumps(review).encode()


def test_an_ephemeral_container_as_the_proxy_uid_is_refused_in_an_injected_pod(config):
    # `kubectl debug --profile=... ` on a running injected pod, with runAsUser 1337:
    # its traffic would skip the capture. (Needs the webhook rule for
    # pods/ephemeralcontainers UPDATE, see docs/injector.md.)
    hooks = Webhooks(config)
    pod = _injected_by_webhook(hooks, make_pod())
    debug = {"name": "debugger", "image": "busybox", "targetContainerName": "web",
             "securityContext": {"runAsUser": config.proxy_uid}}
    pod["spec"]["ephemeralContainers"] = [debug]
    for endpoint in (hooks.inject, hooks.require_injection):
        response = endpoint(_update(pod, subresource="ephemeralcontainers")).body["response"]
        assert response["allowed"] is False, endpoint
        assert "debugger" in response["status"]["message"]
    debug["securityContext"] = {"runAsUser": 1000}
    for endpoint in (hooks.inject, hooks.require_injection):
        assert endpoint(_update(pod, subresource="ephemeralcontainers")).body["response"]["allowed"] is True


def test_require_injection_refuses_an_update_that_swaps_the_proxy_image(config):
    hooks = Webhooks(config)
    pod = _injected_by_webhook(hooks, make_pod())
    assert hooks.require_injection(_update(pod)).body["response"]["allowed"] is True
    next(c for c in pod["spec"]["initContainers"] if c["name"] == "trustmesh-proxy")["image"] = FAKE["image"]
    assert hooks.require_injection(_update(pod)).body["response"]["allowed"] is False


@pytest.mark.parametrize("context", [
    {"privileged": True},
    {"capabilities": {"add": ["NET_ADMIN"]}},
    {"capabilities": {"add": ["CAP_NET_ADMIN"]}},
    {"capabilities": {"add": ["all"]}},
])
@pytest.mark.parametrize("where", ["containers", "initContainers"])
def test_an_app_container_that_could_rewrite_the_redirect_rules_is_refused(config, context, where):
    # Injected namespaces need the privileged Pod Security level (trustmesh-init
    # adds NET_ADMIN), so nothing else stops an app container that could flush
    # the pod's iptables/nftables rules and take its traffic past the proxy.
    app = {**_app("tool"), "securityContext": context}
    pod = make_pod(**({"initContainers": [app]} if where == "initContainers" else
                      {"containers": [_app(), app]}))
    with pytest.raises(PodRefusedError, match="tool"):
        inject_pod(pod, config)


def test_an_app_container_with_ordinary_capabilities_is_injected(config, injected):
    app = {**_app(), "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                                          "privileged": False}}
    injected(make_pod(containers=[app]), config)


@pytest.mark.parametrize("annotation", ["trustmesh.io/trust-bundle", "trustmesh.io/sidecar-config"])
def test_an_update_may_not_rewrite_the_sidecars_config_or_trust_bundle(config, annotation):
    # Both reach the running sidecar through a downwardAPI volume, which the
    # kubelet refreshes: a pod patch would otherwise hand the proxy a foreign
    # CA to trust, or a config of the patcher's choosing.
    hooks = Webhooks(config, trust_bundle=lambda: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    old = _injected_by_webhook(hooks, make_pod())
    relabelled = json.loads(json.dumps(old))
    relabelled["metadata"]["labels"]["tier"] = "web"
    tampered = json.loads(json.dumps(old))
    tampered["metadata"]["annotations"][annotation] = "attacker's choice"
    for endpoint in (hooks.inject, hooks.require_injection):
        for new, allowed in ((relabelled, True), (tampered, False)):
            review = admission_review(new, operation="UPDATE", old=old)
            response = endpoint(json.dumps(review).encode()).body["response"]
            assert response["allowed"] is allowed, (endpoint, response)
    removed = json.loads(json.dumps(old))
    del removed["metadata"]["annotations"][annotation]
    review = admission_review(removed, operation="UPDATE", old=old)
    assert hooks.inject(json.dumps(review).encode()).body["response"]["allowed"] is False


def test_a_deeply_nested_body_is_answered_400_not_raised(config):
    hooks = Webhooks(config)
    for endpoint in (hooks.inject, hooks.validate, hooks.require_injection):
        reply = endpoint(b"[" * 200_000)
        assert reply.status == 400 and "JSON" in reply.body["message"]
