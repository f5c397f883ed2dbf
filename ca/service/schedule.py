"""The service's rotation policy, as a pure step over a CA and a time.

The CA library knows what is due (:meth:`CertificateAuthority.due`). The
service adds one rule: a newly prepared authority is never activated in the
same check, so the bundle that announces it is published (watchers, the
ConfigMap, other replicas) before anything is signed with it.
"""

from __future__ import annotations

from datetime import datetime

from ca.manager import CertificateAuthority

__all__ = ["rotate_once"]


def rotate_once(ca: CertificateAuthority, now: datetime) -> tuple[str, ...]:
    """Apply the rotation steps due at ``now`` to ``ca``; returns what was done."""
    due = ca.due(now)
    if "prepare" in due and "prune" not in due:
        new = ca.prepare(now)
        return (f"prepare {new.id}",)
    if due:
        return ca.tick(now)
    return ()
