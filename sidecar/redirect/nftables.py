"""Applying, removing, showing and verifying ``table inet trustmesh`` in this network namespace.

``nft -f`` runs its whole input as one transaction, so ``apply`` (create the
table if absent, delete it, define it again) either fully succeeds or changes
nothing; there is nothing half-way to roll back.
"""

from __future__ import annotations

import difflib

from sidecar.redirect import nft_rules
from sidecar.redirect._run import run
from sidecar.redirect.config import RedirectConfig
from sidecar.redirect.errors import RedirectError

__all__ = ["apply", "in_force", "plan", "remove", "show", "verify"]


def plan(config: RedirectConfig) -> str:
    """The table ``apply`` would put in force (``--dry-run``)."""
    return nft_rules.render(config)


def apply(config: RedirectConfig) -> None:
    """Replace ``table inet trustmesh`` by the one ``config`` asks for, atomically."""
    run(["nft", "-f", "-"], nft_rules.apply_input(config))


def in_force() -> str | None:
    """The table as ``nft list`` prints it, or ``None`` when there is none."""
    done = run(["nft", "list", "table", *nft_rules.TABLE.split()], check=False)
    if done.returncode == 0:
        return done.stdout
    if "No such file or directory" in done.stderr:
        return None
    message = done.stderr.strip().replace("\n", "; ")
    raise RedirectError(f"nft list table {nft_rules.TABLE} failed (exit {done.returncode}): {message}")


def remove(config: RedirectConfig | None = None) -> None:
    """Delete the table; nothing else in the ruleset is touched."""
    if in_force() is not None:
        run(["nft", "delete", "table", *nft_rules.TABLE.split()])


def show(config: RedirectConfig | None = None) -> str:
    """The table in force, or a comment saying there is none."""
    return in_force() or f"# no table {nft_rules.TABLE}\n"


def verify(config: RedirectConfig) -> list[str]:
    """Differences between the table in force and the one ``config`` asks for (empty: none)."""
    want = nft_rules.render(config).splitlines()
    have = (in_force() or "").splitlines()
    return list(difflib.unified_diff(want, have, "wanted", "in force", lineterm=""))
