"""scripts/setup as a newcomer runs it: it says what each step does, and how to get `trustmesh` on PATH."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


STAMP = ROOT / ".venv" / ".trustmesh-installed"


@pytest.mark.skipif(not STAMP.exists() or STAMP.stat().st_mtime < (ROOT / "pyproject.toml").stat().st_mtime,
                    reason="needs a .venv set up for this pyproject.toml (run scripts/setup)")
def test_setup_names_each_step_and_prints_the_activation_line():
    result = subprocess.run([str(ROOT / "scripts" / "setup")], capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "TRUSTMESH_VENV"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for step in ("step 1/3: Debian packages", "step 2/3: virtualenv", "step 3/3: trustmesh"):
        assert step in out, out
    assert all(re.match(r"scripts/setup: \[\d+s\] |    source ", line) for line in out.splitlines()), out
    activate = re.search(r"^    source (\S+/bin/activate)$", out, re.M).group(1)
    assert Path(activate).is_file() and Path(activate).with_name("trustmesh").is_file()
    # Sourcing the printed line puts `trustmesh` on PATH.
    shell = subprocess.run(["bash", "-c", f"source {activate} && command -v trustmesh && trustmesh --version"],
                           capture_output=True, text=True, timeout=60)
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.splitlines()[0] == str(Path(activate).with_name("trustmesh"))
    assert shell.stdout.splitlines()[1].startswith("trustmesh ")
