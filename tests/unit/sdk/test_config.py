"""The shared config layer: msgspec checks the declared dataclasses; every error names the
file, the field as the file spells it, what was expected and what was found."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest

from sdk.config import AnyPort, Count, HostPort, Invalid, NonEmpty, PortKey, Seconds, convert, load, parse_yaml
from sdk.errors import ConfigError, UsageError
from sdk.spiffeid import SpiffeId, TrustDomain
from tests.support.config_files import assert_file_error


@dataclass(frozen=True)
class Route:
    address: HostPort
    protocol: Literal["http", "tcp"] = "http"
    spiffe_id: SpiffeId | None = None


@dataclass(frozen=True)
class Limits:
    max_headers: Count = 100
    timeout: float = 1.0

    def __post_init__(self) -> None:
        if self.timeout > 60 and self.max_headers > 1000:
            raise Invalid("timeout", "a long timeout needs max_headers <= 1000")


@dataclass(frozen=True)
class Doc:
    trust_domain: TrustDomain
    name: NonEmpty = "x"
    port: AnyPort = 0
    routes: tuple[Route, ...] = ()
    ports: Mapping[PortKey, Literal["http", "tcp"]] = field(default_factory=dict)
    peers: Mapping[str, Route] = field(default_factory=dict)
    limits: Limits = Limits()
    file: Path | None = None


def _error(data) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        convert(data, Doc, ConfigError)
    return info.value


def test_a_valid_document_gives_typed_values():
    doc = convert({"trust_domain": "example.org", "routes": [{"address": "[::1]:80", "spiffe_id": "spiffe://example.org/a"}],
                   "ports": {"8080": "tcp", 9090: "http"}, "name": None, "file": "f"}, Doc, ConfigError, base=Path("/etc"))
    assert doc.trust_domain == TrustDomain.parse("example.org") and doc.name == "x"
    assert (doc.routes[0].address.host, doc.routes[0].address.port) == ("::1", 80)
    assert doc.routes[0].spiffe_id == SpiffeId.parse("spiffe://example.org/a")
    assert doc.ports == {8080: "tcp", 9090: "http"} and doc.file == Path("/etc/f")


@pytest.mark.parametrize(("data", "field", "words"), [
    ({}, "trust_domain", "is required"),
    ({"trust_domain": None}, "trust_domain", "is required"),
    ({"trust_domain": "Example.org"}, "trust_domain", "lowercase"),
    ({"port": "80"}, "port", "expected `int`, got `str` '80'"),
    ({"port": 70000}, "port", "expected `int` <= 65535, got 70000"),
    ({"port": True}, "port", "expected `int`, got `bool` True"),
    ({"name": ""}, "name", "expected `str` of length >= 1, got ''"),
    ({"routes": {"a": 1}}, "routes", "expected `list`, got `mapping`"),
    ({"routes": [{"address": "h:1"}, {"address": "nohost"}]}, "routes[1].address", "expected HOST:PORT"),
    ({"routes": [{"address": "h:1", "protocol": "udp"}]}, "routes[0].protocol", "expected one of http, tcp, got 'udp'"),
    ({"routes": [{"address": "h:1", "spiffe_id": "http://x"}]}, "routes[0].spiffe_id", "scheme"),
    ({"routes": [{"protocol": "tcp"}]}, "routes[0].address", "is required"),
    ({"routes": [{"address": "h:1", "adress": "h:2"}]}, "routes[0].adress", "unknown key (known: address, protocol, spiffe_id)"),
    ({"ports": {"80": "udp"}}, "ports.80", "expected one of http, tcp, got 'udp'"),
    ({"ports": {"eighty": "tcp"}}, "ports.eighty", "expected a port number in 1-65535, got 'eighty'"),
    ({"peers": {"b": {"address": "h:1"}, "c": {"address": 5}}}, "peers.c.address", "expected HOST:PORT (a non-empty string), got 5"),
    ({"peers": {"b": {"address": "h:1", "extra": 1}}}, "peers.b.extra", "unknown key"),
    ({"limits": {"max_headers": 0}}, "limits.max_headers", "expected `int` >= 1, got 0"),
    ({"limits": {"timeout": 61, "max_headers": 2000}}, "limits.timeout", "needs max_headers <= 1000"),
    ({"limits": 5}, "limits", "expected `mapping`, got `int` 5"),
    ({"file": ""}, "file", "expected a path (a non-empty string), got ''"),
    ({"surprise": 1}, "surprise", "unknown key (known: trust_domain, name, port"),
])
def test_each_error_names_the_field_and_what_was_expected(data, field, words):
    error = _error({"trust_domain": "example.org", **data} if "trust_domain" not in data and data else data)
    assert error.field == field and words in error.message
    assert str(error) == f"config: {field}: {error.message}"
    assert isinstance(error, UsageError)


def test_a_document_that_is_not_a_mapping():
    error = _error([1, 2])
    assert (error.field, error.message) == ("(top level)", "expected `mapping`, got `list` [1, 2]")


def test_null_and_empty_can_mean_not_given():
    with pytest.raises(ConfigError, match="port: expected `int`, got `null`"):
        convert({"trust_domain": "example.org", "port": None}, Doc, ConfigError, null_is_absent=False)
    doc = convert({"trust_domain": "example.org", "routes": [{"address": "h:1", "spiffe_id": ""}]}, Doc, ConfigError,
                  empty_is_absent=frozenset({"spiffe_id"}))
    assert doc.routes[0].spiffe_id is None


@pytest.mark.parametrize(("text", "field", "words"), [
    ("trust_domain: example.org\nport: [1\n", "(file)", "not valid YAML at line 3, column 1"),
    ("trust_domain: example.org\nport: 1\nport: 2\n", "(file)", "not valid YAML at line 3, column 1: the key 'port' is given twice"),
    ("a:\n  b: 1\n  b: 1\n", "(file)", "not valid YAML at line 3, column 3: the key 'b' is given twice"),
    ("? [a]\n: 1\n", "(file)", "not valid YAML at line 1, column 3: found unhashable key"),
    ("trust_domain: example.org\nroutes:\n  - {address: 'h:1', protocol: 5}\n", "routes[0].protocol", "expected one of http, tcp, got 5"),
    ("trust_domain: example.org\nlimits: {max_header: 5}\n", "limits.max_header", "unknown key (known: max_headers, timeout)"),
    ("trust_domain: example.org\nlimits: {timeout: soon}\n", "limits.timeout", "expected `float`, got `str` 'soon'"),
])
def test_errors_from_a_file_name_the_file(tmp_path, text, field, words):
    assert_file_error(lambda path: load(path, lambda data: convert(data, Doc, ConfigError), ConfigError),
                      tmp_path / "doc.yaml", text, field, words)


def test_merge_keys_may_be_overridden_without_counting_as_given_twice():
    data = parse_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n", ConfigError)
    assert data["other"] == {"x": 1, "y": 3}


def test_an_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read .*missing.yaml: No such file") as info:
        load(tmp_path / "missing.yaml", lambda data: data, ConfigError)
    assert info.value.file == str(tmp_path / "missing.yaml")


def test_host_port_keeps_the_text_and_splits_it():
    assert HostPort.from_config("[::1]:8443") == "[::1]:8443"
    assert HostPort.from_config("[::1]:8443").host == "::1"
    for bad in ("h", ":80", "h:0", "h:65536", "h:x", "h:٣"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            HostPort.from_config(bad)


def test_messages_follow_msgspec_for_what_msgspec_checks():
    """The layer adds the value and the path in the file's spelling; the expectation is msgspec's own."""
    with pytest.raises(msgspec.ValidationError, match=r"Expected `int` >= 1 - at `\$.limits.max_headers`"):
        msgspec.convert({"trust_domain": "example.org", "limits": {"max_headers": 0}}, Doc,
                        dec_hook=lambda t, v: TrustDomain.parse(v))
    assert _error({"trust_domain": "example.org", "limits": {"max_headers": 0}}).message == "expected `int` >= 1, got 0"


@dataclass(frozen=True)
class Ttl:
    ttl: Seconds = Seconds(60)


@pytest.mark.parametrize(("value", "seconds"), [(90, 90), ("90s", 90), ("1h30m", 5400), ("24h", 86400), ("30d", 2592000)])
def test_durations_are_seconds_or_text(value, seconds):
    assert convert({"ttl": value}, Ttl, ConfigError).ttl == seconds


@pytest.mark.parametrize(("value", "words"), [
    ("1 h", "invalid duration '1 h'"), ("h1", "invalid duration"), ("", "invalid duration ''"),
    (0, "expected a positive duration, got 0"), ("0s", "positive"), (1.5, "expected a duration"), (True, "expected a duration"),
])
def test_bad_durations(value, words):
    with pytest.raises(ConfigError) as info:
        convert({"ttl": value}, Ttl, ConfigError)
    assert info.value.field == "ttl" and words in info.value.message


_SCALARS = st.none() | st.booleans() | st.integers(-2, 70000) | st.floats(allow_nan=False) | st.text(max_size=12)
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=8) | st.integers(0, 9000), inner, max_size=3), max_leaves=12)


def _mutations(base: dict, keys: list[str]):
    """``base`` with one of its known keys (or a nested one) replaced by any YAML-shaped value."""
    return st.builds(lambda key, value, inner: {**base, key: value if inner is None else {inner: value}},
                     st.sampled_from(keys), _VALUES, st.none() | st.sampled_from(keys + ["port", "file", "x"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_document_gives_a_config_or_one_config_error(data):
    """Whatever the YAML holds, each loader returns a config or raises its ConfigError: never another exception."""
    from ca.service.config import parse_config as ca_config
    from injector.config import _from_mapping as injector_config
    from sidecar.config import parse_config as sidecar_config

    sidecar_base = {"trust_domain": "example.org", "identity": {"cert_file": "c", "key_file": "k", "bundle_file": "b"}}
    ca_base = {"trust_domain": "example.org", "authentication": {"join_tokens": True}}
    for parse, base, keys in (
        (sidecar_config, sidecar_base, ["trust_domain", "ca", "identity", "inbound", "outbound", "admin", "grpc",
                                        "federation", "limits", "access_log_omit", "mode"]),
        (ca_config, ca_base, ["trust_domain", "ca", "authentication", "x509_svid", "listen", "serving",
                              "serving_certificates", "federation", "workers", "limits"]),
        (injector_config, {}, ["sidecar", "interception", "server", "require_injection", "image", "inbound_port"]),
    ):
        document = data.draw(_mutations(base, keys) | _VALUES)
        try:
            parse(document)
        except ConfigError as err:
            assert err.field and err.message
