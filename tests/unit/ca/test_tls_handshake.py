"""Issued SVIDs work for what they are for: a real mutual-TLS handshake (OpenSSL via `ssl`).

The handshake runs over in-memory BIOs, so no socket is opened; both sides
are real OpenSSL TLS 1.3 endpoints that check the peer against the bundle.
"""

from __future__ import annotations

import ssl
from datetime import timedelta

import pytest

from ca.authority import chain_pem, load_upstream
from ca.keys import generate_key, private_key_to_pem
from ca.manager import CaConfig, CertificateAuthority
from sdk.spiffeid import SpiffeId
from tests.support.pki import make_intermediate, make_root

SERVER = SpiffeId.parse("spiffe://example.org/ns/prod/sa/api")
CLIENT = SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")


def _context(side, ca, spiffe_id, tmp_path, now, **issue):
    key = generate_key()
    chain = ca.issue_x509_svid(key.public_key(), spiffe_id, timedelta(hours=1), now=now, **issue)
    name = spiffe_id.segments[-1]
    (tmp_path / f"{name}.crt").write_bytes(chain_pem(chain))
    (tmp_path / f"{name}.key").write_bytes(private_key_to_pem(key))
    context = ssl.SSLContext(side)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
    context.load_verify_locations(cadata=ca.bundle().to_pem().decode())
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _handshake(client_ctx, server_ctx, server_name):
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False, server_hostname=server_name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {client: False, server: False}
    for _ in range(20):  # bounded: TLS 1.3 needs a handful of flights
        for side in (client, server):
            if not done[side]:
                try:
                    side.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client.getpeercert(), server.getpeercert()
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize("upstream", [False, True], ids=["own-root", "upstream-intermediate"])
def test_mutual_tls_between_two_issued_svids(td, now, tmp_path, upstream):
    up = None
    if upstream:
        root = make_root("corp.example")
        mid = make_intermediate(root)
        up = load_upstream(mid.pem + root.pem, mid.key, now=now)
    ca = CertificateAuthority.create(CaConfig(td), now=now, upstream=up)
    server_ctx = _context(ssl.PROTOCOL_TLS_SERVER, ca, SERVER, tmp_path, now, dns_names=["api.prod.svc"])
    client_ctx = _context(ssl.PROTOCOL_TLS_CLIENT, ca, CLIENT, tmp_path, now)

    seen_by_client, seen_by_server = _handshake(client_ctx, server_ctx, "api.prod.svc")

    assert ("URI", str(SERVER)) in seen_by_client["subjectAltName"]
    assert ("URI", str(CLIENT)) in seen_by_server["subjectAltName"]


def test_a_client_from_another_ca_is_refused(td, now, tmp_path):
    ours = CertificateAuthority.create(CaConfig(td), now=now)
    theirs = CertificateAuthority.create(CaConfig(td), now=now)
    server_ctx = _context(ssl.PROTOCOL_TLS_SERVER, ours, SERVER, tmp_path, now, dns_names=["api.prod.svc"])
    client_ctx = _context(ssl.PROTOCOL_TLS_CLIENT, theirs, CLIENT, tmp_path, now)
    client_ctx.load_verify_locations(cadata=ours.bundle().to_pem().decode())
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_VERIFY_FAILED|unknown ca|certificate verify failed"):
        _handshake(client_ctx, server_ctx, "api.prod.svc")
