"""Mutual TLS with SPIFFE identities for apps that terminate their own TLS.

:class:`SpiffeTls` turns an :class:`X509Source` (or anything with
``get_x509_svid()``, ``bundles`` and ``generation``) into ``ssl`` contexts
and checks peers::

    tls = SpiffeTls(x509_source)
    server_ctx = tls.server_context()      # follows SVID and bundle rotations
    ...
    caller = tls.peer_id(ssl_object, authorize=match_member_of(td))

The contexts trust every X.509 authority of every bundle (own and federated),
so OpenSSL refuses unknown chains in the handshake. That alone would let one
trust domain's CA vouch for another's IDs, so :meth:`SpiffeTls.peer_id`
re-verifies the chain the peer sent with :func:`sdk.x509svid.verify_chain`
against the bundle of the *leaf's own* trust domain, then applies the
matcher. A server context picks up rotations by itself (new connections get
the current SVID and trust anchors); a client context is a snapshot, so ask
for a new one per connection or after :meth:`X509Source.changed`.
Host names are not checked: SVIDs carry SPIFFE IDs, not DNS names. The
private key reaches OpenSSL through an anonymous memory file, never a disk.
"""

from __future__ import annotations

import os
import ssl
from typing import Protocol

from cryptography import x509

from sdk.bundle import BundleSet
from sdk.errors import X509SvidError
from sdk.match import Matcher
from sdk.spiffeid import SpiffeId
from sdk.tlsprofile import apply_mesh_profile
from sdk.x509svid import X509Svid, verify_chain

__all__ = ["SpiffeTls", "X509ContextSource", "peer_chain"]

_CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


class X509ContextSource(Protocol):
    """What :class:`SpiffeTls` needs: :class:`sdk.workloadapi.X509Source` has it."""

    def get_x509_svid(self) -> X509Svid: ...

    @property
    def bundles(self) -> BundleSet: ...

    @property
    def generation(self) -> int: ...


def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> tuple[x509.Certificate, ...]:
    """The certificates the peer sent, leaf first (empty if it sent none)."""
    public = getattr(ssl_object, "get_unverified_chain", None)  # Python 3.13+
    if public is None:
        public = ssl_object._sslobj.get_unverified_chain  # type: ignore[union-attr]
    chain = []
    for item in public() or ():
        der = item if isinstance(item, bytes) else item.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
        chain.append(x509.load_der_x509_certificate(der))
    return tuple(chain)


class SpiffeTls:
    """``ssl`` contexts presenting the workload's SVID, and SPIFFE peer checks."""

    def __init__(self, source: X509ContextSource) -> None:
        self._source = source
        self._current: tuple[int, ssl.SSLContext] | None = None

    def server_context(self) -> ssl.SSLContext:
        """A server context requiring client certificates, following rotations."""
        outer = self._build(ssl.PROTOCOL_TLS_SERVER)

        def use_current(ssl_object: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
            ssl_object.context = self._current_server()

        outer.sni_callback = use_current
        return outer

    def client_context(self) -> ssl.SSLContext:
        """A client context presenting the current SVID and requiring the server's."""
        ctx = self._build(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        return ctx

    def peer_id(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None, authorize: Matcher | None = None
    ) -> SpiffeId:
        """The peer's verified SPIFFE ID; raises ``X509SvidError`` or ``AuthorizationError``."""
        if ssl_object is None:
            raise X509SvidError("the connection is not TLS")
        chain = peer_chain(ssl_object)
        if not chain:
            raise X509SvidError("the peer presented no certificate")
        spiffe_id = verify_chain(chain, self._source.bundles)
        if authorize is not None:
            authorize(spiffe_id)
        return spiffe_id

    def _current_server(self) -> ssl.SSLContext:
        generation = self._source.generation
        current = self._current
        if current is None or current[0] != generation:
            current = self._current = (generation, self._build(ssl.PROTOCOL_TLS_SERVER))
        return current[1]

    def _build(self, protocol: int) -> ssl.SSLContext:
        svid = self._source.get_x509_svid()
        anchors = b"".join(b.to_pem() for b in self._source.bundles.bundles())
        if not anchors.strip():
            raise X509SvidError("no X.509 authorities to trust: the bundle set is empty")
        ctx = ssl.SSLContext(protocol)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(_CIPHERS_TLS12)
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        apply_mesh_profile(ctx)  # X25519, P-256, P-384 only; no session resumption (peers are re-verified)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=anchors.decode("ascii"))
        fd = os.memfd_create("trustmesh-svid", os.MFD_CLOEXEC)
        try:
            data = memoryview(svid.cert_chain_pem() + b"\n" + svid.private_key_pem())
            while data:
                data = data[os.write(fd, data) :]
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return ctx


