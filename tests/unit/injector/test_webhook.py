"""The webhook endpoints as pure functions: real AdmissionReview shapes in, responses out."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import jsonpatch
import pytest

from injector.webhook import Webhooks
from tests.support.k8s_admission_double import admission_review
from tests.support.k8s_admission_double import pod as make_pod


@pytest.fixture
def hooks(config):
    return Webhooks(replace(config, identity_template="ns/{namespace}/app/{labels.app}/env/{labels.env}"))


def body(review) -> bytes:
    return json.dumps(review).encode()


def response_of(reply, uid):
    assert reply.status == 200
    assert reply.body["apiVersion"] == "admission.k8s.io/v1"
    assert reply.body["kind"] == "AdmissionReview"
    response = reply.body["response"]
    assert response["uid"] == uid
    return response


def test_inject_answers_with_a_base64_json_patch_that_injects(hooks, assert_valid):
    pod = make_pod()
    review = admission_review(pod)
    response = response_of(hooks.inject(body(review)), review["request"]["uid"])
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    patched = jsonpatch.apply_patch(pod, patch)
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["trustmesh-init", "trustmesh-proxy"]
    assert_valid(patched)


def test_reinvocation_on_the_patched_pod_returns_no_patch(hooks):
    pod = make_pod()
    first = hooks.inject(body(admission_review(pod))).body["response"]
    patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(first["patch"])))
    review = admission_review(patched)
    response = response_of(hooks.inject(body(review)), review["request"]["uid"])
    assert response == {"uid": review["request"]["uid"], "allowed": True}


def test_opted_out_and_host_network_pods_are_admitted_unchanged_with_a_warning(hooks):
    for pod, why in ((make_pod(labels={"trustmesh.io/inject": "false"}), "opts out"),
                     (make_pod(annotations={"trustmesh.io/inject": "false"}), 'annotation trustmesh.io/inject: "false"'),
                     (make_pod(hostNetwork=True), "hostNetwork")):
        review = admission_review(pod)
        response = response_of(hooks.inject(body(review)), review["request"]["uid"])
        assert response["allowed"] is True and "patch" not in response
        assert len(response["warnings"]) == 1 and why in response["warnings"][0]


def test_update_is_not_mutated(hooks):
    review = admission_review(make_pod(), operation="UPDATE", old=make_pod())
    response = response_of(hooks.inject(body(review)), review["request"]["uid"])
    assert response["allowed"] is True and "patch" not in response


def test_bad_annotation_denies_with_the_annotation_named(hooks):
    review = admission_review(make_pod(annotations={"trustmesh.io/exclude-outbound-ports": "http"}))
    response = response_of(hooks.inject(body(review)), review["request"]["uid"])
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert "trustmesh.io/exclude-outbound-ports" in response["status"]["message"]
    assert "patch" not in response


def test_uid_1337_app_is_denied(hooks):
    review = admission_review(make_pod(securityContext={"runAsUser": 1337}))
    response = response_of(hooks.inject(body(review)), review["request"]["uid"])
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert "uid 1337" in response["status"]["message"]


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (b"\xff\xfe", "not JSON"),
    (json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1",
                 "request": {"uid": "u"}}).encode(), "v1beta1"),
    (json.dumps({"kind": "Pod", "apiVersion": "admission.k8s.io/v1"}).encode(), "AdmissionReview"),
    (json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}).encode(), "no request"),
])
def test_unanswerable_reviews_get_http_400(hooks, raw, message):
    for endpoint in (hooks.inject, hooks.validate, hooks.require_injection):
        reply = endpoint(raw)
        assert reply.status == 400
        assert message in reply.body["message"]


def test_review_without_uid_gets_http_400(hooks):
    review = admission_review(make_pod())
    del review["request"]["uid"]
    reply = hooks.inject(body(review))
    assert reply.status == 400 and "uid" in reply.body["message"]


def test_non_pod_object_is_denied(hooks):
    review = admission_review({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                               "spec": {}})
    review["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    response = response_of(hooks.inject(body(review)), review["request"]["uid"])
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert "apps/v1 Deployment" in response["status"]["message"]


@pytest.mark.parametrize("obj, message", [
    ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}, "spec"),
    ({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": "web"}}, "containers"),
    ("a string", "request.object"),
    (None, "request.object is missing"),
])
def test_malformed_pods_are_denied_never_patched(hooks, obj, message):
    review = admission_review(obj)
    response = response_of(hooks.inject(body(review)), review["request"]["uid"])
    assert response["allowed"] is False
    assert message in response["status"]["message"]
    assert "patch" not in response


def test_unexpected_errors_fail_closed(hooks, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("injector.webhook.inject_pod", explode)
    review = admission_review(make_pod())
    response = response_of(hooks.inject(body(review)), review["request"]["uid"])
    assert response["allowed"] is False and response["status"]["code"] == 500
    assert "boom" not in response["status"]["message"]


def test_validate_admits_a_pod_whose_identity_renders(hooks):
    review = admission_review(make_pod(labels={"app": "web", "env": "prod"}))
    response = response_of(hooks.validate(body(review)), review["request"]["uid"])
    assert response == {"uid": review["request"]["uid"], "allowed": True}


def test_validate_names_the_missing_label(hooks):
    review = admission_review(make_pod(labels={"app": "web"}))
    response = response_of(hooks.validate(body(review)), review["request"]["uid"])
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert "labels.env" in response["status"]["message"]
    assert "'env'" in response["status"]["message"]


@pytest.mark.parametrize("value", ["", "..", "a/b", "a b", "é"])
def test_validate_names_a_label_that_is_not_a_path_segment(hooks, value):
    review = admission_review(make_pod(labels={"app": value, "env": "prod"}))
    response = response_of(hooks.validate(body(review)), review["request"]["uid"])
    assert response["allowed"] is False
    assert "labels.app" in response["status"]["message"]


def test_validate_checks_updates_too(hooks):
    review = admission_review(make_pod(labels={"env": "prod"}), operation="UPDATE",
                              old=make_pod(labels={"app": "web", "env": "prod"}))
    response = response_of(hooks.validate(body(review)), review["request"]["uid"])
    assert response["allowed"] is False and "labels.app" in response["status"]["message"]


def test_validate_admits_deletes(hooks):
    review = admission_review(None, operation="DELETE", old=make_pod(labels={}))
    response = response_of(hooks.validate(body(review)), review["request"]["uid"])
    assert response["allowed"] is True


def test_require_injection_refuses_an_opted_out_pod_and_admits_an_injected_one(hooks):
    opted_out = make_pod(labels={"app": "web", "trustmesh.io/inject": "false"})
    review = admission_review(opted_out)
    response = response_of(hooks.require_injection(body(review)), review["request"]["uid"])
    assert response["allowed"] is False
    assert "trustmesh.io/inject=false" in response["status"]["message"]
    by_annotation = admission_review(make_pod(annotations={"trustmesh.io/inject": "false"}))
    response = response_of(hooks.require_injection(body(by_annotation)), by_annotation["request"]["uid"])
    assert response["allowed"] is False
    assert 'opts out with the annotation trustmesh.io/inject: "false", which this namespace forbids' in response["status"]["message"]

    pod = make_pod()
    patch = json.loads(base64.b64decode(hooks.inject(body(admission_review(pod))).body["response"]["patch"]))
    review = admission_review(jsonpatch.apply_patch(pod, patch))
    assert response_of(hooks.require_injection(body(review)), review["request"]["uid"])["allowed"] is True



def test_require_injection_refuses_a_host_network_pod_unless_an_admin_exempted_the_namespace(hooks):
    # /inject skips a hostNetwork pod (it cannot be captured); in a required
    # namespace that would be a way out of the mesh for any pod creator.
    review = admission_review(make_pod(hostNetwork=True))
    response = response_of(hooks.require_injection(body(review)), review["request"]["uid"])
    assert response["allowed"] is False and response["status"]["code"] == 403
    message = response["status"]["message"]
    assert "hostNetwork" in message and "require_injection.host_network_namespaces" in message

    exempt = Webhooks(replace(hooks.config, host_network_namespaces=("prod",)))
    response = response_of(exempt.require_injection(body(review)), review["request"]["uid"])
    assert response["allowed"] is True
    # The exemption is for hostNetwork pods only: an opted-out pod there is still refused.
    opted_out = admission_review(make_pod(labels={"app": "web", "trustmesh.io/inject": "false"}))
    assert response_of(exempt.require_injection(body(opted_out)), opted_out["request"]["uid"])["allowed"] is False
    # And only for the namespaces listed.
    other = admission_review(make_pod(namespace="staging", hostNetwork=True), namespace="staging")
    assert response_of(exempt.require_injection(body(other)), other["request"]["uid"])["allowed"] is False


def test_pod_from_a_replicaset_with_generate_name_is_injected(hooks, assert_valid):
    pod = make_pod(labels={"app": "web", "env": "prod"})
    meta = pod["metadata"]
    del meta["name"]
    meta["generateName"] = "web-7d4b9c-"
    meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
                                "uid": "5a0b5f0e-6d0f-4d7e-9a4f-0a6c7e1f2b3c", "controller": True,
                                "blockOwnerDeletion": True}]
    review = admission_review(pod)
    assert review["request"]["name"] == ""
    response = response_of(hooks.inject(body(review)), review["request"]["uid"])
    patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
    assert_valid(patched)
    review = admission_review(patched)
    assert response_of(hooks.validate(body(review)), review["request"]["uid"])["allowed"] is True
