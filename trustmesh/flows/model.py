"""Access-log records → the flow page's data (pure: lines in, a JSON-able dict out).

Lines are read by :func:`policy_dsl.record.read_record`, the reader ``policy replay`` and
``policy suggest`` use. Each inbound record a policy decided counts on one edge: from the
calling workload to the called one, each named by its ``app`` attribute (else its ``sa``, else
its SPIFFE ID) within its namespace. Memory stays bounded however long the logs run: an edge
counts its requests by verdict and deciding rule per minute for the last hour before the newest
record, per hour for the last day, and in one sum before that; and it keeps only its last
``keep`` requests in full.

    >>> flows = Flows()
    >>> flows.add_line('{"v":1,"time":"2026-12-05T10:00:00Z","direction":"inbound","decision":"deny",'
    ...     '"method":"GET","path":"/x","status":403,"rule":null,"attrs":{"source.id":'
    ...     '"spiffe://d.example/ns/shop/app/web","destination.id":"spiffe://d.example/ns/shop/app/db"}}', "a.log", 1)
    >>> edge = flows.data()["edges"][0]
    >>> (edge["key"], edge["counts"], edge["recent"][0]["verdict"])
    ('shop/web -> shop/db', [['2026-12-05T10:00', 'deny', '(default)', 1]], 'deny')
"""

from __future__ import annotations

from collections import Counter, deque
from datetime import datetime, timedelta, timezone
from typing import Any

from policy_dsl.identity import identity_attributes
from policy_dsl.record import RecordError, read_record
from trustmesh.flows import KEEP

__all__ = ["MAX_EDGES", "MAX_SHOWN", "Flows"]

MAX_EDGES = 10_000  # edges beyond this are counted as dropped, not kept
MAX_SHOWN = 50_000  # requests in full in the page, over all edges (each edge shows its share)
_BY_MINUTE = timedelta(minutes=60)  # counted minute by minute, before the newest record
_BY_HOUR = timedelta(hours=24)  # counted hour by hour; before that, one sum
MAX_ERRORS = 50  # bad lines named on the page (every one goes to stderr)
_VERDICTS = ("allow", "deny", "would-deny")
_OUTSIDE = ("(outside the mesh)", "unauthenticated", "")


def _text(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None or isinstance(value, str):
        return value
    raise RecordError(f"'{key}' must be a string, not {type(value).__name__}")


def _get(tree: Any, *keys: str) -> Any:
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def _workload(attrs: dict[str, Any] | None, side: str, jwt_sub: Any) -> tuple[str, str, str]:
    """(namespace, node name, full ID) of the caller or the callee of a record."""
    spiffe_id = _get(attrs, side, "id")
    if isinstance(spiffe_id, str):
        path_attrs = _get(attrs, side, "attrs")
    elif isinstance(jwt_sub, str) and jwt_sub:  # admitted by a JWT-SVID: its subject, a SPIFFE ID
        try:
            spiffe_id, path_attrs = jwt_sub, identity_attributes(jwt_sub)["attrs"]
        except ValueError:
            return "(jwt)", jwt_sub, jwt_sub
    else:
        return _OUTSIDE
    path_attrs = path_attrs if isinstance(path_attrs, dict) else {}
    namespace = path_attrs.get("ns") or spiffe_id.removeprefix("spiffe://").partition("/")[0]
    return str(namespace), str(path_attrs.get("app") or path_attrs.get("sa") or spiffe_id), spiffe_id


def _explanation(explain: Any) -> str:
    """One line saying why: the deciding deny rule, or each candidate allow rule's first
    condition that was not true with the values compared and what was missing."""
    if not explain:
        return ""
    if not isinstance(explain, dict):
        raise RecordError("'explain' must be an object")
    if explain.get("rule"):
        values = explain.get("values") if isinstance(explain.get("values"), dict) else {}
        shown = ", ".join(f"{k} = {v!r}" for k, v in values.items())
        return f"deny rule {explain['rule']}" + (f" ({shown})" if shown else "")
    parts = []
    candidates = explain.get("candidates") or []
    if not isinstance(candidates, list):
        raise RecordError("'explain.candidates' must be a list")
    for candidate in candidates:
        if not isinstance(candidate, dict):
            raise RecordError("'explain.candidates' must hold objects")
        values = candidate.get("values") if isinstance(candidate.get("values"), dict) else {}
        missing = candidate.get("missing") if isinstance(candidate.get("missing"), list) else []
        detail = "; ".join(x for x in (", ".join(f"{k} = {v!r}" for k, v in values.items()),
                                      ", ".join(f"{m} missing" for m in missing)) if x)
        parts.append(f"{candidate.get('rule')}: {candidate.get('condition')} is {candidate.get('result')}"
                     + (f" ({detail})" if detail else ""))
    if not parts:
        parts.append("no allow rule to try: no policy protects this destination" if not explain.get("policies")
                     else str(explain.get("reason", "")))
    return "; ".join(parts)


def _audit(audit: Any) -> list[dict[str, Any]]:
    if audit is None:
        return []
    if not isinstance(audit, list) or not all(isinstance(a, dict) for a in audit):
        raise RecordError("'audit' must be a list of objects")
    return audit


class _Floors:
    """The oldest minute ("YYYY-MM-DDTHH:MM") and hour ("YYYY-MM-DDTHH") still counted apart."""

    __slots__ = ("minute", "hour")

    def __init__(self, newest: datetime | None = None) -> None:
        self.minute = (newest - _BY_MINUTE).strftime("%Y-%m-%dT%H:%M") if newest else ""
        self.hour = (newest - _BY_HOUR).strftime("%Y-%m-%dT%H") if newest else ""

    def bucket(self, minute: str | None) -> str | None:
        """Where a request of ``minute`` counts: its minute, its hour, or None (the one sum)."""
        if minute is None:
            return None
        if minute >= self.minute:
            return minute
        return minute[:13] if minute[:13] >= self.hour else None


class _Edge:
    __slots__ = ("src", "dst", "buckets", "older", "recent", "total", "floors")

    def __init__(self, src: tuple[str, str, str], dst: tuple[str, str, str], keep: int, floors: _Floors) -> None:
        self.src, self.dst = src, dst
        self.buckets: dict[str, Counter] = {}  # minute or hour -> Counter[(verdict, rule)]
        self.older: Counter = Counter()  # before the last day, and records with no time
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self.total = 0
        self.floors = floors

    def fold(self, floors: _Floors) -> None:
        """Move the counts of minutes and hours that fell behind ``floors`` into coarser ones."""
        if floors is self.floors:
            return
        self.floors = floors
        for key in [k for k in self.buckets if k < (floors.minute if len(k) == 16 else floors.hour)]:
            counter = self.buckets.pop(key)
            coarser = floors.bucket(key) if len(key) == 16 else None
            if coarser is None:
                self.older.update(counter)
            else:
                self.buckets.setdefault(coarser, Counter()).update(counter)

    def count(self, minute: str | None, verdict: str, rule: str, floors: _Floors) -> None:
        self.fold(floors)
        self.total += 1
        bucket = floors.bucket(minute)
        counter = self.older if bucket is None else self.buckets.get(bucket)
        if counter is None:
            counter = self.buckets[bucket] = Counter()
        counter[verdict, rule] += 1

    def to_json(self, shown: int) -> dict[str, Any]:
        counts = [[bucket, verdict, rule, n] for bucket in sorted(self.buckets)
                  for (verdict, rule), n in self.buckets[bucket].items()]
        counts += [[None, verdict, rule, n] for (verdict, rule), n in self.older.items()]
        (src_ns, src, src_id), (dst_ns, dst, dst_id) = self.src, self.dst
        recent = list(self.recent)
        return {"key": f"{src_ns}/{src} -> {dst_ns}/{dst}",
                "src": {"ns": src_ns, "name": src, "id": src_id}, "dst": {"ns": dst_ns, "name": dst, "id": dst_id},
                "counts": counts, "recent": recent[-shown:], "kept": len(recent), "total": self.total}


class Flows:
    """Collects requests from access-log lines; :meth:`data` is what the page shows."""

    def __init__(self, *, keep: int = KEEP, max_edges: int = MAX_EDGES) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.keep, self.max_edges = keep, max_edges
        self._edges: dict[tuple, _Edge] = {}
        self.errors: list[str] = []  # the first MAX_ERRORS bad lines, "file:line: why"
        self.bad_lines = 0
        self.dropped = 0  # requests on edges over max_edges
        self.newest: str | None = None
        self._floors = _Floors()

    def add_line(self, line: str | bytes, file: str, number: int) -> str | None:
        """Count one log line; for a line that is not a usable record, the error
        (``file:line: why``) is returned and noted, and the line skipped."""
        if not line.strip():
            return None
        try:
            self.add(read_record(line))
        except RecordError as err:
            error = f"{file}:{number}: {err}"
            self.bad_lines += 1
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(error)
            return error
        return None

    def add(self, record: dict[str, Any]) -> None:
        """Count one record (as :func:`read_record` returns it); RecordError for wrong types."""
        decision = record.get("decision")
        if record.get("direction") != "inbound" or decision not in ("allow", "deny"):
            return  # outbound records, errors: no policy decision to show
        # every check first: a bad record counts nowhere
        time, policy, rule = _text(record, "time"), _text(record, "policy"), _text(record, "rule")
        method, path = _text(record, "method") or _text(record, "protocol") or "", _text(record, "path") or ""
        audit, why = _audit(record.get("audit")), _explanation(record.get("explain"))
        status = record.get("status")
        attrs = record.get("_attrs")
        src = _workload(attrs, "source", _get(attrs, "request", "jwt", "sub"))
        dst = _workload(attrs, "destination", None)
        would_deny = decision == "allow" and any(a.get("would") == "deny" for a in audit)
        verdict = "would-deny" if would_deny else decision
        rule_name = f"{policy}/{rule}" if rule and policy else (rule or "(default)")
        edge = self._edges.get((src, dst))
        if edge is None:
            if len(self._edges) >= self.max_edges:
                self.dropped += 1
                return
            edge = self._edges[src, dst] = _Edge(src, dst, self.keep, self._floors)
        moment = _get(attrs, "context", "time")  # the record's time, parsed and checked by read_record
        minute = None
        if isinstance(moment, datetime):
            instant = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            minute = instant[:16]
            if self.newest is None or instant > self.newest:
                if self.newest is None or instant[:16] != self.newest[:16]:
                    self._floors = _Floors(moment.astimezone(timezone.utc))
                self.newest = instant
        edge.count(minute, verdict, rule_name, self._floors)
        edge.recent.append({
            "time": time, "minute": minute, "method": method, "path": path, "status": status if isinstance(status, int) else None,
            "verdict": verdict, "rule": rule_name, "why": why,
            "audit": [f"{a.get('policy')}/{a.get('rule')}: would {a.get('would')}" for a in audit],
        })

    def data(self) -> dict[str, Any]:
        """Counts of every edge, and each edge's most recent requests: all it keeps, or its share
        of :data:`MAX_SHOWN` when there are many edges."""
        shown = max(1, min(self.keep, MAX_SHOWN // max(1, len(self._edges))))
        for edge in self._edges.values():
            edge.fold(self._floors)
        return {"v": 1, "keep": self.keep, "newest": self.newest, "verdicts": list(_VERDICTS),
                "edges": [edge.to_json(shown) for edge in self._edges.values()],
                "errors": self.errors, "badLines": self.bad_lines, "dropped": self.dropped}
