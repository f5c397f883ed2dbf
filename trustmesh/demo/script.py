"""Running the scripted calls against a loopback mesh, and printing the result table.

For each call the table shows who called whom with what, the decision
(``allow``, ``deny``, ``refused``), the reason, and whether that is what the
script expected. The reason for an allowed or denied call is read from the
callee sidecar's access log (the sidecar is what decided, so the demo asks it
rather than re-evaluating the policy itself): the deciding rule, or for a
default deny each allow rule that could have admitted the call and its
first condition that failed, with the values compared. An allowed call also
shows the caller identity the app reports it saw (from
``x-forwarded-client-cert``, or from the JWT-SVID it verified itself).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustmesh.demo.calls import Outcome, classify
from trustmesh.demo.mesh import Mesh
from trustmesh.demo.topology import SCRIPT, Call, spiffe_id

__all__ = ["Row", "run_script", "Performer", "deny_reason", "format_table"]


@dataclass(frozen=True)
class Row:
    number: int
    call: Call
    outcome: Outcome

    @property
    def ok(self) -> bool:
        return self.outcome.decision == self.call.expect


class Performer:
    """Makes each call as the caller's app would; ``mesh`` knows where to send it and from where.
    JWT-SVIDs come from the caller's Workload API through the sdk client."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self._clients: dict[str, Any] = {}

    async def __call__(self, call: Call) -> Outcome:
        mesh = self.mesh
        if call.via == "plain":
            before = await rejected_connections(mesh, call.callee)
        headers: dict[str, str] = {}
        if call.via == "jwt":
            assert call.audience is not None
            headers["Authorization"] = "Bearer " + await self._jwt(call.caller, call.audience)
        host, port = mesh.target(call)
        if call.via == "grpc":
            response = await mesh.grpc(call.caller, host, port, dict(call.body or {}))
        else:
            response = await mesh.send(call.caller, host, port, call.method, call.path, body=call.body_bytes, headers=headers)
        outcome = classify(response, through_own_sidecar=call.via in ("mtls", "grpc"))
        if call.via == "plain" and outcome.decision == "refused":
            outcome = await _explain_rejection(outcome, before, mesh, call.callee)
        return outcome

    async def _jwt(self, caller: str, audience: str) -> str:
        from sdk.workloadapi import WorkloadApiClient

        client = self._clients.get(caller)
        if client is None:
            client = self._clients[caller] = WorkloadApiClient(f"unix://{self.mesh.sockets[caller]}")
        svid = await client.fetch_jwt_svid(spiffe_id(audience))
        return svid.token

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


async def rejected_connections(mesh: Mesh, workload: str) -> dict[str, float]:
    """A sidecar's ``trustmesh_sidecar_connections_rejected`` counts on its inbound listener, by reason."""
    response = await mesh.admin_get(workload, "/metrics")
    counts: dict[str, float] = {}
    for match in _REJECTED.finditer(response.body.decode(errors="replace")):
        counts[match.group(1)] = float(match.group(2))
    return counts


_REJECTED = re.compile(r'^trustmesh_sidecar_connections_rejected_total\{listener="inbound",reason="([^"]+)"\} (\S+)$', re.M)


async def _explain_rejection(outcome: Outcome, before: dict[str, float], mesh: Mesh, workload: str) -> Outcome:
    """Ask the callee's sidecar which rejection counter moved (polled for up to 2 s: the
    sidecar may count just after the client saw the connection close)."""
    for _ in range(20):
        after = await rejected_connections(mesh, workload)
        moved = [reason for reason, count in after.items() if count > before.get(reason, 0.0)]
        if moved:
            break
        await asyncio.sleep(0.1)
    else:
        return outcome
    return Outcome(outcome.decision, f"callee's sidecar closed it: {', '.join(moved)} rejected", outcome.status)


async def run_script(
    perform: Callable[[Call], Awaitable[Outcome]],
    access_logs: dict[str, Path],
    script: Sequence[Call] = SCRIPT,
    log_wait: float = 8.0,
) -> list[Row]:
    """Make every call in order; fill in the rule of allowed calls from the access logs."""
    rows = []
    for number, call in enumerate(script, 1):
        rows.append(Row(number, call, await perform(call)))
    return await _with_rules(rows, access_logs, log_wait)


async def _with_rules(rows: list[Row], access_logs: dict[str, Path], log_wait: float) -> list[Row]:
    """Fill in reasons from the sidecars' access logs: the deciding rule of an allowed call
    (callee, inbound), and why the caller's sidecar answered an error itself (caller, outbound).
    Sidecars flush their access log about once a second, so wait for the lines needed."""
    wanted = [r for r in rows if _log_key(r) is not None]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + log_wait
    while True:
        found = _match_entries(wanted, access_logs)
        if len(found) == len(wanted) or loop.time() >= deadline:
            break
        await asyncio.sleep(0.2)
    out = []
    for row in rows:
        entry = found.get(row.number)
        o = row.outcome
        if row.outcome.decision == "allow":
            reason = f"rule {entry['rule']}" if entry and entry.get("rule") else "(no access-log line found)"
            seen = f"; app saw {o.caller_seen}" if o.caller_seen else "; app saw no caller ID"
            status = "grpc-status 0" if row.call.via == "grpc" else str(o.status)
            row = Row(row.number, row.call, Outcome("allow", f"{reason}{seen} ({status})", o.status, o.caller_seen))
        elif row.call.via == "grpc" and row.outcome.decision == "deny":
            # the caller only hears a generic PERMISSION_DENIED; the callee's sidecar logged why
            if entry is None:
                reason = "(no access-log line found)"
            elif entry.get("rule") or entry.get("explain"):
                reason = deny_reason(entry)
            else:
                reason = "default deny: no rule allows it"
            row = Row(row.number, row.call, Outcome("deny", f"{reason} (grpc-status 7 PERMISSION_DENIED)", o.status))
        elif row.outcome.decision == "deny" and entry is not None:
            row = Row(row.number, row.call, Outcome("deny", deny_reason(entry), o.status))
        elif entry is not None and entry.get("error"):
            error = re.sub(r"^[\w.:\[\]]+:\d+: ", "", str(entry["error"]))
            row = Row(row.number, row.call, Outcome(o.decision, f"caller's sidecar: {error} ({o.status})", o.status))
        out.append(row)
    return out


def _log_key(row: Row) -> tuple[str, str] | None:
    """Whose access log explains this row, and which direction: None when none does."""
    if row.outcome.decision == "allow" or row.outcome.decision == "deny" and (row.outcome.status == 403 or row.call.via == "grpc"):
        return row.call.callee, "inbound"
    if row.outcome.decision == "refused" and row.call.via == "mtls" and row.outcome.status:
        return row.call.caller, "outbound"
    return None


def _match_entries(rows: list[Row], access_logs: dict[str, Path]) -> dict[int, dict]:
    """Pair each row with the first unused log entry of its workload, direction, method and path."""
    from policy_dsl import normalize_path

    used: set[tuple[str, str, int]] = set()
    found: dict[int, dict] = {}
    cache: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        key = _log_key(row)
        assert key is not None
        entries = cache.get(key)
        if entries is None:
            entries = cache[key] = _entries(access_logs.get(key[0]), key[1])
        path = normalize_path(row.call.path).path if key[1] == "inbound" else row.call.path
        for index, entry in enumerate(entries):
            if (*key, index) in used:
                continue
            if entry.get("method") == row.call.method and entry.get("path") == path and entry.get("status") == row.outcome.status \
                    and (row.call.via != "grpc" or entry.get("grpc_status") == ("0" if row.outcome.decision == "allow" else "7")):
                used.add((*key, index))
                found[row.number] = entry
                break
    return found


def _entries(path: Path | None, direction: str) -> list[dict]:
    if path is None:
        return []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("direction") == direction:
            entries.append(entry)
    return entries


def deny_reason(entry: dict) -> str:
    """Why the callee's sidecar denied, from its access-log record (``explain``, docs/access-log.md)."""
    if entry.get("rule"):
        return f"rule {entry['rule']}"
    explain = entry.get("explain") or {}
    candidates = explain.get("candidates") or []
    if not candidates:
        return "default deny: " + ("no policy protects it" if not explain.get("policies") else "its policy has no allow rule")
    parts = []
    for candidate in candidates:
        shown = [f"{name} {json.dumps(value)}" for name, value in (candidate.get("values") or {}).items()]
        shown += [f"{name} missing" for name in candidate.get("missing") or ()]
        rule = str(candidate.get("rule", "")).rpartition("/")[2]
        parts.append(f"{rule}: {candidate.get('condition')} is {candidate.get('result')}" + (f" ({', '.join(shown)})" if shown else ""))
    return "default deny; " + "; ".join(parts)


def format_table(rows: Sequence[Row]) -> str:
    """The result table: one line per call (the reason last, unclipped), then a summary line."""
    header = ("#", "what it shows", "caller -> callee", "request", "decision", "reason")
    body = []
    for row in rows:
        c, o = row.call, row.outcome
        decision = o.decision.upper() if row.ok else f"{o.decision.upper()} (expected {c.expect.upper()})"
        body.append((str(row.number), c.shows, f"{c.caller_text} -> {c.callee}", _clip(c.request_text, 40), decision, _short(o.reason)))
    widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip() for r in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = [r.number for r in rows if not r.ok]
    if failed:
        lines.append(f"\n{len(failed)} of {len(rows)} calls did not go as expected: {', '.join(map(str, failed))}")
    else:
        allowed = sum(r.outcome.decision == "allow" for r in rows)
        lines.append(f"\nall {len(rows)} calls went as expected: {allowed} allowed, {len(rows) - allowed} denied or refused")
    return "\n".join(lines)


def _short(text: str) -> str:
    return text.replace(spiffe_id(""), "…/app/")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
