"""TokenReview/Pod conversion and local-mode tokens (join, static)."""

from __future__ import annotations

import threading

import pytest
import yaml

from ca.service.auth import Authenticator, bearer_token
from ca.service.errors import ConfigError, DeniedError, UnauthenticatedError
from ca.service.local_auth import JoinTokens, StaticTokens, token_id
from ca.service.wire import audiences_from_request, pod_facts_from_pod, reviewed_token_from_review
from sdk.spiffeid import SpiffeId, TrustDomain

TD = TrustDomain.parse("example.org")
P = "authentication.kubernetes.io/"


def _review(**status):
    base = {
        "authenticated": True,
        "audiences": ["trustmesh-ca"],
        "user": {
            "username": "system:serviceaccount:prod:web",
            "extra": {P + "pod-name": ["web-0"], P + "pod-uid": ["u-1"], P + "credential-id": ["JTI=j"]},
        },
    }
    base.update(status)
    return {"kind": "TokenReview", "status": base}


def test_review_to_domain_takes_pod_from_extra():
    got = reviewed_token_from_review(_review(), "trustmesh-ca", 99.0)
    assert (got.namespace, got.service_account, got.pod_name, got.pod_uid) == ("prod", "web", "web-0", "u-1")
    assert got.expires_at == 99.0 and got.credential_id == "JTI=j"


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        ({"authenticated": False, "error": "boom"}, UnauthenticatedError, "boom"),
        ({"audiences": ["other"]}, UnauthenticatedError, "audience"),
        ({"user": {"username": "alice"}}, DeniedError, "not a ServiceAccount"),
        ({"user": {"username": "system:serviceaccount:prod"}}, UnauthenticatedError, "malformed"),
        ({"user": {"username": "system:serviceaccount:prod:web", "extra": {}}}, DeniedError, "not bound to a pod"),
        (
            {"user": {"username": "system:serviceaccount:prod:web",
                      "extra": {P + "pod-name": ["a", "b"], P + "pod-uid": ["u"]}}},
            DeniedError, "not bound to a pod",
        ),
    ],
)
def test_review_refusals(status, error, message):
    with pytest.raises(error, match=message):
        reviewed_token_from_review(_review(**status), "trustmesh-ca", 1.0)


def test_pod_facts():
    facts = pod_facts_from_pod(
        {"metadata": {"name": "w", "namespace": "n", "uid": "u", "labels": {"app": "x"},
                      "deletionTimestamp": "2026-01-01T00:00:00Z"},
         "spec": {"serviceAccountName": "sa"}}
    )
    assert facts.terminating and facts.labels == {"app": "x"} and facts.service_account == "sa"
    assert pod_facts_from_pod({"metadata": {}, "spec": {}}).service_account == "default"


def test_audiences_checked():
    assert audiences_from_request(["a", "b"], 8) == ("a", "b")
    for bad, message in (([], "at least one"), (["a"] * 9, "too many"), (["a", "a"], "duplicate"), ([""], "empty")):
        with pytest.raises(ValueError, match=message):
            audiences_from_request(bad, 8)


def test_bearer_token_parsing():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer abc") == "abc"
    for bad in (None, "", "Basic abc", "Bearer", "Bearer a b", "Bearer " + "x" * 20000, "Bearer \u00e9"):
        with pytest.raises(UnauthenticatedError):
            bearer_token(bad)


class _Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def test_join_token_single_use_even_from_threads():
    tokens = JoinTokens(TD)
    token = tokens.create(SpiffeId.parse("spiffe://example.org/a"))
    wins, losses = [], []

    def use():
        try:
            wins.append(tokens.consume(token))
        except UnauthenticatedError:
            losses.append(1)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(wins) == 1 and len(losses) == 7
    assert wins[0].token_id == token_id(token) and token not in repr(wins[0])


def test_join_token_expiry_and_trust_domain():
    clock = _Clock()
    tokens = JoinTokens(TD, clock=clock)
    token = tokens.create(SpiffeId.parse("spiffe://example.org/a"), ttl=10)
    clock.now += 10
    with pytest.raises(UnauthenticatedError, match="expired"):
        tokens.consume(token)
    with pytest.raises(ValueError, match="not in trust domain"):
        tokens.create(SpiffeId.parse("spiffe://other.org/a"))


def test_join_token_file_forgets_used_tokens(tmp_path):
    path = tmp_path / "join.yaml"
    path.write_text(yaml.safe_dump([{"token": "jt-one", "spiffe_id": "spiffe://example.org/a", "expires_at": 4e9}]))
    tokens = JoinTokens(TD, path=str(path))
    assert tokens.consume("jt-one").spiffe_id == SpiffeId.parse("spiffe://example.org/a")
    assert yaml.safe_load(path.read_text()) == []
    assert len(JoinTokens(TD, path=str(path))) == 0  # a restart does not revive it


def test_join_token_file_is_shared_with_a_writer(tmp_path):
    path = tmp_path / "join.yaml"
    service = JoinTokens(TD, path=str(path))
    operator = JoinTokens(TD, path=str(path))  # e.g. `trustmesh ca join-token`
    token = operator.create(SpiffeId.parse("spiffe://example.org/b"))
    assert token not in path.read_text()  # hashes only
    assert service.knows(token)
    assert str(service.consume(token).spiffe_id) == "spiffe://example.org/b"
    with pytest.raises(UnauthenticatedError):
        operator.consume(token)


def test_join_token_file_errors(tmp_path):
    path = tmp_path / "join.yaml"
    path.write_text(yaml.safe_dump([{"token": "jt", "spiffe_id": "spiffe://other.org/a", "expires_at": 1}]))
    with pytest.raises(ConfigError) as info:
        JoinTokens(TD, path=str(path))
    assert info.value.field == "authentication.join_tokens_file[0].spiffe_id"


async def test_static_tokens_and_authenticator_order():
    static = StaticTokens(TD, {"s" * 20: "spiffe://example.org/host/a"})
    join = JoinTokens(TD)
    jt = join.create(SpiffeId.parse("spiffe://example.org/b"))
    auth = Authenticator(static_tokens=static, join_tokens=join)
    assert str((await auth.authenticate("Bearer " + "s" * 20)).spiffe_id) == "spiffe://example.org/host/a"
    assert str((await auth.authenticate("Bearer " + "s" * 20)).spiffe_id) == "spiffe://example.org/host/a"
    assert (await auth.authenticate(f"Bearer {jt}")).kind == "join-token"
    with pytest.raises(UnauthenticatedError, match="unknown token"):
        await auth.authenticate(f"Bearer {jt}")
    # start(): the same precedence, answered without waiting for local tokens
    jt2 = join.create(SpiffeId.parse("spiffe://example.org/c"))
    assert str(auth.start("Bearer " + "s" * 20).spiffe_id) == "spiffe://example.org/host/a"
    assert str(auth.start(f"Bearer {jt2}").spiffe_id) == "spiffe://example.org/c"
    with pytest.raises(UnauthenticatedError, match="unknown token"):
        auth.start(f"Bearer {jt2}")
    with pytest.raises(ConfigError, match="at least 16"):
        StaticTokens(TD, {"short": "spiffe://example.org/x"})
