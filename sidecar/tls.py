"""TLS contexts for mutual TLS between sidecars, and verification of the peer.

Both directions use TLS 1.2 or later (1.3 preferred, which OpenSSL does by
default), ECDHE with AES-GCM or ChaCha20-Poly1305 only, over X25519, P-256 or
P-384 (:mod:`sdk.tlsprofile`), no compression, no renegotiation, no session
resumption (every connection is a full handshake whose peer chain is verified). The contexts carry every trust anchor of every bundle held
(own and federated trust domains), so OpenSSL refuses unknown chains during
the handshake; after it, :func:`verify_peer` re-verifies the chain the peer
sent with the sdk's :func:`sdk.x509svid.verify_chain`, against the bundle of
the *leaf's* trust domain only, and applies the X509-SVID leaf rules. A
connection whose peer fails that check is closed by the caller.

Contexts are immutable once built: on rotation (new SVID or new bundle) the
holder builds new ones and uses them for new connections; connections that
are open keep the context they were made with.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509

from sdk.tlsprofile import apply_mesh_profile
from sidecar.errors import PeerVerificationError

if TYPE_CHECKING:
    from sdk.bundle import Bundle, BundleSource
    from sdk.spiffeid import SpiffeId

__all__ = [
    "CIPHERS_TLS12",
    "authorities_pem",
    "make_server_context",
    "make_client_context",
    "peer_chain",
    "verify_peer",
]

CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1:!MD5"


def authorities_pem(bundles: Iterable[Bundle]) -> bytes:
    """Every X.509 authority of ``bundles`` as one PEM blob (for a context's CA store)."""
    return b"".join(b.to_pem() for b in bundles)


class _DirectSSLObject(ssl.SSLObject):
    """An ``ssl.SSLObject`` whose ``read``, ``write`` and ``pending`` are the C methods themselves.

    The event loop's TLS layer calls these once or more per record; ``ssl.SSLObject``'s
    versions are one-line Python wrappers around the same C methods, so binding those
    directly saves a Python frame per call and changes nothing else.
    """

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self = super()._create(*args, **kwargs)  # type: ignore[misc]
        inner = self._sslobj
        self.read = inner.read
        self.write = inner.write
        self.pending = inner.pending
        return self


def _base_context(protocol: int, chain_pem: bytes, key_pem: bytes, cadata: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.sslobject_class = _DirectSSLObject
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS_TLS12)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_SINGLE_ECDH_USE
    apply_mesh_profile(ctx)  # X25519, P-256, P-384 only; no session resumption
    _load_key_and_chain(ctx, chain_pem, key_pem)
    if not cadata.strip():
        raise PeerVerificationError("no trust anchors: the bundle set holds no X.509 authority")
    ctx.load_verify_locations(cadata=cadata.decode("ascii"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _load_key_and_chain(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """Load the SVID through an anonymous memory file: the private key never touches a disk."""
    fd = os.memfd_create("trustmesh-svid", os.MFD_CLOEXEC)
    try:
        os.write(fd, chain_pem + b"\n" + key_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def make_server_context(chain_pem: bytes, key_pem: bytes, cadata: bytes) -> ssl.SSLContext:
    """Server side of mutual TLS: presents the SVID, requires a client certificate.

    ALPN offers ``h2`` and ``http/1.1``; a client that asks for neither speaks HTTP/1.1.
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, chain_pem, key_pem, cadata)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def make_client_context(chain_pem: bytes, key_pem: bytes, cadata: bytes, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """Client side of mutual TLS: presents the SVID, requires the server's.

    SVIDs carry no DNS names, so hostname checking is off; the server's
    SPIFFE ID is checked by :func:`verify_peer` instead. ``alpn``: the protocols to
    ask for (none: HTTP/1.1 or opaque TCP, as every sidecar understands).
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, chain_pem, key_pem, cadata)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[x509.Certificate]:
    """The certificate chain the peer sent, leaf first (empty if none)."""
    inner = getattr(ssl_object, "_sslobj", ssl_object)
    getter = getattr(inner, "get_unverified_chain", None)
    if getter is None:  # Python 3.13+: public API on SSLObject
        getter = ssl_object.get_unverified_chain  # type: ignore[union-attr]
    raw = getter() or []
    return [_certificate(item if isinstance(item, bytes) else item.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
            for item in raw]


# A peer sends the same leaf and intermediate on each of its connections: parsing each distinct DER
# once also keeps what cryptography derives from it (its extensions) for the checks that follow.
_certificate = functools.lru_cache(maxsize=512)(x509.load_der_x509_certificate)


Verifier = Callable[..., "SpiffeId"]


def verify_peer(
    ssl_object: ssl.SSLObject | ssl.SSLSocket,
    bundles: BundleSource,
    now: datetime | None = None,
    verify: Verifier | None = None,
) -> SpiffeId:
    """The peer's SPIFFE ID, once its chain verifies against its trust domain's bundle.

    Raises :class:`PeerVerificationError` (with the precise reason) otherwise.
    """
    if verify is None:
        from sdk.x509svid import verify_chain as verify
    chain: Sequence[x509.Certificate] = peer_chain(ssl_object)
    if not chain:
        raise PeerVerificationError("peer presented no certificate")
    try:
        return verify(chain, bundles, now=now)
    except (ValueError, PermissionError) as err:
        raise PeerVerificationError(f"peer certificate rejected: {err}") from err
