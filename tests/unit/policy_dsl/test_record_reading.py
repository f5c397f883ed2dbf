"""Reading access-log lines back fast without reading them differently (policy_dsl.record,
policy_dsl.replay): msgspec parses, the stdlib stays the reference for what a line holds and
which lines are refused, and the replay's cache of outcomes per projection decides as a
fresh evaluation of every record does."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_dsl import load_policy
from policy_dsl.record import RecordError, read_flat, read_record
from policy_dsl.record import _decode as decode
from policy_dsl.replay import Replay
from tests.unit.policy_dsl.test_replay import APPS, CURRENT, record_line, request

# -- parsing: the stdlib's verdict and values, whichever parser ran ---------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)
TRICKY = [
    b'{"a":1,"a":2}',                      # a repeated key: the last one, as the stdlib reads it
    b'[NaN, Infinity, -Infinity]',         # what json.dumps writes for such floats; msgspec refuses them
    b'"\\ud800"',                          # a lone surrogate escape (json.dumps writes one for such a str)
    b'\xef\xbb\xbf{"a":1}',                # a UTF-8 byte-order mark
    b'"\xff"',                             # not UTF-8
    b"[" * 2000 + b"]" * 2000,             # deeper than the stdlib goes
    b"[" + b"9" * 4300 + b"]", b"[" + b"9" * 4301 + b"]",  # the int-size limit of both
    b"1e400", b"-0", b"1E2", b' {"a":1} ', b'{"a":1}x', b'"\x01"', b"", b"{", b'{"a":}',
]


def _stdlib(line):
    try:
        return "value", json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "refused", None


def _ours(line):
    try:
        return "value", decode(line)
    except RecordError:
        return "refused", None


def _same(a, b) -> bool:
    """Equal, NaN equal to NaN and of the same types all the way down."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("line", TRICKY, ids=lambda line: repr(line[:20]))
def test_a_line_reads_as_the_stdlib_reads_it_or_is_refused_as_it_refuses_it(line):
    (verdict, value), (expected, wanted) = _ours(line), _stdlib(line)
    assert verdict == expected and _same(value, wanted)


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from(["whole", "truncated", "ascii"]), st.data())
def test_any_json_and_any_truncation_of_it_read_as_the_stdlib_reads_them(value, form, data):
    text = json.dumps(value, ensure_ascii=form == "ascii")
    line = text.encode("utf-8", "surrogatepass")
    if form == "truncated":
        line = line[: data.draw(st.integers(0, len(line)))]
    (verdict, got), (expected, wanted) = _ours(line), _stdlib(line)
    assert verdict == expected and _same(got, wanted)


def test_a_record_with_a_repeated_key_reads_as_its_last_value_as_before():
    line = json.loads(record_line(CURRENT, request("web", "orders", "GET", "/v1/orders/1")))
    text = json.dumps(line).replace('"decision": "allow"', '"decision": "deny", "decision": "allow"', 1)
    assert read_record(text)["decision"] == "allow"


def test_a_json_body_value_only_the_stdlib_reads_is_still_replayed():
    line = record_line(CURRENT, request("web", "orders", "POST", "/v1/orders", {"account": float("nan")}))
    assert "NaN" in line
    replay = Replay(CURRENT)
    replay.add_line(line, "a.log", 1)
    assert (replay.records, replay.unchanged, replay.error_count) == (1, 1, 0)


@pytest.mark.parametrize("attrs, message", [
    ({"source": "spiffe://demo.example/app/web"}, "attribute 'source' is not an object"),
    ({"request.json": "x", "request.json.a.b": 1}, "attribute 'request.json.a.b' lies inside another recorded value"),
    ({"request": 5, "request.path": "/x"}, "attribute 'request.path' lies inside another recorded value"),
    ({"context": [], "request.path": "/x"}, "attribute 'context' is not an object"),
    ({"source.id": "spiffe://UPPER.example/x"}, "source.id: "),
    ({"request..x": 1}, "not an attribute"),
])
def test_names_that_cannot_make_a_document_are_refused_with_a_reason_not_a_crash(attrs, message):
    line = json.dumps({"v": 1, "time": "2026-12-05T10:00:00Z", "decision": "allow", "attrs": attrs})
    for read in (read_flat, read_record):
        with pytest.raises(RecordError, match=message.replace("[", r"\[").replace(".", r"\.")):
            read(line)
    replay = Replay(CURRENT)
    replay.add_line(line, "a.log", 3)
    assert replay.error_count == 1 and str(replay.errors[0]).startswith("a.log:3: ")


# -- the outcome cache decides as evaluating every record does --------------------------------
NEW_POLICIES = [
    # path tests of every kind the projection replaces the path with
    '''policy "orders" protects destination.attrs.app == "orders" {
  allow "reads" { source.attrs.app in ["web", "billing"] and request.method == "GET" and request.path matches "/v1/orders/*" }
  allow "exact" { request.path == "/v1/orders/7" or request.path in ["/admin", "/x.y"] }
  allow "own" { request.method == "POST" and request.json.account == source.attrs.app }
  deny "admin" { request.path startswith "/admin" and not (source.attrs.app == "web") }
}
policy "config" protects destination.attrs.app == "config" {
  allow "mesh" { source.trust_domain == "demo.example" and request.path matches "/**" }
}''',
    # a test reading the path with another attribute: the path is projected whole
    '''policy "orders" protects all {
  allow "same" { request.path == request.method or request.path matches "/v1/*/*" }
  deny "deep" { request.path matches "/v1/orders/*/*/*" }
}''',
]
segments = st.one_of(st.sampled_from(["v1", "orders", "admin", "x.y", "7", "GET"]), st.integers(0, 30).map(str))
requests = st.builds(
    request,
    st.sampled_from(APPS), st.sampled_from(["orders", "config"]), st.sampled_from(["GET", "POST"]),
    st.one_of(
        st.sampled_from(["/v1/orders/7", "/v1/orders/8", "/admin", "/admin/x", "/x.y", "/v1/orders/1/2/3", "/GET"]),
        st.lists(segments, min_size=0, max_size=4).map(lambda s: "/" + "/".join(s)),
    ),
    st.one_of(st.none(), st.fixed_dictionaries({"account": st.sampled_from(APPS + [7])})),
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(NEW_POLICIES), st.lists(requests, min_size=1, max_size=80))
def test_counts_and_groups_equal_those_of_evaluating_every_record_afresh(text, attrs_list):
    new = load_policy(text, "new.policy")
    lines = [record_line(CURRENT, attrs) for attrs in attrs_list]
    replay = Replay(new)
    for number, line in enumerate(lines, 1):
        replay.add_line(line, "a.log", number)
    expected: dict[tuple, int] = {}
    for line in lines:
        record = read_record(line)
        allowed = new.evaluate(record["_attrs"]).allowed
        if allowed != (record["decision"] == "allow"):
            kind = "allow->deny" if record["decision"] == "allow" else "deny->allow"
            flat = record["attrs"]
            key = (kind, flat["source.id"], flat["destination.id"], flat["request.method"], flat["request.path"])
            expected[key] = expected.get(key, 0) + 1
    assert replay.count("undetermined") == 0
    assert replay.count("allow->deny") + replay.count("deny->allow") == sum(expected.values())
    assert replay.unchanged == len(lines) - sum(expected.values())
    for change in replay.changes():  # each group holds the records of its pattern, no more, no less
        assert change.count == sum(
            n for (kind, source, destination, method, path), n in expected.items()
            if (kind, source, destination, method) == (change.kind, change.source, change.destination, change.method)
            and _pattern(path) == change.pattern
        )


def _pattern(path: str) -> str:
    from policy_dsl.flows import path_pattern

    return path_pattern(path)
