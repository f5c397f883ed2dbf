"""The flow page: one self-contained HTML file (no CDN, no other asset), data inside it."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["build_page"]


def build_page(data: dict[str, Any], *, live: bool = False) -> str:
    """The page showing ``data`` (:meth:`Flows.data`); ``live``: it also polls ``data.json``
    (``trustmesh flows serve``)."""
    template = resources.files("trustmesh.flows").joinpath("flows.html").read_text(encoding="utf-8")
    # inside <script>, "</" could close the element and "<!--" open a comment: escape "<"
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")
    return template.replace("__FLOW_DATA__", payload).replace("__LIVE__", "true" if live else "false")
