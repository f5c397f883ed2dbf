"""JSON Patch (RFC 6902) between two JSON documents, as admission webhooks send it.

The injector changes a pod by building the injected pod as a new document
and then diffing: :func:`make_patch` returns the operations that turn the
original into the result. Pointers are escaped per RFC 6901 (``~`` becomes
``~0``, ``/`` becomes ``~1``, so ``trustmesh.io/policy`` is
``trustmesh.io~1policy``). A missing map or array is created with one
``add`` of the whole value, so the patch applies whether or not the
original had ``initContainers``, ``volumes`` or ``annotations``. Lists of
named objects (containers, volumes, env, mounts, ports) are diffed by name,
so an element that is already there is patched in place rather than
replaced, and new elements are inserted at their final index.

>>> make_patch({"metadata": {}}, {"metadata": {"annotations": {"a/b": "1"}}})
[{'op': 'add', 'path': '/metadata/annotations', 'value': {'a/b': '1'}}]
>>> escape_token("trustmesh.io/policy")
'trustmesh.io~1policy'
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["escape_token", "pointer", "make_patch"]

Patch = list[dict[str, Any]]


def escape_token(token: str | int) -> str:
    """Escape one reference token of a JSON Pointer."""
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    """Build a JSON Pointer from unescaped tokens: ``pointer("a/b", 0) == "/a~1b/0"``."""
    return "".join("/" + escape_token(t) for t in tokens)


def make_patch(old: Any, new: Any) -> Patch:
    """Return JSON Patch operations that turn ``old`` into ``new``.

    Neither argument is modified; every ``value`` in the result is a copy.
    """
    ops: Patch = []
    _diff(old, new, "", ops)
    return ops


def _diff(old: Any, new: Any, path: str, ops: Patch) -> None:
    if _same(old, new):
        return
    if isinstance(old, dict) and isinstance(new, dict):
        _diff_dict(old, new, path, ops)
    elif isinstance(old, list) and isinstance(new, list):
        _diff_list(old, new, path, ops)
    else:
        ops.append({"op": "replace", "path": path, "value": copy.deepcopy(new)})


def _same(a: Any, b: Any) -> bool:
    """JSON equality: like ``==`` but ``1``, ``1.0`` and ``True`` all differ, at any depth."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _diff_dict(old: dict, new: dict, path: str, ops: Patch) -> None:
    for key in old:
        if key not in new:
            ops.append({"op": "remove", "path": path + pointer(key)})
    for key, value in new.items():
        if key in old:
            _diff(old[key], value, path + pointer(key), ops)
        else:
            ops.append({"op": "add", "path": path + pointer(key), "value": copy.deepcopy(value)})


def _diff_list(old: list, new: list, path: str, ops: Patch) -> None:
    if _named_insertions(old, new):
        _diff_named_list(old, new, path, ops)
    elif len(new) >= len(old) and all(_same(a, b) for a, b in zip(old, new)):
        for value in new[len(old):]:
            ops.append({"op": "add", "path": path + "/-", "value": copy.deepcopy(value)})
    else:
        ops.append({"op": "replace", "path": path, "value": copy.deepcopy(new)})


def _names(items: list) -> list[str] | None:
    """Names of a list of ``{"name": ...}`` objects, or None if it is not one (or has duplicates)."""
    names = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        names.append(item["name"])
    return names if len(set(names)) == len(names) else None


def _named_insertions(old: list, new: list) -> bool:
    """True when ``new`` keeps every element of ``old`` by name, in the same order."""
    old_names, new_names = _names(old), _names(new)
    if not old or old_names is None or new_names is None:
        return False
    kept = [n for n in new_names if n in set(old_names)]
    return kept == old_names


def _diff_named_list(old: list, new: list, path: str, ops: Patch) -> None:
    old_index = {item["name"]: i for i, item in enumerate(old)}
    new_by_name = {item["name"]: item for item in new}
    # First patch the elements already there, at their original indices ...
    for name, i in old_index.items():
        _diff(old[i], new_by_name[name], path + pointer(i), ops)
    # ... then insert the new ones at their final indices, in order: each
    # insertion leaves the list equal to new[:i + 1] up to index i.
    length = len(old)
    for i, item in enumerate(new):
        if item["name"] in old_index:
            continue
        target = "-" if i == length else i
        ops.append({"op": "add", "path": path + pointer(target), "value": copy.deepcopy(item)})
        length += 1
