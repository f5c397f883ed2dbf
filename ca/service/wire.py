"""Wire formats in and out of the CA service, converted once, here.

In: TokenReview documents and ServiceAccount-token claims become
:class:`ReviewedToken`; Pod documents become :class:`PodFacts`; gRPC request
messages become plain Python values. Out: chains, tokens and bundles become
gRPC messages. Nothing here performs I/O.

Only fields the apiserver (or a verified signature) vouches for are read:
the pod binding comes from ``status.user.extra`` of a TokenReview, never from
the token's unverified claims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.service.errors import BadRequestError, DeniedError, UnauthenticatedError
from ca.service.identity import AccountFacts, PodFacts, ReviewedToken
from sdk.bundle import Bundle
from sdk.proto import ca_pb2
from sdk.spiffeid import SpiffeId

__all__ = [
    "reviewed_token_from_review",
    "reviewed_token_from_claims",
    "pod_facts_from_pod",
    "account_facts_from_service_account",
    "ttl_from_request",
    "audiences_from_request",
    "sign_response",
    "mint_response",
    "bundle_message",
    "trust_message",
    "unverified_expiry",
]

_EXTRA = "authentication.kubernetes.io/"
_SA_PREFIX = "system:serviceaccount:"


def _mapping(value: Any) -> Mapping[str, Any]:
    """A JSON object where one is expected; anything else reads as empty (and so fails closed)."""
    return value if isinstance(value, Mapping) else {}


def _one(extra: Mapping[str, Any], key: str) -> str:
    values = extra.get(_EXTRA + key) or []
    if isinstance(values, list) and len(values) == 1 and isinstance(values[0], str) and values[0]:
        return values[0]
    return ""


def _split_username(username: str) -> tuple[str, str]:
    if not username.startswith(_SA_PREFIX):
        raise DeniedError(f"{username or 'the token'} is not a ServiceAccount")
    ns, sep, sa = username[len(_SA_PREFIX):].partition(":")
    if not sep or not ns or not sa or ":" in sa:
        raise UnauthenticatedError(f"malformed ServiceAccount username {username!r}")
    return ns, sa


def reviewed_token_from_review(doc: Mapping[str, Any], audience: str, expires_at: float) -> ReviewedToken:
    """A TokenReview response → :class:`ReviewedToken`, or the reason it is refused.

    ``expires_at`` is the token's ``exp`` (its signature was just checked by
    the apiserver); it bounds how long the result may be cached.
    """
    status = _mapping(doc.get("status"))
    if status.get("authenticated") is not True:
        raise UnauthenticatedError(f"token rejected by the Kubernetes API: {status.get('error') or 'not authenticated'}")
    audiences = status.get("audiences")
    if not isinstance(audiences, list) or audience not in audiences:
        raise UnauthenticatedError(f"token is not valid for audience {audience!r}")
    user = _mapping(status.get("user"))
    username = user.get("username")
    ns, sa = _split_username(username if isinstance(username, str) else "")
    extra = _mapping(user.get("extra"))
    pod_name, pod_uid = _one(extra, "pod-name"), _one(extra, "pod-uid")
    if not pod_name or not pod_uid:
        raise DeniedError("token is not bound to a pod; use a projected ServiceAccount token")
    return ReviewedToken(
        ns, sa, pod_name, pod_uid, float(expires_at), _one(extra, "credential-id"), _account_uid(user.get("uid"))
    )


def reviewed_token_from_claims(claims: Mapping[str, Any]) -> ReviewedToken:
    """Verified ServiceAccount-token claims (offline JWKS mode) → :class:`ReviewedToken`."""
    k8s = claims.get("kubernetes.io")
    if not isinstance(k8s, Mapping):
        raise UnauthenticatedError("token has no kubernetes.io claim; not a ServiceAccount token")
    ns = k8s.get("namespace")
    sa = _mapping(k8s.get("serviceaccount")).get("name")
    if not isinstance(ns, str) or not isinstance(sa, str) or not ns or not sa:
        raise UnauthenticatedError("token's kubernetes.io claim lacks namespace or serviceaccount")
    if claims.get("sub") != f"{_SA_PREFIX}{ns}:{sa}":
        raise UnauthenticatedError("token's sub does not match its kubernetes.io claim")
    pod = _mapping(k8s.get("pod"))
    name, uid = pod.get("name"), pod.get("uid")
    if not isinstance(name, str) or not isinstance(uid, str) or not name or not uid:
        raise DeniedError("token is not bound to a pod; use a projected ServiceAccount token")
    jti = claims.get("jti")
    account_uid = _account_uid(_mapping(k8s.get("serviceaccount")).get("uid"))
    return ReviewedToken(ns, sa, name, uid, float(claims["exp"]), f"JTI={jti}" if jti else "", account_uid)


def _account_uid(uid: object) -> str:
    """The verified ServiceAccount uid (absent: ""; anything but a string: refused)."""
    if uid is None:
        return ""
    if not isinstance(uid, str):
        raise UnauthenticatedError("the verified ServiceAccount uid is not a string")
    return uid


def pod_facts_from_pod(doc: Mapping[str, Any]) -> PodFacts:
    """A Pod document → :class:`PodFacts`."""
    meta = _mapping(doc.get("metadata"))
    spec = _mapping(doc.get("spec"))
    labels = _mapping(meta.get("labels"))
    return PodFacts(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        service_account=str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"),
        labels={str(k): str(v) for k, v in labels.items()},
        terminating=bool(meta.get("deletionTimestamp")),
    )


def account_facts_from_service_account(doc: Mapping[str, Any]) -> AccountFacts:
    """A ServiceAccount document → :class:`AccountFacts`."""
    meta = _mapping(doc.get("metadata"))
    uid = meta.get("uid")
    return AccountFacts(uid if isinstance(uid, str) else "", bool(meta.get("deletionTimestamp")))


def ttl_from_request(seconds: int) -> timedelta | None:
    """``requested_ttl_seconds`` → a timedelta (None for 0, the default)."""
    return timedelta(seconds=seconds) if seconds else None


def audiences_from_request(audiences: Sequence[str], limit: int) -> tuple[str, ...]:
    """The requested JWT audiences, checked: 1..limit non-empty strings, no duplicates."""
    result = tuple(audiences)
    if not result:
        raise BadRequestError("at least one audience is required")
    if len(result) > limit:
        raise BadRequestError(f"too many audiences ({len(result)} > {limit})")
    for aud in result:
        if not aud or len(aud) > 512 or not aud.isprintable():
            raise BadRequestError(f"audience {aud[:64]!r} is empty, too long or not printable")
    if len(set(result)) != len(result):
        raise BadRequestError("duplicate audiences")
    return result


_last_bundle: tuple[Bundle, ca_pb2.Bundle] | None = None


def bundle_message(bundle: Bundle) -> ca_pb2.Bundle:
    """The wire form of ``bundle`` (the last one is memoised: bundles change rarely)."""
    global _last_bundle
    cached = _last_bundle
    if cached is not None and cached[0] is bundle:
        return cached[1]
    message = ca_pb2.Bundle(
        trust_domain=str(bundle.trust_domain), jwks=bundle.to_jwks(), sequence=bundle.sequence or 0
    )
    _last_bundle = (bundle, message)
    return message


def sign_response(
    chain: Sequence[x509.Certificate], spiffe_id: SpiffeId, bundle: Bundle, federation: tuple[str, ...] | None = None
) -> ca_pb2.SignX509SVIDResponse:
    """``federation``: the federated trust domains this caller is to trust (None: the CA federates with none)."""
    response = ca_pb2.SignX509SVIDResponse(
        cert_chain=[c.public_bytes(Encoding.DER) for c in chain],
        spiffe_id=str(spiffe_id),
        bundle=bundle_message(bundle),
    )
    if federation is not None:
        response.federation.trust_domains.extend(federation)
        response.federation.SetInParent()  # present even when empty: "none of them"
    return response


def trust_message(bundle: Bundle, federated: tuple[Bundle, ...]) -> ca_pb2.Bundle:
    """FetchBundle / WatchBundle: the own bundle carrying the federated ones, each under its own trust domain
    (the last one is memoised: FetchBundle is public and uncapped, bundles change rarely)."""
    global _last_trust
    own = bundle_message(bundle)
    if not federated:
        return own
    cached = _last_trust
    if cached is not None and cached[0] is bundle and cached[1] is federated:
        return cached[2]
    message = ca_pb2.Bundle()
    message.CopyFrom(own)
    message.federated_bundles.extend(
        ca_pb2.Bundle(trust_domain=str(b.trust_domain), jwks=b.to_jwks(), sequence=b.sequence or 0) for b in federated
    )
    _last_trust = (bundle, federated, message)
    return message


_last_trust: tuple[Bundle, tuple[Bundle, ...], ca_pb2.Bundle] | None = None


def mint_response(token: str, spiffe_id: SpiffeId, expires_at: datetime) -> ca_pb2.MintJWTSVIDResponse:
    return ca_pb2.MintJWTSVIDResponse(token=token, spiffe_id=str(spiffe_id), expires_at=int(expires_at.timestamp()))


def unverified_expiry(token: str) -> float:
    """The ``exp`` of a JWT without checking it (only to bound a cache entry
    after the apiserver has verified the token)."""
    import jwt

    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError as err:
        raise UnauthenticatedError("the bearer token is not a JWT") from err
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise UnauthenticatedError("the bearer token has no exp")
    return float(exp)

