"""`trustmesh demo` as a user runs it: a real CA, real sidecars and apps, real mTLS.

Each test runs the command as a subprocess with ``TMPDIR`` pointing at its own
directory, so it can check afterwards that the demo removed everything it
created and that none of its processes is left (children inherit ``TMPDIR``,
which is how they are found in ``/proc``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

DEMO = [sys.executable, "-m", "trustmesh", "demo"]


# The Ctrl-C tests start the demo through this: SIGINT back to its default, then exec. A test
# runner started from a non-interactive shell in the background ignores SIGINT and a child
# inherits that; the tests must test the demo, not how the runner was launched. (Not a hook run
# between fork and exec: forking a process whose gRPC threads are running is not safe.)
INTERRUPTIBLE_DEMO = [sys.executable, "-c",
                      "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                      "os.execv(sys.executable, [sys.executable, '-m', 'trustmesh', 'demo', *sys.argv[1:]])"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}


def _leftover_processes(tmp_path: Path) -> list[int]:
    """Pids of live processes started with our TMPDIR (the demo's children)."""
    marker = f"TMPDIR={tmp_path}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if marker in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def _rows(stdout: str) -> dict[int, str]:
    """Table lines by call number."""
    return {int(m.group(1)): m.group(0) for m in re.finditer(r"^(\d+)\s{2,}.*$", stdout, re.M)}


def test_demo_runs_to_completion_and_shows_allowed_and_denied_calls_with_reasons(tmp_path):
    result = subprocess.run(DEMO, capture_output=True, text=True, timeout=60, env=_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(result.stdout)
    assert len(rows) == 15, result.stdout
    # ABAC, attribute against attribute: each app gets its own config and nothing else.
    assert re.search(r'web \(mTLS\) -> config\s+POST /v1/fetch \{"appname":"web"\}\s+ALLOW\s+rule fetch-own-config', rows[1])
    assert "app saw …/app/web (200)" in rows[1]  # the app got the caller's ID from the sidecar
    assert re.search(r'billing \(mTLS\) -> config\s+POST /v1/fetch \{"appname":"billing"\}\s+ALLOW\s+rule fetch-own-config', rows[2])
    assert re.search(r'web \(mTLS\) -> config\s+POST /v1/fetch \{"appname":"billing"\}\s+DENY\s+default deny', rows[3])
    # ... and says why, from the callee sidecar's access log (the caller only got "forbidden")
    assert ('fetch-own-config: request.json.appname == source.attrs.app is false '
            '(request.json.appname "billing", source.attrs.app "web")') in rows[3]
    # mTLS between workloads, and a denied path (also when spelt with "..").
    assert re.search(r"web \(mTLS\) -> billing\s+GET /v1/invoices/2026-11\s+ALLOW\s+rule web-reads-invoices", rows[4])
    assert re.search(r"GET /v1/admin/keys\s+DENY\s+rule no-admin-api", rows[6])
    assert re.search(r"GET /v1/fetch/\.\./admin/keys\s+DENY\s+rule no-admin-api", rows[7])
    # The client side checks the server's SPIFFE ID before sending anything.
    assert re.search(r"REFUSED\s+caller's sidecar: server is '…/app/billing', expected '…/app/config'", rows[8])
    assert "route wrong on purpose" in rows[8] and "deliberately set to expect config's SPIFFE ID" in result.stdout
    # Plaintext to a STRICT sidecar never reaches the app: the sidecar counted a failed handshake.
    assert re.search(r"outsider \(plain\) -> config\s+.*REFUSED\s+callee's sidecar closed it: handshake rejected", rows[9])
    # A JWT-SVID fetched from the Workload API admits the caller outside the mesh; a token for
    # another audience, or none, does not.
    assert re.search(r"analytics \(JWT\) -> reports\s+GET /reports/daily\s+ALLOW\s+rule analytics-reads-reports", rows[10])
    assert "app saw …/app/analytics (200)" in rows[10]  # verified again by the app's sdk middleware
    assert re.search(r"analytics \(JWT for config\) -> reports\s+GET /reports/daily\s+DENY", rows[11])
    assert re.search(r"outsider \(plain\) -> reports\s+GET /reports/daily\s+DENY", rows[12])
    # The same ABAC rule on a real gRPC call: the sidecar reads the protobuf request message.
    assert re.search(r"web \(gRPC\) -> resources\s+FetchResource\(appname=web\)\s+ALLOW\s+rule fetch-own-resource", rows[13])
    assert "app saw …/app/web (grpc-status 0)" in rows[13]
    assert re.search(r"billing \(gRPC\) -> resources\s+FetchResource\(appname=billing\)\s+ALLOW", rows[14])
    # the caller hears a generic PERMISSION_DENIED; the table explains it from the callee sidecar's record
    assert re.search(r"web \(gRPC\) -> resources\s+FetchResource\(appname=billing\)\s+DENY\s+default deny; fetch-own-resource: "
                     r"request\.grpc\.message\.appname == source\.attrs\.app is false "
                     r'\(request\.grpc\.message\.appname "billing", source\.attrs\.app "web"\) \(grpc-status 7 PERMISSION_DENIED\)', rows[15])
    assert "all 15 calls went as expected: 6 allowed, 9 denied or refused" in result.stdout
    # Everything it started is gone: processes, work directory, logs (kept only on failure).
    assert _leftover_processes(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_log_dir_keeps_every_sidecars_access_log_and_they_replay_without_change(tmp_path):
    logs = tmp_path / "kept"
    run_tmp = tmp_path / "run"
    run_tmp.mkdir()
    result = subprocess.run(DEMO + ["--log-dir", str(logs)], capture_output=True, text=True, timeout=60, env=_env(run_tmp))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"trustmesh policy replay NEW.policy {logs}/sidecar-*-access.jsonl" in result.stdout
    access = sorted(logs.glob("sidecar-*-access.jsonl"))
    assert [p.name for p in access] == [f"sidecar-{app}-access.jsonl" for app in ("analytics", "billing", "config", "reports", "resources", "web")]
    policy = Path(__file__).resolve().parents[3] / "trustmesh" / "demo" / "demo.policy"
    replay = subprocess.run([sys.executable, "-m", "trustmesh", "policy", "replay", str(policy), *map(str, access)],
                            capture_output=True, text=True, timeout=60)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert re.match(r"(\d+) records replayed: \1 unchanged, 0 allow->deny, 0 deny->allow, 0 undetermined", replay.stdout)
    assert _leftover_processes(run_tmp) == [] and list(run_tmp.iterdir()) == []
    # a directory holding files from before is refused before anything starts
    again = subprocess.run(DEMO + ["--log-dir", str(logs)], capture_output=True, text=True, timeout=60, env=_env(run_tmp))
    assert again.returncode == 1 and "is not empty" in again.stderr
    assert list(run_tmp.iterdir()) == []


def test_keep_running_prints_curl_lines_that_work_and_ctrl_c_cleans_up(tmp_path):
    proc = subprocess.Popen(INTERRUPTIBLE_DEMO + ["--keep-running"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "demo exited early:\n" + "".join(lines) + proc.stderr.read()
            lines.append(line)
            if "/reports/daily" in line and line.startswith("curl"):
                break
        text = "".join(lines)
        assert "press Ctrl-C to stop it" in text
        # The printed command works: web reaches billing through its sidecar.
        url = re.search(r"curl -s (http://127\.0\.0\.1:\d+/v1/invoices/2026-11)", text).group(1)
        from urllib.request import urlopen

        with urlopen(url, timeout=10) as response:
            body = response.read().decode()
        assert '"caller": "spiffe://demo.example/ns/demo/app/web"' in body
        # The JWT-SVID lines work too: fetch a token from analytics' Workload API, call reports.
        token_line = next(x for x in lines if x.startswith("TOKEN=$("))
        call_line = lines[-1].replace("curl -s", "curl -s --max-time 10", 1)
        if shutil.which("curl"):
            shell = subprocess.run(["bash", "-c", token_line + call_line], capture_output=True, text=True, timeout=30)
            assert '"caller": "spiffe://demo.example/ns/demo/app/analytics"' in shell.stdout, shell.stderr
        assert _leftover_processes(tmp_path)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + err
    assert "interrupted; stopping everything" in out
    assert _leftover_processes(tmp_path) == []
    # The logs whose path --keep-running printed are kept for the user to read, and only they.
    log_dir = re.search(r"Each process's output is in (\S+)\.", text).group(1)
    assert f"logs of every process: {log_dir}" in err
    assert [str(p) for p in tmp_path.iterdir()] == [log_dir]
    assert any(p.name.startswith("sidecar-") for p in Path(log_dir).iterdir())


def test_ctrl_c_during_start_up_stops_what_was_started(tmp_path):
    proc = subprocess.Popen(INTERRUPTIBLE_DEMO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    try:
        assert proc.stdout.readline().startswith("trustmesh demo: starting")
        deadline = time.monotonic() + 20
        while not _leftover_processes(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _leftover_processes(tmp_path), "no child process appeared"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert _leftover_processes(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_if_the_demo_is_killed_its_processes_die_with_it(tmp_path):
    proc = subprocess.Popen(DEMO + ["--keep-running"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "demo exited early: " + proc.stderr.read()
            if "press Ctrl-C" in line:
                break
        assert _leftover_processes(tmp_path)
        proc.kill()  # SIGKILL: no cleanup code runs in the demo
        proc.wait()
        deadline = time.monotonic() + 15
        while _leftover_processes(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for socket_dir in Path("/tmp").glob(f"tmd-{proc.pid}-*"):  # what the demo could not remove
            shutil.rmtree(socket_dir, ignore_errors=True)
    assert _leftover_processes(tmp_path) == []


def test_a_process_that_cannot_start_fails_the_demo_with_its_log_and_cleans_up(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if port > 65519:
            pytest.skip("ephemeral port too high for --port-base")
        # config's sidecar is the first on --port-base: its inbound port is taken.
        result = subprocess.run(DEMO + ["--port-base", str(port)], capture_output=True, text=True, timeout=60, env=_env(tmp_path))
    assert result.returncode == 1
    assert "logs of every process:" in result.stderr
    # The sidecar named is the one that failed first: config's (its port is held above), or on a
    # busy machine another whose port some other program happened to hold at that moment.
    failed = re.findall(r"/(sidecar-[a-z]+)\.log\):\n\[stderr\] trustmesh: inbound listener: cannot listen on "
                        r"127\.0\.0\.1:(\d+): Address already in use", result.stderr)
    assert failed, result.stderr
    assert "Traceback" not in result.stderr.split("last output:")[0]
    assert _leftover_processes(tmp_path) == []
    # Only the log directory is kept, for the user to read, with the failed process's log.
    kept = list(tmp_path.iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("trustmesh-demo-logs-")
    name, failed_port = failed[0]
    assert f"cannot listen on 127.0.0.1:{failed_port}" in (kept[0] / f"{name}.log").read_text()


def test_usage_errors_exit_2():
    result = subprocess.run(DEMO + ["--port-base", "80"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == "trustmesh: error: --port-base must be between 1024 and 65519, got 80"


def _root_tools_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    for tool in ("ip", "nsenter", "setpriv", "iptables"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


@pytest.fixture
def shared_tmp():
    """A TMPDIR that uid 1337 can traverse (pytest's tmp_path sits under a 0700 directory)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="demo-test-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.netns
def test_netns_isolation_runs_the_same_script_through_transparent_redirect(shared_tmp):
    _root_tools_or_skip()
    tmp_path = shared_tmp
    # A namespace left by a demo that was killed with SIGKILL (its pid is gone) is swept.
    stale = "tmdemo4194303-hub"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    proc = subprocess.Popen(DEMO + ["--isolation", "netns"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    try:
        out, err = proc.communicate(timeout=60)
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", stale], capture_output=True, check=False)
    assert proc.returncode == 0, out + err
    assert "a network namespace each (transparent redirect)" in out
    rows = _rows(out)
    assert re.search(r'web \(mTLS\) -> config\s+POST /v1/fetch \{"appname":"web"\}\s+ALLOW\s+rule fetch-own-config', rows[1])
    assert re.search(r'web \(mTLS\) -> config\s+POST /v1/fetch \{"appname":"billing"\}\s+DENY', rows[3])
    assert re.search(r"REFUSED\s+caller's sidecar: server is '…/app/billing', expected '…/app/config'", rows[8])
    assert re.search(r"outsider \(plain\) -> config\s+.*REFUSED\s+callee's sidecar closed it: handshake rejected", rows[9])
    assert re.search(r"analytics \(JWT\) -> reports\s+GET /reports/daily\s+ALLOW\s+rule analytics-reads-reports", rows[10])
    assert "app saw …/app/analytics (200)" in rows[10]
    assert re.search(r"web \(gRPC\) -> resources\s+FetchResource\(appname=web\)\s+ALLOW\s+rule fetch-own-resource", rows[13])
    assert re.search(r"web \(gRPC\) -> resources\s+FetchResource\(appname=billing\)\s+DENY", rows[15])
    assert "all 15 calls went as expected" in out
    # Namespaces (and with them the veths and iptables rules), processes and files are gone.
    assert f"tmdemo{proc.pid}-" not in namespaces
    assert stale not in namespaces
    assert "removed 1 namespace(s) left by an earlier demo" in err
    assert _leftover_processes(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.netns
def test_netns_isolation_without_root_is_a_usage_error():
    _root_tools_or_skip()
    as_user = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"]
    result = subprocess.run(as_user + DEMO + ["--isolation", "netns"], capture_output=True, text=True, timeout=30, cwd="/")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("trustmesh: error: --isolation netns needs root")


@pytest.mark.netns
def test_netns_keep_running_then_sigterm_removes_the_namespaces(shared_tmp):
    _root_tools_or_skip()
    proc = subprocess.Popen(DEMO + ["--isolation", "netns", "--keep-running"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(shared_tmp))
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "demo exited early:\n" + "".join(lines) + proc.stderr.read()
            lines.append(line)
            if "/v1/invoices/" in line and line.startswith("nsenter"):
                break
        # The printed command runs as web, inside web's namespace, through the redirect.
        command = line.strip().replace("curl -s", "curl -s --max-time 10", 1)
        if shutil.which("curl"):
            body = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30).stdout
            assert '"caller": "spiffe://demo.example/ns/demo/app/web"' in body
        prefix = f"tmdemo{proc.pid}-"
        assert prefix in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert prefix not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert _leftover_processes(shared_tmp) == []
    # Only the logs --keep-running pointed at are left.
    assert [p.name[:len("trustmesh-demo-logs-")] for p in shared_tmp.iterdir()] == ["trustmesh-demo-logs-"]
