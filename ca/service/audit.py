"""The audit log: one JSON object per line for every issuance and refusal.

Each line has ``time`` (RFC 3339, UTC), ``event`` (``issued`` or
``refused``), ``rpc``, the caller (namespace/ServiceAccount/pod, or the
join/static token id) and either the issued ``spiffe_id``, ``serial`` and
``not_after`` (and ``dns_names`` when a serving certificate was issued) or the refusal ``code`` and ``reason``. Tokens never appear.
Federation writes ``federated_bundle_accepted`` / ``federated_bundle_refused``
lines (``trust_domain``, ``endpoint``, sequences, ``reason``) through :meth:`AuditLog.event`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import IO, Any

from ca.service.identity import Caller

__all__ = ["AuditLog", "open_audit_log"]


_encode = json.JSONEncoder(separators=(",", ":")).encode


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class AuditLog:
    """Writes audit lines to ``stream``: each line whole, at once, under a lock.

    A stream with a file descriptor gets each line in one ``os.write`` (no
    user-space buffer to lose); others are written and flushed per line.
    ``shared_lock`` (a ``multiprocessing`` lock) is held around every write
    when worker processes share the stream, so lines never interleave.
    """

    def __init__(
        self,
        stream: IO[str],
        *,
        clock: Callable[[], datetime] = _utc_now,
        shared_lock: AbstractContextManager | None = None,
    ) -> None:
        self._stream, self._clock = stream, clock
        self._lock: AbstractContextManager = shared_lock or threading.Lock()
        self._stamp: tuple[int, str] = (0, "")
        try:
            stream.flush()
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
            self._fd = None

    def _now(self) -> str:
        now = self._clock()
        second = int(now.timestamp())
        if self._stamp[0] != second:
            self._stamp = (second, _iso(now))
        return self._stamp[1]

    def issued(
        self,
        rpc: str,
        caller: Caller,
        *,
        serial: int | None = None,
        not_after: datetime | None = None,
        audiences: tuple[str, ...] = (),
        dns_names: tuple[str, ...] = (),
        peer: str = "",
    ) -> None:
        # The caller's part is encoded once per caller (Caller.audit_json); the line has the
        # same keys, in the same order, as one json.dumps of the whole record would give.
        parts = [f'{{"time":"{self._now()}","event":"issued","rpc":{_encode(rpc)},{caller.audit_json}']
        if serial is not None:
            parts.append(f',"serial":"{serial:x}"')
        if not_after is not None:
            parts.append(f',"not_after":"{_iso(not_after)}"')
        if audiences:
            parts.append(f',"audiences":{_encode(list(audiences))}')
        if dns_names:
            parts.append(f',"dns_names":{_encode(list(dns_names))}')
        if peer:
            parts.append(f',"peer":{_encode(peer)}')
        parts.append("}\n")
        self._emit("".join(parts))

    def refused(
        self,
        rpc: str,
        code: str,
        reason: str,
        caller: Caller | None = None,
        *,
        who: dict[str, str] | None = None,
        peer: str = "",
    ) -> None:
        """A refusal; ``who`` is what is known of a caller that was not fully authenticated."""
        record: dict[str, Any] = {"event": "refused", "rpc": rpc, "code": code, "reason": reason}
        if caller is None and who:
            record.update(who)
        if caller is not None:
            record.update(caller.audit_fields())
            record["spiffe_id"] = str(caller.spiffe_id)
        self._write(record, peer)

    def event(self, event: str, **fields: Any) -> None:
        """A line that is not about a caller (federation changes)."""
        self._write({"event": event, **fields}, "")

    def _write(self, record: dict[str, Any], peer: str) -> None:
        line = {"time": self._now(), **record}
        if peer:
            line["peer"] = peer
        self._emit(_encode(line) + "\n")

    def _emit(self, text: str) -> None:
        if self._fd is None:
            with self._lock:
                self._stream.write(text)
                self._stream.flush()
            return
        data = memoryview(text.encode("utf-8"))
        with self._lock:
            while data:
                data = data[os.write(self._fd, data):]


def open_audit_log(target: str, *, shared_lock: AbstractContextManager | None = None) -> AuditLog:
    """``-`` for stderr, else a file opened for appending (``O_APPEND``: workers share it)."""
    if target == "-":
        return AuditLog(sys.stderr, shared_lock=shared_lock)
    return AuditLog(open(target, "a", encoding="utf-8"), shared_lock=shared_lock)  # noqa: SIM115 - lives as long as the service
