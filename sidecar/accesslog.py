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


# json.dumps with arguments builds an encoder per call; one made once encodes the same way
_ENCODE = json.JSONEncoder(separators=(",", ":"), default=str).encode


class AccessLog:
    """Writes one JSON object per line to ``stream`` (None: discard). ``omit`` names attributes
    (or prefixes of them, as policy spells them) whose values are never written."""

    def __init__(self, stream: IO[str] | None, omit: Iterable[str] = ()) -> None:
        self.stream = stream
        self.omit = tuple(omit)
        self._recorder: tuple[Any, Recorder | None] = (None, None)
        self._texts: dict[tuple[int, ...], tuple[tuple[Any, ...], str]] = {}
        self._second = -1  # the whole second self._stamp spells
        self._stamp = ""

    def write(self, tail: str = "", **fields: Any) -> None:
        """One record: ``v``, ``time`` and ``duration_ms`` (when given) first, then ``fields``
        in order (a replay skips parsing lines equal past the first three), then ``tail``
        (JSON members already serialised, see :meth:`attributes`)."""
        if self.stream is None:
            return
        now = int(time.time())
        if now != self._second:  # the record's time has a resolution of one second: format it once per second
            self._second, self._stamp = now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        head: dict[str, Any] = {"v": VERSION, "time": self._stamp}
        if "duration_ms" in fields:
            head["duration_ms"] = fields.pop("duration_ms")
        head.update(fields)
        line = _ENCODE(head)
        self.stream.write(line[:-1] + "," + tail + "}\n" if tail else line + "\n")

    def attributes(self, policy: Any, attrs: Mapping[str, Any]) -> str:
        """The ``attrs``, ``absent`` and ``withheld`` members (serialised) of a record of a
        request evaluated under ``policy`` (a ``PolicySet``; None: the base attributes only).

        The inbound router hands the very same section objects for equal requests on a
        connection (see ``InboundRouter._derive``), so the text is kept for them and reused
        while the policy set is the same."""
        kept = self._recorder
        if kept[0] is not policy or kept[1] is None:
            kept = self._recorder = (policy, Recorder(getattr(policy, "reads", ()), omit=self.omit))
            self._texts.clear()
        sections = tuple(attrs.get(name) for name in _SECTIONS)
        key = tuple(map(id, sections))
        known = self._texts.get(key)
        if known is not None and all(a is b for a, b in zip(known[0], sections)):
            return known[1]
        text = _ENCODE(kept[1].record(attrs))[1:-1]
        if len(self._texts) >= _TEXTS_KEPT:
            self._texts.clear()
        self._texts[key] = (sections, text)  # the sections are kept alive, so their ids stay theirs
        return text

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()


_SECTIONS = ("source", "destination", "request", "context")
_TEXTS_KEPT = 256


def open_access_log(where: str, omit: Iterable[str] = ()) -> AccessLog:
    """``stdout``, ``off``, or a file path (appended to)."""
    if where == "off":
        return AccessLog(None)
    if where == "stdout":
        return AccessLog(sys.stdout, omit)
    return AccessLog(open(where, "a", buffering=1 << 16), omit)  # noqa: SIM115 - lives as long as the sidecar
