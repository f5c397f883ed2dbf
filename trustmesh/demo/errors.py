"""Errors of `trustmesh demo`."""

from __future__ import annotations

from sdk.errors import TrustmeshError, UsageError

__all__ = ["DemoError", "DemoUsageError"]


class DemoError(TrustmeshError, RuntimeError):
    """The demo could not be set up or run (a process failed to start, a port was taken...)."""


class DemoUsageError(UsageError):
    """A demo option cannot be honoured here (for example netns isolation without root)."""
