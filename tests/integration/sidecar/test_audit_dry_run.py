"""Audit and dry-run at run time, end to end with real processes: a CA, a client sidecar and a
server sidecar (``trustmesh sidecar run``) with a policy file it reloads, an app, and the
server's access log on disk, replayed and turned into a suggested policy by the CLI.
"""

import asyncio
import json
import subprocess
import sys

import aiohttp
import pytest

from tests.integration.sidecar.helpers import ROOT, EchoApp, SidecarProcess, sidecar_config, start_ca

pytestmark = pytest.mark.slow

CLIENT = "spiffe://example.org/ns/a/sa/client"
SERVER = "spiffe://example.org/ns/b/sa/server"
ENFORCED = f"""
policy "orders" protects destination.attrs.sa == "server" {{
  allow "client-reads" {{
    source.id == "{CLIENT}" and request.method == "GET" and request.path startswith "/api/orders"
  }}
  allow "client-writes" {{ source.id == "{CLIENT}" and request.method in ["POST", "DELETE"] }}
  audit "big-order" {{ request.method == "POST" and request.json.quantity > 100 }}
  dry-run deny "no-deletes" {{ request.method == "DELETE" }}
}}
"""
DRY_RUN = ENFORCED.replace('policy "orders"', 'dry-run policy "orders"', 1)


@pytest.fixture
async def world(tmp_path):
    ca = await start_ca(tmp_path, {"token-a-0123456789abcdef": CLIENT, "token-b-0123456789abcdef": SERVER})
    app = await EchoApp().start()
    policy = tmp_path / "policy.policy"
    policy.write_text(ENFORCED)
    ca_section = lambda tok: {"address": f"127.0.0.1:{ca.grpc_port}", "bundle_file": str(tmp_path / "ca-bundle.pem"), "token": tok}  # noqa: E731
    b = SidecarProcess(
        sidecar_config(ca=ca_section("token-b-0123456789abcdef"), inbound={"app_port": app.port}, policy={"file": str(policy)},
                       access_log=str(tmp_path / "b-access.jsonl"), access_log_omit=["source.ip"]),
        tmp_path, "b",
    )
    await b.start()
    a = SidecarProcess(
        sidecar_config(
            ca=ca_section("token-a-0123456789abcdef"),
            outbound={"port": 0, "upstreams": [{"listen": 0, "address": f"127.0.0.1:{b.ports['inbound']}", "spiffe_id": SERVER}]},
        ),
        tmp_path, "a",
    )
    await a.start()
    yield {"a": a, "b": b, "app": app, "tmp": tmp_path, "policy": policy}
    for proc in (a, b):
        await proc.stop()
    await app.stop()
    await ca.stop(grace=1)


async def _until(check, what: str, timeout: float = 20.0):
    """Repeat ``check`` (an awaitable factory returning a value or None) until it gives a value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value is not None:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.2)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trustmesh", "policy", *args], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=60)


async def test_audit_and_dry_run_are_logged_and_counted_and_a_dry_run_policy_enforces_nothing(world):
    a, b, tmp = world["a"], world["b"], world["tmp"]
    base = f"http://127.0.0.1:{a.ports['upstream-0']}"
    async with aiohttp.ClientSession() as s:

        async def ready():
            async with s.get(f"{base}/api/orders/1") as r:
                return True if r.status == 200 else None

        await _until(ready, "both sidecars to serve")
        async with s.post(f"{base}/api/orders", json={"quantity": 500}) as r:
            assert r.status == 200
        async with s.delete(f"{base}/api/orders/7") as r:
            assert r.status == 200  # the dry-run deny rule changes nothing
        async with s.get(f"{base}/other") as r:
            assert (r.status, await r.text()) == (403, "forbidden\n")  # no rule name, no values
        async with s.get(f"http://127.0.0.1:{b.ports['admin']}/metrics") as r:
            metrics = await r.text()
        assert 'trustmesh_authz_audit_total{policy="orders",rule="big-order",would="audit"} 1.0' in metrics
        assert 'trustmesh_authz_audit_total{policy="orders",rule="no-deletes",would="deny"} 1.0' in metrics

        world["policy"].write_text(DRY_RUN)  # enforce off for the whole policy (the sidecar reloads it)

        async def let_through():
            async with s.get(f"{base}/other") as r:
                return True if r.status == 200 else None

        await _until(let_through, "the dry-run policy to be in force")
        async with s.get(f"http://127.0.0.1:{b.ports['admin']}/metrics") as r:
            metrics = await r.text()
        assert 'trustmesh_authz_audit_total{policy="orders",rule="(default)",would="deny"} 1.0' in metrics
    await a.stop()
    assert await b.stop() == 0  # flushes the access log

    records = [json.loads(line) for line in (tmp / "b-access.jsonl").read_text().splitlines()]
    inbound = [r for r in records if r["direction"] == "inbound"]
    assert all(r["v"] == 1 and "source.ip" in r["withheld"] and "source.ip" not in r["attrs"] for r in inbound)
    post = next(r for r in inbound if r["method"] == "POST")
    assert post["attrs"]["request.json.quantity"] == 500
    assert post["audit"] == [{"policy": "orders", "rule": "big-order", "would": "audit"}]
    delete = next(r for r in inbound if r["method"] == "DELETE")
    assert (delete["decision"], delete["audit"]) == ("allow", [{"policy": "orders", "rule": "no-deletes", "would": "deny"}])
    denied, let = [r for r in inbound if r["path"] == "/other"][0], [r for r in inbound if r["path"] == "/other"][-1]
    assert (denied["decision"], denied["status"]) == ("deny", 403)
    assert denied["explain"]["candidates"][0] == {
        "rule": "orders/client-reads", "condition": 'request.path startswith "/api/orders"', "result": "false",
        "values": {"request.path": "/other"},
    }
    assert (let["decision"], let["status"]) == ("allow", 200)
    assert {"policy": "orders", "rule": "(default)", "would": "deny"} in let["audit"]
    assert let["explain"]["candidates"][0]["rule"] == "orders/client-reads"

    # replaying the real log: enforcing the policy again would deny what the dry run let through
    (tmp / "enforced.policy").write_text(ENFORCED)
    replay = _cli("replay", "--json", str(tmp / "enforced.policy"), str(tmp / "b-access.jsonl"))
    assert replay.returncode == 1, replay.stdout + replay.stderr
    report = json.loads(replay.stdout)
    assert report["bad_lines"] == 0 and report["allow_to_deny"] >= 1
    assert {(c["kind"], c["source"], c["method"], c["path"]) for c in report["changes"]} == {("allow->deny", CLIENT, "GET", "/other")}
    # a policy suggested from the same log keeps every allowed request
    suggested = tmp / "suggested.policy"
    assert _cli("suggest", str(tmp / "b-access.jsonl"), "-o", str(suggested)).returncode == 0
    assert _cli("check", "--strict", str(suggested)).returncode == 0
    again = _cli("replay", "--json", str(suggested), str(tmp / "b-access.jsonl"))
    assert again.returncode == 0 and json.loads(again.stdout)["allow_to_deny"] == 0, again.stdout
