"""The flow map page in a real headless browser (Debian's chromium + chromedriver, driven by
selenium), built from the demo's own access logs plus one hostile record; and ``flows serve``
following a growing log, seen by the same browser.

The screenshot is kept as a test artifact: in the test's tmp directory (its path is printed;
``pytest -s`` shows it) and in ``test-artifacts/flows.png`` (or ``$TRUSTMESH_TEST_ARTIFACTS``).
Every wait is on a condition in the page, bounded by a generous timeout: no sleeps.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
TRUSTMESH = [sys.executable, "-m", "trustmesh"]
WAIT = 60  # seconds: a bound for a busy machine, not an expectation
HOSTILE_APP = "<img src=x onerror=window.__pwned=1>"
HOSTILE_PATH = "/<script>window.__pwned=2</script>"
HOSTILE_VALUE = "</script><script>window.__pwned=3</script><!--"


@pytest.fixture(scope="module")
def demo_logs(tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("flows")
    logs, run_tmp = base / "logs", base / "run"
    run_tmp.mkdir()
    result = subprocess.run([*TRUSTMESH, "demo", "--log-dir", str(logs)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TMPDIR": str(run_tmp)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"trustmesh flows html {logs}/sidecar-*-access.jsonl -o flows.html" in result.stdout  # the demo's last words
    return sorted(logs.glob("sidecar-*-access.jsonl"))


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("chromium and chromium-driver are not installed (scripts/setup installs the Debian packages)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900",
                 "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(WAIT)
    try:
        yield chrome
    finally:
        chrome.quit()


def _hostile_record() -> str:
    """A denied request whose every logged string tries to become markup or script."""
    record = {
        "v": 1, "time": "2000-01-01T00:00:00Z", "direction": "inbound", "decision": "deny", "status": 403,
        "method": "GET", "path": HOSTILE_PATH, "policy": None, "rule": None,
        "explain": {"reason": "no rule matched (default deny)", "policies": ["config"], "candidates": [
            {"rule": "config/fetch-own-config", "condition": "request.json.appname == source.attrs.app",
             "result": "false", "values": {"request.json.appname": HOSTILE_VALUE}}]},
        "attrs": {"source.id": f"spiffe://demo.example/ns/demo/app/{HOSTILE_APP}",
                  "destination.id": "spiffe://demo.example/ns/demo/app/config",
                  "request.path": HOSTILE_PATH, 'request.headers["x-evil"]': "<svg onload=window.__pwned=4>"},
    }
    return json.dumps(record) + "\n"


def _would_deny_record() -> str:
    """An allowed request that the dry-run policy protecting reports would have denied."""
    record = {
        "v": 1, "time": "2000-01-01T00:00:00Z", "direction": "inbound", "decision": "allow", "status": 200,
        "method": "GET", "path": "/v1/report", "policy": None, "rule": None,
        "audit": [{"policy": "reports-next", "rule": "(default)", "would": "deny"}],
        "attrs": {"source.id": "spiffe://demo.example/ns/demo/app/web", "destination.id": "spiffe://demo.example/ns/demo/app/reports"},
    }
    return json.dumps(record) + "\n"


def _wait(browser, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT).until(lambda b: condition(b), message=f"the page never showed {what}")


def _edges(browser) -> dict[tuple[str, str], int]:
    from selenium.webdriver.common.by import By

    return {(e.get_attribute("data-edge"), e.get_attribute("data-verdict")): int(e.get_attribute("data-count"))
            for e in browser.find_elements(By.CSS_SELECTOR, "path.edge")}


def _select(browser, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    before = browser.find_element(By.TAG_NAME, "body").get_attribute("data-rendered")
    Select(browser.find_element(By.ID, element_id)).select_by_value(value)
    _wait(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-rendered") != before,
          f"a new rendering after choosing {element_id}={value!r}")


def _click(browser, selector: str, wait_for: str) -> str:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, selector).click()
    return _wait(browser, lambda b: wait_for in b.find_element(By.ID, "detail").text and b.find_element(By.ID, "detail").text,
                 f"{wait_for!r} in the request list")


def test_the_page_shows_workloads_flows_filters_and_why_offline_and_keeps_log_content_as_text(demo_logs, browser, tmp_path):
    from selenium.webdriver.common.by import By

    hostile = tmp_path / "hostile-access.jsonl"
    hostile.write_text(_hostile_record() + _would_deny_record())
    page = tmp_path / "flows.html"
    built = subprocess.run([*TRUSTMESH, "flows", "html", *map(str, demo_logs), str(hostile), "-o", str(page)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0 and built.stderr == "", built.stderr
    browser.get(page.as_uri())
    _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "g.node")) >= 8, "the workloads")

    nodes = {e.get_attribute("data-node") for e in browser.find_elements(By.CSS_SELECTOR, "g.node")}
    assert nodes == {"demo/web", "demo/billing", "demo/config", "demo/reports", "demo/analytics", "demo/resources",
                     "(outside the mesh)/unauthenticated", f"demo/{HOSTILE_APP}"}
    namespaces = {e.get_attribute("data-namespace") for e in browser.find_elements(By.CSS_SELECTOR, "g.ns")}
    assert namespaces == {"demo", "(outside the mesh)"}
    edges = _edges(browser)
    assert edges[("demo/web -> demo/config", "allow")] == 1  # the app's own config
    assert edges[("demo/web -> demo/config", "deny")] == 3  # another app's config, twice the admin API
    assert edges[("demo/web -> demo/billing", "allow")] == 1
    assert edges[("demo/web -> demo/resources", "allow")] == 1  # gRPC FetchResource for its own appname
    assert edges[("demo/web -> demo/resources", "deny")] == 1  # and for another app's
    assert edges[("demo/billing -> demo/resources", "allow")] == 1
    assert edges[("demo/analytics -> demo/reports", "allow")] == 1  # by JWT-SVID
    assert edges[("(outside the mesh)/unauthenticated -> demo/reports", "deny")] == 2
    stroke = {e.get_attribute("data-verdict"): e.value_of_css_property("stroke")
              for e in browser.find_elements(By.CSS_SELECTOR, "path.edge")}
    assert edges[("demo/web -> demo/reports", "would-deny")] == 1
    assert stroke == {"allow": "rgb(22, 163, 74)", "deny": "rgb(220, 38, 38)", "would-deny": "rgb(217, 119, 6)"}
    summary = browser.find_element(By.ID, "summary").text
    assert summary.startswith("15 requests (6 allowed, 8 denied, 1 would deny), 8 workloads"), summary

    # filters: verdict, then the time window (the two added records are years older than the demo's)
    _select(browser, "f-verdict", "allow")
    allowed = _edges(browser)
    assert {v for _, v in allowed} == {"allow"} and ("demo/analytics -> demo/reports", "allow") in allowed
    assert not any(key.startswith("(outside the mesh)") for key, _ in allowed)
    _select(browser, "f-verdict", "")
    _select(browser, "f-time", "5")
    assert not any(HOSTILE_APP in key for key, _ in _edges(browser))
    assert browser.find_element(By.ID, "summary").text.startswith("13 requests (6 allowed, 7 denied")
    _select(browser, "f-time", "")
    _select(browser, "f-rule", "config/no-admin-api")
    assert _edges(browser) == {("demo/web -> demo/config", "deny"): 2}
    _select(browser, "f-rule", "")

    # selecting an edge lists its requests with the deciding rule and why
    detail = _click(browser, '[data-edge-label="demo/web -> demo/config"][data-verdict="deny"]', "config/no-admin-api")
    assert "config/fetch-own-config" in detail  # the allowed fetch's rule
    assert "request.json.appname == source.attrs.app is false" in detail  # why the other app's fetch was denied
    assert "'billing'" in detail and "/v1/admin/keys" in detail
    rows = browser.find_elements(By.CSS_SELECTOR, "#requests tr")
    assert len(rows) == 1 + 4  # header + the flow's four requests

    shot = tmp_path / "flows.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    artifacts = Path(os.environ.get("TRUSTMESH_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, artifacts / "flows.png")
    print(f"flow page screenshot: {shot} (copied to {artifacts / 'flows.png'})")

    # the hostile record's strings are shown as text and never ran
    detail = _click(browser, f'[data-edge-label="demo/{HOSTILE_APP} -> demo/config"]', HOSTILE_PATH)
    assert HOSTILE_VALUE in detail
    assert browser.execute_script("return window.__pwned === undefined")
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 3  # config, data, code
    assert browser.find_elements(By.TAG_NAME, "img") == [] and browser.find_elements(By.CSS_SELECTOR, "svg svg") == []
    assert [t.text for t in browser.find_elements(By.CSS_SELECTOR, "g.node text") if "img" in t.text] == [HOSTILE_APP]
    detail = _click(browser, '[data-edge-label="demo/web -> demo/reports"][data-verdict="would-deny"]', "would deny")
    assert "reports-next/(default): would deny" in detail  # the audit match, beside the verdict
    problems = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert problems == [], problems  # no script error, and no request the CSP had to block


def test_serve_follows_a_growing_log_in_the_browser(demo_logs, browser, tmp_path):
    from selenium.webdriver.common.by import By

    log = tmp_path / "access.jsonl"
    lines = next(p for p in demo_logs if p.name == "sidecar-config-access.jsonl").read_text().splitlines(keepends=True)
    inbound = [line for line in lines if '"direction":"inbound"' in line]
    log.write_text(inbound[0])
    server = subprocess.Popen([*TRUSTMESH, "flows", "serve", str(log), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = server.stdout.readline()
        assert first.startswith("serving the flow map on http://127.0.0.1:"), first + server.stderr.read()
        url = first.split(" on ", 1)[1].split(" ", 1)[0]
        port = int(url.rsplit(":", 1)[1].strip("/"))

        browser.get(url)
        _wait(browser, lambda b: b.find_element(By.ID, "summary").text.startswith("1 requests"), "the first request")
        with log.open("a") as handle:
            handle.writelines(inbound[1:])
            handle.write("not a record\n")
            handle.write('{"v":1,"time":"2026-12-05T10:00:00Z","decision":"allow"')  # a line still being written
        want = f"{len(inbound)} requests"
        _wait(browser, lambda b: b.find_element(By.ID, "summary").text.startswith(want), want + " after the log grew")
        assert "1 log line(s) could not be read" in browser.find_element(By.ID, "errors").text
        assert f"{log}:{len(inbound) + 1}: not JSON" in browser.find_element(By.ID, "errors").text

        # another Host (a rebound DNS name pointing at 127.0.0.1) is refused
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        connection.request("GET", "/data.json", headers={"Host": f"attacker.example:{port}"})
        assert connection.getresponse().status == 421
        connection.close()
    finally:
        server.terminate()
        server.wait(timeout=WAIT)
    assert f"{log}:{len(inbound) + 1}: not JSON" in server.stderr.read()  # bad lines also go to stderr


def test_serve_reads_standard_input_as_lines_come(demo_logs, browser):
    """``kubectl logs -f POD -c trustmesh-sidecar | trustmesh flows serve -``"""
    from selenium.webdriver.common.by import By

    lines = next(p for p in demo_logs if p.name == "sidecar-reports-access.jsonl").read_text().splitlines(keepends=True)
    inbound = [line for line in lines if '"direction":"inbound"' in line]
    server = subprocess.Popen([*TRUSTMESH, "flows", "serve", "-", "--port", "0"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        server.stdin.write(inbound[0])
        server.stdin.flush()
        first = server.stdout.readline()
        assert first.startswith("serving the flow map on http://127.0.0.1:"), first + server.stderr.read()
        browser.get(first.split(" on ", 1)[1].split(" ", 1)[0])
        _wait(browser, lambda b: b.find_element(By.ID, "summary").text.startswith("1 requests"), "the first request")
        server.stdin.writelines(inbound[1:])
        server.stdin.flush()
        want = f"{len(inbound)} requests"
        _wait(browser, lambda b: b.find_element(By.ID, "summary").text.startswith(want), want + " from standard input")
        server.stdin.close()  # the end of input: the server keeps serving what it read
        assert browser.find_element(By.ID, "summary").text.startswith(want)
    finally:
        server.terminate()
        server.wait(timeout=WAIT)
