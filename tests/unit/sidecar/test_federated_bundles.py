"""Federated bundles the CA hands out, on the sidecar: a foreign caller is verified against its own
trust domain's bundle, and a change of that bundle reaches open connections like an own-bundle
change does (re-verified at the next request, cut off when no longer trusted). Real TLS."""

from __future__ import annotations

import asyncio

from sdk.bundle import Bundle
from sdk.spiffeid import TrustDomain
from sdk.x509svid import X509Svid
from sidecar.identity import StaticIdentity
from tests.support.pki import chain_pem, make_intermediate, make_leaf, make_root
from tests.unit.sidecar.conftest import config, rule_authorizer
from tests.unit.sidecar.test_review_smuggling import exchange_on

PARTNER = TrustDomain.parse("partner.org")
CALLER = "spiffe://partner.org/ns/billing/sa/api"
REQUEST = b"GET /data HTTP/1.1\r\nHost: b\r\n\r\n"


class _Partner:
    def __init__(self) -> None:
        self.root = make_root("partner.org")
        self.mid = make_intermediate(self.root)

    def bundle(self, *roots) -> Bundle:
        return Bundle(PARTNER, tuple(r.cert for r in (roots or (self.root,))))

    def identity(self, home_bundle: Bundle) -> StaticIdentity:
        leaf = make_leaf(self.mid, CALLER)
        return StaticIdentity(X509Svid.parse(chain_pem(leaf, self.mid), leaf.key_pem), [self.bundle(), home_bundle])


async def _connected(mesh, pki, app, partner: _Partner):
    """A server sidecar holding partner.org's bundle, and a partner caller's connection to it (one 200 done)."""
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer({CALLER}))
    b.identity.put_ca_federated_bundles([partner.bundle()])
    client = partner.identity(pki.bundle)
    reader, writer = await asyncio.open_connection("127.0.0.1", b.ports["inbound"], ssl=client.client_context())
    assert (await exchange_on(reader, writer, REQUEST)).startswith(b"HTTP/1.1 200")
    return b, reader, writer


async def test_a_foreign_caller_is_admitted_and_cut_off_when_its_root_leaves_the_federated_bundle(mesh, pki, app):
    partner = _Partner()
    b, reader, writer = await _connected(mesh, pki, app, partner)
    try:
        # partner.org rotates with overlap: both roots in the bundle, the connection stays good.
        successor = make_root("partner.org")
        generation = b.identity.generation
        b.identity.put_ca_federated_bundles([partner.bundle(partner.root, successor)])
        assert b.identity.generation == generation + 1
        assert (await exchange_on(reader, writer, REQUEST)).startswith(b"HTTP/1.1 200")
        # ... then drops the old root: the open connection is re-verified and refused.
        b.identity.put_ca_federated_bundles([partner.bundle(successor)])
        assert (await exchange_on(reader, writer, REQUEST)).startswith(b"HTTP/1.1 403")
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
    assert len(app.seen) == 2


async def test_a_trust_domain_the_ca_stops_sending_is_forgotten_and_its_callers_refused(mesh, pki, app):
    b, reader, writer = await _connected(mesh, pki, app, _Partner())
    try:
        b.identity.put_ca_federated_bundles([])
        assert PARTNER not in b.identity.get_bundle_set()
        assert (await exchange_on(reader, writer, REQUEST)).startswith(b"HTTP/1.1 403")
    finally:
        writer.close()


def test_the_same_set_again_is_no_change_and_the_own_domain_is_never_replaced(pki):
    identity = pki.identity("/ns/b/sa/server")
    partner = _Partner()
    identity.put_ca_federated_bundles([partner.bundle()])
    generation = identity.generation
    identity.put_ca_federated_bundles([partner.bundle()])
    assert identity.generation == generation
    own = identity.get_bundle_set().get_bundle_for_trust_domain(TrustDomain.parse("example.org"))
    identity.put_ca_federated_bundles([partner.bundle(), Bundle(TrustDomain.parse("example.org"), (make_root().cert,))])
    assert identity.get_bundle_set().get_bundle_for_trust_domain(TrustDomain.parse("example.org")) is own
