"""HPACK (sidecar/hpack.py) against RFC 7541's own examples and python-hyper's hpack as a peer."""

from __future__ import annotations

import hpack as ref
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.hpack import Decoder, Encoder, HeaderListTooLarge, HpackError, huffman_decode, huffman_encode

# RFC 7541 Appendix C: (table size, [(block hex, header list, dynamic table size after)])
REQUESTS = [
    (
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com")],
        57,
    ),
    (
        "8286 84be 5808 6e6f 2d63 6163 6865",
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com"),
         (b"cache-control", b"no-cache")],
        110,
    ),
    (
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"),
         (b":authority", b"www.example.com"), (b"custom-key", b"custom-value")],
        164,
    ),
]
REQUESTS_HUFFMAN = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]
_DATE1 = b"Mon, 21 Oct 2013 20:13:21 GMT"
_COOKIE = b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
RESPONSES = [
    (
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 "
        "3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        [(b":status", b"302"), (b"cache-control", b"private"), (b"date", _DATE1),
         (b"location", b"https://www.example.com")],
        222,
    ),
    (
        "4803 3330 37c1 c0bf",
        [(b":status", b"307"), (b"cache-control", b"private"), (b"date", _DATE1),
         (b"location", b"https://www.example.com")],
        222,
    ),
    (
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 "
        "7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 "
        "6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
        [(b":status", b"200"), (b"cache-control", b"private"), (b"date", b"Mon, 21 Oct 2013 20:13:22 GMT"),
         (b"location", b"https://www.example.com"), (b"content-encoding", b"gzip"), (b"set-cookie", _COOKIE)],
        215,
    ),
]
RESPONSES_HUFFMAN = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad "
    "1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 "
    "e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
]


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize("huffman", [False, True], ids=["C.3", "C.4"])
def test_rfc_request_examples(huffman):
    decoder = Decoder()
    for i, (plain, headers, table_size) in enumerate(REQUESTS):
        block = REQUESTS_HUFFMAN[i] if huffman else plain
        assert decoder.decode(_hex(block)) == headers
        assert decoder.table_size == table_size


@pytest.mark.parametrize("huffman", [False, True], ids=["C.5", "C.6"])
def test_rfc_response_examples_with_eviction(huffman):
    decoder = Decoder(max_table_size=256)
    for i, (plain, headers, table_size) in enumerate(RESPONSES):
        block = RESPONSES_HUFFMAN[i] if huffman else plain
        assert decoder.decode(_hex(block)) == headers
        assert decoder.table_size == table_size


def test_rfc_single_field_examples():
    """C.2.1 to C.2.4: each representation on its own."""
    decoder = Decoder()
    assert decoder.decode(_hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")) == [
        (b"custom-key", b"custom-header")
    ]
    assert decoder.table_size == 55
    assert decoder.decode(_hex("040c 2f73 616d 706c 652f 7061 7468")) == [(b":path", b"/sample/path")]
    assert decoder.decode(_hex("1008 7061 7373 776f 7264 0673 6563 7265 74")) == [(b"password", b"secret")]
    assert decoder.decode(_hex("82")) == [(b":method", b"GET")]
    assert decoder.table_size == 55  # only C.2.1 indexed anything


def test_huffman_string_example():
    assert huffman_decode(_hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")) == b"www.example.com"
    assert huffman_encode(b"www.example.com") == _hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")


_name = st.binary(min_size=1, max_size=20).map(lambda b: b.lower())
_value = st.binary(max_size=60)
_headers = st.lists(
    st.tuples(st.sampled_from([b":path", b"content-type", b"user-agent", b"authorization", b"x-id"]) | _name, _value),
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_headers, min_size=1, max_size=6))
def test_decodes_what_hpack_encodes(lists):
    """hpack's encoder (Huffman, incremental indexing, eviction) on one connection → our decoder."""
    encoder = ref.Encoder()
    encoder.header_table_size = 256  # small: entries get evicted
    decoder = Decoder(max_table_size=4096)
    for headers in lists:
        block = encoder.encode(headers)
        assert decoder.decode(block) == headers


@settings(max_examples=200, deadline=None)
@given(st.lists(_headers, min_size=1, max_size=6), st.booleans())
def test_hpack_decodes_what_we_encode(lists, huffman):
    encoder = Encoder(huffman=huffman)
    decoder = ref.Decoder()
    for headers in lists:
        assert decoder.decode(encoder.encode(headers), raw=True) == headers


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_huffman_round_trip_and_hpack_agrees(data):
    coded = huffman_encode(data)
    assert huffman_decode(coded) == data
    assert ref.huffman.HuffmanEncoder(ref.huffman_constants.REQUEST_CODES,
                                      ref.huffman_constants.REQUEST_CODES_LENGTH).encode(data) == coded


def test_repeated_block_after_table_change_is_decoded_afresh():
    """The per-decoder cache must not serve a block whose indexes now mean something else."""
    decoder = Decoder()
    decoder.decode(_hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"))  # index 62
    assert decoder.decode(b"\xbe") == [(b"custom-key", b"custom-header")]
    decoder.decode(b"\x40\x01a\x01b")  # a: b becomes index 62
    assert decoder.decode(b"\xbe") == [(b"a", b"b")]


BAD_BLOCKS = [
    ("index 0", b"\x80", "out of range"),
    ("index past the static table, empty dynamic table", b"\xbe", "out of range"),
    ("name index out of range", b"\x0f\x30\x01a", "out of range"),
    ("integer overflow", b"\xff\xff\xff\xff\xff\xff\x7f", "overflow"),
    ("integer without end", b"\xff\xff\xff", "inside an integer"),
    ("overlong integer", b"\xff\x80\x80\x80\x80\x80\x00", "overflow"),
    ("string past the end", b"\x00\x05ab", "past the end"),
    ("no value string", b"\x00\x01a", "before a string"),
    ("Huffman padding of 8 bits", b"\x00\x01a\x82\x1f\xff", "padding"),
    ("Huffman padding not all ones", b"\x00\x01a\x81\x00", "padding"),  # '0' + 0 padding bits
    ("EOS in a Huffman string", b"\x00\x01a\x84\xff\xff\xff\xff", "EOS"),
    ("size update after a field", b"\x82\x3f\x01", "after the first"),
    ("size update above the limit", b"\x3f\xe2\x1f", "above the limit"),
]


@pytest.mark.parametrize("name,block,message", BAD_BLOCKS, ids=[case[0] for case in BAD_BLOCKS])
def test_malformed_blocks_are_refused(name, block, message):
    with pytest.raises(HpackError, match=message):
        Decoder().decode(block)
    with pytest.raises(Exception):  # noqa: B017 - the reference agrees the block is bad
        ref.Decoder().decode(block, raw=True)


def test_size_updates_at_block_start_are_honoured():
    decoder = Decoder()
    decoder.decode(b"\x40\x01a\x01b")
    assert decoder.table_size == 34
    assert decoder.decode(b"\x20\x3f\xe1\x1f\x82") == [(b":method", b"GET")]  # to 0 (evicts), then 4096
    assert decoder.table_size == 0
    with pytest.raises(HpackError):
        decoder.decode(b"\xbe")


def test_hpack_bomb_stops_at_the_list_limit():
    """One 4 KiB entry referenced again and again: decoding stops once the limit is passed."""
    decoder = Decoder(max_header_list_size=16384)
    # "x: v*4000" added to the table (literal with incremental indexing), then index 62 a million times
    block = b"\x40\x01x" + bytes([0x7F, (4000 - 127) & 0x7F | 0x80, (4000 - 127) >> 7]) + b"v" * 4000
    block += b"\xbe" * 1_000_000
    with pytest.raises(HeaderListTooLarge):
        decoder.decode(block)


def test_field_larger_than_table_empties_it():
    decoder = Decoder(max_table_size=64)
    decoder.decode(b"\x40\x01a\x01b")
    decoder.decode(b"\x40\x01c" + b"\x30" + b"x" * 48)  # 1 + 48 + 32 > 64
    assert decoder.table_size == 0


def test_encoder_is_stateless_and_never_indexes_credentials():
    headers = [(b":method", b"POST"), (b"authorization", b"Bearer secret"), (b"x-custom", b"1")]
    first = Encoder().encode(headers)
    assert Encoder().encode(headers) == first  # the same bytes on any connection
    assert first[0] == 0x83  # :method POST, fully indexed
    assert first[1] & 0xF0 == 0x10  # authorization: never indexed
    decoder = ref.Decoder()
    assert decoder.decode(first, raw=True) == headers
    assert not decoder.header_table.dynamic_entries


def test_table_starts_at_the_default_size_and_grows_only_by_an_update():
    """A larger limit is an allowance: until the peer's size update, a 5000-byte entry
    empties the table exactly as it does in the peer's 4096-byte one."""
    decoder = Decoder(max_table_size=65536)
    decoder.decode(b"\x40\x01a\x01b")
    long_value = b"\x7f" + bytes([(5000 - 127) & 0x7F | 0x80, (5000 - 127) >> 7]) + b"v" * 5000
    decoder.decode(b"\x40\x01c" + long_value)
    assert decoder.table_size == 0
    decoder.decode(b"\x3f\xe1\xff\x03" + b"\x40\x01c" + long_value)  # update to 65536, then add
    assert decoder.table_size == 5000 + 1 + 32


def test_lowered_limit_requires_a_size_update_first():
    decoder = Decoder()
    decoder.decode(b"\x40\x01a\x01b")
    decoder.limit_table_size(0)
    with pytest.raises(HpackError, match="size update"):
        decoder.decode(b"\x82")
    decoder = Decoder()
    decoder.limit_table_size(0)
    assert decoder.decode(b"\x20\x82") == [(b":method", b"GET")]
    assert decoder.decode(b"\x82") == [(b":method", b"GET")]


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_hpack_error_and_agree_with_hpack(block):
    try:
        ours = Decoder().decode(block)
    except HpackError:
        return
    try:
        theirs = ref.Decoder().decode(block, raw=True)
    except ref.HPACKError:  # e.g. its own bounds; the lists are compared where both decode
        return
    assert ours == theirs
