"""policy_dsl.loglines: the log readers' one line splitter."""

from __future__ import annotations

import io
import subprocess
import sys

from policy_dsl.loglines import LinePosition, read_lines
from policy_dsl.record import MAX_LINE


def test_a_huge_line_is_yielded_cut_and_its_tail_skipped_and_a_partial_line_waits_unless_final():
    huge = b"x" * (MAX_LINE + 70_000) + b"\n"
    stream = io.BytesIO(b"a\n" + huge + b"b\nc")
    position = LinePosition()
    lines = list(read_lines(stream, position, final=False))
    assert [(n, len(line)) for n, line in lines] == [(1, 2), (2, MAX_LINE + 1), (3, 2)]
    assert position.offset == 2 + len(huge) + 2 and not position.skipping  # "c" waits
    stream.seek(position.offset)
    assert list(read_lines(stream, position, final=True)) == [(4, b"c")]


def test_following_a_huge_line_written_in_parts_skips_it_all():
    position, stream = LinePosition(), io.BytesIO()
    stream.write(b"y" * (MAX_LINE + 10))  # no newline yet, already over the limit
    stream.seek(0)
    assert [n for n, _ in read_lines(stream, position, final=False)] == [1]
    assert position.skipping
    stream.seek(0, io.SEEK_END)
    stream.write(b"yyy\nnext\n")
    stream.seek(position.offset)
    assert list(read_lines(stream, position, final=False)) == [(2, b"next\n")]


def test_policy_replay_names_a_huge_line_and_reads_the_lines_after_it(tmp_path):
    policy, log = tmp_path / "p.policy", tmp_path / "access.jsonl"
    policy.write_text('policy "p" protects all { allow "any-authenticated" { source.authenticated } }\n')
    record = ('{"v":1,"time":"2026-12-05T10:00:00Z","direction":"inbound","decision":"allow","rule":"any-authenticated",'
              '"policy":"p","attrs":{"source.id":"spiffe://d.example/app/web","source.authenticated":true}}\n')
    log.write_bytes(record.encode() + b'{"v":1,"x":"' + b"x" * (2 * MAX_LINE) + b'"}\n' + record.encode())
    result = subprocess.run([sys.executable, "-m", "trustmesh", "policy", "replay", str(policy), str(log)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("2 records replayed: 2 unchanged")
    assert f"{log}:2: line of {MAX_LINE + 1} bytes is over the {MAX_LINE}-byte limit" in result.stdout + result.stderr
