"""sdk.tlsprofile on real OpenSSL handshakes between Python's ssl objects: groups restricted to
X25519/P-256/P-384, no session resumption; and SpiffeTls (apps terminating their own mTLS) uses it."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass

import pytest

from sdk.bundle import BundleSet
from sdk.errors import TlsSetupError
from sdk import tlsprofile
from sdk.tlsprofile import GROUPS, apply_mesh_profile, releases_idle_buffers, restrict_groups
from sdk.workloadapi.tls import SpiffeTls
from sdk.x509svid import X509Svid
from tests.integration.sidecar.helpers import Pki

_SSL_CTRL_CLEAR_MODE = 78  # SSL_CTX_clear_mode


@dataclass
class Source:
    svid: X509Svid
    bundles: BundleSet
    generation: int = 1

    def get_x509_svid(self) -> X509Svid:
        return self.svid


@pytest.fixture(scope="module")
def tls() -> tuple[SpiffeTls, SpiffeTls]:
    pki = Pki()
    bundles = BundleSet([pki.bundle])
    return SpiffeTls(Source(pki.svid("/ns/b/sa/server"), bundles)), SpiffeTls(Source(pki.svid("/ns/a/sa/client"), bundles))


def _exchange(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, session: ssl.SSLSession | None = None):
    """One connection over a socket pair: (the client's session, was it resumed?)."""
    a, b = socket.socketpair()
    errors: list[Exception] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(b, server_side=True) as tls:
                tls.sendall(b"ok")
                tls.recv(1)
        except (ssl.SSLError, OSError) as err:
            errors.append(err)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(a, session=session) as tls:
            assert tls.recv(2) == b"ok"
            tls.sendall(b"x")
            return tls.session, tls.session_reused
    finally:
        a.close()
        thread.join(10)


def test_server_and_client_contexts_carry_the_profile(tls):
    server_ctx, client_ctx = tls[0].server_context(), tls[1].client_context()
    assert server_ctx.options & ssl.OP_NO_TICKET and client_ctx.options & ssl.OP_NO_TICKET
    assert server_ctx.num_tickets == 0


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_spiffe_tls_never_resumes_so_every_peer_chain_is_checked(tls, version):
    server_ctx, client_ctx = tls[0].server_context(), tls[1].client_context()
    client_ctx.maximum_version = version
    session, _ = _exchange(server_ctx, client_ctx)
    _, resumed = _exchange(server_ctx, client_ctx, session)
    assert not resumed


@pytest.mark.parametrize(("group", "accepted"), [("X448", False), ("P-521", False), ("ffdhe2048", False), *((g, True) for g in GROUPS)])
def test_spiffe_tls_server_accepts_only_the_profile_groups(tls, group, accepted):
    client_ctx = tls[1].client_context()
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # one group offered, one key share
    restrict_groups(client_ctx, (group,))
    if accepted:
        _exchange(tls[0].server_context(), client_ctx)
    else:
        with pytest.raises(ssl.SSLError):
            _exchange(tls[0].server_context(), client_ctx)


def test_failures_are_reported_not_ignored():
    with pytest.raises(TlsSetupError, match="refused the key-exchange groups"):
        restrict_groups(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), ("no-such-group",))
    with pytest.raises(TlsSetupError, match="expected an ssl.SSLContext"):
        apply_mesh_profile(object())  # type: ignore[arg-type]


def test_idle_connections_release_their_record_buffers_and_traffic_still_flows(tls):
    server_ctx, client_ctx = tls[0].server_context(), tls[1].client_context()
    assert releases_idle_buffers(server_ctx) and releases_idle_buffers(client_ctx)
    _exchange(server_ctx, client_ctx)


def test_the_profile_sets_release_buffers_itself():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctrl, _ = tlsprofile._libssl()
    ctrl(tlsprofile._ssl_ctx(ctx), _SSL_CTRL_CLEAR_MODE, 0x10, None)  # CPython sets it; take it away
    assert not releases_idle_buffers(ctx)
    apply_mesh_profile(ctx)
    assert releases_idle_buffers(ctx)
