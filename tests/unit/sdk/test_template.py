"""Identity templates render SPIFFE IDs from pod attributes, or name what is wrong."""

from __future__ import annotations

import pytest

from sdk import DEFAULT_TEMPLATE, IdentityTemplate, SpiffeId, TemplateError, TrustDomain

TD = TrustDomain.parse("example.org")
LABELS_TEMPLATE = "cluster/{cluster}/app/{labels.app}/env/{labels.env}"


def _render(template, **overrides):
    args = dict(namespace="prod", service_account="web", cluster="c1",
                labels={"app": "web", "env": "prod"}, pod_name="web-0")
    args.update(overrides)
    return IdentityTemplate.parse(template).render(TD, **args)


def test_default_template_renders_namespace_and_service_account():
    sid = _render(DEFAULT_TEMPLATE)
    assert sid == SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")
    assert sid.attributes() == {"ns": "prod", "sa": "web"}


def test_label_template_and_required_labels():
    template = IdentityTemplate.parse(LABELS_TEMPLATE)
    assert template.required_labels == ("app", "env")
    sid = _render(LABELS_TEMPLATE)
    assert str(sid) == "spiffe://example.org/cluster/c1/app/web/env/prod"
    assert sid.attributes() == {"cluster": "c1", "app": "web", "env": "prod"}


def test_prefixed_label_keys_and_mixed_segments():
    template = IdentityTemplate.parse("/app/{labels.app.kubernetes.io/name}/pod/p-{pod_name}")
    assert template.required_labels == ("app.kubernetes.io/name",)
    sid = template.render(TD, namespace="n", service_account="s", pod_name="web-0",
                          labels={"app.kubernetes.io/name": "web"})
    assert str(sid) == "spiffe://example.org/app/web/pod/p-web-0"


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (dict(labels={"app": "web"}), "labels.env", "no label 'env'"),
        (dict(labels={"app": "", "env": "x"}), "labels.app", "labels.app is empty"),
        (dict(labels={"app": "a/b", "env": "x"}), "labels.app", "not a valid SPIFFE ID path segment"),
        (dict(labels={"app": "web", "env": "pr od"}), "labels.env", "not a valid SPIFFE ID path segment"),
        (dict(cluster=""), "cluster", "cluster is empty"),
        (dict(labels={"app": "..", "env": "x"}), "labels.app", "renders the path segment '..'"),
    ],
)
def test_bad_values_name_their_field(overrides, field, message):
    with pytest.raises(TemplateError, match=message) as info:
        _render(LABELS_TEMPLATE, **overrides)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("text", "message", "field"),
    [
        ("", "is empty", ""),
        ("ns//{namespace}", "empty segment", ""),
        ("ns/{namespace}/", "trailing slash", ""),
        ("ns/{namespaces}", "unknown field {namespaces}", "namespaces"),
        ("ns/{labels.-bad}", "not a valid label key", "labels.-bad"),
        ("ns/{namespace", "unbalanced brace", ""),
        ("ns}/x", "unbalanced brace", ""),
        ("n s/{namespace}", "may only use letters", ""),
        ("../{namespace}", "dot segment", ""),
    ],
)
def test_bad_templates_are_refused_when_parsed(text, message, field):
    with pytest.raises(TemplateError, match=message) as info:
        IdentityTemplate.parse(text)
    assert info.value.field == field


def test_rendered_id_too_long_is_a_template_error():
    with pytest.raises(TemplateError, match="longer than 2048"):
        _render("x/{labels.a}/{labels.b}/{labels.c}/{labels.d}",
                labels={k: "v" * 600 for k in "abcd"})
