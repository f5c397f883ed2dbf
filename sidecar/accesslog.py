"""The JSON access log: one line per request or TCP connection.

The record format (version ``v`` 1) is described in docs/access-log.md; its ``attrs``,
``absent`` and ``withheld`` fields, the attribute values the evaluation could read, come
from :class:`policy_dsl.record.Recorder` and make the log replayable
(``trustmesh policy replay``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping
from typing import IO, Any

from policy_dsl.record import VERSION, Recorder

__all__ = ["AccessLog", "open_access_log"]


class AccessLog:
    """Writes one JSON object per line to ``stream`` (None: discard). ``omit`` names attributes
    (or prefixes of them, as policy spells them) whose values are never written."""

    def __init__(self, stream: IO[str] | None, omit: Iterable[str] = ()) -> None:
        self.stream = stream
        self.omit = tuple(omit)
        self._recorder: tuple[Any, Recorder | None] = (None, None)

    def write(self, **fields: Any) -> None:
        """One record: ``v``, ``time`` and ``duration_ms`` (when given) first, then ``fields``
        in order (a replay skips parsing lines equal past the first three)."""
        if self.stream is None:
            return
        head: dict[str, Any] = {"v": VERSION, "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"}
        if "duration_ms" in fields:
            head["duration_ms"] = fields.pop("duration_ms")
        head.update(fields)
        self.stream.write(json.dumps(head, separators=(",", ":"), default=str) + "\n")

    def attributes(self, policy: Any, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """``attrs``, ``absent`` and ``withheld`` for a record of a request evaluated under
        ``policy`` (a ``PolicySet``; None: the base attributes only)."""
        kept = self._recorder
        if kept[0] is not policy or kept[1] is None:
            kept = self._recorder = (policy, Recorder(getattr(policy, "reads", ()), omit=self.omit))
        return kept[1].record(attrs)

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()


def open_access_log(where: str, omit: Iterable[str] = ()) -> AccessLog:
    """``stdout``, ``off``, or a file path (appended to)."""
    if where == "off":
        return AccessLog(None)
    if where == "stdout":
        return AccessLog(sys.stdout, omit)
    return AccessLog(open(where, "a", buffering=1 << 16), omit)  # noqa: SIM115 - lives as long as the sidecar
