"""The CA library's errors.

Each class derives from :class:`sdk.errors.TrustmeshError` and from the
built-in that matches what went wrong, so callers may catch either.
"""

from __future__ import annotations

from sdk.errors import TrustmeshError

__all__ = [
    "CaError",
    "KeyFormatError",
    "IssuanceError",
    "RotationError",
    "CaStoreError",
]


class CaError(TrustmeshError):
    """Root of the errors raised by the ``ca`` package."""


class KeyFormatError(CaError, ValueError):
    """A private key is unreadable: bad encoding, wrong passphrase, unsupported type."""


class IssuanceError(CaError, ValueError):
    """The CA refused to issue: bad request, expired authority, or the result failed validation."""


class RotationError(CaError, ValueError):
    """A rotation step is not possible in the CA's current state."""


class CaStoreError(CaError, OSError):
    """The on-disk CA directory is missing, unreadable or inconsistent; the message names the file."""
