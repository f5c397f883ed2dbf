"""One entry point per action, whatever the mode: plan, apply, remove, show, verify."""

from __future__ import annotations

from types import ModuleType

from sidecar.redirect.config import RedirectConfig

__all__ = ["apply", "plan", "remove", "show", "verify"]


def _backend(config: RedirectConfig) -> ModuleType:
    if config.mode == "iptables":
        from sidecar.redirect import iptables as module
    elif config.mode == "nftables":
        from sidecar.redirect import nftables as module
    else:
        from sidecar.redirect import ebpf as module
    return module


def plan(config: RedirectConfig) -> str:
    """What ``apply`` would put in force; touches nothing."""
    return _backend(config).plan(config)


def apply(config: RedirectConfig) -> None:
    """Put the capture in force; applying twice gives the same result; fails whole or not at all."""
    _backend(config).apply(config)


def remove(config: RedirectConfig) -> None:
    """Take the capture away, leaving no trace."""
    _backend(config).remove(config)


def show(config: RedirectConfig) -> str:
    """The capture in force, as the kernel reports it."""
    return _backend(config).show(config)


def verify(config: RedirectConfig) -> list[str]:
    """How the capture in force differs from ``config`` (empty when identical)."""
    return _backend(config).verify(config)
