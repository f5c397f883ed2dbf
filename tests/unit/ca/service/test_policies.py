"""Sans-I/O pieces: CSR policy, rate limiting, allow/deny lists, token cache, error mapping."""

from __future__ import annotations

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ca.service.config import KubernetesAuthConfig
from ca.service.csr import public_key_from_csr
from ca.service.errors import (
    BadRequestError,
    DeniedError,
    RateLimitedError,
    UnauthenticatedError,
    UpstreamUnavailableError,
)
from ca.service.identity import ReviewedToken
from ca.service.k8s_auth import TokenCache, check_account_policy
from ca.service.ratelimit import RateLimiter
from ca.service.status import status_for


def _csr(key) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1()),
     rsa.generate_private_key(public_exponent=65537, key_size=2048)],
    ids=["p256", "p384", "rsa2048"],
)
def test_accepted_keys(key):
    assert public_key_from_csr(_csr(key), 16384).public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (ec.generate_private_key(ec.SECP521R1()), "secp521r1 is not accepted"),
        (ec.generate_private_key(ec.SECP256K1()), "secp256k1 is not accepted"),
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "1024 bits"),
        (ed25519.Ed25519PrivateKey.generate(), r"Ed25519PublicKey is not accepted \(ECDSA or RSA\)"),
    ],
    ids=["p521", "secp256k1", "rsa1024", "ed25519"],
)
def test_refused_keys(key, message):
    with pytest.raises(BadRequestError, match=message):
        public_key_from_csr(_csr(key), 16384)


def test_csr_size_and_encoding():
    with pytest.raises(BadRequestError, match="empty"):
        public_key_from_csr(b"", 100)
    with pytest.raises(BadRequestError, match="limit is 100"):
        public_key_from_csr(b"\x30" * 101, 100)
    with pytest.raises(BadRequestError, match="DER-encoded"):
        public_key_from_csr(b"\x30\x00", 100)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_bursts_refills_and_keeps_keys_apart():
    clock = _Clock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(RateLimitedError, match="retry in 0.50s"):
        limiter.check("a")
    limiter.check("b")
    clock.now += 0.5
    limiter.check("a")
    with pytest.raises(RateLimitedError):
        limiter.check("a")


def test_rate_limiter_bounds_its_memory():
    limiter = RateLimiter(1.0, 1, clock=_Clock(), max_keys=10)
    for i in range(100):
        limiter.check(f"k{i}")
    assert len(limiter._buckets) == 10


@pytest.mark.parametrize(
    ("cfg", "ns", "sa", "message"),
    [
        (KubernetesAuthConfig(deny_namespaces=("kube-system",)), "kube-system", "x", "namespace kube-system is denied"),
        (KubernetesAuthConfig(deny_service_accounts=("prod/*",)), "prod", "web", "prod/web is denied"),
        (KubernetesAuthConfig(allow_namespaces=("prod",)), "dev", "web", "not in the allowed namespaces"),
        (KubernetesAuthConfig(allow_service_accounts=("prod/web",)), "prod", "db", "not in the allowed ServiceAccounts"),
        (
            KubernetesAuthConfig(allow_service_accounts=("prod/*",), deny_service_accounts=("prod/default",)),
            "prod", "default", "denied",
        ),
    ],
)
def test_account_policy_refusals(cfg, ns, sa, message):
    with pytest.raises(DeniedError, match=message):
        check_account_policy(cfg, ns, sa)


def test_account_policy_allows():
    check_account_policy(KubernetesAuthConfig(), "any", "thing")
    check_account_policy(KubernetesAuthConfig(allow_namespaces=("prod",), allow_service_accounts=("prod/*",)), "prod", "web")


def test_token_cache_expires_entries_and_is_bounded():
    clock = _Clock()
    cache = TokenCache(clock, max_entries=2)
    entry = ReviewedToken("ns", "sa", "pod", "uid", expires_at=1010.0)
    cache.put(b"a", entry)
    assert cache.get(b"a") is entry
    clock.now = 1010.0
    assert cache.get(b"a") is None
    for k in (b"x", b"y", b"z"):
        cache.put(k, ReviewedToken("ns", "sa", "pod", "uid", expires_at=2000.0))
    assert len(cache) == 2 and cache.get(b"x") is None


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (UnauthenticatedError("x"), grpc.StatusCode.UNAUTHENTICATED),
        (DeniedError("x"), grpc.StatusCode.PERMISSION_DENIED),
        (BadRequestError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (RateLimitedError("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (UpstreamUnavailableError("secret detail"), grpc.StatusCode.UNAVAILABLE),
        (TimeoutError(), grpc.StatusCode.DEADLINE_EXCEEDED),
        (ValueError("crypto internals"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_mapping(err, code):
    got, message = status_for(err)
    assert got is code
    assert "secret detail" not in message and "crypto internals" not in message


from hypothesis import given, settings, strategies as st  # noqa: E402

from ca.service.wire import pod_facts_from_pod, reviewed_token_from_review  # noqa: E402



@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2048))
def test_any_csr_bytes_give_a_precise_refusal_or_a_key(data):
    try:
        public_key_from_csr(data, 1024)
    except BadRequestError as err:
        assert str(err).startswith("csr") or "CSR" in str(err)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["status", "metadata", "spec", "x"]), _json, max_size=4)
    | st.fixed_dictionaries(
        {"status": st.fixed_dictionaries(
            {"authenticated": st.just(True), "audiences": st.just(["trustmesh-ca"]),
             "user": st.dictionaries(st.sampled_from(["username", "extra", "uid"]), _json, max_size=3)})}
    )
)
def test_any_token_review_document_is_refused_or_fully_formed(doc):
    try:
        got = reviewed_token_from_review(doc, "trustmesh-ca", 1.0)
    except (UnauthenticatedError, DeniedError):
        return
    assert got.namespace and got.service_account and got.pod_name and got.pod_uid


_pod_field = st.none() | st.text(max_size=5) | st.lists(st.integers(), max_size=2) | st.dictionaries(
    st.text(max_size=3), st.text(max_size=3) | st.integers(), max_size=2
)
_pod_section = st.none() | st.integers() | st.dictionaries(
    st.sampled_from(["labels", "name", "uid", "deletionTimestamp", "serviceAccountName"]), _pod_field, max_size=3
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["metadata", "spec"]), _pod_section, max_size=2))
def test_any_pod_document_converts_without_crashing(doc):
    facts = pod_facts_from_pod(doc)
    assert isinstance(facts.terminating, bool)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in facts.labels.items())
