"""The trust bundle the injector copies into pods when ``trust_bundle_file`` is set.

The file is normally the CA's ``trustmesh-bundle`` ConfigMap
(``trustmesh-system``) mounted into the injector; the kubelet refreshes it
when the CA rotates, and :class:`TrustBundleFile` re-reads it when it
changes. Its content must be PEM CA certificates; anything else is refused,
so a pod is never given an empty or garbled bundle.
"""

from __future__ import annotations

import os

from cryptography import x509

from injector.errors import TrustBundleError
from sdk.pem import mismatch

__all__ = ["TrustBundleFile", "check_bundle_pem"]


def check_bundle_pem(pem: bytes, source: str) -> str:
    """Return ``pem`` as text if it holds one or more CA certificates."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as err:
        what = mismatch(pem, expected="PEM CA certificates", label="CERTIFICATE")
        raise TrustBundleError(f"trust bundle {source}: {what}") from err
    for cert in certs:
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        except (x509.UnsupportedGeneralNameType, ValueError) as err:
            raise TrustBundleError(
                f"trust bundle {source}: {cert.subject.rfc4514_string()!r} has unreadable extensions: {err}"
            ) from err
        if not is_ca:
            raise TrustBundleError(f"trust bundle {source}: {cert.subject.rfc4514_string()!r} is not a CA")
    return pem.decode("ascii")


class TrustBundleFile:
    """Reads and checks a PEM bundle file, again only when it changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._text = ""

    def read(self) -> str:
        try:
            info = os.stat(self.path)
            stamp = (info.st_mtime_ns, info.st_size)
            if stamp != self._stamp:
                with open(self.path, "rb") as fh:
                    self._text = check_bundle_pem(fh.read(), self.path)
                self._stamp = stamp
        except OSError as err:
            raise TrustBundleError(f"cannot read the trust bundle {self.path}: {err.strerror or err}") from err
        return self._text
