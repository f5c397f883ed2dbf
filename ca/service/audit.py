"""The audit log: one JSON object per line for every issuance and refusal.

Each line has ``time`` (RFC 3339, UTC), ``event`` (``issued`` or
``refused``), ``rpc``, the caller (namespace/ServiceAccount/pod, or the
join/static token id) and either the issued ``spiffe_id``, ``serial`` and
``not_after`` (and ``dns_names`` when a serving certificate was issued) or the refusal ``code`` and ``reason``. Tokens never appear.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import IO, Any

from ca.service.identity import Caller

__all__ = ["AuditLog", "open_audit_log"]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class AuditLog:
    """Writes audit lines to ``stream`` (flushed per line, thread-safe)."""

    def __init__(self, stream: IO[str], *, clock: Callable[[], datetime] = _utc_now) -> None:
        self._stream, self._clock, self._lock = stream, clock, threading.Lock()
        self._stamp: tuple[int, str] = (0, "")

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
        record: dict[str, Any] = {"event": "issued", "rpc": rpc, **caller.audit_fields(), "spiffe_id": str(caller.spiffe_id)}
        if serial is not None:
            record["serial"] = format(serial, "x")
        if not_after is not None:
            record["not_after"] = _iso(not_after)
        if audiences:
            record["audiences"] = list(audiences)
        if dns_names:
            record["dns_names"] = list(dns_names)
        self._write(record, peer)

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

    def _write(self, record: dict[str, Any], peer: str) -> None:
        line = {"time": self._now(), **record}
        if peer:
            line["peer"] = peer
        text = json.dumps(line, separators=(",", ":"), sort_keys=False) + "\n"
        with self._lock:
            self._stream.write(text)
            self._stream.flush()


def open_audit_log(target: str) -> AuditLog:
    """``-`` for stderr, else a file opened for appending."""
    if target == "-":
        return AuditLog(sys.stderr)
    return AuditLog(open(target, "a", encoding="utf-8"))  # noqa: SIM115 - lives as long as the service
