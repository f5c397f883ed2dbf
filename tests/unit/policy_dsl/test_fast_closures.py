"""The specialised closures for string tests (``==``, ``in``, ``startswith`` against string
literals) decide exactly as the general three-valued comparison: a value that is absent or not
a string is unknown, so it never makes a condition definitely true and never definitely false."""

from __future__ import annotations

import pytest

from policy_dsl.compiler import compile_pred, compile_tri
from policy_dsl.parser import parse

CONDITIONS = ['request.path == "/a"', 'request.path in ["/a", "/b"]', 'request.path startswith "/a"']
VALUES = ["/a", "/ab", "/b", "/", "", "/A", 5, 1.5, True, ["/a"], {"a": 1}, None]


def _condition(text: str):
    (policy,) = parse(f'policy "p" protects all {{ allow "r" {{ {text} }} }}').policies
    return policy.rules[0].condition


@pytest.mark.parametrize("text", CONDITIONS)
@pytest.mark.parametrize("value", VALUES + ["absent"], ids=repr)
def test_the_fast_closure_agrees_with_the_three_valued_comparison(text, value):
    condition = _condition(text)
    attrs = {"request": {} if value == "absent" else {"path": value}}
    tri = compile_tri(condition)(attrs)
    assert compile_pred(condition, True)(attrs) is (tri is True)  # definitely true: allow rules
    assert compile_pred(condition, False)(attrs) is (tri is not False)  # possibly true: deny rules


def test_startswith_against_a_string_gets_the_fast_closure():
    pred = compile_pred(_condition('request.path startswith "/a"'), True)
    assert pred.__name__ == "definitely_starts"
    assert pred({"request": {"path": "/a/x"}}) is True and pred({"request": {"path": 7}}) is False
