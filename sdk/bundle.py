"""SPIFFE trust bundles: the X.509 and JWT authorities of one trust domain.

A :class:`Bundle` is read from and written to the SPIFFE bundle format
(``standards/SPIFFE_Trust_Domain_and_Bundle.md``): a JWKS whose keys carry
``use: "x509-svid"`` (one CA certificate in ``x5c``) or ``use: "jwt-svid"``
(a public key named by ``kid``), plus ``spiffe_sequence`` and
``spiffe_refresh_hint``. Keys with a ``use`` or ``kty`` this implementation
does not know are ignored, as the standard asks; a duplicate ``kid`` or a
duplicate certificate, private key material, or a malformed key is refused
with :class:`~sdk.errors.BundleError` naming the key's index.

Bundles are values: the ``with_*`` methods return changed copies.
:class:`BundleSet` holds the bundles of several trust domains (federation).
Both are :class:`BundleSource` implementations.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol, Union, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from sdk.errors import BundleError, BundleTrustDomainError, SpiffeIdError
from sdk.pem import mismatch
from sdk.spiffeid import SpiffeId, TrustDomain

__all__ = ["Bundle", "BundleSet", "BundleSource", "PublicKey", "named_trust_domain"]

PublicKey = Union[
    ec.EllipticCurvePublicKey,
    rsa.RSAPublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
]

X509_USE = "x509-svid"
JWT_USE = "jwt-svid"
_MAX_JWKS_BYTES = 4 * 1024 * 1024
_PUBLIC_EC_FIELDS = ("kty", "crv", "x", "y")
_PUBLIC_RSA_FIELDS = ("kty", "n", "e")
# Stands for "not yet known" while a bundle that must name its own trust domain is read.
_UNNAMED = TrustDomain.parse("unnamed.invalid")


@runtime_checkable
class BundleSource(Protocol):
    """Anything that can hand out the bundle of a trust domain."""

    def get_bundle_for_trust_domain(self, td: TrustDomain) -> Bundle:
        """Return the bundle for ``td``; raise :class:`BundleError` if there is none."""
        ...


@dataclass(frozen=True)
class Bundle:
    """The authorities one trust domain's SVIDs are checked against."""

    trust_domain: TrustDomain
    x509_authorities: tuple[x509.Certificate, ...] = ()
    jwt_authorities: Mapping[str, PublicKey] = field(default_factory=dict)
    sequence: int | None = None
    refresh_hint: int | None = None  # seconds

    def __post_init__(self) -> None:
        if not isinstance(self.trust_domain, TrustDomain):
            raise TypeError("trust_domain must be a TrustDomain")
        authorities = tuple(self.x509_authorities)
        for cert in authorities:
            if not isinstance(cert, x509.Certificate):
                raise TypeError(f"x509 authority must be a Certificate, not {type(cert).__name__}")
        if len(set(authorities)) != len(authorities):
            raise BundleError(f"duplicate X.509 authority in the bundle for {self.trust_domain}")
        object.__setattr__(self, "x509_authorities", authorities)
        keys = dict(self.jwt_authorities)
        for kid in keys:
            if not isinstance(kid, str) or not kid:
                raise BundleError(f"JWT authority key IDs must be non-empty strings, got {kid!r}")
        object.__setattr__(self, "jwt_authorities", MappingProxyType(keys))
        for name in ("sequence", "refresh_hint"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise BundleError(f"bundle {name} must be a non-negative integer, got {value!r}")

    def __hash__(self) -> int:
        return hash((self.trust_domain, self.x509_authorities, tuple(sorted(self.jwt_authorities)), self.sequence))

    # -- BundleSource ---------------------------------------------------------

    def get_bundle_for_trust_domain(self, td: TrustDomain) -> Bundle:
        """Return this bundle if ``td`` is its trust domain, else raise :class:`BundleError`."""
        if td != self.trust_domain:
            raise BundleError(f"no bundle for trust domain '{td}' (have '{self.trust_domain}')")
        return self

    # -- copies ---------------------------------------------------------------

    def with_x509_authorities(self, *authorities: x509.Certificate | Iterable[x509.Certificate]) -> Bundle:
        """A copy whose X.509 authorities are exactly ``authorities`` (certificates or iterables of them)."""
        certs: list[x509.Certificate] = []
        for item in authorities:
            certs.extend([item] if isinstance(item, x509.Certificate) else item)
        return replace(self, x509_authorities=tuple(certs))

    def with_x509_authority(self, cert: x509.Certificate) -> Bundle:
        """A copy with ``cert`` added to the X.509 authorities (no-op if present)."""
        if cert in self.x509_authorities:
            return self
        return replace(self, x509_authorities=(*self.x509_authorities, cert))

    def without_x509_authority(self, cert: x509.Certificate) -> Bundle:
        """A copy without ``cert`` among the X.509 authorities."""
        return replace(self, x509_authorities=tuple(c for c in self.x509_authorities if c != cert))

    def with_jwt_authority(self, kid: str, key: PublicKey) -> Bundle:
        """A copy where ``kid`` names ``key`` (added, or replacing the old key of that kid)."""
        return replace(self, jwt_authorities={**self.jwt_authorities, kid: key})

    def without_jwt_authority(self, kid: str) -> Bundle:
        """A copy without the JWT authority ``kid``."""
        keys = {k: v for k, v in self.jwt_authorities.items() if k != kid}
        return replace(self, jwt_authorities=keys)

    def with_sequence(self, n: int) -> Bundle:
        """A copy with ``spiffe_sequence`` set to ``n``."""
        return replace(self, sequence=n)

    def with_refresh_hint(self, seconds: int | None) -> Bundle:
        """A copy with ``spiffe_refresh_hint`` set to ``seconds``."""
        return replace(self, refresh_hint=seconds)

    # -- SPIFFE bundle format (JWKS) -----------------------------------------

    @classmethod
    def parse_jwks(cls, data: bytes | str, trust_domain: TrustDomain | None) -> Bundle:
        """Read a bundle in the SPIFFE bundle format (a JWKS document).

        With ``trust_domain`` None, the bundle's trust domain is the one its
        X.509 authorities name (:func:`named_trust_domain`), never a guess.
        """
        if trust_domain is None:
            return _named_by_authorities(cls.parse_jwks, data)
        if len(data) > _MAX_JWKS_BYTES:
            raise BundleError(f"bundle for {trust_domain} is larger than {_MAX_JWKS_BYTES} bytes")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as err:
            raise BundleError(f"bundle for {trust_domain} is not valid JSON: {err}") from err
        if not isinstance(doc, dict):
            raise BundleError(f"bundle for {trust_domain} must be a JSON object")
        keys = doc.get("keys")
        if not isinstance(keys, list):
            raise BundleError(f"bundle for {trust_domain} has no 'keys' array")
        certs: list[x509.Certificate] = []
        jwt_keys: dict[str, PublicKey] = {}
        for index, jwk in enumerate(keys):
            where = f"bundle for {trust_domain}, key {index}"
            if not isinstance(jwk, dict):
                raise BundleError(f"{where}: a key must be a JSON object")
            use = jwk.get("use")
            if jwk.get("kty") not in ("EC", "RSA") or use not in (X509_USE, JWT_USE):
                continue  # unknown use or key type: ignored, as the standard asks
            if "d" in jwk or "p" in jwk:
                raise BundleError(f"{where}: contains private key material")
            if use == X509_USE:
                cert = _x509_authority(jwk, where)
                if cert is None:
                    continue
                if cert in certs:
                    raise BundleError(f"{where}: duplicate X.509 authority")
                certs.append(cert)
            else:
                kid = jwk.get("kid")
                if not isinstance(kid, str) or not kid:
                    raise BundleError(f"{where}: a jwt-svid key needs a non-empty 'kid'")
                if kid in jwt_keys:
                    raise BundleError(f"{where}: duplicate key ID {kid!r}")
                jwt_keys[kid] = _public_key(jwk, where)
        return cls(
            trust_domain,
            tuple(certs),
            jwt_keys,
            sequence=_optional_int(doc, "spiffe_sequence", trust_domain),
            refresh_hint=_optional_int(doc, "spiffe_refresh_hint", trust_domain),
        )

    def to_jwks(self) -> bytes:
        """Write the bundle in the SPIFFE bundle format."""
        keys: list[dict[str, Any]] = []
        for cert in self.x509_authorities:
            jwk = _jwk_of(cert.public_key(), f"X.509 authority {cert.subject.rfc4514_string()}")
            der = cert.public_bytes(serialization.Encoding.DER)
            keys.append({"use": X509_USE, **jwk, "x5c": [base64.b64encode(der).decode("ascii")]})
        for kid, key in self.jwt_authorities.items():
            keys.append({"use": JWT_USE, "kid": kid, **_jwk_of(key, f"JWT authority {kid!r}")})
        doc: dict[str, Any] = {"keys": keys}
        if self.sequence is not None:
            doc["spiffe_sequence"] = self.sequence
        if self.refresh_hint is not None:
            doc["spiffe_refresh_hint"] = self.refresh_hint
        return json.dumps(doc, indent=2).encode("utf-8") + b"\n"

    # -- PEM ------------------------------------------------------------------

    @classmethod
    def parse_pem(cls, data: bytes, trust_domain: TrustDomain | None) -> Bundle:
        """Read X.509 authorities from concatenated PEM certificates (``trust_domain``: as in :meth:`parse_jwks`)."""
        if trust_domain is None:
            return _named_by_authorities(cls.parse_pem, data)
        if isinstance(data, str):
            data = data.encode("ascii", "replace")
        expected = "PEM CA certificates"
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise BundleError(f"bundle for {trust_domain}: {mismatch(data, expected=expected, label='CERTIFICATE')}")
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as err:
            raise BundleError(f"bundle for {trust_domain}: {mismatch(data, expected=expected, label='CERTIFICATE')}") from err
        unique = tuple(dict.fromkeys(certs))
        if len(unique) != len(certs):
            raise BundleError(f"bundle for {trust_domain} has a duplicate certificate")
        return cls(trust_domain, unique)

    def to_pem(self) -> bytes:
        """The X.509 authorities as concatenated PEM certificates."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.x509_authorities)


class BundleSet:
    """The bundles of several trust domains, one each; a :class:`BundleSource`.

    ``put`` replaces the bundle of that trust domain. Safe to share between
    threads: readers see either the old or the new bundle, never a mix.
    """

    def __init__(self, bundles: Iterable[Bundle] = ()) -> None:
        self._lock = threading.Lock()
        self._bundles: dict[TrustDomain, Bundle] = {}
        for bundle in bundles:
            self.put(bundle)

    def put(self, b: Bundle) -> None:
        """Add ``b``, replacing any bundle of the same trust domain."""
        if not isinstance(b, Bundle):
            raise TypeError(f"expected a Bundle, not {type(b).__name__}")
        with self._lock:
            self._bundles = {**self._bundles, b.trust_domain: b}

    def remove(self, td: TrustDomain) -> None:
        """Forget the bundle of ``td`` (no-op if absent)."""
        with self._lock:
            self._bundles = {k: v for k, v in self._bundles.items() if k != td}

    def get_bundle_for_trust_domain(self, td: TrustDomain) -> Bundle:
        """Return the bundle for ``td``; raise :class:`BundleError` if there is none."""
        bundle = self._bundles.get(td)
        if bundle is None:
            raise BundleError(f"no bundle for trust domain '{td}'")
        return bundle

    def get(self, td: TrustDomain) -> Bundle | None:
        """The bundle for ``td``, or None."""
        return self._bundles.get(td)

    def trust_domains(self) -> tuple[TrustDomain, ...]:
        """The trust domains held, sorted."""
        return tuple(sorted(self._bundles))

    def bundles(self) -> tuple[Bundle, ...]:
        """The bundles held, sorted by trust domain."""
        current = self._bundles
        return tuple(current[td] for td in sorted(current))

    def __contains__(self, td: object) -> bool:
        return td in self._bundles

    def __len__(self) -> int:
        return len(self._bundles)

    def __repr__(self) -> str:
        return f"BundleSet({', '.join(map(str, self.trust_domains()))})"


def _named_by_authorities(parse: Any, data: bytes | str) -> Bundle:
    """Parse under a placeholder trust domain, then name the bundle after its authorities."""
    try:
        provisional = parse(data, _UNNAMED)
    except BundleError as err:
        raise BundleError(str(err).replace(f"bundle for {_UNNAMED}", "bundle")) from err
    return replace(provisional, trust_domain=named_trust_domain(provisional.x509_authorities))


def named_trust_domain(authorities: Iterable[x509.Certificate]) -> TrustDomain:
    """The one trust domain that the SPIFFE IDs (URI SANs) of ``authorities`` name.

    A SPIFFE CA certificate carries its trust domain's ID (``spiffe://<td>``);
    a bundle whose authorities name none, or several, raises
    :class:`~sdk.errors.BundleTrustDomainError`: the trust domain must then be
    given by whoever reads the bundle.
    """
    named: set[TrustDomain] = set()
    for cert in authorities:
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (x509.ExtensionNotFound, x509.UnsupportedGeneralNameType, ValueError):
            continue
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith("spiffe://"):
                try:
                    named.add(SpiffeId.parse(uri).trust_domain)
                except SpiffeIdError as err:
                    raise BundleTrustDomainError(f"authority {cert.subject.rfc4514_string()!r}: {err}") from err
    if len(named) != 1:
        found = ", ".join(sorted(map(str, named))) if named else "none (no authority carries a SPIFFE ID)"
        raise BundleTrustDomainError(f"the bundle's X.509 authorities name no single trust domain: {found}")
    return named.pop()


def _optional_int(doc: dict[str, Any], name: str, td: TrustDomain) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BundleError(f"bundle for {td}: {name} must be a non-negative integer, got {value!r}")
    return value


def _x509_authority(jwk: dict[str, Any], where: str) -> x509.Certificate | None:
    """The CA certificate of an x509-svid entry; None when ``x5c`` is absent or empty.

    X509-SVID.md section 6.2: an entry without ``x5c`` is ignored, and only the
    first certificate of ``x5c`` counts.
    """
    x5c = jwk.get("x5c")
    if x5c is None or x5c == []:
        return None
    if not isinstance(x5c, list) or not isinstance(x5c[0], str):
        raise BundleError(f"{where}: 'x5c' must be a list of base64 strings")
    try:
        der = base64.b64decode(x5c[0], validate=True)
        cert = x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as err:
        raise BundleError(f"{where}: 'x5c' is not a base64 DER certificate: {err}") from err
    fields = _PUBLIC_EC_FIELDS if jwk.get("kty") == "EC" else _PUBLIC_RSA_FIELDS
    if all(name in jwk for name in fields):
        if _public_key(jwk, where) != cert.public_key():
            raise BundleError(f"{where}: the key parameters do not match the certificate in 'x5c'")
    return cert


def _public_key(jwk: dict[str, Any], where: str) -> PublicKey:
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm
    from jwt.exceptions import InvalidKeyError

    loader = ECAlgorithm if jwk["kty"] == "EC" else RSAAlgorithm
    try:
        key = loader.from_jwk(jwk)
    except (InvalidKeyError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise BundleError(f"{where}: malformed {jwk['kty']} key: {err or type(err).__name__}") from err
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise BundleError(f"{where}: contains private key material")
    return key


def _jwk_of(key: object, what: str) -> dict[str, Any]:
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    if isinstance(key, ec.EllipticCurvePublicKey):
        return dict(ECAlgorithm.to_jwk(key, as_dict=True))
    if isinstance(key, rsa.RSAPublicKey):
        return dict(RSAAlgorithm.to_jwk(key, as_dict=True))
    raise BundleError(f"{what}: only EC and RSA public keys can be written, not {type(key).__name__}")
