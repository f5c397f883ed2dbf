"""`workers: N` — several `trustmesh ca serve` processes on one gRPC port, as real processes.

Checked: config validation refuses what cannot be shared; calls spread over
the workers are all answered, counted by worker 0's /metrics and audited in
whole lines; a file-backed join token works exactly once across workers;
SIGTERM lets calls in flight on every worker finish. The drain test uses the
Kubernetes API double (tests/support/k8s_double.py, in this process) as a
slow apiserver.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ca.service.config import parse_config
from ca.service.errors import ConfigError
from ca.service.local_auth import JoinTokens
from ca.store import CaDirectory
from sdk.ca_client import CaClient, CaClientError
from sdk.spiffeid import SpiffeId, TrustDomain
from sdk.x509svid import verify_chain
from tests.integration.ca_service.conftest import make_csr

STATIC = "st-0123456789abcdef0123456789"
CLIENTS = 12  # separate connections, so SO_REUSEPORT has several to spread


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path, workers: int = 2, **extra) -> dict:
    tokens = tmp_path / "static-tokens.yaml"
    tokens.write_text(yaml.safe_dump({STATIC: "spiffe://example.org/host/builder"}))
    return {
        "trust_domain": "example.org",
        "workers": workers,
        "ca": {"store": {"kind": "directory", "path": str(tmp_path / "ca")}},
        "authentication": {"static_tokens_file": str(tokens), "join_tokens_file": str(tmp_path / "join.yaml")},
        "listen": {"grpc": "127.0.0.1:0", "bundle_endpoint": "127.0.0.1:0", "metrics": f"127.0.0.1:{_free_port()}"},
        "audit_log": str(tmp_path / "audit.jsonl"),
        "limits": {"rate_per_second": 1000, "burst": 1000},
        **extra,
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ca": {"store": {"kind": "memory"}}}, "workers: more than one worker needs a shared CA"),
        ({"authentication": {"static_tokens_file": "", "join_tokens": True}}, "workers: in-memory join tokens"),
        ({"workers": 0}, "workers: expected `int` >= 1, got 0"),
        ({"workers": 65}, "workers: expected `int` <= 64, got 65"),
    ],
)
def test_config_refuses_what_workers_cannot_share(tmp_path, change, message):
    doc = {**_config(tmp_path), **change}
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(doc)


class _Served:
    """A running `trustmesh ca serve` with workers: its supervisor process, port and config."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, doc: dict) -> None:
        self.proc, self.port, self.doc = proc, port, doc

    def worker_pids(self) -> list[int]:
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
        return [p for p in pids if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]

    def counters(self) -> dict[tuple[str, str], float]:
        url = f"http://{self.doc['listen']['metrics']}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        return {
            (s.labels["rpc"], s.labels["result"]): s.value
            for family in text_string_to_metric_families(text) if family.name == "trustmesh_ca_requests"
            for s in family.samples if s.name == "trustmesh_ca_requests_total"
        }

    def client(self, token: str) -> CaClient:
        bundle = CaDirectory(self.doc["ca"]["store"]["path"]).load().bundle()
        return CaClient(f"127.0.0.1:{self.port}", bundle, lambda: token)


async def _serve(tmp_path: Path, doc: dict) -> _Served:
    path = tmp_path / "ca-service.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trustmesh", "ca", "serve", "--config", str(path), stderr=subprocess.PIPE
    )
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert line, "the service exited before all workers were up"
        found = re.search(r"(\d+) CA workers serving gRPC on port (\d+)", line)
        if found:
            assert int(found.group(1)) == doc["workers"]
            asyncio.get_running_loop().create_task(_drain(proc.stderr))  # keep the pipe from filling
            return _Served(proc, int(found.group(2)), doc)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def _stop(served: _Served) -> int:
    if served.proc.returncode is None:
        served.proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(served.proc.wait(), 60)


async def test_two_workers_share_port_metrics_audit_and_join_tokens(tmp_path):
    served = await _serve(tmp_path, _config(tmp_path))
    try:
        workers = served.worker_pids()
        assert len(workers) == 2
        before = {pid: (Path(f"/proc/{pid}/stat").read_text().split()[13]) for pid in workers}

        clients = [served.client(STATIC) for _ in range(CLIENTS)]
        results = await asyncio.gather(*(c.sign_x509_svid(make_csr()) for c in clients for _ in range(3)))
        for chain, bundle in results:
            assert str(verify_chain(chain, bundle)) == "spiffe://example.org/host/builder"
        assert len({chain[0].serial_number for chain, _ in results}) == 3 * CLIENTS
        # Worker 0's /metrics counts every worker's calls (prometheus multiprocess mode).
        assert served.counters().get(("SignX509SVID", "ok")) == 3 * CLIENTS
        for c in clients:
            await c.close()

        # A join token in the shared file works once, whichever workers the attempts reach.
        token = JoinTokens(TrustDomain.parse("example.org"), path=served.doc["authentication"]["join_tokens_file"]).create(
            SpiffeId.parse("spiffe://example.org/demo/web"), 600
        )
        clients = [served.client(token) for _ in range(CLIENTS)]
        outcomes = await asyncio.gather(*(c.sign_x509_svid(make_csr()) for c in clients), return_exceptions=True)
        ok = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, CaClientError)]
        assert len(ok) == 1 and len(refused) == CLIENTS - 1
        assert {e.code for e in refused} == {"UNAUTHENTICATED"}
        assert str(verify_chain(*ok[0])) == "spiffe://example.org/demo/web"
        for c in clients:
            await c.close()
        counts = served.counters()
        assert counts[("SignX509SVID", "ok")] == 3 * CLIENTS + 1
        assert counts[("SignX509SVID", "UNAUTHENTICATED")] == CLIENTS - 1
        busy = [pid for pid in workers if Path(f"/proc/{pid}/stat").read_text().split()[13] != before[pid]]
        assert busy == workers, "both workers should have served calls"
    finally:
        assert await _stop(served) == 0

    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole: no interleaving
    assert sum(r["event"] == "issued" for r in records) == 3 * CLIENTS + 1
    assert sum(r["event"] == "refused" for r in records) == CLIENTS - 1


async def test_sigterm_lets_calls_in_flight_on_every_worker_finish(tmp_path):
    from tests.support.k8s_double import KubernetesDouble

    async with KubernetesDouble() as kube:
        kube.add_pod("prod", "web-0", service_account="web")
        doc = _config(tmp_path, authentication={"kubernetes": {"api_host": kube.url, "pod_cache_seconds": 0}})
        served = await _serve(tmp_path, doc)
        try:
            kube.response_delay = 1.0  # each TokenReview takes a second: calls are in flight at SIGTERM
            clients = [served.client(kube.issue_token("prod", "web", pod_name="web-0")) for _ in range(CLIENTS)]
            calls = [asyncio.ensure_future(c.sign_x509_svid(make_csr())) for c in clients]
            reviews = ("POST", "/apis/authentication.k8s.io/v1/tokenreviews")
            while kube.requests.count(reviews) < CLIENTS:  # every call reached a worker and waits on the API
                await asyncio.sleep(0.05)
            served.proc.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*calls)
            assert all(str(verify_chain(*r)) == "spiffe://example.org/ns/prod/sa/web" for r in results)
            assert await _stop(served) == 0
            for c in clients:
                await c.close()
        finally:
            if served.proc.returncode is None:
                served.proc.kill()
                await served.proc.wait()
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "issued" for r in records) == CLIENTS


async def test_each_worker_enforces_its_share_of_the_limits(kube, start_service, client_for, tmp_path):
    service = await start_service(
        workers=2, ca={"store": {"kind": "directory", "path": str(tmp_path / "ca")}},
        limits={"rate_per_second": 0.001, "burst": 4},
    )
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    for _ in range(2):  # burst 4 for the service = 2 per worker, so two workers never allow more than 4
        await client.sign_x509_svid(make_csr())
    with pytest.raises(CaClientError) as info:
        await client.sign_x509_svid(make_csr())
    assert info.value.code == "RESOURCE_EXHAUSTED"


async def test_only_worker_0_rotates_publishes_and_serves_http(kube, clock, tmp_path, audit_stream):
    from datetime import timedelta

    from ca.service.app import CaService
    from ca.service.audit import AuditLog
    from tests.integration.ca_service.conftest import base_config

    config = parse_config(base_config(workers=2, ca={"store": {"kind": "directory", "path": str(tmp_path / "ca")}}))
    workers = [
        CaService(config, kube_api_client=kube.api_client(), audit=AuditLog(audit_stream), clock=clock,
                  rotation_loop=False, worker=index)
        for index in (0, 1)
    ]
    for worker in workers:
        await worker.start()
    try:
        zero, one = workers
        assert zero.bundle_port and zero.ops_port and (one.bundle_port, one.ops_port) == (0, 0)
        configmap_writes = lambda: sum(  # noqa: E731
            1 for method, path in kube.requests if method != "GET" and "/configmaps" in path
        )
        published = configmap_writes()
        assert published >= 1  # worker 0 published at start; worker 1 did not

        # Half the CA's life later a new authority is due; a follower takes no rotation step itself.
        clock.now += zero.ca.slots.active.life / 2 + timedelta(hours=1)
        await one.follow()
        assert one.ca.bundle().sequence == 1 and CaDirectory(tmp_path / "ca").load().bundle().sequence == 1
        assert [step.split()[0] for step in await zero.rotate()] == ["prepare"]
        assert configmap_writes() > published
        published = configmap_writes()
        await one.follow()  # the follower picks the prepared authority up from the store
        assert one.hub.current.sequence == 2 and one.ca.bundle().to_jwks() == zero.ca.bundle().to_jwks()
        assert configmap_writes() == published
    finally:
        for worker in workers:
            await worker.stop(grace=0)


def test_worker_start_failures_are_one_line_with_the_same_exit_codes(tmp_path):
    from datetime import datetime, timezone

    from ca.manager import CaConfig

    # A store for another trust domain: the config error a single process reports, exit 2.
    CaDirectory(tmp_path / "ca").init(CaConfig(TrustDomain.parse("other.org")), now=datetime.now(timezone.utc))
    path = tmp_path / "ca-service.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path)))
    cmd = [sys.executable, "-m", "trustmesh", "ca", "serve", "--config", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("trustmesh:")] == [
        f"trustmesh: error: config {path}: trust_domain: is example.org, but the CA in the configured store is for other.org"
    ]
    assert "Traceback" not in result.stderr


async def test_a_lone_service_does_not_share_its_port(kube, start_service):
    from ca.service.errors import StartupError

    first = await start_service()
    with pytest.raises(StartupError, match="listen.grpc: cannot listen on"):
        await start_service(listen={"grpc": f"127.0.0.1:{first.grpc_port}"})
