"""trustmesh's base layer: SPIFFE IDs, trust bundles, X.509- and JWT-SVIDs.

Everything public is importable from here (``from sdk import SpiffeId``).
Names are loaded on first use, so importing :mod:`sdk` (or :mod:`sdk.errors`)
does not pull in ``cryptography`` or ``jwt`` until they are needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdk._lazy import lazy_exports

# name -> submodule that defines it
_EXPORTS = {
    "TrustmeshError": "sdk.errors",
    "UsageError": "sdk.errors",
    "SpiffeIdError": "sdk.errors",
    "AuthorizationError": "sdk.errors",
    "X509SvidError": "sdk.errors",
    "BundleError": "sdk.errors",
    "JwtSvidError": "sdk.errors",
    "TemplateError": "sdk.errors",
    "TlsSetupError": "sdk.errors",
    "TrustDomain": "sdk.spiffeid",
    "SpiffeId": "sdk.spiffeid",
    "Matcher": "sdk.match",
    "match_any": "sdk.match",
    "match_id": "sdk.match",
    "match_one_of": "sdk.match",
    "match_member_of": "sdk.match",
    "Bundle": "sdk.bundle",
    "BundleSet": "sdk.bundle",
    "BundleSource": "sdk.bundle",
    "PublicKey": "sdk.bundle",
    "X509Svid": "sdk.x509svid",
    "X509SvidSource": "sdk.x509svid",
    "PrivateKey": "sdk.x509svid",
    "validate_leaf": "sdk.x509svid",
    "verify_chain": "sdk.x509svid",
    "IdentityTemplate": "sdk.template",
    "DEFAULT_TEMPLATE": "sdk.template",
    "JwtSvid": "sdk.jwtsvid",
    "validate_jwt_svid": "sdk.jwtsvid",
    "parse_insecure": "sdk.jwtsvid",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from sdk.bundle import Bundle, BundleSet, BundleSource, PublicKey
    from sdk.errors import (
        AuthorizationError,
        BundleError,
        JwtSvidError,
        SpiffeIdError,
        TemplateError,
        TlsSetupError,
        TrustmeshError,
        UsageError,
        X509SvidError,
    )
    from sdk.jwtsvid import JwtSvid, parse_insecure, validate_jwt_svid
    from sdk.match import Matcher, match_any, match_id, match_member_of, match_one_of
    from sdk.spiffeid import SpiffeId, TrustDomain
    from sdk.template import DEFAULT_TEMPLATE, IdentityTemplate
    from sdk.x509svid import PrivateKey, X509Svid, X509SvidSource, validate_leaf, verify_chain


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
