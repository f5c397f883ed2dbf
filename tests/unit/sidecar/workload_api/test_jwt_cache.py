"""The server's JWT-SVID cache: reuse while fresh, renew at half life, bounded."""

from datetime import datetime, timedelta, timezone

import pytest

from sidecar.workload_api import JwtSvidCache

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def _minter(domain, clock, audiences):
    calls = []

    async def mint():
        token = domain.sign(
            domain.id("/w"), audiences, issued_at=clock.now, lifetime=timedelta(minutes=10)
        )
        calls.append(token)
        return token

    return mint, calls


async def test_token_is_reused_until_half_life_then_renewed(domain, clock):
    cache = JwtSvidCache(clock=clock)
    mint, calls = _minter(domain, clock, ["a"])
    first = await cache.get("spiffe://example.org/w", ["a"], mint)
    clock.now = T0 + timedelta(minutes=4, seconds=59)
    assert await cache.get("spiffe://example.org/w", ["a"], mint) == first
    clock.now = T0 + timedelta(minutes=5, seconds=1)
    renewed = await cache.get("spiffe://example.org/w", ["a"], mint)
    assert renewed != first
    assert len(calls) == 2


async def test_keys_are_identity_and_audience_set(domain, clock):
    cache = JwtSvidCache(clock=clock)
    mint, calls = _minter(domain, clock, ["a", "b"])
    ab = await cache.get("spiffe://example.org/w", ["a", "b"], mint)
    assert await cache.get("spiffe://example.org/w", ["b", "a"], mint) == ab
    assert await cache.get("spiffe://example.org/other", ["a", "b"], mint) != ab
    assert await cache.get("spiffe://example.org/w", ["a"], mint) != ab
    assert len(calls) == 3


async def test_size_is_bounded_least_recently_used_first(domain, clock):
    cache = JwtSvidCache(max_entries=2, clock=clock)
    mint, calls = _minter(domain, clock, ["x"])
    for audience in ("a", "b", "a", "c"):
        await cache.get("spiffe://example.org/w", [audience], mint)
    assert len(cache) == 2
    await cache.get("spiffe://example.org/w", ["a"], mint)  # still cached
    assert len(calls) == 3
    await cache.get("spiffe://example.org/w", ["b"], mint)  # evicted, minted again
    assert len(calls) == 4


async def test_a_failed_mint_is_not_cached(domain, clock):
    cache = JwtSvidCache(clock=clock)

    async def broken():
        raise TimeoutError("CA unreachable")

    with pytest.raises(TimeoutError):
        await cache.get("spiffe://example.org/w", ["a"], broken)
    assert len(cache) == 0


@pytest.mark.parametrize(
    "kwargs", [{"max_entries": 0}, {"renew_fraction": 0.0}, {"renew_fraction": 1.0}]
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        JwtSvidCache(**kwargs)
