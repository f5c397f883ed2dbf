"""What every config file error must show: the file, the field's path, what was expected."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sdk.errors import ConfigError


def assert_file_error(load: Callable[[Any], Any], path: Path, text: str, field: str, expected: str) -> ConfigError:
    """Write ``text`` to ``path``, load it, and check the one error that names all three."""
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    error = info.value
    assert (error.file, error.field) == (str(path), field)
    where = f"{error.label} {path}: " if field == "(file)" else f"{error.label} {path}: {field}: "
    assert str(error).startswith(where) and expected in str(error), str(error)
    return error
