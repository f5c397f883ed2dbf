"""Domain values of the CA service: who verified tokens say the caller is.

The wire formats (TokenReview JSON, token claims, Pod JSON, gRPC messages) are
turned into these in :mod:`ca.service.wire`; everything else in the service
works on these values only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from sdk.spiffeid import SpiffeId

__all__ = ["ReviewedToken", "PodFacts", "AccountFacts", "Caller"]


@dataclass(frozen=True)
class ReviewedToken:
    """A ServiceAccount token someone we trust (apiserver or issuer keys) verified."""

    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str
    expires_at: float  # seconds since the epoch
    credential_id: str = ""
    # uid of the ServiceAccount the token was issued for, from the verified result only
    # (TokenReview ``status.user.uid`` or the signed ``kubernetes.io.serviceaccount.uid``);
    # "" when the verifier did not report one
    service_account_uid: str = ""


@dataclass(frozen=True)
class PodFacts:
    """What the CA needs to know about the pod a token is bound to."""

    namespace: str
    name: str
    uid: str
    service_account: str
    labels: Mapping[str, str] = field(default_factory=dict)
    terminating: bool = False


@dataclass(frozen=True)
class AccountFacts:
    """What the CA checks of a token's ServiceAccount: its uid and whether it is being deleted."""

    uid: str
    deleting: bool = False


@dataclass(frozen=True)
class Caller:
    """An authenticated caller and the SPIFFE ID the CA decided for it."""

    spiffe_id: SpiffeId
    kind: str  # "kubernetes" | "join-token" | "static-token"
    namespace: str = ""
    service_account: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    token_id: str = ""  # a short hash naming a join/static token (never the token); for renewals the presented serial
    credential_id: str = ""  # the apiserver's credential id of a ServiceAccount token ("JTI=...")

    @cached_property
    def rate_key(self) -> str:
        """The key the per-identity rate limit counts against."""
        return str(self.spiffe_id)

    @cached_property
    def audit_json(self) -> str:
        """:meth:`audit_fields` and ``spiffe_id`` as JSON object members (no braces), encoded once per caller."""
        return json.dumps({**self.audit_fields(), "spiffe_id": str(self.spiffe_id)}, separators=(",", ":"))[1:-1]

    def audit_fields(self) -> dict[str, str]:
        """The caller as it appears in an audit line."""
        if self.kind == "kubernetes":
            fields = {
                "caller_kind": self.kind,
                "namespace": self.namespace,
                "service_account": self.service_account,
                "pod": self.pod_name,
                "pod_uid": self.pod_uid,
            }
            if self.credential_id:
                fields["credential_id"] = self.credential_id
            return fields
        if self.kind == "svid-renewal":
            return {"caller_kind": self.kind, "renewed_serial": self.token_id}
        return {"caller_kind": self.kind, "token_id": self.token_id}
