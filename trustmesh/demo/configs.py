"""The configuration documents of the demo's CA and sidecars (pure: dicts in, dicts out).

They are written as YAML and read by ``trustmesh ca serve`` and ``trustmesh
sidecar run``; the tests check them against those commands' own loaders.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from trustmesh.demo.topology import TRUST_DOMAIN, Workload

__all__ = ["DESCRIPTORS", "ca_service_config", "explicit_sidecar_config", "transparent_sidecar_config"]

# The resources service's FileDescriptorSet, written beside the policy file.
DESCRIPTORS = "demo-resources.binpb"


def ca_service_config(
    *,
    store_path: str,
    static_tokens_file: str,
    audit_log: str,
    listen_host: str = "127.0.0.1",
    port: int = 0,
    serving_ips: tuple[str, ...] = ("127.0.0.1",),
    trust_domain: str = TRUST_DOMAIN,
    bundle_port: int = 0,
    federation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``trustmesh ca serve`` in local mode: a directory store, one static token per workload
    (``federation``: the section of ``trustmesh demo --federation``, see trustmesh/demo/federation.py)."""
    doc: dict[str, Any] = {
        "trust_domain": trust_domain,
        "ca": {"store": {"kind": "directory", "path": store_path}},
        "authentication": {"static_tokens_file": static_tokens_file},
        "listen": {
            "grpc": f"{listen_host}:{port}",
            "bundle_endpoint": f"{listen_host}:{bundle_port}",
            "metrics": "127.0.0.1:0",
        },
        "serving": {"dns_names": ["trustmesh-ca.demo"], "ip_addresses": list(serving_ips)},
        "audit_log": audit_log,
        "rotation_check_seconds": 60,
    }
    if federation is not None:
        doc["federation"] = federation
    return doc


def _common(workload: Workload, ca_address: str, ca_bundle_file: str, token: str, policy_file: str,
            access_log: str, socket_path: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "trust_domain": TRUST_DOMAIN,
        "mode": workload.mode,
        "ca": {"address": ca_address, "bundle_file": ca_bundle_file, "token": token},
        "policy": {"file": policy_file},
        "access_log": access_log,
        "limits": {"drain_grace": 1},
    }
    if socket_path is not None:
        doc["workload_api"] = {"socket": socket_path}
    if workload.grpc:
        doc["grpc"] = {"descriptors": [str(PurePath(policy_file).with_name(DESCRIPTORS))]}
    return doc


def explicit_sidecar_config(
    workload: Workload,
    *,
    ca_address: str,
    ca_bundle_file: str,
    token: str,
    app_port: int,
    inbound_port: int,
    upstreams: list[tuple[int, str, int, str]],
    policy_file: str,
    access_log: str,
    socket_path: str | None,
) -> dict[str, Any]:
    """A loopback sidecar: inbound on ``inbound_port`` in front of ``app_port``; one outbound
    listener per ``(listen port, host, port, expected SPIFFE ID)``; ports 0 are chosen at start."""
    doc = _common(workload, ca_address, ca_bundle_file, token, policy_file, access_log, socket_path)
    doc["inbound"] = {"port": inbound_port, "address": "127.0.0.1", "app_port": app_port}
    doc["outbound"] = {
        "transparent": False,
        "upstreams": [
            {"listen": listen, "address": f"{host}:{port}", "spiffe_id": expected}
            for listen, host, port, expected in upstreams
        ],
    }
    doc["admin"] = {"port": 0, "health_port": 0, "health_address": "127.0.0.1"}
    return doc


def transparent_sidecar_config(
    workload: Workload,
    *,
    ca_address: str,
    ca_bundle_file: str,
    token: str,
    destinations: dict[str, str],
    policy_file: str,
    access_log: str,
    socket_path: str | None,
) -> dict[str, Any]:
    """A sidecar behind `trustmesh redirect` (the contract's ports 15006/15001/15021/15000);
    ``destinations`` maps ``ip:port`` to the server SPIFFE ID expected there."""
    doc = _common(workload, ca_address, ca_bundle_file, token, policy_file, access_log, socket_path)
    doc["inbound"] = {"port": 15006}
    doc["outbound"] = {"port": 15001, "transparent": True, "destinations": dict(destinations)}
    doc["admin"] = {"port": 15000, "health_port": 15021}
    return doc

