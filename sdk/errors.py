"""The root of trustmesh's exception tree and the sdk's own errors.

Every error trustmesh raises on purpose derives from :class:`TrustmeshError`
and also from the matching built-in (``ValueError``, ``PermissionError``,
``OSError``, ``TimeoutError``), so callers can catch either. Each package has
an ``errors.py`` whose classes derive from these. The one exception is
``policy_dsl``, which by contract imports nothing from the other packages and
so has its own root, ``policy_dsl.errors.PolicyError`` (a ``ValueError``).
"""

from __future__ import annotations

__all__ = ["TrustmeshError", "UsageError"]


class TrustmeshError(Exception):
    """Root of every error trustmesh raises on purpose."""


class UsageError(TrustmeshError, ValueError):
    """A command-line or configuration value is not acceptable (CLI exit 2)."""
