"""Lazy package exports: ``from pkg import Name`` without importing every module up front.

Packages use it so that ``import sdk`` (and ``trustmesh --help``) does not load
cryptography, grpc or aiohttp until a name that needs them is used::

    _EXPORTS = {"SpiffeId": "sdk.spiffeid", ...}
    __all__ = sorted(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return the module-level ``__getattr__`` and ``__dir__`` (PEP 562) for ``package``.

    ``exports`` maps each public name to the module that defines it; a name is
    imported on first use and then cached in ``namespace`` (the package's globals).
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
