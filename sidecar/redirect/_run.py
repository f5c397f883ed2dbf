"""Running the kernel-facing tools (iptables-restore, nft, bpftool, clang)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from sidecar.redirect.errors import RedirectError

_TIMEOUT_S = 30.0


def run(argv: Sequence[str], stdin: str | None = None, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; raise :class:`RedirectError` with the tool's own message when it fails."""
    if shutil.which(argv[0]) is None:
        raise RedirectError(f"{argv[0]} is not installed (needed by trustmesh redirect)")
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise RedirectError(f"{' '.join(argv)}: no answer within {_TIMEOUT_S:.0f} s") from err
    if check and done.returncode != 0:
        message = (done.stderr or done.stdout).strip().replace("\n", "; ")
        raise RedirectError(f"{' '.join(argv)} failed (exit {done.returncode}): {message}")
    return done


def available(tool: str) -> bool:
    """True when ``tool`` is on PATH."""
    return shutil.which(tool) is not None
