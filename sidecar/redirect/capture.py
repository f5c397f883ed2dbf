"""One entry point per action, whatever the mode: plan, apply, remove, show, verify.

Errors from the operating system (a permission, a read-only cache
directory) are turned into :class:`RedirectError` here, so the command
always ends with one precise line rather than a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

from sidecar.redirect.config import RedirectConfig
from sidecar.redirect.errors import RedirectError

__all__ = ["apply", "plan", "remove", "show", "verify"]

T = TypeVar("T")


def _backend(config: RedirectConfig) -> ModuleType:
    if config.mode == "iptables":
        from sidecar.redirect import iptables as module
    elif config.mode == "nftables":
        from sidecar.redirect import nftables as module
    else:
        from sidecar.redirect import ebpf as module
    return module


def _os_errors_as_redirect_errors(action: Callable[[RedirectConfig], T]) -> Callable[[RedirectConfig], T]:
    @functools.wraps(action)
    def wrapper(config: RedirectConfig) -> T:
        try:
            return action(config)
        except RedirectError:
            raise
        except OSError as err:
            raise RedirectError(f"{action.__name__} ({config.mode}): {err}") from err

    return wrapper


def plan(config: RedirectConfig) -> str:
    """What ``apply`` would put in force; touches nothing."""
    return _backend(config).plan(config)


@_os_errors_as_redirect_errors
def apply(config: RedirectConfig) -> None:
    """Put the capture in force; applying twice gives the same result; fails whole or not at all."""
    _backend(config).apply(config)


@_os_errors_as_redirect_errors
def remove(config: RedirectConfig) -> None:
    """Take the capture away, leaving no trace."""
    _backend(config).remove(config)


@_os_errors_as_redirect_errors
def show(config: RedirectConfig) -> str:
    """The capture in force, as the kernel reports it."""
    return _backend(config).show(config)


@_os_errors_as_redirect_errors
def verify(config: RedirectConfig) -> list[str]:
    """How the capture in force differs from ``config`` (empty when identical)."""
    return _backend(config).verify(config)
