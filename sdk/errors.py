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
    "ConfigError",
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


class ConfigError(UsageError):
    """A configuration file (or document) is not acceptable.

    ``field`` is the path of the offending key as the file spells it
    (``outbound.upstreams[0].address``; ``(file)`` for the file itself),
    ``file`` the file's path when it was read from one, ``message`` what was
    expected and what was found. Each service's ``ConfigError`` derives from
    this one and only changes ``label``, the word that opens the message.
    """

    label = "config"

    def __init__(self, field: str, message: str, *, file: str = "") -> None:
        super().__init__()
        self.field, self.message, self.file = field, message, file
        self.args = (str(self),)

    def in_file(self, file: object) -> ConfigError:
        """This error, now naming the file it was found in."""
        self.file = str(file)
        self.args = (str(self),)
        return self

    def __str__(self) -> str:
        where = f"{self.label} {self.file}" if self.file else self.label
        return f"{where}: {self.message}" if self.field == "(file)" else f"{where}: {self.field}: {self.message}"


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
