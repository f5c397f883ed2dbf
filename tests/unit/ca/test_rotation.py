"""CA rotation with two slots, driven by an injected clock across the CA's whole life."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from ca.authority import load_upstream
from ca.errors import IssuanceError, RotationError
from ca.keys import generate_key
from ca.manager import CaConfig, CertificateAuthority
from ca.rotation import SlotState
from sdk.errors import JwtSvidError, X509SvidError
from sdk.jwtsvid import validate_jwt_svid
from sdk.spiffeid import SpiffeId
from sdk.x509svid import verify_chain
from tests.support.pki import make_root
from tests.unit.ca.conftest import T0

WEB = SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")
CA_TTL = timedelta(hours=24)
SVID_TTL = timedelta(hours=1)
JWT_TTL = timedelta(minutes=30)
STEP = timedelta(minutes=20)


def _config(td):
    return CaConfig(td, ca_ttl=CA_TTL, x509_svid_max_ttl=SVID_TTL, jwt_svid_max_ttl=JWT_TTL)


def _run_life(ca: CertificateAuthority, lifetimes: int, openssl_verify):
    """Tick every STEP for ``lifetimes`` CA lifetimes, issuing an X509- and a JWT-SVID each step.

    At every step, every credential still in date must validate against the
    bundle of that moment (sdk validators); at each rotation step openssl
    must agree for the X509-SVIDs. Returns the log of rotation steps.
    """
    public = generate_key().public_key()
    x509_svids, jwts, log = [], [], []
    last_bundle = ca.bundle()
    now = T0
    while now < T0 + CA_TTL * lifetimes:
        done = ca.tick(now)
        log.extend((now - T0, step.split()[0]) for step in done)
        bundle = ca.bundle()
        if bundle != last_bundle:
            assert bundle.sequence == last_bundle.sequence + 1, f"sequence must grow by one at {now - T0}"
            assert bundle.to_jwks() != last_bundle.to_jwks()
        else:
            assert bundle.sequence == last_bundle.sequence
        last_bundle = bundle
        x509_svids.append(ca.issue_x509_svid(public, WEB, SVID_TTL, now=now))
        jwts.append((ca.mint_jwt_svid(WEB, "api", JWT_TTL, now=now), now + JWT_TTL))
        x509_svids = [c for c in x509_svids if c[0].not_valid_after_utc > now]
        jwts = [(t, exp) for t, exp in jwts if exp > now]
        for chain in x509_svids:
            assert verify_chain(chain, bundle, now) == WEB, f"X509-SVID rejected at {now - T0}"
            if done:
                result = openssl_verify(chain, bundle.x509_authorities, purpose="sslclient", at=now)
                assert result.returncode == 0, f"openssl at {now - T0}: {result.stderr}"
        for token, _ in jwts:
            validate_jwt_svid(token, bundle, "api", now=now, leeway=timedelta(0))
        assert len(bundle.jwt_authorities) == len(ca.slots.all) <= 2
        assert 1 <= len(bundle.x509_authorities) <= len(ca.slots.all)
        now += STEP
    return log


def test_bundle_validates_every_svid_in_date_across_three_ca_lifetimes(td, openssl_verify):
    ca = CertificateAuthority.create(_config(td), now=T0)
    log = _run_life(ca, lifetimes=3, openssl_verify=openssl_verify)
    steps = [s for _, s in log]
    # prepare at half life, activate at 1/6 left, prune once the old one's SVIDs have all expired
    assert log[:3] == [
        (timedelta(hours=12), "prepare"),
        (timedelta(hours=20), "activate"),
        (timedelta(hours=21), "prune"),
    ]
    assert steps.count("activate") >= 3
    assert ca.sequence == 1 + steps.count("prepare") + steps.count("prune")


def test_upstream_signed_ca_rotates_its_intermediate_and_jwt_key(td, openssl_verify):
    user_root = make_root("corp.example", not_before=T0 - timedelta(days=1), not_after=T0 + timedelta(days=90))
    upstream = load_upstream(user_root.pem, user_root.key, now=T0)
    ca = CertificateAuthority.create(_config(td), now=T0, upstream=upstream)
    first = ca.slots.active
    log = _run_life(ca, lifetimes=2, openssl_verify=openssl_verify)
    assert "activate" in [s for _, s in log]
    assert ca.slots.active.id != first.id
    assert ca.bundle().x509_authorities == (user_root.cert,)


def test_manual_rotation_steps_and_their_refusals(td):
    ca = CertificateAuthority.create(_config(td), now=T0)
    old = ca.slots.active
    public = generate_key().public_key()
    with pytest.raises(RotationError, match="no prepared authority"):
        ca.activate(T0)
    with pytest.raises(RotationError, match="no retired authority"):
        ca.taint(T0)

    new = ca.prepare(T0)
    assert ca.sequence == 2 and ca.slots.prepared.id == new.id
    assert set(ca.bundle().jwt_authorities) == {old.id, new.id}
    with pytest.raises(RotationError, match="already prepared"):
        ca.prepare(T0)
    # the prepared authority does not sign yet
    assert ca.issue_x509_svid(public, WEB, now=T0)[0].issuer == old.x509.certificate.subject

    old_chain = ca.issue_x509_svid(public, WEB, now=T0)
    old_token = ca.mint_jwt_svid(WEB, "api", now=T0)
    ca.activate(T0 + timedelta(minutes=1))
    assert ca.sequence == 2  # the bundle did not change
    assert ca.slots.active.id == new.id and ca.slots.retired.id == old.id
    assert ca.slots.retired.state is SlotState.RETIRED
    assert ca.issue_x509_svid(public, WEB, now=T0)[0].issuer == new.x509.certificate.subject
    assert verify_chain(old_chain, ca.bundle(), T0) == WEB
    with pytest.raises(RotationError, match="taint it first"):
        ca.prepare(T0)

    tainted = ca.taint(T0 + timedelta(minutes=2))
    assert tainted.id == old.id and ca.sequence == 3
    assert [t.id for t in ca.tainted] == [old.id]
    assert old.x509.certificate not in ca.bundle().x509_authorities
    with pytest.raises(X509SvidError):
        verify_chain(old_chain, ca.bundle(), T0)
    with pytest.raises(JwtSvidError, match="no JWT authority"):
        validate_jwt_svid(old_token, ca.bundle(), "api", now=T0)


def test_due_reports_what_tick_would_do(td):
    ca = CertificateAuthority.create(_config(td), now=T0)
    assert ca.due(T0) == ()
    assert ca.due(T0 + timedelta(hours=12)) == ("prepare",)
    # a CA left alone past the activation point prepares and activates in one tick
    assert ca.due(T0 + timedelta(hours=21)) == ("prepare", "activate")
    done = ca.tick(T0 + timedelta(hours=21))
    assert [d.split()[0] for d in done] == ["prepare", "activate"]
    assert ca.due(T0 + timedelta(hours=21)) == ()


def test_bundle_jwks_carries_the_sequence_and_both_authorities_during_rotation(td):
    ca = CertificateAuthority.create(_config(td), now=T0)
    ca.prepare(T0)
    doc = json.loads(ca.bundle().to_jwks())
    assert doc["spiffe_sequence"] == 2
    assert sorted(k["use"] for k in doc["keys"]) == ["jwt-svid", "jwt-svid", "x509-svid", "x509-svid"]


def test_a_ca_left_off_past_its_expiry_recovers_on_the_next_ticks(td):
    ca = CertificateAuthority.create(_config(td), now=T0)
    later = T0 + CA_TTL * 3
    public = generate_key().public_key()
    with pytest.raises(IssuanceError, match="expired"):
        ca.issue_x509_svid(public, WEB, now=later)
    assert ca.due(later) == ("prepare", "activate", "prune")
    # the expired authority leaves the bundle in the same tick
    assert [d.split()[0] for d in ca.tick(later)] == ["prepare", "activate", "prune"]
    assert verify_chain(ca.issue_x509_svid(public, WEB, now=later), ca.bundle(), later) == WEB
    assert len(ca.bundle().x509_authorities) == 1 and ca.sequence == 3
    assert ca.tick(later) == ()


def test_a_naive_clock_is_refused(td):
    ca = CertificateAuthority.create(_config(td), now=T0)
    naive = T0.replace(tzinfo=None)
    with pytest.raises(RotationError, match="timezone-aware"):
        ca.tick(naive)
    with pytest.raises(IssuanceError, match="timezone-aware"):
        ca.issue_x509_svid(generate_key().public_key(), WEB, now=naive)
    with pytest.raises(IssuanceError, match="timezone-aware"):
        ca.mint_jwt_svid(WEB, "api", now=naive)


def test_issuing_from_threads_while_rotating_never_yields_a_torn_credential(td):
    ca = CertificateAuthority.create(_config(td), now=T0)
    public = generate_key().public_key()
    issued, errors = [], []

    def worker():
        try:
            for _ in range(60):
                issued.append((ca.issue_x509_svid(public, WEB, now=T0), ca.mint_jwt_svid(WEB, "api", now=T0)))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    ca.prepare(T0)
    ca.activate(T0)
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(issued) == 240
    bundle = ca.bundle()  # holds both authorities: the retired one is still trusted
    for chain, token in issued:
        assert verify_chain(chain, bundle, T0) == WEB
        validate_jwt_svid(token, bundle, "api", now=T0)
