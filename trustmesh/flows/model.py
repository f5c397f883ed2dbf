"""Access-log records → the flow page's data (pure: lines in, a JSON-able dict out).

Each inbound record a policy decided becomes one compact request: who called (a workload
named by its ``app`` attribute, else its SPIFFE ID, with its namespace), whom, what, the
decision, the deciding rule, the explanation of a denial and any audit or would-deny match.
The page groups and filters them in the browser.

    >>> flows = Flows()
    >>> flows.add_line('{"v":1,"time":"2026-12-05T10:00:00Z","direction":"inbound","decision":"deny",'
    ...     '"method":"GET","path":"/x","status":403,"rule":null,"attrs":{"source.id":'
    ...     '"spiffe://d.example/ns/shop/app/web","destination.id":"spiffe://d.example/ns/shop/app/db"}}', "a.log", 1)
    >>> request = flows.data()["requests"][0]
    >>> (request["src"], request["srcNs"], request["dst"], request["verdict"])
    ('web', 'shop', 'db', 'deny')
"""

from __future__ import annotations

from collections import deque
from typing import Any

from policy_dsl.identity import path_attributes
from policy_dsl.record import RecordError, read_record

__all__ = ["Flows", "MAX_REQUESTS"]

MAX_REQUESTS = 20_000  # the most recent requests the page holds
_MAX_ERRORS = 50


def _workload(spiffe_id: Any, jwt_sub: Any) -> tuple[str, str, str]:
    """(node name, namespace, full ID) of a caller or callee."""
    if not isinstance(spiffe_id, str):
        if isinstance(jwt_sub, str):
            spiffe_id = jwt_sub
        else:
            return "unauthenticated", "(outside the mesh)", ""
    rest = spiffe_id.removeprefix("spiffe://")
    domain, _, path = rest.partition("/")
    attrs = path_attributes("/" + path if path else "")
    name = attrs.get("app") or attrs.get("sa") or spiffe_id
    return name, attrs.get("ns") or domain, spiffe_id


def _explanation(record: dict[str, Any]) -> str:
    explain = record.get("explain") or {}
    if explain.get("rule"):
        return f"deny rule {explain['rule']}"
    parts = []
    for candidate in explain.get("candidates") or ():
        values = ", ".join(f"{k} = {v!r}" for k, v in (candidate.get("values") or {}).items())
        missing = ", ".join(f"{k} missing" for k in candidate.get("missing") or ())
        detail = "; ".join(x for x in (values, missing) if x)
        parts.append(f"{candidate.get('rule')}: {candidate.get('condition')} is {candidate.get('result')}"
                     + (f" ({detail})" if detail else ""))
    if explain and not parts:
        parts.append("no policy protects this destination" if not explain.get("policies") else explain.get("reason", ""))
    return "; ".join(parts)


class Flows:
    """Collects requests from access-log lines; :meth:`data` is what the page shows."""

    def __init__(self) -> None:
        self._requests: deque[dict[str, Any]] = deque(maxlen=MAX_REQUESTS)
        self.errors: list[str] = []
        self.bad_lines = 0

    def add_line(self, line: str | bytes, file: str, number: int) -> None:
        if not line.strip():
            return
        try:
            record = read_record(line)
        except RecordError as err:
            self.bad_lines += 1
            if len(self.errors) < _MAX_ERRORS:
                self.errors.append(f"{file}:{number}: {err}")
            return
        if record.get("direction") != "inbound" or record.get("decision") not in ("allow", "deny"):
            return
        attrs = record.get("attrs") or {}
        src, src_ns, src_id = _workload(attrs.get("source.id"), attrs.get("request.jwt.sub"))
        dst, dst_ns, dst_id = _workload(attrs.get("destination.id"), None)
        audit = record.get("audit") or []
        would_deny = any(isinstance(a, dict) and a.get("would") == "deny" for a in audit)
        rule = record.get("rule")
        self._requests.append({
            "time": record.get("time"), "src": src, "srcNs": src_ns, "srcId": src_id,
            "dst": dst, "dstNs": dst_ns, "dstId": dst_id,
            "method": record.get("method") or record.get("protocol") or "", "path": record.get("path") or "",
            "status": record.get("status"),
            "verdict": "would-deny" if record["decision"] == "allow" and would_deny else record["decision"],
            "rule": f"{record.get('policy')}/{rule}" if rule and record.get("policy") else (rule or "(default)"),
            "why": _explanation(record),
            "audit": [f"{a.get('policy')}/{a.get('rule')}: {a.get('would')}" for a in audit if isinstance(a, dict)],
        })

    def data(self) -> dict[str, Any]:
        return {"requests": list(self._requests), "errors": self.errors, "badLines": self.bad_lines}
