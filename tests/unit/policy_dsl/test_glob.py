"""Glob matching for the matches operator, including hostile patterns."""

from __future__ import annotations

import pytest

from policy_dsl.glob import compile_glob, glob_error, literal_prefix

TABLE = [
    ("/reports/**", "/reports", True),
    ("/reports/**", "/reports/", True),
    ("/reports/**", "/reports/2026/q3", True),
    ("/reports/**", "/reportsx", False),
    ("/reports/*", "/reports/a", True),
    ("/reports/*", "/reports/a/b", False),
    ("/a/**/z", "/a/z", True),
    ("/a/**/z", "/a/b/c/z", True),
    ("/a/**/z", "/a/b/c/y", False),
    ("/a/*.json", "/a/x.json", True),
    ("/a/*.json", "/a/x.yaml", False),
    ("/v*/items", "/v1/items", True),
    ("spiffe://analytics.example/**", "spiffe://analytics.example/jobs/x", True),
    ("spiffe://analytics.example/**", "spiffe://analytics.example.evil/jobs/x", False),
    ("spiffe://*.example/app", "spiffe://prod.example/app", True),
    ("**", "anything/at/all", True),
    ("/exact", "/exact", True),
    ("/exact", "/exact/", False),
    ("/*x*y*z*/end", "/axbyczd/end", True),
    ("/*x*y*z*/end", "/axbycd/end", False),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), TABLE)
def test_glob_table(pattern, text, expected):
    assert glob_error(pattern) is None
    assert compile_glob(pattern)(text) is expected


def test_double_star_must_be_a_whole_segment():
    assert glob_error("/a**") is not None
    assert glob_error("/**/a/**") is None


def test_literal_prefix_is_a_safe_index_key():
    assert literal_prefix("/reports/**") == "/reports"
    assert literal_prefix("/v*/items") == "/v"
    assert literal_prefix("/exact") == "/exact"


def test_hostile_patterns_stay_polynomial():
    # Each would take exponential time in a backtracking regex engine;
    # the pytest timeout (120 s) is the bound, the run takes milliseconds.
    star = compile_glob("/" + "*a" * 30 + "*b")
    assert star("/" + "a" * 5000) is False
    double = compile_glob("/**/a/**/a/**/a/**/a/**/a/**/b")
    assert double("/" + "a/" * 2000 + "c") is False
