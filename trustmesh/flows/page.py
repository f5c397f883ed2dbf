"""The flow page: one self-contained HTML file (no CDN, no other asset), data inside it.

The page's code is fixed; the data goes in a JSON block that no record can close (``<`` is
written ``\\u003c``), and the code puts every value into the document as text, never as
markup. A Content-Security-Policy allows that one script (by its hash) and nothing else: no
other script, no fetch but from the page's own origin (``serve``'s ``data.json``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from importlib import resources
from typing import Any

__all__ = ["build_page"]

_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


@functools.lru_cache(maxsize=1)
def _template() -> str:
    template = resources.files("trustmesh.flows").joinpath("flows.html").read_text(encoding="utf-8")
    code = _SCRIPT.search(template).group(1)
    digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
    policy = (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
              "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'")
    return template.replace("__CSP__", policy)


def _json(value: Any) -> str:
    # inside <script>, "</" could close the element and "<!--" open a comment: escape "<"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")


def build_page(data: dict[str, Any], *, poll_seconds: float = 0) -> str:
    """The page showing ``data`` (:meth:`Flows.data`); with ``poll_seconds`` it also reloads
    ``data.json`` that often (``trustmesh flows serve``)."""
    return _template().replace("__FLOW_CONFIG__", _json({"poll": poll_seconds})).replace("__FLOW_DATA__", _json(data))
