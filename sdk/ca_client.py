"""An async client for the trustmesh CA's gRPC service.

The sidecar (and anything else that needs an SVID from the CA) talks to the
CA through this class. The channel is TLS, server-authenticated with the CA's
serving certificate, which must chain to ``ca_bundle``; every call carries
``authorization: Bearer <token>`` from ``token_source`` (called once per RPC,
so rotated projected tokens are picked up).

Example::

    client = CaClient("127.0.0.1:15012", bundle_pem, lambda: token_path.read_text())
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    chain, bundle = await client.sign_x509_svid(csr.public_bytes(serialization.Encoding.DER))
    await client.close()

The bundle calls (``fetch_bundle``, ``watch_bundle``) carry no credential:
the bundle is public. By default (``follow_bundle=True``) the client trusts
the X.509 authorities of each newer bundle it receives for the CA's own
serving certificate, so it keeps working across CA rotations. Failures raise :class:`CaClientError`, whose ``code`` is the gRPC status code
name (``"UNAUTHENTICATED"``, ``"PERMISSION_DENIED"``, ``"UNAVAILABLE"``, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from sdk.bundle import Bundle
from sdk.errors import TrustmeshError
from sdk.proto import ca_pb2, ca_pb2_grpc
from sdk.spiffeid import TrustDomain
from sdk.x509svid import X509Svid

__all__ = ["CaClient", "CaClientError", "TrustBundles", "bundle_from_message", "trust_from_message", "MAX_MESSAGE_BYTES"]

# Upper bound for any message either way; the CA enforces its own, smaller,
# request limits.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class CaClientError(TrustmeshError, OSError):
    """A CA call failed; ``code`` is the gRPC status code name."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.details = message


def bundle_from_message(msg: ca_pb2.Bundle) -> Bundle:
    """Turn a wire ``Bundle`` message into an :class:`sdk.bundle.Bundle`."""
    try:
        td = TrustDomain.parse(msg.trust_domain)
        return Bundle.parse_jwks(msg.jwks, td)
    except (TrustmeshError, ValueError) as err:
        raise CaClientError(f"CA sent an unusable bundle: {err}", "INTERNAL") from err


@dataclass(frozen=True)
class TrustBundles:
    """The CA's own bundle and the federated trust domains' bundles (one each, never merged)."""

    own: Bundle
    federated: tuple[Bundle, ...] = ()


def trust_from_message(msg: ca_pb2.Bundle) -> TrustBundles:
    """The own bundle and the ``federated_bundles`` of a wire ``Bundle`` message.

    A federated bundle naming the own trust domain, or a trust domain twice, makes the
    whole message unusable: trust domains are never merged or shadowed.
    """
    own = bundle_from_message(msg)
    federated: list[Bundle] = []
    for item in msg.federated_bundles:
        bundle = bundle_from_message(item)
        if bundle.trust_domain == own.trust_domain or any(f.trust_domain == bundle.trust_domain for f in federated):
            raise CaClientError(f"CA sent a second bundle for {bundle.trust_domain}", "INTERNAL")
        federated.append(bundle)
    return TrustBundles(own, tuple(federated))


def _ttl_seconds(ttl: timedelta | None) -> int:
    if ttl is None:
        return 0
    seconds = int(ttl.total_seconds())
    if seconds <= 0:
        raise CaClientError(f"ttl must be positive, got {ttl}", "INVALID_ARGUMENT")
    return min(seconds, 2**32 - 1)


class CaClient:
    """Calls the CA's ``trustmesh.ca.v1.CA`` service over TLS.

    ``ca_bundle`` holds the trust anchors for the CA's serving certificate
    (a :class:`Bundle` or PEM bytes). ``server_name`` overrides the name
    checked against that certificate (for example when dialling an IP).
    ``timeout`` is the deadline, in seconds, of each unary call.
    """

    def __init__(
        self,
        address: str,
        ca_bundle: Bundle | bytes,
        token_source: Callable[[], str],
        server_name: str | None = None,
        timeout: float = 5.0,
        *,
        follow_bundle: bool = True,
    ) -> None:
        self._sequence: int | None = None
        if isinstance(ca_bundle, Bundle):
            roots = ca_bundle.to_pem()
            self._sequence = ca_bundle.sequence
        else:
            roots = bytes(ca_bundle)
        if not roots.strip():
            raise CaClientError("no trust anchors for the CA's serving certificate", "INVALID_ARGUMENT")
        self._address = address
        self._roots = roots
        self._token_source = token_source
        self._server_name = server_name
        self._timeout = timeout
        self._follow = follow_bundle
        self._channel: grpc.aio.Channel | None = None
        self._stub_obj: ca_pb2_grpc.CAStub | None = None
        self._old_channels: list[grpc.aio.Channel] = []
        # The federated trust domains the CA told this workload to trust, from its last SVID;
        # None until then, or when the CA does not scope federation (every federated bundle applies).
        self.federation_scope: frozenset[TrustDomain] | None = None

    def _stub(self) -> ca_pb2_grpc.CAStub:
        # The channel is created on first use so that it binds to the running loop.
        if self._stub_obj is None:
            options: list[tuple[str, object]] = [
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ]
            if self._server_name:
                options.append(("grpc.ssl_target_name_override", self._server_name))
            creds = grpc.ssl_channel_credentials(root_certificates=self._roots)
            self._channel = grpc.aio.secure_channel(self._address, creds, options=options)
            self._stub_obj = ca_pb2_grpc.CAStub(self._channel)
        return self._stub_obj

    def _learn(self, bundle: Bundle) -> Bundle:
        """Trust a newer bundle's X.509 authorities for the CA's own certificate.

        The CA's serving certificate moves to a new authority after a
        rotation; the bundle announced that authority beforehand, over this
        already-verified channel. New calls then use a channel with the new
        roots (an open ``watch_bundle`` stream keeps its channel).
        """
        newer = self._sequence is None or (bundle.sequence or 0) > self._sequence
        if self._follow and newer and bundle.x509_authorities:
            self._roots = bundle.to_pem()
            self._sequence = bundle.sequence
            if self._channel is not None:
                self._old_channels.append(self._channel)
            self._channel = None
            self._stub_obj = None
        return bundle

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        try:
            token = self._token_source().strip()
        except OSError as err:  # e.g. the projected token file is not there yet
            raise CaClientError(f"cannot get a token: {err}", "UNAUTHENTICATED") from err
        if not token:
            raise CaClientError("the token source returned an empty token", "UNAUTHENTICATED")
        return (("authorization", f"Bearer {token}"),)

    async def sign_x509_svid(
        self,
        csr_der: bytes,
        ttl: timedelta | None = None,
        *,
        renew: X509Svid | None = None,
        dns_names: Sequence[str] = (),
    ) -> tuple[tuple[x509.Certificate, ...], Bundle]:
        """Have the CA sign ``csr_der``; returns (leaf-first chain, bundle).

        With ``renew``, the call is authenticated by proving that SVID (its
        chain plus a signature over the CSR with its key) instead of a token;
        the CA must enable ``svid_renewal``. ``dns_names`` asks for a serving
        certificate: the CA adds them only if its ``serving_certificates``
        allow-list grants them to the caller, else the call fails with
        ``PERMISSION_DENIED``. The returned leaf is checked to carry the CSR's
        public key and exactly the requested DNS names.
        """
        if isinstance(dns_names, str):
            dns_names = [dns_names]
        request = ca_pb2.SignX509SVIDRequest(
            csr=csr_der, requested_ttl_seconds=_ttl_seconds(ttl), dns_names=list(dns_names)
        )
        if renew is not None:
            request.renew_chain.extend(c.public_bytes(serialization.Encoding.DER) for c in renew.cert_chain)
            request.renew_signature = _sign(renew.private_key, csr_der)
        response = await self._unary(self._stub().SignX509SVID, request, authenticated=renew is None)
        try:
            chain = tuple(x509.load_der_x509_certificate(der) for der in response.cert_chain)
        except ValueError as err:
            raise CaClientError(f"CA sent an unparsable certificate: {err}", "INTERNAL") from err
        if not chain:
            raise CaClientError("CA sent an empty certificate chain", "INTERNAL")
        _require_same_key(chain[0], csr_der)
        _require_dns_names(chain[0], dns_names)
        if response.HasField("federation"):
            try:
                self.federation_scope = frozenset(TrustDomain.parse(td) for td in response.federation.trust_domains)
            except ValueError as err:
                raise CaClientError(f"CA sent an unusable federation scope: {err}", "INTERNAL") from err
        return chain, self._learn(bundle_from_message(response.bundle))

    async def mint_jwt_svid(self, audiences: Sequence[str], ttl: timedelta | None = None) -> str:
        """Have the CA mint a JWT-SVID for ``audiences``; returns the token."""
        if isinstance(audiences, str):
            audiences = [audiences]
        request = ca_pb2.MintJWTSVIDRequest(
            audiences=list(audiences), requested_ttl_seconds=_ttl_seconds(ttl)
        )
        response = await self._unary(self._stub().MintJWTSVID, request)
        return response.token

    async def fetch_bundle(self) -> Bundle:
        """The CA's current trust bundle."""
        response = await self._unary(self._stub().FetchBundle, ca_pb2.FetchBundleRequest(), authenticated=False)
        return self._learn(bundle_from_message(response))

    async def watch_bundle(self) -> AsyncIterator[Bundle]:
        """Yield the current bundle, then every new one the CA publishes.

        Ends with :class:`CaClientError` when the stream breaks; the caller
        decides whether and when to watch again.
        """
        last: Bundle | None = None
        async for trust in self.watch_trust():
            if last is None or trust.own.to_jwks() != last.to_jwks():
                last = trust.own
                yield trust.own

    async def watch_trust(self) -> AsyncIterator[TrustBundles]:
        """Like :meth:`watch_bundle`, with the federated bundles: a new item when any of them changes."""
        call = self._stub().WatchBundle(ca_pb2.WatchBundleRequest())
        try:
            async for message in call:
                trust = trust_from_message(message)
                self._learn(trust.own)
                yield trust
        except grpc.aio.AioRpcError as err:
            raise _translate(err) from err
        finally:
            call.cancel()
        raise CaClientError("the CA closed the bundle stream", "UNAVAILABLE")

    async def close(self) -> None:
        """Close the channels (idempotent)."""
        for channel in (*self._old_channels, self._channel):
            if channel is not None:
                await channel.close()
        self._old_channels.clear()
        self._channel = None
        self._stub_obj = None

    async def __aenter__(self) -> CaClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _unary(self, method, request, *, authenticated: bool = True):
        metadata = self._metadata() if authenticated else ()
        try:
            return await method(request, metadata=metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as err:
            raise _translate(err) from err


def _translate(err: grpc.aio.AioRpcError) -> CaClientError:
    code = err.code()
    name = code.name if code is not None else "UNKNOWN"
    return CaClientError(err.details() or name, name)


def _sign(key: object, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    raise CaClientError(f"cannot sign a renewal with a {type(key).__name__}", "INVALID_ARGUMENT")


def _require_dns_names(leaf: x509.Certificate, requested: Sequence[str]) -> None:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        present = {name.lower() for name in san.get_values_for_type(x509.DNSName)}
    except x509.ExtensionNotFound:
        present = set()
    if present != {name.lower() for name in requested}:
        raise CaClientError(
            f"CA returned a certificate with DNS names {sorted(present)}, asked for {sorted(requested)}", "INTERNAL"
        )


def _require_same_key(leaf: x509.Certificate, csr_der: bytes) -> None:
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except ValueError:
        return  # the CA accepted it; nothing to compare against locally
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if leaf.public_key().public_bytes(*fmt) != csr.public_key().public_bytes(*fmt):
        raise CaClientError("CA returned a certificate for a different key", "INTERNAL")
