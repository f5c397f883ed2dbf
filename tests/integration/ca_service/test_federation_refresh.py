"""The federation refresher against a bundle endpoint the test controls (real TLS on loopback).

Every refusal the standard calls for keeps the last good bundle, says why in the
log and in the audit log, and counts a failure; accepted changes are audited,
kept in state_dir and counted in the metrics. Time is injected: refreshes are
driven by calling ``refresh()`` or by a sleeper the test releases.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random

import pytest

from ca.service.audit import AuditLog
from ca.service.config import parse_config
from ca.service.federation import Federation
from ca.service.metrics import ServiceMetrics
from sdk.bundle import Bundle
from sdk.spiffeid import TrustDomain
from tests.integration.ca_service.federation_support import FakeEndpoint, make_ca, svid_context

B = TrustDomain.parse("b.org")
ENDPOINT_ID = "spiffe://b.org/trustmesh/bundle-endpoint"


def federation_config(url: str, bootstrap: str, *, profile: str = "https_spiffe", **refresh):
    rel = {"trust_domain": "b.org", "bundle_endpoint_url": url, "profile": profile, "bundle_file": bootstrap}
    if profile == "https_spiffe":
        rel["endpoint_spiffe_id"] = ENDPOINT_ID
    data = {
        "trust_domain": "a.org",
        "authentication": {"join_tokens": True},
        "federation": {"federates_with": [rel], "refresh": {"timeout_seconds": 5, **refresh}},
    }
    return parse_config(data).federation


class Harness:
    def __init__(self, tmp_path, *, state_dir: bool = False, **refresh) -> None:
        self.tmp_path = tmp_path
        self.b_ca = make_ca("b.org")
        self.a_ca = make_ca("a.org")
        self.audit_stream = io.StringIO()
        self.endpoint = FakeEndpoint(svid_context(self.b_ca, ENDPOINT_ID), body=self.b_bundle().to_jwks())
        self.refresh = refresh
        self.state_dir = str(tmp_path / "state") if state_dir else ""
        self.published: list[tuple[Bundle, ...]] = []

    def b_bundle(self, sequence: int | None = None) -> Bundle:
        bundle = self.b_ca.bundle()
        return bundle if sequence is None else bundle.with_sequence(sequence)

    async def start(self, bootstrap: Bundle | None = None, **kwargs) -> Federation:
        await self.endpoint.start()
        path = self.tmp_path / "b.org.jwks"
        path.write_bytes((bootstrap or self.b_bundle()).to_jwks())
        config = federation_config(self.endpoint.url, str(path), **self.refresh)
        if self.state_dir:
            from dataclasses import replace

            config = replace(config, state_dir=self.state_dir)
        self.federation = Federation(
            config, self.a_ca.bundle, audit=AuditLog(self.audit_stream), on_change=self.published.append,
            rng=random.Random(7), **kwargs,
        )
        self.federation.load()
        return self.federation

    def audit(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_stream.getvalue().splitlines()]


@pytest.fixture
async def harness(tmp_path):
    made: list[Harness] = []

    def make(**kwargs) -> Harness:
        made.append(Harness(tmp_path, **kwargs))
        return made[-1]

    yield make
    for h in made:
        if hasattr(h, "federation"):
            await h.federation.stop()
        await h.endpoint.stop()


async def test_a_newer_bundle_is_accepted_audited_kept_and_counted(harness):
    h = harness(state_dir=True)
    federation = await h.start(bootstrap=h.b_bundle(sequence=1))
    assert federation.state(B).source == "bootstrap"
    h.endpoint.body = h.b_bundle(sequence=2).with_refresh_hint(45).to_jwks()

    delay = await federation.refresh(B)

    state = federation.state(B)
    assert state.bundle.sequence == 2 and state.source == "endpoint"
    assert delay == 45  # the hint, inside the default bounds [30, 3600]
    assert h.published[-1] == (state.bundle,)
    accepted = h.audit()[-1]
    assert accepted["event"] == "federated_bundle_accepted"
    assert (accepted["trust_domain"], accepted["sequence"], accepted["previous_sequence"]) == ("b.org", 2, 1)
    kept = Bundle.parse_jwks((h.tmp_path / "state" / "b.org.jwks").read_bytes(), B)
    assert kept.sequence == 2

    metrics = ServiceMetrics()
    metrics.add_collector(federation)
    text = metrics.render().decode()
    assert 'trustmesh_ca_federation_bundle_sequence{trust_domain="b.org"} 2.0' in text
    assert 'trustmesh_ca_federation_refresh_failures_total{trust_domain="b.org"} 0.0' in text
    assert 'trustmesh_ca_federation_last_success_seconds{trust_domain="b.org"}' in text

    # The same bundle again changes nothing and writes no audit line.
    lines = len(h.audit())
    await federation.refresh(B)
    assert len(h.audit()) == lines and federation.state(B).bundle.sequence == 2


async def test_a_restart_resumes_from_the_kept_bundle(harness, tmp_path):
    h = harness(state_dir=True)
    federation = await h.start(bootstrap=h.b_bundle(sequence=1))
    h.endpoint.body = h.b_bundle(sequence=3).to_jwks()
    await federation.refresh(B)
    again = Federation(federation.config, h.a_ca.bundle, audit=AuditLog(io.StringIO()))
    again.load()
    assert again.state(B).bundle.sequence == 3 and again.state(B).source == "state"


def _other_domain_bundle() -> bytes:
    # A real bundle, but of c.org: its authority names spiffe://c.org.
    return make_ca("c.org").bundle().with_sequence(9).to_jwks()


def _malformed() -> bytes:
    return json.dumps({"keys": [{"kty": "EC", "use": "x509-svid", "crv": "P-256", "x5c": ["not base64!"]}]}).encode()


@pytest.mark.parametrize(
    ("case", "serve", "reason"),
    [
        ("lower sequence", lambda h: h.b_bundle(sequence=4).to_jwks(), "spiffe_sequence 4 is lower than the held 5"),
        ("wrong trust domain", lambda h: _other_domain_bundle(), "wrong trust domain: an X.509 authority"),
        ("malformed JWKS", lambda h: _malformed(), "malformed bundle: bundle for b.org, key 0: 'x5c'"),
        ("not JSON", lambda h: b"<html>hello</html>", "malformed bundle: bundle for b.org is not valid JSON"),
        ("no authority", lambda h: b'{"keys": [], "spiffe_sequence": 6}', "holds no X.509 or JWT authority"),
        ("oversized", lambda h: b" " * 5000 + h.b_bundle(sequence=6).to_jwks(), "is larger than 4096 (refresh.max_bytes)"),
    ],
)
async def test_a_refused_answer_keeps_the_last_good_bundle(harness, caplog, case, serve, reason):
    h = harness(max_bytes=4096)
    federation = await h.start(bootstrap=h.b_bundle(sequence=5))
    held = federation.state(B).bundle
    h.endpoint.body = serve(h)

    with caplog.at_level(logging.WARNING, logger="ca.service.federation"):
        await federation.refresh(B)

    state = federation.state(B)
    assert state.bundle is held, case
    assert state.failures == 1 and reason in state.last_error
    assert any("keeping the bundle held (sequence 5)" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    refused = h.audit()[-1]
    assert refused["event"] == "federated_bundle_refused" and reason in refused["reason"]
    assert refused["held_sequence"] == 5


async def test_same_sequence_with_other_content_is_refused(harness):
    h = harness()
    federation = await h.start(bootstrap=h.b_bundle(sequence=5))
    other = h.b_bundle(sequence=5).with_x509_authority(make_ca("b.org").bundle().x509_authorities[0])
    h.endpoint.body = other.to_jwks()
    await federation.refresh(B)
    assert "is the held one but the content differs" in federation.state(B).last_error
    assert federation.state(B).bundle.sequence == 5 and len(federation.state(B).bundle.x509_authorities) == 1


async def test_wrong_endpoint_spiffe_id_is_refused(harness):
    h = harness()
    h.endpoint.context = svid_context(h.b_ca, "spiffe://b.org/ns/default/sa/impostor")
    federation = await h.start(bootstrap=h.b_bundle(sequence=1))
    h.endpoint.body = h.b_bundle(sequence=2).to_jwks()
    await federation.refresh(B)
    state = federation.state(B)
    assert state.bundle.sequence == 1
    assert "endpoint presented spiffe://b.org/ns/default/sa/impostor, expected " + ENDPOINT_ID in state.last_error
    assert h.endpoint.requests == 0  # refused before the request was sent


async def test_untrusted_endpoint_certificate_is_refused(harness):
    h = harness()
    h.endpoint.context = svid_context(make_ca("b.org"), ENDPOINT_ID)  # same ID, another CA's key
    federation = await h.start(bootstrap=h.b_bundle(sequence=1))
    await federation.refresh(B)
    state = federation.state(B)
    assert state.bundle.sequence == 1
    assert "endpoint certificate not trusted" in state.last_error
    assert h.endpoint.requests == 0


async def test_https_web_checks_the_endpoint_against_its_roots(harness, tmp_path):
    h = harness()
    await h.endpoint.start()
    roots = tmp_path / "b-roots.pem"
    roots.write_bytes(make_ca("b.org").bundle().to_pem())  # not the CA that issued the endpoint's certificate
    bootstrap = tmp_path / "boot.jwks"
    bootstrap.write_bytes(h.b_bundle(sequence=1).to_jwks())
    data = {
        "trust_domain": "a.org",
        "authentication": {"join_tokens": True},
        "federation": {"federates_with": [{
            "trust_domain": "b.org", "bundle_endpoint_url": h.endpoint.url, "profile": "https_web",
            "endpoint_ca_file": str(roots), "bundle_file": str(bootstrap),
        }]},
    }
    federation = Federation(parse_config(data).federation, h.a_ca.bundle, audit=AuditLog(io.StringIO()))
    h.federation = federation
    federation.load()
    await federation.refresh(B)
    assert "endpoint certificate not trusted" in federation.state(B).last_error
    assert federation.state(B).bundle.sequence == 1


async def test_a_slow_answer_is_cut_off_at_the_timeout(harness):
    h = harness(timeout_seconds=0.3)
    h.endpoint.stall = True
    federation = await h.start(bootstrap=h.b_bundle(sequence=1))
    await federation.refresh(B)
    state = federation.state(B)
    assert "no complete answer within 0.3s (refresh.timeout_seconds)" in state.last_error
    assert state.bundle.sequence == 1 and h.endpoint.requests == 1


async def test_refresh_schedule_follows_the_hint_and_backs_off_with_jitter(harness):
    """The loop's waits, recorded by an injected sleeper: nothing waits on wall time."""
    h = harness(min_seconds=10, max_seconds=100, retry_first_seconds=2)
    waits: list[float] = []
    step = asyncio.Queue()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await step.get()

    federation = await h.start(bootstrap=h.b_bundle(sequence=1), sleep=sleep)
    h.endpoint.body = b"not a bundle"
    federation.start()

    async def next_wait() -> float:
        count = len(waits)
        for _ in range(500):
            if len(waits) > count:
                return waits[-1]
            await asyncio.sleep(0.01)
        raise AssertionError("the refresher did not come back to sleep")

    failures = []
    for _ in range(5):
        failures.append(await next_wait())
        step.put_nowait(None)
    # 2, 4, 8, 16, then capped by the interval (the bootstrap has no hint: default 300 -> max 100); jitter halves at most.
    for n, wait in enumerate(failures):
        cap = min(100, 2 * 2**n)
        assert cap / 2 <= wait <= cap, (n, wait)
    assert len(set(failures)) == len(failures)  # jittered

    h.endpoint.body = h.b_bundle(sequence=2).with_refresh_hint(3600).to_jwks()
    assert await next_wait() == 100  # the hint clamped to max_seconds
    assert federation.state(B).bundle.sequence == 2 and federation.state(B).consecutive_failures == 0
    step.put_nowait(None)
    h.endpoint.body = h.b_bundle(sequence=3).with_refresh_hint(1).to_jwks()
    assert await next_wait() == 10  # clamped to min_seconds


async def test_a_body_without_length_is_bounded_too(harness):
    h = harness(max_bytes=4096)
    h.endpoint.streamed = True
    federation = await h.start(bootstrap=h.b_bundle(sequence=1))
    h.endpoint.body = h.b_bundle(sequence=2).to_jwks()  # a little over 1 KiB: accepted
    await federation.refresh(B)
    assert federation.state(B).bundle.sequence == 2
    h.endpoint.body = b" " * 8000 + h.b_bundle(sequence=3).to_jwks()
    await federation.refresh(B)
    assert "bundle larger than 4096 bytes (refresh.max_bytes)" in federation.state(B).last_error
    assert federation.state(B).bundle.sequence == 2


async def test_a_redirect_is_not_followed(harness):
    h = harness()
    h.endpoint.status, h.endpoint.headers = 302, {"Location": "https://elsewhere.example/bundle"}
    federation = await h.start(bootstrap=h.b_bundle(sequence=1))
    await federation.refresh(B)
    assert "answered 302 (redirect to 'https://elsewhere.example/bundle'); redirects are not followed" in federation.state(B).last_error


async def test_an_endpoint_of_another_federated_domain_is_verified_with_that_domains_bundle(harness, tmp_path):
    """Not self-serving: c.org's bundle is served by b.org's endpoint (SPIFFE Federation 5.2.2.2)."""
    h = harness()
    await h.endpoint.start()
    c_ca = make_ca("c.org")
    h.endpoint.body = c_ca.bundle().to_jwks()
    (tmp_path / "b.jwks").write_bytes(h.b_bundle().to_jwks())
    data = {
        "trust_domain": "a.org",
        "authentication": {"join_tokens": True},
        "federation": {"federates_with": [
            {"trust_domain": "b.org", "bundle_endpoint_url": h.endpoint.url, "profile": "https_spiffe",
             "endpoint_spiffe_id": ENDPOINT_ID, "bundle_file": str(tmp_path / "b.jwks")},
            {"trust_domain": "c.org", "bundle_endpoint_url": h.endpoint.url, "profile": "https_spiffe",
             "endpoint_spiffe_id": ENDPOINT_ID},
        ]},
    }
    federation = Federation(parse_config(data).federation, h.a_ca.bundle, audit=AuditLog(io.StringIO()))
    h.federation = federation
    federation.load()
    assert federation.state(TrustDomain.parse("c.org")).bundle is None  # no bootstrap needed
    await federation.refresh(TrustDomain.parse("c.org"))
    state = federation.state(TrustDomain.parse("c.org"))
    assert state.last_error == "" and state.bundle.to_jwks() == c_ca.bundle().to_jwks()
    assert [b.trust_domain for b in federation.bundles()] == [B, TrustDomain.parse("c.org")]  # never merged


async def test_other_workers_pick_up_accepted_bundles_from_the_state_dir(harness):
    h = harness(state_dir=True)
    federation = await h.start(bootstrap=h.b_bundle(sequence=1))
    follower_changes: list = []
    follower = Federation(federation.config, h.a_ca.bundle, audit=AuditLog(io.StringIO()), on_change=follower_changes.append)
    follower.load()
    assert follower.reload_state() is False
    h.endpoint.body = h.b_bundle(sequence=2).to_jwks()
    await federation.refresh(B)
    assert follower.reload_state() is True
    assert follower.state(B).bundle.sequence == 2 and follower_changes[-1][0].sequence == 2


async def test_an_unexpected_error_is_a_failure_like_any_other(harness, caplog):
    async def broken_fetch(endpoint, **limits):
        raise RuntimeError("boom")

    h = harness()
    federation = await h.start(bootstrap=h.b_bundle(sequence=1), fetch=broken_fetch)
    delay = await federation.refresh(B)
    state = federation.state(B)
    assert state.last_error == "unexpected RuntimeError: boom" and state.failures == 1 and delay > 0
    assert state.bundle.sequence == 1
    assert any(r.exc_info and "unexpected error during a refresh" in r.getMessage() for r in caplog.records)
