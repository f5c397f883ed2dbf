"""The webhook serving certificate, issued by the trustmesh CA and renewed at half life.

With ``server.certificate_from_ca.enabled`` the injector needs no Secret
issued by hand. At start-up it makes a fresh P-256 key, sends a CSR to the CA
(``SignX509SVID`` with ``dns_names``: the Service's names), authenticated by
its projected ServiceAccount token, and checks the answer: the chain must
verify against the CA's bundle and carry exactly the requested names. Then,
in this order:

1. the CA's X.509 roots (the bundle's authorities, which include the root
   the chain leads to) are written to ``server.ca_bundle.ca_file``;
2. ``caBundle`` is patched into the webhook configurations from that file
   (if ``server.ca_bundle.patch``), so the API server trusts the new root
   before it is ever presented;
3. the key and chain are written to ``server.key_file`` / ``server.cert_file``
   (atomically, key mode 0600) and loaded into the live TLS context, so new
   handshakes get the new certificate and open connections are untouched.

The same steps repeat at half the certificate's life (less up to a tenth
of its life as jitter, so replicas spread out). A failed renewal is retried
with backoff while the current certificate keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from injector.config import InjectorConfig
from injector.errors import CaCertificateError, TrustBundleError
from injector.trust_bundle import check_bundle_pem

__all__ = ["IssuedCertificate", "CaServingCertificate", "renewal_delay", "RETRY_MIN", "RETRY_MAX"]

log = logging.getLogger("trustmesh.injector")

RETRY_MIN, RETRY_MAX = 2.0, 300.0  # seconds between attempts after a failure (doubling)
# Refusals that retrying cannot fix: fail start-up at once.
_FINAL_CODES = frozenset({"PERMISSION_DENIED", "INVALID_ARGUMENT"})


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class IssuedCertificate:
    """A serving certificate from the CA, as the PEM the files will hold."""

    chain_pem: bytes
    key_pem: bytes
    roots_pem: bytes
    serial: int
    not_before: datetime
    not_after: datetime


def renewal_delay(cert: IssuedCertificate, now: datetime, jitter: float) -> float:
    """Seconds until ``cert`` is renewed: half its life, earlier by ``jitter`` (0..1) × a tenth of it."""
    life = (cert.not_after - cert.not_before).total_seconds()
    at = cert.not_before + timedelta(seconds=life * (0.5 - 0.1 * jitter))
    return max((at - now).total_seconds(), 0.0)


class CaServingCertificate:
    """Obtains, installs and renews the injector's serving certificate from the CA.

    ``patch_ca_bundle`` (blocking; it reads ``server.ca_bundle.ca_file``) is
    called after each new set of roots is written. ``client_factory(address,
    roots_pem, token_source, server_name)`` makes the CA client (default:
    :class:`sdk.ca_client.CaClient`).
    """

    def __init__(
        self,
        config: InjectorConfig,
        *,
        patch_ca_bundle: Callable[[], list[str]] | None = None,
        client_factory: Callable[..., Any] | None = None,
        clock: Callable[[], datetime] = _utc_now,
        jitter: Callable[[], float] = random.random,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.settings = config.server.certificate_from_ca
        self._patch = patch_ca_bundle
        self._client_factory = client_factory
        self._clock, self._jitter, self._sleep = clock, jitter, sleep
        self.current: IssuedCertificate | None = None

    # -- one issuance -----------------------------------------------------------------

    async def obtain(self) -> IssuedCertificate:
        """Ask the CA for a new certificate and check it; nothing is written."""
        from sdk.ca_client import CaClient, CaClientError
        from sdk.errors import TrustmeshError
        from sdk.spiffeid import TrustDomain
        from sdk.x509svid import verify_chain

        s = self.settings
        roots = self._read_roots()
        token_file = s.token_file
        factory = self._client_factory or CaClient
        client = factory(s.address or self.config.ca_address, roots, lambda: Path(token_file).read_text(),
                         s.server_name or None)
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
        try:
            chain, bundle = await client.sign_x509_svid(
                csr.public_bytes(serialization.Encoding.DER), timedelta(seconds=s.ttl_seconds), dns_names=s.dns_names
            )
        except CaClientError as err:
            raise CaCertificateError(f"the CA refused the serving certificate: {err}", err.code) from err
        finally:
            await client.close()
        expected = TrustDomain.parse(self.config.trust_domain)
        try:
            spiffe_id = verify_chain(chain, bundle, self._clock())
        except TrustmeshError as err:
            raise CaCertificateError(f"the CA's serving certificate does not verify against its bundle: {err}") from err
        if not spiffe_id.member_of(expected):
            raise CaCertificateError(f"the CA issued {spiffe_id}, which is not in the trust domain {expected}")
        leaf = chain[0]
        log.info("serving certificate %x for %s (%s) issued by the CA, valid until %s",
                 leaf.serial_number, spiffe_id, ", ".join(s.dns_names), leaf.not_valid_after_utc.isoformat())
        return IssuedCertificate(
            chain_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
            key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()),
            roots_pem=bundle.to_pem(),
            serial=leaf.serial_number,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
        )

    def _read_roots(self) -> bytes:
        """The PEM roots to verify the CA's own certificate with (re-read each time: the kubelet updates it)."""
        path = self.settings.bundle_file
        try:
            pem = Path(path).read_bytes()
            check_bundle_pem(pem, path)
        except OSError as err:
            raise CaCertificateError(f"cannot read the CA bundle {path}: {err.strerror or err}") from err
        except TrustBundleError as err:
            raise CaCertificateError(str(err)) from err
        return pem

    async def install(self, issued: IssuedCertificate, reload: Callable[[], None] | None = None) -> None:
        """Roots file → ``caBundle`` patch → key and chain files → ``reload()`` (see the module doc)."""
        server = self.config.server
        _write_atomic(server.ca_bundle.ca_file, issued.roots_pem, 0o644)
        if self._patch is not None:
            for patched in await asyncio.to_thread(self._patch):
                log.info("caBundle patched into %s", patched)
        _write_atomic(server.key_file, issued.key_pem, 0o600)
        _write_atomic(server.cert_file, issued.chain_pem, 0o644)
        if reload is not None:
            reload()
        self.current = issued

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> IssuedCertificate:
        """Obtain and install the first certificate, retrying while the CA cannot be reached.

        Gives up after ``startup_timeout_seconds``, or at once when the CA
        refuses for a reason retrying cannot change (``PERMISSION_DENIED``,
        ``INVALID_ARGUMENT``).
        """
        deadline = self._clock() + timedelta(seconds=self.settings.startup_timeout_seconds)
        attempt = 0
        while True:
            try:
                issued = await self.obtain()
                await self.install(issued)
                return issued
            except CaCertificateError as err:
                attempt += 1
                wait = min(RETRY_MIN * 2 ** (attempt - 1), RETRY_MAX)
                if err.code in _FINAL_CODES or self._clock() + timedelta(seconds=wait) > deadline:
                    raise
                log.warning("no serving certificate from the CA yet (attempt %d, retry in %.0f s): %s",
                            attempt, wait, err)
                await self._sleep(wait)

    async def renew_once(self, reload: Callable[[], None] | None = None) -> IssuedCertificate:
        """Obtain and install a new certificate now."""
        issued = await self.obtain()
        await self.install(issued, reload)
        return issued

    async def renew_forever(self, reload: Callable[[], None]) -> None:
        """Renew at half life; on failure keep serving the current certificate and retry with backoff."""
        failures = 0
        while True:
            if failures:
                delay = min(RETRY_MIN * 2 ** (failures - 1), RETRY_MAX)
            else:
                assert self.current is not None, "start() first"
                delay = renewal_delay(self.current, self._clock(), self._jitter())
            await self._sleep(delay)
            try:
                await self.renew_once(reload)
                failures = 0
            except Exception as err:  # noqa: BLE001 - the loop must outlive any one failure
                failures += 1
                until = self.current.not_after.isoformat() if self.current else "?"
                log.warning("renewing the serving certificate failed (attempt %d); the current one is valid "
                            "until %s: %s", failures, until, err)


def _write_atomic(path: str, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, never a mix."""
    directory = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    except OSError as err:
        raise CaCertificateError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
        os.replace(tmp, path)
    except OSError as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CaCertificateError(f"cannot write {path}: {err.strerror or err}") from err
