"""Which callers may have DNS names on their certificates (sans-I/O).

An X.509-SVID normally carries one URI SAN and nothing else. A few
identities also serve HTTPS to clients that check a DNS name — the
injector's admission webhooks, called by the API server — so the CA puts
DNS names on their certificates, but only those an operator granted in the
``serving_certificates`` allow-list::

    serving_certificates:
      - service_account: trustmesh-system/trustmesh-injector    # or spiffe_id: spiffe://…
        dns_names: [trustmesh-injector.trustmesh-system.svc]

A grant names either one ServiceAccount (``NAMESPACE/NAME``, exact: it
matches callers authenticated by a ServiceAccount token only) or one SPIFFE
ID (any way of authenticating). Names match literally (lower-cased); a
wildcard such as ``*.example.svc`` must be granted literally too. A request
for any name that is not granted is refused as a whole: nothing is issued
with fewer names than asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ca.certs import check_dns_name
from ca.errors import IssuanceError
from ca.service.errors import BadRequestError, DeniedError
from ca.service.identity import Caller
from sdk.spiffeid import SpiffeId

__all__ = ["DnsGrant", "DnsNamePolicy", "MAX_DNS_NAMES", "dns_names_from_request"]

# Upper bound on the DNS names one request may carry.
MAX_DNS_NAMES = 32


@dataclass(frozen=True)
class DnsGrant:
    """One allow-list entry: who (a SPIFFE ID or ``ns/sa``) may have which DNS names."""

    dns_names: tuple[str, ...]
    spiffe_id: SpiffeId | None = None
    service_account: str = ""  # "namespace/name"

    def applies_to(self, caller: Caller) -> bool:
        if self.spiffe_id is not None:
            return caller.spiffe_id == self.spiffe_id
        return caller.kind == "kubernetes" and f"{caller.namespace}/{caller.service_account}" == self.service_account


def dns_names_from_request(names: Sequence[str]) -> tuple[str, ...]:
    """The requested DNS names, checked and lower-cased; duplicates removed, order kept."""
    if len(names) > MAX_DNS_NAMES:
        raise BadRequestError(f"too many DNS names ({len(names)} > {MAX_DNS_NAMES})")
    checked = []
    for name in names:
        try:
            checked.append(check_dns_name(name))
        except IssuanceError as err:
            raise BadRequestError(str(err)) from err
    return tuple(dict.fromkeys(checked))


class DnsNamePolicy:
    """Decides whether a caller may have the DNS names it asked for."""

    def __init__(self, grants: Iterable[DnsGrant] = ()) -> None:
        self.grants = tuple(grants)

    def allowed_for(self, caller: Caller) -> frozenset[str]:
        """Every DNS name any grant gives ``caller`` (empty for most callers)."""
        return frozenset(name for grant in self.grants if grant.applies_to(caller) for name in grant.dns_names)

    def check(self, caller: Caller, requested: Sequence[str]) -> None:
        """Return if every requested name is granted to ``caller``; else raise :class:`DeniedError`."""
        if not requested:
            return
        allowed = self.allowed_for(caller)
        refused = [name for name in requested if name not in allowed]
        if refused:
            raise DeniedError(
                f"DNS names not allowed for {caller.spiffe_id}: {', '.join(refused)} "
                "(see serving_certificates in the CA's configuration)"
            )
