"""The JSON access log: one line per request or TCP connection."""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

__all__ = ["AccessLog", "open_access_log"]


class AccessLog:
    """Writes one JSON object per line to ``stream`` (None: discard)."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream

    def write(self, **fields: Any) -> None:
        if self.stream is None:
            return
        fields["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
        self.stream.write(json.dumps(fields, separators=(",", ":"), default=str) + "\n")

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()


def open_access_log(where: str) -> AccessLog:
    """``stdout``, ``off``, or a file path (appended to)."""
    if where == "off":
        return AccessLog(None)
    if where == "stdout":
        return AccessLog(sys.stdout)
    return AccessLog(open(where, "a", buffering=1 << 16))  # noqa: SIM115 - lives as long as the sidecar
