"""HTTP path normalisation: the table from the issue, plus idempotence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_dsl import NormalizedTarget, PathError, normalize_path, parse_query

NORMALISED = [
    ("/", "/", ""),
    ("/a/b", "/a/b", ""),
    ("/a/../b", "/b", ""),
    ("/../../etc/passwd", "/etc/passwd", ""),  # never above root
    ("/a/b/..", "/a/", ""),
    ("/a/./b/.", "/a/b/", ""),
    ("/%2e%2e/admin", "/admin", ""),
    ("/x/%2E%2e/admin", "/admin", ""),
    ("/x/.%2e/admin", "/admin", ""),
    ("//a///b//", "/a/b/", ""),
    ("/a#frag", "/a", ""),
    ("/a?x=1#frag", "/a", "x=1"),
    ("/a?x=/../b", "/a", "x=/../b"),  # the query is not a path
    ("/%7euser/%41%62", "/~user/Ab", ""),  # unreserved decoded
    ("/caf%c3%a9", "/caf%C3%A9", ""),  # other escapes upper-cased, kept encoded
    ("/a%3Ab%3ac", "/a%3Ab%3Ac", ""),
    ("/100%25", "/100%25", ""),  # an encoded % stays encoded (no double decoding)
]


@pytest.mark.parametrize(("raw", "path", "query"), NORMALISED)
def test_normalisation_table(raw, path, query):
    assert normalize_path(raw) == NormalizedTarget(path, query)


REFUSED = [
    ("/a/%2fb", "encoded '/'"),
    ("/a/%2Fb", "encoded '/'"),
    ("/a%5cb", "encoded backslash"),
    ("/a%5Cb", "encoded backslash"),
    ("/a\\b", "backslash in path at offset 2"),
    ("/a%00", "encoded NUL"),
    ("/a\x00b", "control character"),
    ("/a\r\nb", "control character"),
    ("/a%0d%0ab", "encoded control character"),
    ("/a b", "space"),
    ("/admin;jsessionid=1", "path parameters (';')"),
    ("/%c0%ae%c0%ae/admin", "not valid UTF-8"),  # overlong "."
    ("/%e0%80%ae", "not valid UTF-8"),
    ("/%c3", "not valid UTF-8"),
    ("/a%zz", "malformed percent-escape"),
    ("/a%4", "malformed percent-escape"),
    ("/caf\u00e9", "raw non-ASCII"),
    ("", "empty request target"),
    ("a/b", "must start with '/'"),
    ("*", "must start with '/'"),
    ("http://host/a", "must start with '/'"),
]


@pytest.mark.parametrize(("raw", "reason"), REFUSED)
def test_refused_targets(raw, reason):
    with pytest.raises(PathError, match=None) as caught:
        normalize_path(raw)
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_non_string_target_is_a_path_error():
    with pytest.raises(PathError):
        normalize_path(b"/a")  # type: ignore[arg-type]


def test_target_round_trip():
    assert normalize_path("/a/./b?q=1").target == "/a/b?q=1"
    assert normalize_path("/a/").target == "/a/"


def test_parse_query_decodes_and_refuses_duplicates():
    assert parse_query("a=1&b=x%20y&c") == {"a": "1", "b": "x y", "c": ""}
    with pytest.raises(PathError, match="appears more than once"):
        parse_query("user=alice&user=admin")
    with pytest.raises(PathError, match="UTF-8"):
        parse_query("a=%ff")


_PIECES = list("/.%2eEfFcC05aA;?#\\~-_x") + ["%2e", "%2E", "..", "//", "%c0%ae", "%41", "%2f"]
_PATHY = st.lists(st.sampled_from(_PIECES), max_size=25).map("".join)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_PATHY.map(lambda s: "/" + s), st.text(max_size=30)))
def test_normalisation_is_idempotent_or_refuses(raw):
    try:
        once = normalize_path(raw)
    except PathError:
        return
    twice = normalize_path(once.path)
    assert twice.path == once.path
    assert once.path.startswith("/")
    assert "/../" not in once.path + "/" and "//" not in once.path and "/./" not in once.path + "/"


# -- the fast paths give what the general ones give (issue 16) ------------------------------

_TARGET_PIECES = [*"/.?#&=+;%\\:@!$'()*,~-_aZ09", "%2e", "%41", "%2F", "//", "/.", "..", "\x7f", " ", "é"]
_TARGETS = st.lists(st.sampled_from(_TARGET_PIECES), max_size=30).map("".join)


def _outcome(fn, arg):
    try:
        return fn(arg)
    except PathError as err:
        return ("refused", str(err))


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_TARGETS.map(lambda s: "/" + s), _TARGETS, st.text(max_size=40)))
def test_plain_targets_normalise_as_the_general_path_does(raw):
    from policy_dsl.paths import _normalize

    assert _outcome(normalize_path, raw) == _outcome(_normalize, raw)


@pytest.mark.parametrize("raw", ["/orders/1", "/svc3/items/9?page=2&n=9", "/a/", "/", "/a:b@c!$&'()*+,=~-_.x?q=/../"])
def test_plain_targets_are_unchanged(raw):
    path, _, query = raw.partition("?")
    assert normalize_path(raw) == NormalizedTarget(path, query)


_QUERY_PIECES = [*"&=+%;a1 ", "%20", "%ff", "%41", "&&", "=="]


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(_QUERY_PIECES), max_size=20).map("".join), st.text(max_size=30)))
def test_parse_query_agrees_with_parse_qsl(query):
    """parse_qsl (the standard library) is the reference; a repeated name is refused."""
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict", max_num_fields=256)
    except (UnicodeDecodeError, ValueError):
        with pytest.raises(PathError):
            parse_query(query)
        return
    if len({name for name, _ in pairs}) != len(pairs):
        with pytest.raises(PathError, match="appears more than once"):
            parse_query(query)
    else:
        assert parse_query(query) == dict(pairs)


def test_parse_query_field_limit_is_the_same_on_both_paths():
    assert len(parse_query("&".join(f"f{i}=1" for i in range(256)))) == 256
    with pytest.raises(PathError, match="Max number of fields"):
        parse_query("&".join(f"f{i}=1" for i in range(257)))
    with pytest.raises(PathError, match="Max number of fields"):
        parse_query("&".join(f"f{i}=%41" for i in range(257)))
