"""The sdk's one rule for time: every time-dependent function takes ``now``."""

from __future__ import annotations

from datetime import datetime, timezone


def aware_now(now: datetime | None) -> datetime:
    """Return ``now``, or the current UTC time when it is ``None``.

    A naive ``now`` is a programming error (it would be compared with aware
    certificate and token times), so it raises ``TypeError``.
    """
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise TypeError("now must be a timezone-aware datetime")
    return now
