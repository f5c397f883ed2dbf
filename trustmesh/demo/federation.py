"""`trustmesh demo --federation`: a second trust domain with its own CA, calling into the first.

``partner.example`` gets a CA service of its own (``trustmesh ca serve``, its own
CA directory and static tokens). The two CAs federate with each other over
``https_spiffe`` bundle endpoints, each bootstrapped with the other's bundle,
and hand the foreign bundle to their sidecars on the bundle stream. Two
partner workloads (a sidecar each, explicit outbound mode) call ``billing``:

- ``partner-auditor`` is admitted by a rule of demo.policy that names its
  foreign SPIFFE ID;
- ``partner-web`` carries the same ``ns``/``app`` attributes as the mesh's own
  ``web`` (``…/ns/demo/app/web``) but in the other trust domain: no rule names
  it, and ``web-reads-invoices`` requires the own trust domain, so it is denied.

Loopback isolation only. Pure planning (:func:`plan_federation`) is separate
from starting processes (:func:`start_partner`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from trustmesh.demo.configs import explicit_sidecar_config
from trustmesh.demo.procs import Supervisor, json_event
from trustmesh.demo.topology import TRUST_DOMAIN, Call, Workload, spiffe_id

__all__ = ["PARTNER_DOMAIN", "PARTNER_WORKLOADS", "FEDERATION_SCRIPT", "FederationPlan", "federation_section", "plan_federation", "start_partner"]

PARTNER_DOMAIN = "partner.example"
PARTNER_WORKLOADS = {
    "partner-auditor": f"spiffe://{PARTNER_DOMAIN}/ns/audit/app/auditor",
    "partner-web": f"spiffe://{PARTNER_DOMAIN}/ns/demo/app/web",
}
FEDERATION_SCRIPT: tuple[Call, ...] = (
    Call("partner-auditor", "mtls", "billing", "GET", "/v1/invoices/2026-11", "allow",
         "federation: a foreign ID a rule names", upstream="billing"),
    Call("partner-web", "mtls", "billing", "GET", "/v1/invoices/2026-11", "deny",
         "federation: same attrs, foreign domain", upstream="billing"),
)


def federation_section(peer: str, port: int, bootstrap: Path | str) -> dict[str, Any]:
    """A CA's ``federation`` config: serve https_spiffe, and federate with ``peer`` on ``port``."""
    return {
        "bundle_endpoint": {"profile": "https_spiffe"},
        "federates_with": [{
            "trust_domain": peer,
            "bundle_endpoint_url": f"https://127.0.0.1:{port}/",
            "profile": "https_spiffe",
            "endpoint_spiffe_id": f"spiffe://{peer}/trustmesh/bundle-endpoint",
            "bundle_file": str(bootstrap),
        }],
    }


@dataclass(frozen=True)
class FederationPlan:
    """Where both bundle endpoints listen and where each side's bootstrap bundle is."""

    home: Path  # the partner's files
    main_port: int
    partner_port: int

    def main_ca_options(self) -> dict[str, Any]:
        """Extra ``start_ca`` arguments for the main CA: its endpoint port and its relationship."""
        return {
            "bundle_port": self.main_port,
            "federation": federation_section(PARTNER_DOMAIN, self.partner_port, self.home / "partner-bootstrap.jwks"),
        }

    def partner_ca_federation(self) -> dict[str, Any]:
        return federation_section(TRUST_DOMAIN, self.main_port, self.home / "main-bootstrap.jwks")


def plan_federation(workdir: Path) -> FederationPlan:
    """Make the partner's CA directory and both bootstrap bundles (the main CA's directory exists)."""
    from ca.manager import CaConfig
    from ca.store import CaDirectory
    from sdk.spiffeid import TrustDomain
    from trustmesh.demo.mesh import free_ports

    home = workdir / "partner"
    home.mkdir(mode=0o700)
    now = datetime.now(timezone.utc)
    partner = CaDirectory(home / "ca").init(CaConfig(TrustDomain.parse(PARTNER_DOMAIN), ca_ttl=timedelta(days=2)), now=now)
    (home / "ca-bundle.pem").write_bytes(partner.bundle().to_pem())
    # The out-of-band exchange of `trustmesh ca bundle --format spiffe`, done here in-process.
    (home / "partner-bootstrap.jwks").write_bytes(partner.bundle().to_jwks())
    (home / "main-bootstrap.jwks").write_bytes(CaDirectory(workdir / "ca").load().bundle().to_jwks())
    main_port, partner_port = free_ports(2)
    return FederationPlan(home, main_port, partner_port)


async def start_partner(sup: Supervisor, mesh: Any, plan: FederationPlan, policy: Path) -> None:
    """Start the partner's CA and its workloads' sidecars, each with an upstream to billing."""
    from trustmesh.demo.mesh import free_ports, python, start_ca, wait_ready

    home = plan.home
    tokens = {name: secrets.token_urlsafe(24) for name in PARTNER_WORKLOADS}
    ca_port = await start_ca(
        sup, home, tokens, name="partner-ca", trust_domain=PARTNER_DOMAIN, ids=PARTNER_WORKLOADS.__getitem__,
        bundle_port=plan.partner_port, federation=plan.partner_ca_federation(),
    )

    unused_app_ports = free_ports(len(PARTNER_WORKLOADS))  # nothing calls them; the sidecar needs one
    for (name, sid), app_port in zip(PARTNER_WORKLOADS.items(), unused_app_ports):
        access_log = sup.log_dir / f"sidecar-{name}-access.jsonl"
        doc = explicit_sidecar_config(
            Workload(name),
            ca_address=f"127.0.0.1:{ca_port}",
            ca_bundle_file=str(home / "ca-bundle.pem"),
            token=tokens[name],
            app_port=app_port,
            inbound_port=0,
            upstreams=[(0, *mesh.inbound["billing"], spiffe_id("billing"))],
            policy_file=str(policy),
            access_log=str(access_log),
            socket_path=None,
        )
        doc["trust_domain"] = PARTNER_DOMAIN
        doc["outbound"]["trust_domains"] = [PARTNER_DOMAIN, TRUST_DOMAIN]  # billing is in the other domain
        path = home / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        argv = [python(), "-m", "trustmesh", "sidecar", "run", "--config", str(path)]
        event = await sup.start(f"sidecar-{name}", argv, json_event("listening"))
        ports = event["ports"]
        mesh.admin[name] = ("127.0.0.1", int(ports["admin"]))
        mesh.outbound[(name, "billing")] = ("127.0.0.1", int(ports["upstream-0"]))
        mesh.access_logs[name] = access_log
        await wait_ready(f"sidecar-{name}", *mesh.admin[name], sup)
