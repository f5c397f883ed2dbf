"""The per-client and total caps on bundle streams, and how a client is named."""

from __future__ import annotations

import pytest

from ca.service.errors import StreamLimitError
from ca.service.status import status_for
from ca.service.watchers import WatcherSlots, peer_host


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.3.7:41822", "10.0.3.7"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:[fe80::1%eth0]:5000", "fe80::1"),
        ("ipv6:[::ffff:10.0.3.7]:5000", "10.0.3.7"),  # an IPv4 client on a dual-stack socket
        ("ipv6:[2001:DB8::1]:5000", "2001:db8::1"),
        ("unix:/run/ca.sock", "unix:/run/ca.sock"),
        ("ipv4:not-an-address:1", "ipv4:not-an-address:1"),
        ("", ""),
    ],
)
def test_peer_host(peer, host):
    assert peer_host(peer) == host


def test_per_client_cap_counts_addresses_not_connections():
    slots = WatcherSlots(per_client=2, total=100)
    keys = [slots.acquire("ipv4:10.0.0.1:1000"), slots.acquire("ipv6:[::ffff:10.0.0.1]:2000")]
    with pytest.raises(StreamLimitError, match=r"client 10\.0\.0\.1 already holds 2 bundle streams"):
        slots.acquire("ipv4:10.0.0.1:3000")
    slots.acquire("ipv4:10.0.0.2:1000")  # another client has its own share
    slots.release(keys[0])
    assert slots.open_for("ipv4:10.0.0.1:9") == 1
    slots.acquire("ipv4:10.0.0.1:3000")
    assert len(slots) == 3


def test_total_cap_holds_across_clients():
    slots = WatcherSlots(per_client=5, total=3)
    for i in range(3):
        slots.acquire(f"ipv4:10.0.0.{i}:1")
    with pytest.raises(StreamLimitError, match="too many bundle watchers on this CA") as info:
        slots.acquire("ipv4:10.0.0.9:1")
    assert status_for(info.value)[0].name == "RESOURCE_EXHAUSTED"


def test_release_of_an_unknown_key_does_not_free_slots():
    slots = WatcherSlots(per_client=1, total=1)
    key = slots.acquire("ipv4:10.0.0.1:1")
    slots.release("10.9.9.9")
    assert len(slots) == 1
    slots.release(key)
    slots.release(key)  # twice: still not below zero
    assert len(slots) == 0 and slots.open_for("ipv4:10.0.0.1:1") == 0


def test_caps_must_be_positive():
    with pytest.raises(ValueError):
        WatcherSlots(per_client=0, total=10)
