"""Building the policy attributes of a request, and the authorizer seam (no I/O).

The attribute document is the nested dict ``policy_dsl`` evaluates::

    {"source": {"id", "trust_domain", "path", "attrs", "authenticated", "ip"},
     "destination": {"id", "attrs", "port"},
     "request": {"method", "path", "host", "port", "query", "headers", "protocol", "json", "jwt", "grpc"},
     "context": {"protocol", "time"}}

Keys that are not known are left out (a missing attribute, which policy
treats fail-closed), never filled with a guess.

An *authorizer* is any callable ``attrs -> Verdict``; :class:`PolicyAuthorizer`
adapts a ``policy_dsl.PolicyStore``. Every failure inside it is a deny.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from policy_dsl import HostError, canonical_host
from policy_dsl.identity import identity_attributes
from sidecar.errors import HttpError
from sidecar.http1 import RequestHead

__all__ = [
    "Verdict",
    "Authorizer",
    "PolicyAuthorizer",
    "RequestContext",
    "allow_all",
    "source_attributes",
    "destination_attributes",
    "request_attributes",
    "header_selection",
    "bearer_token",
    "json_body",
]

log = logging.getLogger("trustmesh.sidecar")


@dataclass(frozen=True, slots=True)
class Verdict:
    """An authorization outcome: ``rule`` is the deciding rule's name (None: the default) and
    ``policy`` its policy's. ``audit`` holds ``(policy, rule, would)`` for each audit rule
    (would ``audit``) and dry-run rule (would ``allow``/``deny``) that matched, and
    ``(policy, "(default)", "deny")`` when a dry-run policy let through what the default would
    deny. ``explanation`` (a JSON object, :meth:`policy_dsl.explain.Explanation.to_json`) says
    why a request was, or would have been, denied: for the log, never for the caller."""

    allowed: bool
    rule: str | None = None
    reason: str = ""
    policy: str | None = None
    audit: tuple[tuple[str, str, str], ...] = ()
    explanation: dict[str, Any] | None = None


Authorizer = Callable[[dict[str, Any]], Verdict]


def allow_all(attrs: dict[str, Any]) -> Verdict:
    """An authorizer that allows everything (explicit tests and benchmarks only)."""
    return Verdict(True, None, "allow-all")


class PolicyAuthorizer:
    """Evaluates the current policy of a ``policy_dsl.PolicyStore``; deny when there is none."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._verdicts: dict[int, tuple[Any, Verdict]] = {}  # id(decision) -> (decision, its verdict)
        self._headers_read: tuple[Any, frozenset[bytes] | None] = (None, None)
        self._reads_json: tuple[Any, bool] = (None, True)

    def __call__(self, attrs: dict[str, Any]) -> Verdict:
        return self.evaluate(attrs)[0]

    @property
    def policy(self) -> Any:
        """The policy set in force now (None: none loaded)."""
        return self.store.current

    def headers_read(self, policy: Any) -> frozenset[bytes] | None:
        """The request header names ``policy`` (a set of this store's) can read; None: any."""
        known = self._headers_read
        if known[0] is not policy:
            known = self._headers_read = (policy, header_selection(getattr(policy, "reads", None)))
        return known[1]

    def reads_json(self, policy: Any) -> bool:
        """Whether ``policy`` (a set of this store's) can read ``request.json`` (True when its
        reads are not known): a JSON body is held for the decision only then."""
        known = self._reads_json
        if known[0] is not policy:
            reads = getattr(policy, "reads", None)
            wanted = reads is None or any(path[:2] == ("request", "json") or path == ("request",) for path in reads)
            known = self._reads_json = (policy, wanted)
        return known[1]

    def evaluate(self, attrs: Mapping[str, Any]) -> tuple[Verdict, Any]:
        """(the verdict, the policy set that reached it — None when none did, e.g. on an error).

        ``policy_dsl`` evaluation is pure: the decision is a function of the attribute values
        the evaluator reads. A caller may therefore reuse the verdict for attributes that are
        the very same objects, under the same policy set, as long as nothing that differs
        between them (``context.time``, see :class:`RequestContext`) was read.
        """
        policy = self.store.current
        if policy is None:
            return Verdict(False, None, "no policy loaded"), None
        try:
            decision = policy.evaluate(attrs)
        except Exception as err:  # noqa: BLE001 - evaluation must never open the door
            log.error("policy evaluation failed: %s", err)
            return Verdict(False, None, "policy evaluation error"), None
        verdict = self._verdict(decision)
        if not decision.allowed or decision.enforce_off is not None and decision.dry_run_effect == "DENY":
            # why it was (or would have been) denied: built for denials only, from these attributes
            try:
                verdict = replace(verdict, explanation=policy.explain(attrs, decision).to_json())
            except Exception as err:  # noqa: BLE001 - an explanation never changes the verdict
                log.error("explaining a denial failed: %s", err)
        return verdict, policy

    def _verdict(self, decision: Any) -> Verdict:
        # the evaluator hands out the same decision object for the same outcome: convert it once
        known = self._verdicts.get(id(decision))
        if known is not None and known[0] is decision:
            return known[1]
        rule = decision.rule.name if decision.rule is not None else None
        audit = tuple((r.policy, r.name, "audit") for r in decision.audit_matches) + tuple(
            (r.policy, r.name, r.effect) for r in decision.dry_run_matches
        )
        if decision.enforce_off is not None and decision.dry_run_effect == "DENY":
            audit += ((decision.enforce_off, "(default)", "deny"),)
        verdict = Verdict(
            bool(decision.allowed), rule, decision.reason,
            decision.rule.policy if decision.rule is not None else None, audit,
        )
        if len(self._verdicts) >= _VERDICTS_KEPT:
            self._verdicts.clear()
        self._verdicts[id(decision)] = (decision, verdict)
        return verdict


_VERDICTS_KEPT = 256


class RequestContext(Mapping[str, Any]):
    """``context`` of one HTTP request (``protocol``, ``time``) that notes, in ``time_read``,
    whether anything but ``protocol`` was looked at — by key, ``get``, ``in``, iteration or
    length alike, since every way into a ``Mapping`` goes through these methods. A decision
    reached without reading it cannot depend on the time."""

    __slots__ = ("_protocol", "_time", "time_read")

    def __init__(self, protocol: str, time: datetime) -> None:
        self._protocol = protocol
        self._time = time
        self.time_read = False

    def __getitem__(self, key: str) -> Any:
        if key == "protocol":
            return self._protocol
        self.time_read = True
        if key == "time":
            return self._time
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        self.time_read = True
        return iter(("protocol", "time"))

    def __len__(self) -> int:
        self.time_read = True
        return 2

    def __repr__(self) -> str:
        return f"RequestContext(protocol={self._protocol!r}, time={self._time!r})"


def source_attributes(peer_id: Any, ip: str) -> dict[str, Any]:
    """``source`` for a verified peer SPIFFE ID, or an unauthenticated caller (None)."""
    if peer_id is None:
        return {"authenticated": False, "ip": ip}
    # the one function the policy tools also use, so a case or a log record giving only the ID
    # sees what the sidecar saw
    return {**identity_attributes(str(peer_id)), "authenticated": True, "ip": ip}


def destination_attributes(own_id: Any, port: int) -> dict[str, Any]:
    dest: dict[str, Any] = {"port": port}
    if own_id is not None:
        dest["id"] = str(own_id)
        dest["attrs"] = own_id.attributes()
    return dest


def bearer_token(head: RequestHead) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if there is one."""
    value = head.get(b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip().decode("latin-1")


def is_json(head: RequestHead) -> bool:
    ctype = head.get(b"content-type")
    if ctype is None:
        return False
    media = ctype.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class _DuplicateKey(ValueError):
    """A JSON object repeats a key."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique, even ignoring case (else ``ValueError``)."""
    obj = dict(pairs)
    if len(obj) != len(pairs) or len({key.casefold() for key in obj}) != len(obj):
        raise _DuplicateKey
    return obj


def json_body(head: RequestHead, body: bytes | None) -> tuple[bool, Any]:
    """(True, value) when the body is JSON and parses; (False, None) otherwise.

    An object with a repeated key — also one repeated in another letter case — is refused
    with ``HttpError(400)``: JSON parsers disagree on which copy wins (Python keeps the last,
    many keep the first, Go's matches case-insensitively), so the policy could judge one
    value while the app acts on the other.
    """
    if body is None or not is_json(head):
        return False, None
    try:
        return True, json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKey:
        raise HttpError(400, "duplicate key in JSON body") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False, None


def _query_dict(query: Any) -> dict[str, str]:
    if not query:
        return {}
    if isinstance(query, Mapping):
        return dict(query)
    return dict(parse_qsl(str(query), keep_blank_values=True))


def _host(value: str) -> tuple[str, int]:
    """``request.host`` and ``request.port`` (``policy_dsl.canonical_host``); an ambiguous Host is 400."""
    try:
        return canonical_host(value)
    except HostError as err:
        raise HttpError(400, str(err)) from None


def header_selection(reads: Iterable[tuple[str, ...]] | None) -> frozenset[bytes] | None:
    """The header names (lower-case bytes) that ``request.headers`` must carry for a policy
    that reads the attribute paths ``reads`` (``PolicySet.reads``); None: every header (also
    when ``reads`` is None, not known). A header the policy does not name never changes its
    decision, so the others need not be decoded into the attributes."""
    if reads is None:
        return None
    names = set()
    for path in reads:
        if path[0] != "request" or (len(path) > 1 and path[1] != "headers"):
            continue
        if len(path) < 3:  # `has request` or `has request.headers`: the whole map
            return None
        try:
            names.add(path[2].encode("latin-1"))
        except UnicodeEncodeError:  # no header name is spelled so: it is never present
            continue
    return frozenset(names)


def request_attributes(
    head: RequestHead,
    path: str,
    query: Any,
    body: bytes | None = None,
    jwt: Mapping[str, Any] | None = None,
    header_names: frozenset[bytes] | None = None,
    protocol: str = "http/1.1",
) -> dict[str, Any]:
    """``request``: method, the normalised path, host and port (``policy_dsl.canonical_host``), query,
    headers (lower-case names, repeated headers joined with ``", "``; only those in
    ``header_names`` unless it is None), the protocol (``http/1.1``, ``h2`` or ``grpc``) and,
    when available, ``json`` and ``jwt``."""
    fields = head.headers if header_names is None else [field for field in head.headers if field[0] in header_names]
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in fields}
    if len(headers) != len(fields):  # a repeated name: join its values in order
        headers = {}
        for name, value in fields:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = headers[key] + ", " + text if key in headers else text
    host, port = _host((head.get(b"host") or b"").decode("latin-1"))  # whether or not the policy reads headers
    req: dict[str, Any] = {
        "method": head.method,
        "path": path,
        "host": host,
        "port": port,
        "query": _query_dict(query),
        "headers": headers,
        "protocol": protocol,
    }
    ok, value = json_body(head, body)
    if ok:
        req["json"] = value
    if jwt is not None:
        req["jwt"] = dict(jwt)
    return req


def context_attributes(protocol: str, now: datetime) -> dict[str, Any]:
    return {"protocol": protocol, "time": now}
