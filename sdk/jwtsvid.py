"""JWT-SVIDs: validate a token against a bundle, or read one without checking.

The rules are those of ``standards/JWT-SVID.md``, applied strictly and in
this order, each failure a :class:`~sdk.errors.JwtSvidError` saying which:

1. the header has only ``alg``, ``kid`` and ``typ`` (an embedded key in
   ``jwk``, ``jku``, ``x5u`` or ``x5c`` is refused by name); ``alg`` is one of
   RS/ES/PS 256/384/512 (so ``none`` and HMAC are refused before any key is
   touched); ``typ``, if present, is ``JWT`` or ``JOSE``; ``kid`` is present;
2. ``sub`` is a valid SPIFFE ID; the signing key is the one named by ``kid``
   in the bundle of *that ID's* trust domain, and must suit ``alg``;
3. the signature verifies (PyJWT over ``cryptography``);
4. ``exp`` is present and not past (with ``leeway``), ``nbf`` if present has
   come, and ``aud`` is present and has the expected audience as an exact
   member, never a substring.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sdk._clock import aware_now
from sdk.bundle import BundleSource, PublicKey
from sdk.errors import BundleError, JwtSvidError, SpiffeIdError
from sdk.spiffeid import SpiffeId

__all__ = ["ALGORITHMS", "JwtSvid", "parse_insecure", "validate_jwt_svid"]

ALGORITHMS = frozenset(
    f"{family}{bits}" for family in ("RS", "ES", "PS") for bits in ("256", "384", "512")
)
_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})
_EMBEDDED_KEY_HEADERS = ("jwk", "jku", "x5u", "x5c")
_EC_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
_MIN_RSA_BITS = 2048
MAX_TOKEN_BYTES = 64 * 1024


@dataclass(frozen=True)
class JwtSvid:
    """A JWT-SVID: the token and what it says."""

    token: str = field(repr=False)
    spiffe_id: SpiffeId
    audience: tuple[str, ...]
    expiry: datetime
    claims: Mapping[str, Any] = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "audience", tuple(self.audience))
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))


def validate_jwt_svid(
    token: str,
    bundles: BundleSource,
    audience: str,
    now: datetime | None = None,
    leeway: timedelta = timedelta(seconds=30),
) -> JwtSvid:
    """Validate ``token`` for ``audience`` against ``bundles`` at ``now``."""
    import jwt
    from jwt.exceptions import InvalidSignatureError, PyJWTError

    if not isinstance(audience, str) or not audience:
        raise JwtSvidError("the expected audience must be a non-empty string")
    now = aware_now(now)
    header, claims = _decode_unverified(token)
    _check_header(header)
    spiffe_id = _subject(claims)
    try:
        bundle = bundles.get_bundle_for_trust_domain(spiffe_id.trust_domain)
    except BundleError as err:
        raise JwtSvidError(f"cannot validate a token for '{spiffe_id}': {err}") from err
    kid = header["kid"]
    key = bundle.jwt_authorities.get(kid)
    if key is None:
        raise JwtSvidError(f"no JWT authority with key ID {kid!r} in the bundle for '{spiffe_id.trust_domain}'")
    alg = header["alg"]
    _check_key_suits(alg, key, kid)
    try:
        jwt.PyJWS().decode(token, key=key, algorithms=[alg])
    except InvalidSignatureError as err:
        raise JwtSvidError(f"signature does not verify with key {kid!r}") from err
    except PyJWTError as err:
        raise JwtSvidError(f"token could not be verified: {err}") from err
    return _checked_claims(token, spiffe_id, claims, audience, now, leeway)


def parse_insecure(token: str) -> JwtSvid:
    """Read a JWT-SVID WITHOUT checking its signature, audience or expiry: for display only.

    The token must still be well formed: ``sub`` a SPIFFE ID, ``aud`` and
    ``exp`` present.
    """
    _header, claims = _decode_unverified(token)
    spiffe_id = _subject(claims)
    return JwtSvid(token, spiffe_id, _audience(claims), _expiry(claims), claims)


# -- decoding ------------------------------------------------------------------


def _decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(token, str):
        raise JwtSvidError(f"token must be a str, not {type(token).__name__}")
    token = token.strip()
    if not token:
        raise JwtSvidError("token is empty")
    if len(token) > MAX_TOKEN_BYTES:
        raise JwtSvidError(f"token is longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtSvidError(f"token must have 3 dot-separated parts (JWS compact form), has {len(parts)}")
    return _json_part(parts[0], "header"), _json_part(parts[1], "payload")


def _json_part(part: str, name: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw, object_pairs_hook=_no_duplicates)
    except (binascii.Error, ValueError, RecursionError) as err:
        raise JwtSvidError(f"token {name} is not base64url JSON: {err}") from err
    if not isinstance(value, dict):
        raise JwtSvidError(f"token {name} must be a JSON object")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


# -- rules ---------------------------------------------------------------------


def _check_header(header: dict[str, Any]) -> None:
    for name in _EMBEDDED_KEY_HEADERS:
        if name in header:
            raise JwtSvidError(f"header '{name}' is not allowed: keys come only from the trust bundle")
    extra = sorted(set(header) - _ALLOWED_HEADERS)
    if extra:
        raise JwtSvidError(f"header may only contain alg, kid and typ; found {', '.join(map(repr, extra))}")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise JwtSvidError(
            f"algorithm {alg!r} is not allowed; use one of {', '.join(sorted(ALGORITHMS))}"
        )
    if "typ" in header and header["typ"] not in ("JWT", "JOSE"):
        raise JwtSvidError(f"header typ {header['typ']!r} is not allowed; use JWT or JOSE")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JwtSvidError("header has no key ID (kid)")


def _check_key_suits(alg: str, key: PublicKey, kid: str) -> None:
    if alg.startswith("ES"):
        curve = _EC_CURVES[alg]
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve):
            raise JwtSvidError(f"key {kid!r} is not an EC {curve.name} key, which {alg} needs")
    else:
        if not isinstance(key, rsa.RSAPublicKey):
            raise JwtSvidError(f"key {kid!r} is not an RSA key, which {alg} needs")
        if key.key_size < _MIN_RSA_BITS:
            raise JwtSvidError(f"key {kid!r} is RSA-{key.key_size}; at least {_MIN_RSA_BITS} bits are needed")


def _subject(claims: dict[str, Any]) -> SpiffeId:
    sub = claims.get("sub")
    if sub is None:
        raise JwtSvidError("token has no 'sub' claim")
    if not isinstance(sub, str):
        raise JwtSvidError("token 'sub' claim must be a string")
    try:
        spiffe_id = SpiffeId.parse(sub)
    except SpiffeIdError as err:
        raise JwtSvidError(f"token 'sub' claim is not a valid SPIFFE ID: {err}") from err
    return spiffe_id


def _audience(claims: dict[str, Any]) -> tuple[str, ...]:
    aud = claims.get("aud")
    if aud is None:
        raise JwtSvidError("token has no 'aud' claim")
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not values or not all(isinstance(a, str) and a for a in values):
        raise JwtSvidError("token 'aud' claim must be a non-empty string or list of non-empty strings")
    return tuple(values)


def _time_claim(claims: dict[str, Any], name: str) -> datetime | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JwtSvidError(f"token '{name}' claim must be a number of seconds since the epoch")
    try:
        return datetime.fromtimestamp(value, timezone.utc)
    except (OverflowError, OSError, ValueError) as err:
        raise JwtSvidError(f"token '{name}' claim is out of range") from err


def _expiry(claims: dict[str, Any]) -> datetime:
    expiry = _time_claim(claims, "exp")
    if expiry is None:
        raise JwtSvidError("token has no 'exp' claim")
    return expiry


def _checked_claims(
    token: str,
    spiffe_id: SpiffeId,
    claims: dict[str, Any],
    audience: str,
    now: datetime,
    leeway: timedelta,
) -> JwtSvid:
    expiry = _expiry(claims)
    if now > expiry + leeway:
        raise JwtSvidError(f"token expired at {expiry.isoformat()} (now {now.isoformat()}, leeway {leeway})")
    not_before = _time_claim(claims, "nbf")
    if not_before is not None and now + leeway < not_before:
        raise JwtSvidError(f"token is not valid before {not_before.isoformat()}")
    _time_claim(claims, "iat")  # type-checked only
    audiences = _audience(claims)
    if audience not in audiences:
        raise JwtSvidError(f"audience {audience!r} is not in the token's audience {list(audiences)}")
    return JwtSvid(token, spiffe_id, audiences, expiry, claims)


