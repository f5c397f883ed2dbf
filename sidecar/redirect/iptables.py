"""Applying, removing, showing and verifying the iptables rules in this network namespace.

The backend in use is detected as Istio and Linkerd do: count the rules that
``iptables-legacy-save`` and ``iptables-nft-save`` (and the ip6tables ones)
print, and use legacy only when it holds more; otherwise nft. Changes go
through ``iptables-restore --noflush``, one atomic transaction per table;
IPv4 then IPv6. If IPv6 fails after IPv4 succeeded, IPv4 is put back as it
was, so a failure never leaves half a capture behind.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from sidecar.redirect import iptables_rules as rules
from sidecar.redirect._run import available, run
from sidecar.redirect.config import RedirectConfig
from sidecar.redirect.errors import RedirectError

__all__ = ["Backend", "apply", "detect_backend", "plan", "remove", "show", "verify"]

_VERSIONS = (4, 6)
_TOOL = {4: "iptables", 6: "ip6tables"}


@dataclass(frozen=True, slots=True)
class Backend:
    """``legacy`` or ``nft``: which ``iptables-*-save`` / ``-restore`` binaries to run."""

    name: str

    def tool(self, version: int, action: str) -> str:
        return f"{_TOOL[version]}-{self.name}-{action}"

    def save(self, version: int) -> str:
        return run([self.tool(version, "save")]).stdout

    def restore(self, version: int, text: str) -> None:
        if text:
            # legacy serialises writers with the xtables lock: wait for it rather than fail
            wait = ["--wait", "10"] if self.name == "legacy" else []
            run([self.tool(version, "restore"), "--noflush", *wait], text)


def _rule_count(name: str) -> int:
    count = 0
    for version in _VERSIONS:
        tool = f"{_TOOL[version]}-{name}-save"
        if not available(tool):
            continue
        done = run([tool], check=False)
        if done.returncode == 0:
            count += sum(1 for line in done.stdout.splitlines() if line.startswith("-A "))
    return count


def detect_backend() -> Backend:
    """The backend the host already uses: legacy only if it holds more rules than nft."""
    legacy, nft = _rule_count("legacy"), _rule_count("nft")
    name = "legacy" if legacy > nft else "nft"
    if not available(f"iptables-{name}-restore"):
        raise RedirectError(f"iptables-{name}-restore is not installed (backend detected: {name})")
    return Backend(name)


def plan(config: RedirectConfig) -> str:
    """The rules ``apply`` would put in force, in iptables-save form (``--dry-run``)."""
    parts = []
    for version in _VERSIONS:
        parts.append(f"# {_TOOL[version]}")
        parts.append(_format(rules.render(config, version)))
    return "\n".join(parts)


def apply(config: RedirectConfig, backend: Backend | None = None) -> None:
    """Put the rules for ``config`` in force, replacing any earlier trustmesh rules."""
    backend = backend or detect_backend()
    before = {v: rules.owned_rules(backend.save(v)) for v in _VERSIONS}
    done: list[int] = []
    try:
        for version in _VERSIONS:
            backend.restore(version, rules.apply_input(rules.render(config, version), before[version]))
            done.append(version)
    except RedirectError as err:
        for version in done:  # put back exactly what was there
            now = rules.owned_rules(backend.save(version))
            backend.restore(version, rules.apply_input(before[version], now))
            if backend.name == "nft":
                _drop_empty_tables(backend, version)
        raise RedirectError(f"apply failed and was rolled back: {err}") from err


def remove(config: RedirectConfig, backend: Backend | None = None) -> None:
    """Delete every trustmesh chain and jump, leaving the other rules as they were."""
    backend = backend or detect_backend()
    for version in _VERSIONS:
        backend.restore(version, rules.remove_input(rules.owned_rules(backend.save(version))))
        if backend.name == "nft":
            _drop_empty_tables(backend, version)


def _drop_empty_tables(backend: Backend, version: int) -> None:
    """iptables-nft creates built-in chains (and tables) on first use; delete the empty ones.

    An empty built-in chain with an ACCEPT policy does nothing, and iptables-nft
    creates it again when needed, so ``remove`` leaves ``nft list ruleset``
    as it was before ``apply``.
    """
    family = "ip" if version == 4 else "ip6"
    for table, lines in _sections(backend.save(version)).items():
        used = {line.split()[1] for line in lines if line.startswith("-A ")}
        for line in lines:
            words = line.split()
            chain = words[0][1:]
            if line.startswith(":") and chain in rules.BUILTIN_CHAINS and words[1] == "ACCEPT" and chain not in used:
                run(["nft", "delete", "chain", family, table, chain], check=False)
        listing = run(["nft", "list", "table", family, table], check=False)
        if listing.returncode == 0 and "chain " not in listing.stdout:
            run(["nft", "delete", "table", family, table], check=False)


def _sections(save_text: str) -> dict[str, list[str]]:
    tables: dict[str, list[str]] = {}
    table = None
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            tables[table] = []
        elif table and line and not line.startswith(("#", "COMMIT")):
            tables[table].append(line)
    return tables


def show(config: RedirectConfig, backend: Backend | None = None) -> str:
    """The trustmesh rules in force, in iptables-save form."""
    backend = backend or detect_backend()
    parts = [f"# backend: iptables-{backend.name}"]
    for version in _VERSIONS:
        parts.append(f"# {_TOOL[version]}")
        parts.append(_format(rules.owned_rules(backend.save(version))))
    return "\n".join(parts)


def verify(config: RedirectConfig, backend: Backend | None = None) -> list[str]:
    """Differences between the rules in force and those ``config`` asks for (empty: none).

    Also reported: any rule that runs before trustmesh's jump in a built-in
    chain, since it could let traffic skip the capture.
    """
    backend = backend or detect_backend()
    diff: list[str] = []
    for version in _VERSIONS:
        saved = backend.save(version)
        want = _format(rules.render(config, version)).splitlines()
        have = _format(rules.owned_rules(saved)).splitlines()
        diff += difflib.unified_diff(want, have, f"{_TOOL[version]} wanted", f"{_TOOL[version]} in force", lineterm="")
        diff += [f"- {_TOOL[version]} {problem}" for problem in rules.jumps_not_first(saved)]
    return diff


def _format(tables: dict[str, list[str]]) -> str:
    out = []
    for table in sorted(tables):
        out += [f"*{table}", *tables[table], "COMMIT"]
    return "\n".join(out)
