"""``server.certificate_from_ca``: its configuration and the renewal schedule (no sockets)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from injector.ca_certificate import IssuedCertificate, renewal_delay
from injector.config import CertificateFromCaSettings, parse_config
from injector.errors import InjectorConfigError


def test_defaults_are_off_and_name_the_injector_service():
    settings = parse_config("").server.certificate_from_ca
    assert settings == CertificateFromCaSettings()
    assert settings.enabled is False and settings.address == ""
    assert settings.dns_names == ("trustmesh-injector.trustmesh-system.svc",)
    assert settings.token_file == "/var/run/secrets/trustmesh/tokens/trustmesh-ca"


def test_every_key_is_read():
    settings = parse_config("""
server:
  certificate_from_ca:
    enabled: true
    address: ca.example:15012
    server_name: trustmesh-ca.trustmesh-system.svc
    bundle_file: /b.pem
    token_file: /t
    dns_names: [a.ns.svc, a.ns.svc.cluster.local]
    ttl_seconds: 7200
    startup_timeout_seconds: 0
""").server.certificate_from_ca
    assert settings == CertificateFromCaSettings(
        True, "ca.example:15012", "trustmesh-ca.trustmesh-system.svc", "/b.pem", "/t",
        ("a.ns.svc", "a.ns.svc.cluster.local"), 7200, 0.0)


@pytest.mark.parametrize(("body", "field"), [
    ("enabled: yes-please", "enabled"),
    ("address: ca.example", "address"),
    ("address: ':15012'", "address"),
    ("dns_names: []", "dns_names"),
    ("dns_names: [Upper.svc]", "dns_names"),
    ("dns_names: ['*.ns.svc']", "dns_names"),
    ("dns_names: a.svc", "dns_names"),
    ("ttl_seconds: 60", "ttl_seconds"),
    ("startup_timeout_seconds: -1", "startup_timeout_seconds"),
    ("{enabled: true, token_file: ''}", "token_file"),
    ("{enabled: true, bundle_file: ''}", "bundle_file"),
    ("{dns: [a.svc]}", "dns"),
])
def test_errors_name_the_key(body, field):
    text = f"server:\n  certificate_from_ca: {body}\n" if body.startswith("{") else \
        f"server:\n  certificate_from_ca:\n    {body}\n"
    with pytest.raises(InjectorConfigError) as info:
        parse_config(text)
    assert info.value.field == f"server.certificate_from_ca.{field}"


def _issued(life_hours: float, now: datetime) -> IssuedCertificate:
    return IssuedCertificate(b"", b"", b"", 1, now, now + timedelta(hours=life_hours))


def test_renewal_comes_at_half_life_less_jitter():
    start = datetime(2026, 11, 22, 12, tzinfo=timezone.utc)
    cert = _issued(24, start)
    assert renewal_delay(cert, start, 0.0) == 12 * 3600
    assert renewal_delay(cert, start, 1.0) == pytest.approx((12 - 2.4) * 3600)
    assert renewal_delay(cert, start + timedelta(hours=11), 0.0) == 3600
    assert renewal_delay(cert, start + timedelta(hours=13), 0.0) == 0.0  # overdue: now, never negative
