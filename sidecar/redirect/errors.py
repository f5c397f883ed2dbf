"""Errors of the traffic-capture program; each also derives from the matching built-in."""

from __future__ import annotations

from sdk.errors import TrustmeshError, UsageError

__all__ = ["RedirectError", "RedirectConfigError"]


class RedirectError(TrustmeshError, OSError):
    """The kernel refused or lacks something (rules, eBPF), or a socket was not redirected."""


class RedirectConfigError(UsageError):
    """An option value is not acceptable; ``option`` names it (e.g. ``--inbound-port``).

    Raised while building a :class:`~sidecar.redirect.config.RedirectConfig`, so
    always before anything in the kernel has been touched.
    """

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
