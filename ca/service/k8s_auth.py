"""Kubernetes workload authentication: ServiceAccount token → SPIFFE ID.

Steps, in order, each refusing with a typed error:

1. verify the token — a TokenReview for the configured audience, or offline
   against the cluster's service-account issuer keys (JWKS, from a file or
   fetched from the API server and re-fetched when a token names an unknown
   key, at most every 30 s) — and cache the
   positive result under the token's SHA-256 until the token expires;
2. apply the namespace and ServiceAccount allow/deny lists (deny wins; each
   non-empty allow list must match);
3. read the bound pod and the token's ServiceAccount (both cached for
   ``pod_cache_seconds``, and so is the whole decision for that token): the
   pod must exist, have the uid the token is bound to, run as the token's
   ServiceAccount, and not be terminating; the ServiceAccount must exist, not
   be being deleted, and have the uid the token was issued for (a deleted and
   re-created account of the same name is a new account, whose old tokens the
   API server no longer accepts, however long the token cache would);
4. render the SPIFFE ID from the template over namespace, ServiceAccount and
   the pod's labels.

Namespace, ServiceAccount (name and uid) and pod come only from the verified
result: the TokenReview's ``status.user`` (``uid`` is the ServiceAccount's)
or the signed ``kubernetes.io`` claim. A verified result without the account's
uid (an API server too old to report it) can only be checked for the
account's existence by name. If the API cannot be reached, :class:`UpstreamUnavailableError` propagates: nothing
is decided on a guess.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import jwt

from ca.service.config import KubernetesAuthConfig
from ca.service.errors import DeniedError, ServiceError, UnauthenticatedError
from ca.service.identity import AccountFacts, Caller, PodFacts, ReviewedToken
from ca.service.kube import KubeApi
from ca.service.wire import (
    account_facts_from_service_account,
    pod_facts_from_pod,
    reviewed_token_from_claims,
    reviewed_token_from_review,
    unverified_expiry,
)
from sdk.errors import TemplateError
from sdk.spiffeid import TrustDomain
from sdk.template import IdentityTemplate

__all__ = ["KubernetesAuthenticator", "JwksVerifier", "check_account_policy", "TokenCache"]

T = TypeVar("T")

_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "PS512"]


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenCache:
    """Verified tokens by SHA-256, each kept until its own expiry (bounded size)."""

    def __init__(self, clock: Callable[[], float], max_entries: int = 50_000) -> None:
        self._clock, self._max = clock, max_entries
        self._entries: OrderedDict[bytes, ReviewedToken] = OrderedDict()

    def get(self, digest: bytes) -> ReviewedToken | None:
        found = self._entries.get(digest)
        if found is not None and found.expires_at <= self._clock():
            del self._entries[digest]
            return None
        return found

    def put(self, digest: bytes, reviewed: ReviewedToken) -> None:
        self._entries[digest] = reviewed
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class JwksVerifier:
    """Offline verification of ServiceAccount tokens against issuer keys."""

    def __init__(self, jwks: str | bytes | dict, issuer: str, clock: Callable[[], float] = time.time) -> None:
        self.issuer, self._clock = issuer, clock
        self.replace_keys(jwks)

    def replace_keys(self, jwks: str | bytes | dict) -> None:
        """Use a new key set (the issuer rotated its keys)."""
        data = json.loads(jwks) if isinstance(jwks, (str, bytes)) else jwks
        try:
            self._keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(data).keys}
        except jwt.PyJWTError as err:
            raise ValueError(f"unusable service-account issuer JWKS: {err}") from err

    def knows_key_of(self, token: str) -> bool:
        try:
            return jwt.get_unverified_header(token).get("kid") in self._keys
        except jwt.PyJWTError:
            return True  # let verify() report the malformed token

    def verify(self, token: str, audience: str) -> ReviewedToken:
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.get(header.get("kid"))
            if key is None:
                raise UnauthenticatedError("token signed by a key the issuer does not publish")
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=_ALGORITHMS,
                audience=audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"], "verify_exp": False,
                         "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidAudienceError as err:
            raise UnauthenticatedError(f"token is not valid for audience {audience!r}") from err
        except jwt.PyJWTError as err:
            raise UnauthenticatedError(f"invalid ServiceAccount token: {err}") from err
        now = self._clock()
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UnauthenticatedError(f"ServiceAccount token claim {name!r} is not a number")
        if now >= claims["exp"]:
            raise UnauthenticatedError("ServiceAccount token has expired")
        if now + 60 < claims.get("nbf", claims["iat"]):
            raise UnauthenticatedError("ServiceAccount token is not valid yet")
        return reviewed_token_from_claims(claims)


def _matches(patterns: tuple[str, ...], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def check_account_policy(cfg: KubernetesAuthConfig, namespace: str, service_account: str) -> None:
    """Apply the allow/deny lists; raises :class:`DeniedError` naming the rule."""
    account = f"{namespace}/{service_account}"
    if namespace in cfg.deny_namespaces:
        raise DeniedError(f"namespace {namespace} is denied")
    if _matches(cfg.deny_service_accounts, account):
        raise DeniedError(f"ServiceAccount {account} is denied")
    if cfg.allow_namespaces and namespace not in cfg.allow_namespaces:
        raise DeniedError(f"namespace {namespace} is not in the allowed namespaces")
    if cfg.allow_service_accounts and not _matches(cfg.allow_service_accounts, account):
        raise DeniedError(f"ServiceAccount {account} is not in the allowed ServiceAccounts")


class KubernetesAuthenticator:
    """Turns a projected ServiceAccount token into a :class:`Caller`."""

    def __init__(
        self,
        cfg: KubernetesAuthConfig,
        api: KubeApi,
        trust_domain: TrustDomain,
        template: IdentityTemplate,
        *,
        cluster: str = "",
        jwks: JwksVerifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg, self.api, self.trust_domain, self.template = cfg, api, trust_domain, template
        self.cluster, self._jwks, self._clock = cluster, jwks, clock
        self.tokens = TokenCache(clock)
        self._pods: dict[tuple[str, str], tuple[float, PodFacts | None]] = {}
        self._accounts: dict[tuple[str, str], tuple[float, AccountFacts | None]] = {}
        self._decisions: OrderedDict[bytes, tuple[float, Caller]] = OrderedDict()
        self._keys_fetched_at = clock()

    def cached(self, token: str) -> Caller | None:
        """The decision for ``token`` if one is cached and still fresh (no I/O)."""
        decided = self._decisions.get(token_digest(token))
        if decided is not None and self._clock() < decided[0]:
            return decided[1]
        return None

    async def authenticate(self, token: str) -> Caller:
        digest = token_digest(token)
        now = self._clock()
        decided = self._decisions.get(digest)
        if decided is not None and now < decided[0]:
            return decided[1]
        reviewed = await self._verify(token, digest)
        try:
            caller = await self._decide(reviewed)
        except ServiceError as err:
            err.who = {
                "caller_kind": "kubernetes",
                "namespace": reviewed.namespace,
                "service_account": reviewed.service_account,
                "pod": reviewed.pod_name,
                "pod_uid": reviewed.pod_uid,
            }
            if reviewed.service_account_uid:
                err.who["service_account_uid"] = reviewed.service_account_uid
            raise
        if self.cfg.pod_cache_seconds > 0:
            # The whole decision is reused for as long as the pod facts are.
            if len(self._decisions) >= 50_000:
                self._decisions.popitem(last=False)
            self._decisions[digest] = (min(reviewed.expires_at, now + self.cfg.pod_cache_seconds), caller)
        return caller

    async def _decide(self, reviewed: ReviewedToken) -> Caller:
        check_account_policy(self.cfg, reviewed.namespace, reviewed.service_account)
        pod, account = await asyncio.gather(
            self._pod(reviewed.namespace, reviewed.pod_name),
            self._account(reviewed.namespace, reviewed.service_account),
        )
        where = f"pod {reviewed.namespace}/{reviewed.pod_name}"
        if pod is None:
            raise DeniedError(f"{where} does not exist")
        if pod.uid != reviewed.pod_uid:
            raise DeniedError(f"{where} has uid {pod.uid}, but the token is bound to uid {reviewed.pod_uid}")
        if pod.terminating:
            raise DeniedError(f"{where} is terminating")
        if pod.service_account != reviewed.service_account:
            raise DeniedError(f"{where} runs as ServiceAccount {pod.service_account}, not {reviewed.service_account}")
        self._check_account(reviewed, account)
        try:
            spiffe_id = self.template.render(
                self.trust_domain,
                namespace=reviewed.namespace,
                service_account=reviewed.service_account,
                labels=pod.labels,
                cluster=self.cluster,
                pod_name=pod.name,
            )
        except TemplateError as err:
            field = getattr(err, "field", "") or "?"
            raise DeniedError(f"{where}: identity template field {field}: {err}") from err
        return Caller(
            spiffe_id=spiffe_id,
            kind="kubernetes",
            namespace=reviewed.namespace,
            service_account=reviewed.service_account,
            pod_name=pod.name,
            pod_uid=pod.uid,
            credential_id=reviewed.credential_id,
        )

    @staticmethod
    def _check_account(reviewed: ReviewedToken, account: AccountFacts | None) -> None:
        """The token's ServiceAccount must still be the one it was issued for."""
        where = f"ServiceAccount {reviewed.namespace}/{reviewed.service_account}"
        if account is None:
            raise DeniedError(f"{where} does not exist (deleted after the token was issued)")
        if account.deleting:
            raise DeniedError(f"{where} is being deleted")
        # An empty verified uid (old API servers) leaves existence as the only check.
        if reviewed.service_account_uid and account.uid != reviewed.service_account_uid:
            raise DeniedError(
                f"{where} has uid {account.uid or '(none)'}, but the token was issued for uid "
                f"{reviewed.service_account_uid} (the account was deleted and re-created)"
            )

    async def _verify(self, token: str, digest: bytes) -> ReviewedToken:
        cached = self.tokens.get(digest)
        if cached is not None:
            return cached
        if self._jwks is not None:
            if not self._jwks.knows_key_of(token):
                await self._refresh_issuer_keys()
            reviewed = self._jwks.verify(token, self.cfg.audience)
        else:
            expires_at = unverified_expiry(token)
            doc = await self.api.token_review(token, [self.cfg.audience])
            reviewed = reviewed_token_from_review(doc, self.cfg.audience, expires_at)
        if reviewed.expires_at <= self._clock():
            raise UnauthenticatedError("ServiceAccount token has expired")
        self.tokens.put(digest, reviewed)
        return reviewed

    async def _refresh_issuer_keys(self) -> None:
        """Re-fetch the issuer keys from the API (keys from a file are fixed), at most every 30 s."""
        now = self._clock()
        if self.cfg.jwks_file or now < self._keys_fetched_at + 30:
            return
        self._keys_fetched_at = now
        assert self._jwks is not None
        self._jwks.replace_keys(await self.api.issuer_keys())

    async def _pod(self, namespace: str, name: str) -> PodFacts | None:
        return await self._read_cached(self._pods, self.api.read_pod, pod_facts_from_pod, namespace, name)

    async def _account(self, namespace: str, name: str) -> AccountFacts | None:
        return await self._read_cached(
            self._accounts, self.api.read_service_account, account_facts_from_service_account, namespace, name
        )

    async def _read_cached(
        self,
        cache: dict[tuple[str, str], tuple[float, Any]],
        read: Callable[[str, str], Awaitable[dict | None]],
        facts_of: Callable[[Mapping[str, Any]], T],
        namespace: str,
        name: str,
    ) -> T | None:
        """The facts of an object (None: it does not exist), read again after ``pod_cache_seconds``."""
        key = (namespace, name)
        now = self._clock()
        hit = cache.get(key)
        if hit is not None and now < hit[0]:
            return hit[1]  # type: ignore[no-any-return]
        doc = await read(namespace, name)
        facts = None if doc is None else facts_of(doc)
        if self.cfg.pod_cache_seconds > 0:
            if len(cache) > 50_000:
                cache.clear()
            cache[key] = (now + self.cfg.pod_cache_seconds, facts)
        return facts
