"""JSON Patch generation: escaping, missing containers, named lists, and a round-trip property."""

from __future__ import annotations

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from injector.patch import escape_token, make_patch, pointer


def apply(doc, ops):
    return jsonpatch.apply_patch(doc, ops)


def test_pointer_tokens_are_escaped_per_rfc6901():
    assert escape_token("trustmesh.io/policy") == "trustmesh.io~1policy"
    assert escape_token("a~b/c") == "a~0b~1c"
    assert pointer("metadata", "annotations", "x/~y") == "/metadata/annotations/x~1~0y"


def test_annotation_with_slash_added_when_annotations_map_is_missing():
    old = {"metadata": {"name": "p"}}
    new = {"metadata": {"name": "p", "annotations": {"trustmesh.io/a": "1"}}}
    ops = make_patch(old, new)
    assert ops == [{"op": "add", "path": "/metadata/annotations", "value": {"trustmesh.io/a": "1"}}]
    assert apply(old, ops) == new


def test_annotation_with_slash_and_tilde_added_to_an_existing_map():
    old = {"metadata": {"annotations": {"other": "x"}}}
    new = {"metadata": {"annotations": {"other": "x", "a~b/c": "1"}}}
    ops = make_patch(old, new)
    assert ops == [{"op": "add", "path": "/metadata/annotations/a~0b~1c", "value": "1"}]
    assert apply(old, ops) == new


def test_named_elements_inserted_at_their_final_index_and_existing_ones_patched_in_place():
    old = {"c": [{"name": "app", "image": "a"}, {"name": "log", "image": "l"}]}
    new = {"c": [{"name": "init", "image": "i"}, {"name": "app", "image": "a", "env": []},
                 {"name": "mid", "image": "m"}, {"name": "log", "image": "l"}, {"name": "end"}]}
    ops = make_patch(old, new)
    assert {"op": "add", "path": "/c/0/env", "value": []} in ops
    assert not any(op["op"] == "replace" for op in ops)
    assert apply(old, ops) == new


def test_reordered_named_list_is_replaced_whole():
    old = {"c": [{"name": "a"}, {"name": "b"}]}
    new = {"c": [{"name": "b"}, {"name": "a"}]}
    assert make_patch(old, new) == [{"op": "replace", "path": "/c", "value": new["c"]}]


def test_true_and_one_are_different_json_values():
    assert make_patch({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]


def test_no_change_gives_an_empty_patch():
    doc = {"a": [1, {"name": "x"}], "b": {"c": None}}
    assert make_patch(doc, {"a": [1, {"name": "x"}], "b": {"c": None}}) == []


def test_make_patch_does_not_alias_the_new_document():
    new = {"a": {"b": [1]}}
    ops = make_patch({}, new)
    ops[0]["value"]["b"].append(2)
    assert new == {"a": {"b": [1]}}


_keys = st.sampled_from(["a", "b", "name", "x/y", "t~0", "~", "/", ""])
_scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["a", "b", "c"])
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(_keys, children, max_size=4)
    | st.lists(st.fixed_dictionaries({"name": st.sampled_from(["p", "q", "r", "s"])},
                                     optional={"v": children}), max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(old=_json, new=_json)
def test_applying_the_patch_gives_the_new_document(old, new):
    assert apply(old, make_patch(old, new)) == new
