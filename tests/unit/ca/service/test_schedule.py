"""The rotation policy: prepare, publish, and only later activate."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ca.manager import CaConfig, CertificateAuthority
from ca.service.schedule import rotate_once
from sdk.spiffeid import TrustDomain


def test_prepare_and_activate_never_happen_in_one_check():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ca = CertificateAuthority.create(CaConfig(TrustDomain.parse("example.org"), ca_ttl=timedelta(days=60)), now=start)
    first = ca.slots.active.id
    assert rotate_once(ca, start + timedelta(days=1)) == ()

    # Long overdue: both steps are due, yet only the preparation happens now.
    late = start + timedelta(days=55)
    assert set(ca.due(late)) >= {"prepare", "activate"}
    (step,) = rotate_once(ca, late)
    assert step.startswith("prepare ")
    assert ca.slots.active.id == first and len(ca.bundle().x509_authorities) == 2
    assert ca.bundle().sequence == 2

    (step,) = rotate_once(ca, late + timedelta(minutes=1))
    assert step.startswith("activate ") and ca.slots.active.id != first
    assert rotate_once(ca, late + timedelta(minutes=2)) == ()
