"""The root of trustmesh's exception tree and the sdk's own errors.

Every error trustmesh raises on purpose derives from :class:`TrustmeshError`
and also from the matching built-in (``ValueError``, ``PermissionError``,
``OSError``, ``TimeoutError``), so callers can catch either. Each package has
an ``errors.py`` whose classes derive from these. The one exception is
``policy_dsl``, which by contract imports nothing from the other packages and
so has its own root, ``policy_dsl.errors.PolicyError`` (a ``ValueError``).
"""

from __future__ import annotations

__all__ = [
    "AuthorizationError",
    "BundleError",
    "BundleTrustDomainError",
    "JwtSvidError",
    "MissingDependencyError",
    "SpiffeIdError",
    "TemplateError",
    "TrustmeshError",
    "UsageError",
    "X509SvidError",
]


class TrustmeshError(Exception):
    """Root of every error trustmesh raises on purpose."""


class MissingDependencyError(TrustmeshError, ImportError):
    """An optional dependency this feature needs is not installed (e.g. the Kubernetes client)."""


class UsageError(TrustmeshError, ValueError):
    """A command-line or configuration value is not acceptable (CLI exit 2)."""


class SpiffeIdError(TrustmeshError, ValueError):
    """A SPIFFE ID or trust domain broke a rule of the SPIFFE-ID standard.

    ``rule`` is a short, stable name of the rule that failed (for example
    ``"trust_domain_chars"`` or ``"dot_segment"``); the message says it in words.
    """

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class AuthorizationError(TrustmeshError, PermissionError):
    """A peer's identity is not one a matcher allows."""


class X509SvidError(TrustmeshError, ValueError):
    """An X.509-SVID leaf, chain, key or its PEM/DER encoding is not acceptable."""


class BundleError(TrustmeshError, ValueError):
    """A trust bundle is malformed, or there is no bundle for a trust domain."""


class BundleTrustDomainError(BundleError):
    """A bundle read without a given trust domain does not name exactly one itself."""


class JwtSvidError(TrustmeshError, ValueError):
    """A JWT-SVID failed validation (header, signature, or claims)."""


class TemplateError(TrustmeshError, ValueError):
    """An identity template could not be parsed or rendered.

    ``field`` names the template field at fault (for example ``"labels.app"``),
    or is empty when the template text itself is malformed.
    """

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class TlsSetupError(TrustmeshError, RuntimeError):
    """A TLS context could not be given trustmesh's settings (key-exchange groups, no resumption)."""
