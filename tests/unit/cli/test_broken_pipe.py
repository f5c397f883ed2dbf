"""A reader that leaves early (`trustmesh policy replay p.policy log | head -1`) ends the command
quietly: exit status 1, no traceback on stderr. A real process writing into a real pipe whose
read end is already closed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[3] / "policy_dsl" / "examples"


def test_a_closed_stdout_ends_the_command_without_a_traceback():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "trustmesh", "policy", "check", str(EXAMPLES / "deathstar.policy")],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
