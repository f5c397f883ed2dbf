"""Errors raised by the injector.

Every class derives from :class:`sdk.errors.TrustmeshError` and from the
matching built-in, so callers can catch either.
"""

from __future__ import annotations

from sdk.errors import ConfigError, TrustmeshError

__all__ = [
    "InjectorError",
    "InjectorConfigError",
    "AnnotationError",
    "PodRefusedError",
    "ReviewError",
    "PodSpecError",
    "ServingCertError",
    "CaBundlePatchError",
    "ListenError",
    "TrustBundleError",
    "CaCertificateError",
]


class InjectorError(TrustmeshError):
    """Root of the injector's errors."""


class InjectorConfigError(ConfigError):
    """The injector configuration file is not acceptable; ``.field`` names the key, ``.file`` the file."""

    label = "injector config"


class AnnotationError(InjectorError, ValueError):
    """A ``trustmesh.io/...`` pod annotation has a bad value; ``.annotation`` names it."""

    def __init__(self, annotation: str, message: str) -> None:
        super().__init__(f"annotation {annotation}: {message}")
        self.annotation = annotation


class PodRefusedError(InjectorError, PermissionError):
    """The pod may not be admitted as it is (for example an app running as uid 1337)."""


class ReviewError(InjectorError, ValueError):
    """An AdmissionReview request is malformed.

    ``.uid`` is the request's uid when it could be read: the webhook then
    answers ``allowed: false``; without one it answers HTTP 400.
    """

    def __init__(self, message: str, uid: str | None = None) -> None:
        super().__init__(message)
        self.uid = uid


class PodSpecError(InjectorError, ValueError):
    """A pod (or pod template) does not have the shape of a Kubernetes Pod."""


class ServingCertError(InjectorError, OSError):
    """The webhook's serving certificate or key cannot be loaded."""


class CaBundlePatchError(InjectorError, OSError):
    """Patching ``caBundle`` into a webhook configuration failed."""


class CaCertificateError(InjectorError, OSError):
    """The serving certificate could not be obtained from the trustmesh CA, or it is not acceptable.

    ``.code`` is the CA's gRPC status name when the CA refused (``PERMISSION_DENIED``, ...).
    """

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ListenError(InjectorError, OSError):
    """The webhook server cannot bind its address."""


class TrustBundleError(InjectorError, OSError):
    """The trust bundle to copy into pods cannot be read or is not PEM CA certificates."""
