"""The runnable examples in the sdk's docstrings and docs/sdk.md run as written."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import sdk

DOCS = Path(__file__).resolve().parents[3] / "docs" / "sdk.md"


def _globals():
    return {name: getattr(sdk, name) for name in sdk.__all__}


@pytest.mark.parametrize("module", ["sdk.spiffeid", "sdk.match", "sdk.template", "sdk.config"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), extraglobs=_globals())
    assert result.attempted > 0 and result.failed == 0


def test_docs_examples():
    result = doctest.testfile(str(DOCS), module_relative=False, globs=_globals())
    assert result.attempted > 0 and result.failed == 0
