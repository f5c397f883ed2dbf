"""h2headers' regular-field checks: the per-field character checks agree with the RFC 9110
grammar written as regular expressions, and fields remembered as valid never let a repeated
content-length or host, a bad te or a connection-specific field through."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import h2headers
from sidecar.h2headers import Malformed, parse_request, parse_response, parse_trailers

# RFC 9110 §5.1 (token, lower case in HTTP/2 per RFC 9113 §8.2.1) and §5.5 (field-value, no
# leading or trailing whitespace per RFC 9113 §8.2.1)
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
FIELD_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[\x20-\x7e\x80-\xff\t]*[\x21-\x7e\x80-\xff])?)?")
SPECIAL = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te", b"content-length", b"host"}

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a.B/C"), (b":authority", b"svc:50051")]

names = st.one_of(st.binary(max_size=12), st.sampled_from([b"x-id", b"X-Id", b"x id", b"x:id", b"", b"grpc-timeout"]))
values = st.one_of(st.binary(max_size=12), st.sampled_from([b"", b"a b", b" a", b"a\t", b"\xffok", b"a\nb", b"a\x7f"]))


@settings(max_examples=600, deadline=None)
@given(name=names, value=values, seen=st.booleans())
def test_a_field_is_refused_exactly_when_the_grammar_refuses_it(name, value, seen):
    if name in SPECIAL:
        return
    if seen:  # whether or not its check was remembered, the outcome is the same
        try:
            parse_trailers([(name, value)])
        except Malformed:
            pass
    valid = TOKEN.fullmatch(name) is not None and FIELD_VALUE.fullmatch(value) is not None
    if valid:
        assert parse_trailers([(name, value)]) == [(name, value)]
        assert parse_request([*REQUEST, (b"a", b"1"), (name, value)])[4] == [(b"a", b"1"), (name, value)]
    else:
        with pytest.raises(Malformed):
            parse_trailers([(name, value)])
        with pytest.raises(Malformed):
            parse_request([*REQUEST, (b"a", b"1"), (name, value)])


def test_remembered_fields_do_not_hide_repeats_or_special_fields():
    h2headers._VALID_FIELDS.clear()
    length = (b"content-length", b"5")
    host = (b"host", b"svc:50051")
    assert parse_response([(b":status", b"200"), length, (b"x", b"1")]) == (200, [length, (b"x", b"1")], 5)
    assert parse_request([*REQUEST, host, (b"te", b"trailers")])[5] is None
    assert length not in h2headers._VALID_FIELDS and host not in h2headers._VALID_FIELDS
    with pytest.raises(Malformed, match="repeated content-length"):
        parse_response([(b":status", b"200"), length, (b"x", b"1"), length])
    with pytest.raises(Malformed, match="repeated host"):
        parse_request([*REQUEST, host, (b"te", b"trailers"), host])
    with pytest.raises(Malformed, match="te other than trailers"):
        parse_request([*REQUEST, (b"te", b"trailers"), (b"te", b"gzip")])
    for name in (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"):
        with pytest.raises(Malformed, match="connection-specific"):
            parse_trailers([(b"x", b"1"), (name, b"close")])
    with pytest.raises(Malformed, match="pseudo-header"):
        parse_trailers([(b"x", b"1"), (b":path", b"/")])
    with pytest.raises(Malformed, match="after a regular header field"):
        parse_request([*REQUEST[:2], (b"x", b"1"), *REQUEST[2:]])


def test_remembered_fields_are_bounded():
    h2headers._VALID_FIELDS.clear()
    for i in range(h2headers._VALID_FIELDS_MAX + 10):
        parse_trailers([(b"x-request-id", b"%d" % i)])
    assert len(h2headers._VALID_FIELDS) <= h2headers._VALID_FIELDS_MAX
