"""The test lab itself: everything it creates is gone afterwards, even when the test fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.netns import PYTHON, NetLab, cgroup2_root, require_root, sweep_stale

pytestmark = [pytest.mark.netns]


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def test_lab_removes_everything_even_when_the_test_fails():
    require_root()
    with pytest.raises(RuntimeError, match="test failed"):
        with NetLab() as lab:
            a, b = lab.namespace("a"), lab.namespace("b")
            lab.link(a, b, ["10.80.0.1/24"], ["10.80.0.2/24"])
            assert "10.80.0.1/24" in a.run(["ip", "-o", "addr", "show"]).stdout
            reach = "import socket; socket.create_connection(('10.80.0.2', 9), timeout=2)"
            assert "ConnectionRefusedError" in a.run([PYTHON, "-c", reach], check=False).stderr  # b answered
            cg = lab.cgroup("c") if cgroup2_root() else None
            proc = a.spawn([PYTHON, "-c", "print('ready', flush=True); import time; time.sleep(60)"], uid=1000, gid=1000,
                           cgroup=cg, ready_line=True)  # fmt: skip
            assert a.run(["id", "-u"], uid=1000, gid=1000).stdout.strip() == "1000"
            names = (a.name, b.name)
            raise RuntimeError("test failed")
    assert not any(name in _namespaces() for name in names)
    assert proc.poll() is not None
    if cg is not None:
        assert not cg.exists()


def test_sweep_removes_what_a_killed_run_left_behind():
    require_root()
    dead = 4_000_000  # above pid_max: never a live process
    assert not Path(f"/proc/{dead}").exists()
    name = f"tmt-{dead}-0-left"
    subprocess.run(["ip", "netns", "add", name], check=True)
    live = f"tmt-{os.getpid()}-999-kept"
    subprocess.run(["ip", "netns", "add", live], check=True)
    try:
        removed = sweep_stale()
        assert name in removed and name not in _namespaces()
        assert live in _namespaces()  # this process is alive: its lab is left alone
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", live], capture_output=True, check=False)
