"""Errors of the Workload API server."""

from __future__ import annotations

from sidecar.errors import SidecarError

__all__ = ["WorkloadApiServerError"]


class WorkloadApiServerError(SidecarError, OSError):
    """The server could not bind, prepare or secure its Unix socket."""
