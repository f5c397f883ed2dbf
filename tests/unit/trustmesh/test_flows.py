"""The flow page's data, its HTML, and reading logs once or following them (``trustmesh flows``)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from policy_dsl.record import MAX_LINE
from trustmesh.flows import model
from trustmesh.flows.follow import LogFollower, check_loopback
from trustmesh.flows.model import Flows
from trustmesh.flows.page import build_page

WEB = "spiffe://d.example/ns/shop/app/web"
DB = "spiffe://d.example/ns/shop/app/db"
TRUSTMESH = [sys.executable, "-m", "trustmesh"]


def _line(**fields) -> str:
    record = {"v": 1, "time": "2026-12-05T10:00:00Z", "direction": "inbound", "decision": "allow", "method": "GET",
              "path": "/x", "status": 200, "policy": "p", "rule": "r", "attrs": {"source.id": WEB, "destination.id": DB}}
    record.update(fields)
    return json.dumps(record)


def _edges(flows: Flows) -> dict[str, dict]:
    return {edge["key"]: edge for edge in flows.data()["edges"]}


def test_requests_carry_verdict_rule_and_why():
    flows = Flows()
    flows.add_line(_line(), "a.log", 1)
    flows.add_line(_line(audit=[{"policy": "p", "rule": "(default)", "would": "deny"}], rule=None), "a.log", 2)
    flows.add_line(_line(decision="deny", status=403, rule=None, explain={"policies": ["p"], "candidates": [
        {"rule": "p/r", "condition": 'request.path == "/y"', "result": "false", "values": {"request.path": "/x"}}]}), "a.log", 3)
    flows.add_line(_line(decision="deny", status=403, rule="no-x",
                         explain={"rule": "p/no-x", "values": {"request.path": "/x"}}), "a.log", 4)
    flows.add_line(_line(direction="outbound", decision="forward"), "a.log", 5)  # not a policy decision
    edge = _edges(flows)["shop/web -> shop/db"]
    assert edge["src"] == {"ns": "shop", "name": "web", "id": WEB}
    assert [(r["verdict"], r["rule"]) for r in edge["recent"]] == [
        ("allow", "p/r"), ("would-deny", "(default)"), ("deny", "(default)"), ("deny", "p/no-x")]
    assert edge["recent"][1]["audit"] == ["p/(default): would deny"]
    assert edge["recent"][2]["why"] == "p/r: request.path == \"/y\" is false (request.path = '/x')"
    assert edge["recent"][3]["why"] == "deny rule p/no-x (request.path = '/x')"
    assert sorted(edge["counts"]) == sorted([["2026-12-05T10:00", "allow", "p/r", 1], ["2026-12-05T10:00", "would-deny", "(default)", 1],
                                             ["2026-12-05T10:00", "deny", "(default)", 1], ["2026-12-05T10:00", "deny", "p/no-x", 1]])


def test_workloads_are_named_by_app_else_sa_else_id_and_callers_without_an_mtls_identity():
    flows = Flows()
    flows.add_line(_line(attrs={"source.id": "spiffe://d.example/ns/ops/sa/batch", "destination.id": DB}), "a", 1)
    flows.add_line(_line(attrs={"source.id": "spiffe://d.example/job/7", "destination.id": DB}), "a", 2)
    flows.add_line(_line(attrs={"source.id": None, "request.jwt.sub": WEB, "destination.id": DB}), "a", 3)
    flows.add_line(_line(attrs={"source.id": None, "request.jwt.sub": "user-42", "destination.id": DB}), "a", 4)
    flows.add_line(_line(attrs={"source.id": None, "destination.id": DB}), "a", 5)
    assert set(_edges(flows)) == {"ops/batch -> shop/db", "d.example/spiffe://d.example/job/7 -> shop/db",
                                  "shop/web -> shop/db", "(jwt)/user-42 -> shop/db",
                                  "(outside the mesh)/unauthenticated -> shop/db"}


@pytest.mark.parametrize(("line", "why"), [
    ('{"v":1,"time":"2026', "not JSON"),  # truncated
    ('{"v":2,"direction":"inbound"}', "record version 2"),  # another format version
    ('{"direction":"inbound","decision":"allow"}', "no version field"),  # written before versioning
    ("[1, 2]", "not a JSON object"),
    (_line(explain="<b>"), "'explain' must be an object"),
    (_line(audit={"rule": "x"}), "'audit' must be a list of objects"),
    (_line(rule=["r"]), "'rule' must be a string"),
    (_line(method={"m": 1}), "'method' must be a string"),
    (_line(attrs={"source.id": "not-an-id", "destination.id": DB}), "source.id"),
    ("x" * (MAX_LINE + 1), "over the"),
])
def test_a_bad_line_is_named_by_file_and_line_and_the_rest_is_read(line, why):
    flows = Flows()
    flows.add_line(_line(), "a.log", 1)
    error = flows.add_line(line, "a.log", 2)
    flows.add_line(_line(path="/after"), "a.log", 3)
    assert error is not None and error.startswith("a.log:2: ") and why in error, error
    assert flows.data()["errors"] == [error] and flows.data()["badLines"] == 1
    assert [r["path"] for r in _edges(flows)["shop/web -> shop/db"]["recent"]] == ["/x", "/after"]
    assert _edges(flows)["shop/web -> shop/db"]["total"] == 2  # the bad line counts nowhere


def test_memory_is_bounded_per_edge_and_counts_still_cover_everything():
    flows = Flows(keep=4, max_edges=2)
    # two days of traffic, one request every 10 minutes, then one without a time
    start = datetime(2026, 12, 3, 0, 0, 30, tzinfo=timezone.utc)
    times = [start + timedelta(minutes=10 * i) for i in range(2 * 24 * 6)]
    for number, moment in enumerate(times, 1):
        flows.add_line(_line(time=moment.strftime("%Y-%m-%dT%H:%M:%SZ"), path=f"/{number}"), "a", number)
    flows.add_line(_line(time=None, path="/untimed"), "a", len(times) + 1)
    edge = _edges(flows)["shop/web -> shop/db"]
    assert [r["path"] for r in edge["recent"]] == ["/286", "/287", "/288", "/untimed"] and edge["kept"] == 4
    assert edge["total"] == len(times) + 1 and sum(c[3] for c in edge["counts"]) == edge["total"]
    assert flows.data()["newest"] == "2026-12-04T23:50:30Z"
    buckets = [c[0] for c in edge["counts"]]
    minutes = [b for b in buckets if b and len(b) == 16]
    hours = [b for b in buckets if b and len(b) == 13]
    assert minutes == [f"2026-12-04T22:{m}0" for m in range(5, 6)] + [f"2026-12-04T23:{m}0" for m in range(6)]  # the last hour
    assert hours == ["2026-12-03T23"] + [f"2026-12-04T{h:02}" for h in range(23)]  # the last day, hour by hour
    assert buckets[-1] is None and edge["counts"][-1][3] == 23 * 6 + 1  # before 2026-12-03T23, and the untimed one
    # a late record of an old minute counts in the hour, or in the sum
    flows.add_line(_line(time="2026-12-04T12:03:00Z"), "b", 1)
    flows.add_line(_line(time="2026-12-01T00:00:00+05:00"), "b", 2)
    counts = {c[0]: c[3] for c in _edges(flows)["shop/web -> shop/db"]["counts"]}
    assert counts["2026-12-04T12"] == 7 and counts[None] == 23 * 6 + 2

    flows.add_line(_line(attrs={"source.id": DB, "destination.id": WEB}), "a", 1000)
    flows.add_line(_line(attrs={"source.id": WEB, "destination.id": WEB}), "a", 1001)  # a third edge: over max_edges
    assert len(flows.data()["edges"]) == 2 and flows.data()["dropped"] == 1


def test_the_page_shows_each_edge_its_share_when_there_are_many(monkeypatch):
    monkeypatch.setattr(model, "MAX_SHOWN", 30)
    flows = Flows(keep=20)
    for caller in range(3):
        for number in range(20):
            flows.add_line(_line(attrs={"source.id": f"spiffe://d.example/ns/shop/app/c{caller}", "destination.id": DB},
                                 path=f"/{number}"), "a", number)
    edges = flows.data()["edges"]
    assert [(len(e["recent"]), e["kept"], e["total"], e["recent"][-1]["path"]) for e in edges] == [(10, 20, 20, "/19")] * 3


def test_the_page_is_self_contained_and_log_content_stays_data():
    flows = Flows()
    hostile = "/</script><script>alert(1)</script><!--"
    flows.add_line(_line(path=hostile, attrs={"source.id": "spiffe://d.example/ns/shop/app/<img src=x onerror=alert(2)>",
                                              "destination.id": DB}), "a.log", 1)
    page = build_page(flows.data())
    assert page.count("</script>") == 3  # the config block's, the data block's and the code's: nothing from the data
    assert "<!--" not in page and "<img" not in page
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)  # no external asset
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)  # nothing fetched from anywhere
    block = page.split('<script id="flow-data" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert json.loads(block)["edges"][0]["recent"][0]["path"] == hostile
    # the Content-Security-Policy admits exactly the page's own code, by its hash
    code = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert json.loads(page.split('<script id="flow-config" type="application/json">', 1)[1].split("<", 1)[0]) == {"poll": 0}
    assert '{"poll":2}' in build_page(flows.data(), poll_seconds=2)


def test_following_reads_complete_lines_skips_a_huge_one_and_starts_over_after_rotation(tmp_path):
    log = tmp_path / "access.jsonl"
    errors: list[str] = []
    follower = LogFollower([str(log)], Flows(), on_error=errors.append)
    log.write_bytes(f"{_line(path='/1')}\n{_line(path='/2')[:30]}".encode())
    assert follower.read() == []
    paths = lambda: [r["path"] for e in follower.flows.data()["edges"] for r in e["recent"]]  # noqa: E731
    assert paths() == ["/1"]  # the second line is still being written
    with log.open("ab") as handle:
        handle.write(f"{_line(path='/2')[30:]}\n".encode())
        handle.write(b'{"v":1,"path":"' + b"y" * (MAX_LINE + 5000))  # a huge line, not finished yet
    follower.read()
    assert paths() == ["/1", "/2"] and errors == [f"{log}:3: line of {MAX_LINE + 1} bytes is over the {MAX_LINE}-byte limit; not read"]
    with log.open("ab") as handle:
        handle.write(b"y" * 100 + b'"}\n' + f"{_line(path='/4')}\n".encode())
    follower.read()
    assert paths() == ["/1", "/2", "/4"] and len(errors) == 1
    log.write_text(f"{_line(path='/new')}\n")  # rotated: a new, shorter file
    follower.read()
    assert paths()[-1] == "/new"


def test_a_one_time_read_takes_a_last_line_without_newline_and_names_a_truncated_one(tmp_path):
    good, cut = tmp_path / "good.jsonl", tmp_path / "cut.jsonl"
    good.write_text(f"{_line(path='/1')}\n{_line(path='/2')}")
    cut.write_text(f"{_line(path='/3')}\n{_line(path='/4')[:40]}")
    errors: list[str] = []
    follower = LogFollower([str(good), str(cut), str(tmp_path / "missing.jsonl")], Flows(), on_error=errors.append)
    unreadable = follower.read(final=True)
    assert [str(e) for e in unreadable] == [f"{tmp_path / 'missing.jsonl'}: cannot read log: No such file or directory"]
    assert sorted(r["path"] for e in follower.flows.data()["edges"] for r in e["recent"]) == ["/1", "/2", "/3"]
    assert len(errors) == 1 and errors[0].startswith(f"{cut}:2: not JSON")


def test_flows_html_prints_each_bad_line_on_stderr_and_writes_the_page(tmp_path):
    log, page = tmp_path / "access.jsonl", tmp_path / "flows.html"
    log.write_text(f"{_line()}\nnot json\n{_line(v=0)}\n{_line(decision='deny', status=403, rule=None)}\n")
    result = subprocess.run([*TRUSTMESH, "flows", "html", str(log), "-o", str(page)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"trustmesh flows: {log}:2: not JSON (Expecting value: line 1 column 1 (char 0)); a truncated line?",
                                          f"trustmesh flows: {log}:3: record version 0; this trustmesh reads version 1"]
    assert result.stdout == f"wrote {page}: 2 requests on 1 flows, 2 bad lines skipped\n"
    assert "shop/web -> shop/db" in page.read_text()
    missing = subprocess.run([*TRUSTMESH, "flows", "html", str(tmp_path / "nope"), "-o", str(page)], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "nope: cannot read log: No such file or directory" in missing.stderr


def test_serve_listens_only_on_loopback():
    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost"):
        check_loopback(host)
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            check_loopback(host)
    result = subprocess.run([*TRUSTMESH, "flows", "serve", "x.log", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not a loopback address" in result.stderr
