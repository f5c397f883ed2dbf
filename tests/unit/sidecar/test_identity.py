"""The identity manager against a real CA service (gRPC over TLS, in this process), and
against small in-memory signers for the failures a real CA never produces."""

import asyncio
import random
from datetime import timedelta

import pytest
from cryptography import x509

from sdk.ca_client import CaClient
from sdk.spiffeid import TrustDomain
from sidecar.errors import IdentityUnavailableError
from sidecar.identity import IdentityManager
from tests.integration.sidecar.helpers import Pki, start_ca
from tests.support.pki import make_leaf

TOKEN = "token-web-0123456789abcdef"
WEB = "spiffe://example.org/ns/prod/sa/web"
TD = TrustDomain.parse("example.org")


@pytest.fixture
async def ca(tmp_path):
    service = await start_ca(tmp_path, {TOKEN: WEB}, x509_ttl=60)
    yield service
    await service.stop(grace=0.5)


@pytest.fixture
async def client(ca):
    c = CaClient(f"127.0.0.1:{ca.grpc_port}", ca.ca.bundle(), lambda: TOKEN)
    yield c
    await c.close()


async def test_first_svid_bundle_and_contexts(client):
    manager = IdentityManager(client, TD, rng=random.Random(1))
    await manager.start()
    try:
        assert await manager.wait_ready(10)
        assert str(manager.spiffe_id) == WEB
        assert manager.valid()
        assert TD in manager.get_bundle_set()
        first_ctx = manager.server_context()
        assert first_ctx is manager.server_context()  # cached until something changes
        old_serial = manager.get_x509_svid().leaf.serial_number
        generation = manager.generation
        await manager.renew()
        assert manager.generation > generation
        assert manager.get_x509_svid().leaf.serial_number != old_serial
        assert manager.server_context() is not first_ctx  # new handshakes get the new SVID
    finally:
        await manager.stop()


async def test_renewal_is_scheduled_around_half_life(client):
    manager = IdentityManager(client, TD, rng=random.Random(7))
    await manager.renew()
    svid = manager.get_x509_svid()
    life = (svid.expires_at - svid.leaf.not_valid_before_utc).total_seconds()
    start = svid.leaf.not_valid_before_utc
    delays = [manager.renewal_delay(now=start) for _ in range(200)]
    assert 0.4 * life <= min(delays) and max(delays) <= 0.6 * life
    assert len({round(d, 3) for d in delays}) > 100  # jittered, not one instant for every pod


async def test_requested_ttl_is_passed_to_the_ca(client):
    manager = IdentityManager(client, TD, ttl=timedelta(seconds=30))
    svid = await manager.renew()
    life = svid.expires_at - svid.leaf.not_valid_before_utc
    assert life <= timedelta(seconds=31)


async def test_unreachable_ca_means_no_identity_and_retries(unused_port, ca):
    client = CaClient(f"127.0.0.1:{unused_port}", ca.ca.bundle(), lambda: TOKEN, timeout=0.5)
    manager = IdentityManager(client, TD, backoff=(0.05, 0.2))
    await manager.start()
    try:
        assert not await manager.wait_ready(1.5)
        assert manager.last_error
        assert not manager.valid()
        assert manager.server_context() is None and manager.client_context() is None
        with pytest.raises(IdentityUnavailableError):
            manager.get_x509_svid()
    finally:
        await manager.stop()
        await client.close()


def test_backoff_grows_with_jitter_and_a_cap():
    manager = IdentityManager(None, TD, rng=random.Random(3), backoff=(0.2, 5.0))
    for failures in range(10):
        delays = [manager._delay(failures) for _ in range(50)]
        assert min(delays) >= 0.1 and max(delays) <= min(5.0, 0.2 * 2**failures)
    assert max(manager._delay(8) for _ in range(50)) > 2.0


class _LocalSigner:
    """Signs CSRs with a test intermediate; ``spiffe_id`` and ``swap_key`` inject CA faults."""

    def __init__(self, pki: Pki, spiffe_id: str, swap_key: bool = False) -> None:
        self.pki, self.spiffe_id, self.swap_key = pki, spiffe_id, swap_key
        self.federation_scope = None

    async def sign_x509_svid(self, csr_der, ttl=None):
        csr = x509.load_der_x509_csr(csr_der)
        key = None if self.swap_key else _PublicOnly(csr.public_key())
        leaf = make_leaf(self.pki.mid, self.spiffe_id, **({"key": key} if key else {}))
        return (leaf.cert, self.pki.mid.cert), self.pki.bundle

    async def mint_jwt_svid(self, audiences, ttl=None):
        raise NotImplementedError

    async def watch_trust(self):
        await asyncio.Event().wait()
        yield  # pragma: no cover


class _PublicOnly:
    """Lets the test PKI issue a certificate for a public key it does not hold."""

    def __init__(self, public):
        self._public = public

    def public_key(self):
        return self._public


@pytest.mark.parametrize(
    "spiffe_id,swap_key,message",
    [
        ("spiffe://other.org/ns/prod/sa/web", False, "trust domain"),
        (WEB, True, "another key"),
    ],
)
async def test_a_wrong_certificate_from_the_ca_is_not_used(spiffe_id, swap_key, message):
    pki = Pki()
    manager = IdentityManager(_LocalSigner(pki, spiffe_id, swap_key), TD)
    with pytest.raises((IdentityUnavailableError, ValueError), match=message):
        await manager.renew()
    assert not manager.valid()


async def test_changed_wakes_waiters():
    pki = Pki()
    manager = IdentityManager(_LocalSigner(pki, WEB), TD)
    waiter = asyncio.create_task(manager.changed(0))
    await asyncio.sleep(0)
    assert not waiter.done()
    await manager.renew()
    assert await asyncio.wait_for(waiter, 2) == 1


def test_a_static_identity_reads_its_bundle_as_the_configured_trust_domain(tmp_path):
    """vec.example's CA signs an SVID claiming other.example: the bundle file is
    vec.example's (the sidecar's trust_domain), so the claim is refused, not adopted."""
    from sdk.errors import X509SvidError
    from sidecar.identity import StaticIdentity
    from tests.support.pki import standard_chain, write_svid

    root, mid, _ = standard_chain("vec.example", "/ns/prod/sa/web")
    cert, key = write_svid(tmp_path / "claims-other", make_leaf(mid, "spiffe://other.example/ns/prod/sa/web"), mid)
    (tmp_path / "bundle.pem").write_bytes(root.pem)
    with pytest.raises(X509SvidError, match="no bundle for trust domain 'other.example'"):
        StaticIdentity.load(cert, key, tmp_path / "bundle.pem", TrustDomain.parse("vec.example"))
    own, own_key = write_svid(tmp_path / "own", make_leaf(mid, "spiffe://vec.example/ns/prod/sa/web"), mid)
    loaded = StaticIdentity.load(own, own_key, tmp_path / "bundle.pem", TrustDomain.parse("vec.example"))
    assert str(loaded.spiffe_id) == "spiffe://vec.example/ns/prod/sa/web"
