"""The formatter: canonical layout, comments kept, meaning unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings

from policy_dsl.fmt import format_text
from policy_dsl.parser import parse
from trustmesh.cli import main

from tests.unit.policy_dsl.test_properties import policies

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "policy_dsl" / "examples").glob("*.policy"))

MESSY = """# header comment
default   deny
policy "p"   protects destination.attrs.app=="api"{
allow "a" {request.method=="GET"}   # trailing note
  deny "d" {
     request.path startswith "/admin"   # why
     and not source.attrs.team == "ops" or ( has request.jwt and (request.json["odd key"] == 1.5) ) }
  # closing note
}
# the end
"""

EXPECTED = """# header comment
default deny

policy "p" protects destination.attrs.app == "api" {
  # trailing note
  allow "a" { request.method == "GET" }

  # why
  deny "d" {
    request.path startswith "/admin" and not (source.attrs.team == "ops")
    or has request.jwt and request.json["odd key"] == 1.5
  }

  # closing note
}

# the end
"""


def test_canonical_layout_keeps_every_comment():
    assert format_text(MESSY) == EXPECTED
    assert parse(EXPECTED) == parse(MESSY)
    assert format_text(EXPECTED) == EXPECTED


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_shipped_examples_are_formatted(path):
    text = path.read_text()
    assert format_text(text) == text


@settings(max_examples=50, deadline=None)
@given(policies())
def test_formatting_never_changes_the_tree(text):
    formatted = format_text(text)
    assert parse(formatted) == parse(text)
    assert format_text(formatted) == formatted


def test_fmt_cli_check_and_write(tmp_path, capsys):
    path = tmp_path / "p.policy"
    path.write_text(MESSY)
    assert main(["policy", "fmt", "--check", str(path)]) == 1
    assert main(["policy", "fmt", "--write", str(path)]) == 0
    assert path.read_text() == EXPECTED
    assert main(["policy", "fmt", "--check", str(path)]) == 0
