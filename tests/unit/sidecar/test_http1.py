"""The strict HTTP/1.1 request reader and the response framer, without sockets."""

import pytest

from sidecar.errors import HttpError
from sidecar.http1 import END, NEED_DATA, RequestHead, RequestReader, ResponseFramer

# Each of these must be refused with the given status before anything is forwarded.
ADVERSARIAL = [
    ("cl-and-te", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-and-cl", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400),
    ("duplicate-cl-same", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
    ("duplicate-cl-differ", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", 400),
    ("cl-list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx", 400),
    ("cl-negative", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    ("cl-plus", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", 400),
    ("cl-hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
    ("cl-huge", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
    ("te-not-chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ("te-chunked-twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te-repeated", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("te-space-before-colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-vertical-tab", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n", 400),
    ("te-in-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("bare-lf-head", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare-lf-one-line", b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),
    ("bare-cr", b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    ("ctl-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("no-colon", b"GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", 400),
    ("empty-name", b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400),
    ("no-host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("absolute-form", b"GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("asterisk-get", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("http2-version", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
    ("http09", b"GET /\r\n\r\n", 400),
    ("double-space", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("lowercase-version", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    ("space-in-target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("chunk-size-not-hex", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ("chunk-size-negative", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
    ("chunk-size-huge", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", 400),
    ("chunk-size-bare-lf", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n", 400),
    ("chunk-data-too-long", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxx\r\n0\r\n\r\n", 400),
    ("chunk-size-0x", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\nx\r\n0\r\n\r\n", 400),
    ("chunk-bad-trailer", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : y\r\n\r\n", 400),
    ("too-many-headers", b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    ("head-too-large", b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 20000 + b"\r\n\r\n", 431),
    ("head-too-large-unterminated", b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 20000, 431),
]


def _drain(reader: RequestReader) -> list:
    events = []
    while True:
        ev = reader.next_event()
        if ev is NEED_DATA:
            return events
        events.append(ev)


@pytest.mark.parametrize("name,raw,status", ADVERSARIAL, ids=[a[0] for a in ADVERSARIAL])
def test_adversarial_request_is_refused(name, raw, status):
    reader = RequestReader(max_head_bytes=16384, max_headers=100)
    reader.feed(raw)
    with pytest.raises(HttpError) as info:
        _drain(reader)
    assert info.value.status == status


@pytest.mark.parametrize("name,raw,status", ADVERSARIAL, ids=[a[0] for a in ADVERSARIAL])
def test_adversarial_request_is_refused_when_fed_bytewise(name, raw, status):
    reader = RequestReader(max_head_bytes=16384, max_headers=100)
    with pytest.raises(HttpError) as info:
        for i in range(len(raw)):
            reader.feed(raw[i : i + 1])
            _drain(reader)
    assert info.value.status == status


def test_simple_get_and_pipelining():
    reader = RequestReader()
    reader.feed(b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-Y:  v w \r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    head = reader.next_event()
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.version) == ("GET", "/a?x=1", "1.1")
    assert head.get(b"x-y") == b"v w"
    assert head.keep_alive and not head.has_body
    assert reader.next_event() is END
    second = reader.next_event()
    assert second.target == "/b" and not second.keep_alive
    assert reader.next_event() is END
    assert reader.next_event() is NEED_DATA


def test_content_length_body_split_across_feeds():
    reader = RequestReader()
    reader.feed(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhe")
    head = reader.next_event()
    assert head.content_length == 5
    assert reader.next_event() == b"he"
    assert reader.next_event() is NEED_DATA
    reader.feed(b"lloGET")
    assert reader.next_event() == b"llo"
    assert reader.next_event() is END
    assert reader.next_event() is NEED_DATA  # "GET" is the start of the next head


def test_chunked_body_is_decoded():
    reader = RequestReader()
    reader.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n3;ext=1\r\nabc\r\n")
    assert reader.next_event().chunked
    assert reader.next_event() == b"abc"
    assert reader.next_event() is NEED_DATA
    reader.feed(b"2\r\nde\r\n0\r\nTrailer: t\r\n\r\n")
    assert b"".join(_drain(reader)[:-1]) == b"de"


def test_http10_defaults_to_close():
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.0\r\n\r\n")
    assert not reader.next_event().keep_alive


@pytest.mark.parametrize(
    "method,chunks,expected_used,keep_alive",
    [
        ("GET", [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA"], 41, True),
        ("HEAD", [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"], 38, True),
        ("GET", [b"HTTP/1.1 204 No Content\r\n\r\n"], 27, True),
        ("GET", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", b"0\r\n\r\nX"], 5, True),
        ("GET", [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", b"a"], 1, False),
        ("GET", [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], 63, True),
    ],
)
def test_response_framer_finds_the_end(method, chunks, expected_used, keep_alive):
    framer = ResponseFramer(method)
    for chunk in chunks[:-1]:
        used, done = framer.feed(chunk)
        assert (used, done) == (len(chunk), False)
    used, done = framer.feed(chunks[-1])
    assert done and used == expected_used
    assert framer.keep_alive is keep_alive


@pytest.mark.parametrize(
    "head,used,keep_alive",
    [
        (b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 2\r\nConnection: Keep-Alive\r\n\r\n", 2, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", 2, True),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", 2, False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", 2, False),
        (b"HTTP/1.1 200 OK\r\nX-Content-Length: 9\r\nContent-Length: 2\r\n\r\n", 2, True),
    ],
    ids=["upper-case-names", "repeated-equal-length", "close-among-connection-fields", "http10", "similar-name"],
)
def test_response_framer_reads_framing_fields(head, used, keep_alive):
    framer = ResponseFramer("GET")
    assert framer.feed(head + b"abEXTRA") == (len(head) + used, True)
    assert framer.keep_alive is keep_alive


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n",
        b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\n",
    ],
    ids=["conflicting-lengths", "bare-cr-in-length", "negative-length", "length-list", "bad-status"],
)
def test_response_framer_refuses_bad_framing_from_upstream(head):
    with pytest.raises(HttpError) as info:
        ResponseFramer("GET").feed(head + b"ab")
    assert info.value.status == 502


def test_response_without_length_reads_until_close():
    framer = ResponseFramer("GET")
    used, done = framer.feed(b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert (used, done) == (22, False) and framer.reads_until_close and not framer.keep_alive


def test_chunked_body_arriving_at_once_keeps_every_chunk():
    reader = RequestReader()
    reader.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n")
    events = _drain(reader)
    assert events[1:] == [b"a", b"b", b"c", END]


def test_repeated_heads_parse_to_independent_values():
    from sidecar.http1 import parse_request_head

    raw = b"GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1"
    first, second = parse_request_head(raw, 100), parse_request_head(raw, 100)
    first.headers.append((b"x-b", b"2"))
    assert first is not second and second.headers == [(b"host", b"h"), (b"x-a", b"1")]
    with pytest.raises(HttpError):  # the limit is part of what is remembered
        parse_request_head(raw, 1)


def test_a_refused_head_stays_refused_when_repeated():
    from sidecar.http1 import parse_request_head

    for _ in range(2):
        with pytest.raises(HttpError, match="whitespace before the colon"):
            parse_request_head(b"GET /a HTTP/1.1\r\nHost : h", 100)


@pytest.mark.parametrize("upgrade", [b"h2c", b"H2C", b"websocket, h2c"])
def test_an_h2c_upgrade_is_refused_not_tunnelled_nor_dropped(upgrade):
    from sidecar.http1 import parse_request_head, serialize_head

    head = parse_request_head(
        b"GET / HTTP/1.1\r\nhost: a\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: " + upgrade
        + b"\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA", 100,
    )
    with pytest.raises(HttpError) as refused:
        serialize_head(head, "/", frozenset(), [])
    assert refused.value.status == 400 and "prior knowledge" in refused.value.reason


def test_other_upgrades_are_dropped_as_hop_by_hop():
    from sidecar.http1 import parse_request_head, serialize_head

    head = parse_request_head(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket", 100)
    assert b"upgrade" not in serialize_head(head, "/", frozenset(), []).lower()
