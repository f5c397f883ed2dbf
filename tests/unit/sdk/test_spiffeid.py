"""SpiffeId / TrustDomain parsing against the SPIFFE-ID standard's rules."""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdk import SpiffeId, SpiffeIdError, TrustDomain

VALID = [
    ("spiffe://example.org", "example.org", ""),
    ("spiffe://example.org/ns/prod/sa/web", "example.org", "/ns/prod/sa/web"),
    ("spiffe://a-b_c.9/x", "a-b_c.9", "/x"),
    ("spiffe://example.org/UPPER/Mixed.Case-ok_1", "example.org", "/UPPER/Mixed.Case-ok_1"),
    ("spiffe://example.org/...", "example.org", "/..."),
    ("spiffe://example.org/.a/..b", "example.org", "/.a/..b"),
]


@pytest.mark.parametrize(("text", "td", "path"), VALID)
def test_valid_ids_parse_into_trust_domain_and_path(text, td, path):
    sid = SpiffeId.parse(text)
    assert sid.trust_domain == TrustDomain.parse(td)
    assert sid.path == path
    assert str(sid) == text


INVALID = [
    ("", "empty", "cannot be empty"),
    ("example.org/web", "scheme", "scheme is missing or invalid"),
    ("SPIFFE://example.org/web", "scheme", "scheme is missing or invalid"),
    ("https://example.org/web", "scheme", "scheme is missing or invalid"),
    ("spiffe:/example.org/web", "scheme", "scheme is missing or invalid"),
    ("spiffe://", "missing_trust_domain", "trust domain is missing"),
    ("spiffe:///web", "missing_trust_domain", "trust domain is missing"),
    ("spiffe://Example.org/web", "trust_domain_chars", "limited to lowercase letters"),
    ("spiffe://exa mple.org", "trust_domain_chars", "limited to lowercase letters"),
    ("spiffe://exämple.org", "trust_domain_chars", "limited to lowercase letters"),
    ("spiffe://user@example.org/web", "userinfo", "user info is not allowed"),
    ("spiffe://example.org:8443/web", "port", "port is not allowed"),
    ("spiffe://example.org/web?x=1", "query", "query is not allowed"),
    ("spiffe://example.org?x=1", "query", "query is not allowed"),
    ("spiffe://example.org/web#frag", "fragment", "fragment is not allowed"),
    ("spiffe://example.org/w%65b", "percent_encoding", "percent-encoding is not allowed"),
    ("spiffe://example%2eorg/web", "percent_encoding", "percent-encoding is not allowed"),
    ("spiffe://example.org/", "trailing_slash", "trailing slash"),
    ("spiffe://example.org/web/", "trailing_slash", "trailing slash"),
    ("spiffe://example.org//web", "empty_segment", "empty segments"),
    ("spiffe://example.org/a//b", "empty_segment", "empty segments"),
    ("spiffe://example.org/./web", "dot_segment", "dot segments"),
    ("spiffe://example.org/web/..", "dot_segment", "dot segments"),
    ("spiffe://example.org/web/../admin", "dot_segment", "dot segments"),
    ("spiffe://example.org/we b", "segment_chars", "limited to letters, numbers"),
    ("spiffe://example.org/web:80", "segment_chars", "limited to letters, numbers"),
    ("spiffe://example.org/wéb", "segment_chars", "limited to letters, numbers"),
    ("spiffe://example.org/a\\b", "segment_chars", "limited to letters, numbers"),
    ("spiffe://" + "a" * 256, "trust_domain_too_long", "longer than 255"),
    ("spiffe://example.org/" + "a" * 2028, "too_long", "longer than 2048 bytes"),
]


@pytest.mark.parametrize(("text", "rule", "message"), INVALID)
def test_invalid_ids_name_the_broken_rule(text, rule, message):
    with pytest.raises(SpiffeIdError, match=message) as info:
        SpiffeId.parse(text)
    assert info.value.rule == rule
    assert isinstance(info.value, ValueError)


def test_length_limit_is_exactly_2048_bytes():
    prefix = "spiffe://example.org/"
    assert len(str(SpiffeId.parse(prefix + "a" * (2048 - len(prefix))))) == 2048
    with pytest.raises(SpiffeIdError, match="2048"):
        SpiffeId.parse(prefix + "a" * (2049 - len(prefix)))


def test_trust_domain_parse_accepts_bare_name_or_root_id():
    assert TrustDomain.parse("example.org") == TrustDomain.parse("spiffe://example.org")
    assert str(TrustDomain.parse("example.org")) == "example.org"
    assert str(TrustDomain.parse("example.org").id()) == "spiffe://example.org"
    assert TrustDomain.parse("example.org").id().path == ""


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "missing_trust_domain"),
        ("Example.org", "trust_domain_chars"),
        ("example.org/web", "trust_domain_chars"),
        ("spiffe://example.org/web", "trust_domain_has_path"),
        ("https://example.org", "scheme"),
        ("example.org:443", "port"),
        ("me@example.org", "userinfo"),
        ("example.org?x", "query"),
        ("a" * 256, "trust_domain_too_long"),
    ],
)
def test_invalid_trust_domains_name_the_broken_rule(text, rule):
    with pytest.raises(SpiffeIdError) as info:
        TrustDomain.parse(text)
    assert info.value.rule == rule


def test_from_segments_checks_each_segment():
    sid = SpiffeId.from_segments("example.org", "ns", "prod", "sa", "web")
    assert sid == SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")
    assert SpiffeId.from_segments(TrustDomain.parse("example.org")) == TrustDomain.parse(
        "example.org"
    ).id()
    for bad, rule in [("a/b", "segment_chars"), ("", "empty_segment"), ("..", "dot_segment"),
                      ("a?b", "query"), ("a%2f", "percent_encoding")]:
        with pytest.raises(SpiffeIdError) as info:
            SpiffeId.from_segments("example.org", "ok", bad)
        assert info.value.rule == rule
    with pytest.raises(SpiffeIdError) as info:
        SpiffeId.from_segments("example.org", *["abcdefghi"] * 250)
    assert info.value.rule == "too_long"


def test_segments_and_attributes():
    sid = SpiffeId.parse("spiffe://example.org/cluster/c1/ns/prod/app/web/extra")
    assert sid.segments == ("cluster", "c1", "ns", "prod", "app", "web", "extra")
    assert sid.attributes() == {"cluster": "c1", "ns": "prod", "app": "web"}
    assert SpiffeId.parse("spiffe://example.org/ns/a/ns/b").attributes() == {"ns": "a"}
    assert TrustDomain.parse("example.org").id().segments == ()
    assert TrustDomain.parse("example.org").id().attributes() == {}


def test_values_are_immutable_hashable_and_only_built_by_parse():
    sid = SpiffeId.parse("spiffe://example.org/web")
    with pytest.raises(AttributeError):
        sid.path = "/admin"
    with pytest.raises(AttributeError):
        sid.trust_domain.name = "evil.org"
    with pytest.raises(TypeError):
        SpiffeId(TrustDomain.parse("example.org"), "/../x")
    with pytest.raises(TypeError):
        TrustDomain("EVIL")
    assert {sid, SpiffeId.parse("spiffe://example.org/web")} == {sid}
    assert sid != "spiffe://example.org/web"
    assert pickle.loads(pickle.dumps(sid)) == sid
    assert copy.deepcopy(sid) == sid
    assert sid.member_of(TrustDomain.parse("example.org"))
    assert not sid.member_of(TrustDomain.parse("example.com"))


def test_non_string_input_is_a_type_error():
    with pytest.raises(TypeError):
        SpiffeId.parse(b"spiffe://example.org")
    with pytest.raises(TypeError):
        TrustDomain.parse(None)


_td = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_", min_size=1, max_size=40)
_segment = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_",
    min_size=1,
    max_size=20,
).filter(lambda s: s not in (".", ".."))


@given(_td, st.lists(_segment, max_size=8))
def test_round_trip_of_valid_ids(td, segments):
    text = "spiffe://" + td + "".join("/" + s for s in segments)
    sid = SpiffeId.parse(text)
    assert str(sid) == text
    assert SpiffeId.parse(str(sid)) == sid
    assert SpiffeId.from_segments(td, *segments) == sid
    assert sid.segments == tuple(segments)


@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_spiffe_id_error(text):
    try:
        sid = SpiffeId.parse(text)
    except SpiffeIdError as err:
        assert err.rule
    else:
        assert str(sid) == text


@given(_td, st.lists(_segment, max_size=5))
def test_agrees_with_py_spiffe(td, segments):
    from spiffe import SpiffeId as ReferenceId

    text = "spiffe://" + td + "".join("/" + s for s in segments)
    assert str(ReferenceId(text)) == str(SpiffeId.parse(text))


@given(st.text(alphabet="spifSPIF:/.-_%?#@aZ09 é", max_size=40))
def test_accepts_exactly_what_py_spiffe_accepts(rest):
    """Differential check against py-spiffe, except where it lower-cases the trust domain for you."""
    from spiffe import SpiffeId as ReferenceId

    text = "spiffe://" + rest
    trust_domain = rest.split("/", 1)[0]
    try:
        SpiffeId.parse(text)
        ours = True
    except SpiffeIdError:
        ours = False
    try:
        ReferenceId(text)
        theirs = True
    except Exception:  # noqa: BLE001 - any refusal by the reference counts
        theirs = False
    if trust_domain != trust_domain.lower():
        assert not ours  # we refuse upper case instead of normalising it
    else:
        assert ours == theirs
