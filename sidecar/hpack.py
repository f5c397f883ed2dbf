"""HPACK (RFC 7541): header block decoding and encoding for HTTP/2, without I/O.

:class:`Decoder` turns a complete header block (HEADERS + CONTINUATION
fragments joined) into a list of ``(name, value)`` byte pairs, in order,
strictly: an integer that overflows, an index out of range, a string longer
than the block, a Huffman string with padding longer than 7 bits, padding
that is not all ones or an EOS symbol, a dynamic table size update anywhere
but at the start of a block or above the table size we allow — each raises
:class:`HpackError`, which the HTTP/2 layer answers with a connection error
COMPRESSION_ERROR (the decoder's state is then unusable). The decoded header
list is bounded like the RFC counts it (name + value + 32 per field): past
``max_header_list_size`` decoding stops at once with
:class:`HeaderListTooLarge` (an HPACK bomb never gets materialised).

Decoding is the hot path, so results are cached: a block that neither reads
nor changes the dynamic table decodes the same everywhere (process-wide
cache); one that reads it without changing it decodes the same until the
table changes (per-decoder cache, keyed by the table's ``generation``).
Huffman strings are decoded with a 4-bit state machine and kept in a bounded
cache too.

:class:`Encoder` is deliberately stateless: it uses the static table and
literals without indexing (never-indexed for credentials), never the dynamic
table. A header list then encodes to the same bytes on every connection, so
re-encoding is a cached lookup per field, no per-connection state has to be
kept in step, and nothing one stream sends can be probed through another's
compression (CRIME-style). Example::

    block = Encoder().encode([(b":method", b"GET"), (b":path", b"/a")])
    assert Decoder().decode(block) == [(b":method", b"GET"), (b":path", b"/a")]
"""

from __future__ import annotations

from collections.abc import Iterable

from sidecar._hpack_tables import HUFFMAN_CODES, STATIC_TABLE
from sidecar.h2errors import HeaderListTooLarge, HpackError

__all__ = [
    "Decoder",
    "Encoder",
    "HpackError",
    "HeaderListTooLarge",
    "huffman_decode",
    "huffman_encode",
]

Header = tuple[bytes, bytes]

_STATIC: tuple[Header, ...] = ((b"", b""), *STATIC_TABLE)  # _STATIC[i] is HPACK index i
_STATIC_LEN = len(STATIC_TABLE)  # 61
_ENTRY_OVERHEAD = 32  # RFC 7541 §4.1
_DEFAULT_TABLE_SIZE = 4096  # SETTINGS_HEADER_TABLE_SIZE's initial value
_MAX_INT_BYTES = 5  # continuation bytes after a full prefix: up to 2**35, refused above 2**31 - 1
_INT_LIMIT = 0x7FFFFFFF


# ---- Huffman ----------------------------------------------------------------------------


def _build_huffman_fsm() -> tuple[list[int], list[bool]]:
    """A decoder walking 4 bits at a time. ``fsm[state * 16 + nibble]`` is
    ``next_state << 9 | (symbol + 1)`` (``symbol + 1 == 0``: nothing emitted),
    or -1 when the nibble reaches EOS. ``accepting[state]`` tells whether a string
    may end in that state (the bits since the last symbol are at most 7 ones)."""
    children: list[list[int]] = [[-1, -1]]  # internal nodes; a leaf is stored as -(symbol + 2)
    for symbol, (code, length) in enumerate(HUFFMAN_CODES):
        node = 0
        for shift in range(length - 1, -1, -1):
            bit = (code >> shift) & 1
            if shift == 0:
                children[node][bit] = -(symbol + 2)
            else:
                if children[node][bit] == -1:
                    children.append([-1, -1])
                    children[node][bit] = len(children) - 1
                node = children[node][bit]
    accepting = [False] * len(children)
    node, depth = 0, 0
    while node >= 0 and depth <= 7:  # the all-ones path: valid padding
        accepting[node] = True
        node = children[node][1]
        depth += 1
    fsm = [0] * (len(children) * 16)
    for state in range(len(children)):
        for nibble in range(16):
            node, emitted, bad = state, 0, False
            for shift in (3, 2, 1, 0):
                nxt = children[node][(nibble >> shift) & 1]
                if nxt < 0:
                    symbol = -nxt - 2
                    if symbol == 256:
                        bad = True
                        break
                    emitted = symbol + 1
                    node = 0
                else:
                    node = nxt
            fsm[state * 16 + nibble] = -1 if bad else node << 9 | emitted
    return fsm, accepting


_FSM, _ACCEPTING = _build_huffman_fsm()
_HUFFMAN_CACHE: dict[bytes, bytes] = {}
_HUFFMAN_CACHE_MAX = 4096
_HUFFMAN_CACHED_LEN = 128


def huffman_decode(data: bytes) -> bytes:
    """Decode a Huffman-coded string (RFC 7541 §5.2), or raise :class:`HpackError`."""
    cached = _HUFFMAN_CACHE.get(data)
    if cached is not None:
        return cached
    fsm = _FSM
    out = bytearray()
    state = 0
    for byte in data:
        entry = fsm[state << 4 | byte >> 4]
        if entry < 0:
            raise HpackError("EOS symbol in a Huffman string")
        if entry & 0x1FF:
            out.append((entry & 0x1FF) - 1)
        entry = fsm[(entry >> 9) << 4 | byte & 15]
        if entry < 0:
            raise HpackError("EOS symbol in a Huffman string")
        if entry & 0x1FF:
            out.append((entry & 0x1FF) - 1)
        state = entry >> 9
    if not _ACCEPTING[state]:
        raise HpackError("invalid Huffman padding (longer than 7 bits or not all ones)")
    result = bytes(out)
    if len(data) <= _HUFFMAN_CACHED_LEN:
        if len(_HUFFMAN_CACHE) >= _HUFFMAN_CACHE_MAX:
            _HUFFMAN_CACHE.clear()
        _HUFFMAN_CACHE[data] = result
    return result


def huffman_encode(data: bytes) -> bytes:
    """Huffman-code ``data``, padded with ones to a whole byte."""
    acc = 0
    bits = 0
    codes = HUFFMAN_CODES
    for byte in data:
        code, length = codes[byte]
        acc = acc << length | code
        bits += length
    pad = -bits % 8
    acc = acc << pad | ((1 << pad) - 1)
    return acc.to_bytes((bits + pad) // 8, "big")


# ---- integers and strings ------------------------------------------------------------------


def _varint(block: bytes, pos: int, value: int) -> tuple[int, int]:
    """Continue an integer whose prefix was full (``value`` is the prefix maximum)."""
    shift = 0
    end = len(block)
    for _ in range(_MAX_INT_BYTES):
        if pos >= end:
            raise HpackError("header block ends inside an integer")
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            if value > _INT_LIMIT:
                raise HpackError("integer overflow in header block")
            return value, pos
        shift += 7
    raise HpackError("integer overflow in header block")


def _string(block: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(block):
        raise HpackError("header block ends before a string")
    first = block[pos]
    length = first & 0x7F
    pos += 1
    if length == 0x7F:
        length, pos = _varint(block, pos, 0x7F)
    end = pos + length
    if end > len(block):
        raise HpackError("string runs past the end of the header block")
    raw = block[pos:end]
    if first & 0x80:
        return huffman_decode(raw), end
    return raw, end


def _encode_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# ---- decoder --------------------------------------------------------------------------------

_SHARED_CACHE: dict[bytes, tuple[tuple[Header, ...], int]] = {}  # block -> (fields, list size)
_SHARED_CACHE_MAX = 1024
_CACHED_BLOCK_LEN = 1024
_OWN_CACHE_MAX = 32
_OWN_CACHED_BLOCK_LEN = 512


class Decoder:
    """Decodes the header blocks of one direction of one connection (RFC 7541).

    ``max_table_size`` is the SETTINGS_HEADER_TABLE_SIZE we advertise: the
    table starts at the protocol default (4096, or less when that is lower) and
    the peer resizes it with size updates at the start of a block, never above
    the limit. ``max_header_list_size`` bounds one decoded list.
    ``generation`` counts changes of the dynamic table.
    """

    __slots__ = (
        "_table", "_size", "_max_size", "_limit", "max_header_list_size", "generation", "_cache", "_update_required",
    )

    def __init__(self, max_table_size: int = 4096, max_header_list_size: int = 65536) -> None:
        self._table: list[Header] = []  # newest last: HPACK index 62 is _table[-1]
        self._size = 0
        self._max_size = min(_DEFAULT_TABLE_SIZE, max_table_size)  # the peer grows it with a size update
        self._limit = max_table_size
        self.max_header_list_size = max_header_list_size
        self.generation = 0
        self._cache: dict[bytes, tuple[int, tuple[Header, ...], int]] | None = None
        self._update_required = False

    def limit_table_size(self, limit: int) -> None:
        """Our SETTINGS_HEADER_TABLE_SIZE took effect (the peer acknowledged it). If the
        table may now be larger than that, the next block must start by shrinking it
        (RFC 7541 §4.2), or it is refused."""
        self._limit = limit
        if self._max_size > limit:
            self._update_required = True

    @property
    def table_size(self) -> int:
        """The dynamic table's current size (RFC 7541 §4.1)."""
        return self._size

    def decode(self, block: bytes) -> list[Header]:
        """The header list of one complete block; raises :class:`HpackError`."""
        if self._update_required:
            if not block or block[0] & 0xE0 != 0x20:
                raise HpackError("expected a dynamic table size update at the start of the block")
            self._update_required = False
        elif len(block) <= _CACHED_BLOCK_LEN:
            shared = _SHARED_CACHE.get(block)
            if shared is not None and shared[1] <= self.max_header_list_size:
                return list(shared[0])
            own = self._cache.get(block) if self._cache is not None else None
            if own is not None and own[0] == self.generation and own[2] <= self.max_header_list_size:
                return list(own[1])
        generation = self.generation
        fields, size, dynamic = self._decode(block)
        if len(block) <= _CACHED_BLOCK_LEN and self.generation == generation:
            if not dynamic:
                if len(_SHARED_CACHE) >= _SHARED_CACHE_MAX:
                    _SHARED_CACHE.clear()
                _SHARED_CACHE[block] = (tuple(fields), size)
            elif len(block) <= _OWN_CACHED_BLOCK_LEN:
                if self._cache is None or len(self._cache) >= _OWN_CACHE_MAX:
                    self._cache = {}
                self._cache[block] = (generation, tuple(fields), size)
        return fields

    def _decode(self, block: bytes) -> tuple[list[Header], int, bool]:
        """(fields, decoded size, whether the dynamic table was read or written)."""
        fields: list[Header] = []
        static = _STATIC
        table = self._table
        limit = self.max_header_list_size
        size = 0
        dynamic = False
        pos = 0
        end = len(block)
        while pos < end:
            first = block[pos]
            pos += 1
            if first & 0x80:  # indexed field
                index = first & 0x7F
                if index == 0x7F:
                    index, pos = _varint(block, pos, 0x7F)
                if 0 < index <= _STATIC_LEN:
                    field = static[index]
                else:
                    field = self._dynamic(index)
                    dynamic = True
            elif first & 0x40:  # literal with incremental indexing
                index = first & 0x3F
                if index == 0x3F:
                    index, pos = _varint(block, pos, 0x3F)
                name, pos = self._name(block, pos, index)
                value, pos = _string(block, pos)
                field = (name, value)
                self._add(field)
                dynamic = True
            elif first & 0x20:  # dynamic table size update
                if fields:
                    raise HpackError("dynamic table size update after the first header field")
                new_size = first & 0x1F
                if new_size == 0x1F:
                    new_size, pos = _varint(block, pos, 0x1F)
                if new_size > self._limit:
                    raise HpackError(f"dynamic table size update to {new_size} above the limit {self._limit}")
                self._max_size = new_size
                self._evict(0)
                self.generation += 1
                continue
            else:  # literal without indexing (0000) or never indexed (0001)
                index = first & 0x0F
                if index == 0x0F:
                    index, pos = _varint(block, pos, 0x0F)
                if 0 < index <= _STATIC_LEN:
                    name = static[index][0]
                elif index == 0:
                    # a short plain string (the usual new name) is read inline, here and for the
                    # value below, on purpose: a call per string costs 25% of a request block
                    length = block[pos] if pos < end else 0x80
                    if length < 0x7F and pos + 1 + length <= end:
                        name = block[pos + 1 : pos + 1 + length]
                        pos += 1 + length
                    else:
                        name, pos = _string(block, pos)
                else:
                    name = self._dynamic(index)[0]
                    dynamic = True
                length = block[pos] if pos < end else 0x80
                if length < 0x7F and pos + 1 + length <= end:
                    value = block[pos + 1 : pos + 1 + length]
                    pos += 1 + length
                else:
                    value, pos = _string(block, pos)
                field = (name, value)
            size += len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
            if size > limit:
                raise HeaderListTooLarge(f"header list larger than {limit} bytes")
            fields.append(field)
        return fields, size, dynamic

    def _name(self, block: bytes, pos: int, index: int) -> tuple[bytes, int]:
        if index == 0:
            return _string(block, pos)
        if index <= _STATIC_LEN:
            return _STATIC[index][0], pos
        return self._dynamic(index)[0], pos

    def _dynamic(self, index: int) -> Header:
        offset = index - _STATIC_LEN
        if index == 0 or offset > len(self._table):
            raise HpackError(f"header index {index} out of range")
        return self._table[-offset]

    def _add(self, field: Header) -> None:
        size = len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
        self.generation += 1
        if size > self._max_size:  # RFC 7541 §4.4: an entry larger than the table empties it
            self._table.clear()
            self._size = 0
            return
        self._evict(size)
        self._table.append(field)
        self._size += size

    def _evict(self, room: int) -> None:
        table = self._table
        drop = 0
        while self._size + room > self._max_size:
            name, value = table[drop]
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD
            drop += 1
        if drop:
            del table[:drop]


# ---- encoder --------------------------------------------------------------------------------

_STATIC_FIELD_INDEX: dict[Header, int] = {}
_STATIC_NAME_INDEX: dict[bytes, int] = {}
for _i, _field in enumerate(STATIC_TABLE, 1):
    _STATIC_FIELD_INDEX.setdefault(_field, _i)
    _STATIC_NAME_INDEX.setdefault(_field[0], _i)
del _i, _field

NEVER_INDEXED = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})
"""Names sent as never-indexed literals, so that no intermediary compresses them (RFC 7541 §7.1.3)."""

_FIELD_CACHES: tuple[dict[Header, bytes], dict[Header, bytes]] = ({}, {})  # plain, Huffman: field -> bytes
_FIELD_CACHE_MAX = 4096
_FIELD_CACHED_LEN = 256


def _encode_string(data: bytes, huffman: bool) -> bytes:
    if huffman and data:
        coded = huffman_encode(data)
        if len(coded) < len(data):
            return _encode_int(len(coded), 7, 0x80) + coded
    return _encode_int(len(data), 7, 0) + data


def _encode_field(name: bytes, value: bytes, huffman: bool) -> bytes:
    index = _STATIC_FIELD_INDEX.get((name, value))
    if index is not None:
        return bytes((0x80 | index,))
    first = 0x10 if name in NEVER_INDEXED else 0x00
    name_index = _STATIC_NAME_INDEX.get(name)
    if name_index is not None:
        return _encode_int(name_index, 4, first) + _encode_string(value, huffman)
    return bytes((first,)) + _encode_string(name, huffman) + _encode_string(value, huffman)


class Encoder:
    """Encodes header lists with the static table and literals only (see the module doc).

    ``huffman=True`` Huffman-codes strings where that is shorter (worth it across a
    network; on loopback the plain bytes are cheaper to produce and to read).
    Names must already be lower-case; nothing is validated here.
    """

    __slots__ = ("huffman",)

    def __init__(self, huffman: bool = False) -> None:
        self.huffman = huffman

    def encode(self, headers: Iterable[Header]) -> bytes:
        get = _FIELD_CACHES[self.huffman].get
        return b"".join([get(field) or self._encode(field) for field in headers])

    def _encode(self, field: Header) -> bytes:
        name, value = field
        encoded = _encode_field(name, value, self.huffman)
        if len(name) + len(value) <= _FIELD_CACHED_LEN:
            cache = _FIELD_CACHES[self.huffman]
            if len(cache) >= _FIELD_CACHE_MAX:
                cache.clear()
            cache[field] = encoded
        return encoded
