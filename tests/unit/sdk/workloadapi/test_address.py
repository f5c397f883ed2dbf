"""SPIFFE_ENDPOINT_SOCKET values are read exactly as the Workload Endpoint standard says."""

import pytest

from sdk.workloadapi import EndpointAddressError, grpc_target


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("unix:///run/trustmesh/sockets/agent.sock", "unix:/run/trustmesh/sockets/agent.sock"),
        ("unix:/tmp/agent.sock", "unix:/tmp/agent.sock"),
        ("tcp://127.0.0.1:8000", "ipv4:127.0.0.1:8000"),
        ("tcp://[::1]:8000", "ipv6:[::1]:8000"),
    ],
)
def test_valid_addresses(address, target):
    assert grpc_target(address) == target


@pytest.mark.parametrize(
    ("address", "complaint"),
    [
        ("unix://host/agent.sock", "no authority"),
        ("unix:agent.sock", "must be absolute"),
        ("unix:///agent.sock?x=1", "query"),
        ("tcp://localhost:8000", "IP address, not a name"),
        ("tcp://127.0.0.1", "needs a port"),
        ("tcp://127.0.0.1:8000/foo", "has no path"),
        ("tcp://127.0.0.1:99999", "out of range"),
        ("http://127.0.0.1:8000", "scheme must be unix or tcp"),
        ("/run/agent.sock", "scheme must be unix or tcp"),
    ],
)
def test_invalid_addresses_say_what_is_wrong(address, complaint):
    with pytest.raises(EndpointAddressError, match=complaint):
        grpc_target(address)


def test_the_environment_variable_is_the_default(monkeypatch):
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///a/b.sock")
    assert grpc_target() == "unix:/a/b.sock"
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET")
    with pytest.raises(EndpointAddressError, match="SPIFFE_ENDPOINT_SOCKET is not set"):
        grpc_target()
