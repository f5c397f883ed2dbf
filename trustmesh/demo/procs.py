"""Child processes of `trustmesh demo`: start, wait until ready, capture output, stop all.

Every process's stdout and stderr go, line by line, to ``<log_dir>/<name>.log``.
A process is *ready* when a line on the watched stream satisfies the given
matcher (for example the sidecar's ``{"event": "listening", ...}`` line).
:meth:`Supervisor.stop_all` sends SIGTERM to every process still running,
then SIGKILL after a grace period; it is safe to call more than once.
Children run in their own session, so a Ctrl-C at the terminal reaches only
the demo, which then stops them in order; and they get SIGTERM from the
kernel if the demo dies without doing so (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustmesh.demo.errors import DemoError

__all__ = ["Agent", "Child", "Supervisor", "die_with_parent", "json_event"]


def die_with_parent() -> None:
    """In a child before exec: have the kernel send it SIGTERM when the demo dies, even by
    SIGKILL (Linux ``PR_SET_PDEATHSIG``; kept across exec, cleared if the uid changes —
    ``setpriv --pdeathsig`` sets it again there). Elsewhere a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def json_event(event: str) -> Callable[[str], dict[str, Any] | None]:
    """A readiness matcher for a JSON line whose ``event`` field is ``event``."""

    def match(line: str) -> dict[str, Any] | None:
        if not line.startswith("{"):
            return None
        try:
            doc = json.loads(line)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) and doc.get("event") == event else None

    return match


@dataclass
class Child:
    """A started process and where its output goes."""

    name: str
    process: asyncio.subprocess.Process
    log_file: Path
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    output: Any = None  # the open log file the pumps write to

    def tail(self, lines: int = 15) -> str:
        """The last lines of the captured output."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Starts and stops the demo's processes; their output goes to ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    async def start(
        self,
        name: str,
        argv: Sequence[str],
        ready: Callable[[str], Any],
        *,
        stream: str = "stdout",
        timeout: float = 20.0,
        env: dict[str, str] | None = None,
    ) -> Any:
        """Start ``argv``; return what ``ready`` returned for the first line it accepted.

        Raises :class:`DemoError` (naming the log file and quoting its tail) if
        the process exits or stays silent for ``timeout`` seconds first.
        """
        log_file = self.log_dir / f"{name}.log"
        full_env = {**os.environ, **(env or {})}
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        out = log_file.open("a", buffering=1)
        child = Child(name, process, log_file, output=out)
        self.children.append(child)
        found: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        watched = {"stdout": process.stdout, "stderr": process.stderr}[stream]
        for label, reader in (("stdout", process.stdout), ("stderr", process.stderr)):
            matcher = ready if reader is watched else None
            child.pumps.append(asyncio.create_task(_pump(reader, out, label, matcher, found), name=f"pump-{name}-{label}"))
        exited = asyncio.create_task(process.wait())
        try:
            done, _ = await asyncio.wait({found, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not exited.done():
                exited.cancel()
        if found.done() and not found.cancelled() and found.exception() is None:
            return found.result()
        await asyncio.sleep(0.05)  # let the pumps write the last lines
        if exited in done:
            why = f"exited with status {process.returncode} before it was ready"
        else:
            why = f"was not ready after {timeout:.0f} s"
        raise DemoError(f"{name} {why}; its output ({log_file}):\n{child.tail()}")

    async def stop_all(self, grace: float = 3.0) -> None:
        """SIGTERM every running child (newest first), SIGKILL what is left after ``grace`` s."""
        running = [c for c in reversed(self.children) if c.process.returncode is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
        waits = [asyncio.create_task(c.process.wait()) for c in running]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=grace)
            for child in running:
                if child.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.process.pid, signal.SIGKILL)
            if pending:
                await asyncio.wait(pending, timeout=grace)
        for child in self.children:
            for pump in child.pumps:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(pump, 1.0)
            child.output.close()

    async def start_agent(self, name: str, argv: Sequence[str], timeout: float = 20.0) -> Agent:
        """Start a line-oriented JSON helper (:mod:`trustmesh.demo.agent`): requests on its
        stdin, answers on its stdout; stderr goes to the log. Ready at ``{"event": "ready"}``."""
        log_file = self.log_dir / f"{name}.log"
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        out = log_file.open("a", buffering=1)
        child = Child(name, process, log_file, output=out)
        self.children.append(child)
        never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        child.pumps.append(asyncio.create_task(_pump(process.stderr, out, "stderr", None, never)))
        agent = Agent(child)
        try:
            first = await asyncio.wait_for(agent.read(), timeout)
        except (asyncio.TimeoutError, DemoError) as err:
            raise DemoError(f"{name} did not start: {err}; its output ({log_file}):\n{child.tail()}") from None
        if first.get("event") != "ready":
            raise DemoError(f"{name} did not start: unexpected first line {first!r}")
        return agent

    def dead(self) -> list[Child]:
        """Children that exited on their own (before :meth:`stop_all`)."""
        return [c for c in self.children if c.process.returncode is not None]


class Agent:
    """One request at a time to a :mod:`trustmesh.demo.agent` process."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self._lock = asyncio.Lock()

    async def read(self) -> dict[str, Any]:
        assert self.child.process.stdout is not None
        line = await self.child.process.stdout.readline()
        if not line:
            raise DemoError(f"{self.child.name} exited")
        return json.loads(line)

    async def ask(self, request: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
        stdin = self.child.process.stdin
        assert stdin is not None
        async with self._lock:
            stdin.write(json.dumps(request).encode() + b"\n")
            await stdin.drain()
            return await asyncio.wait_for(self.read(), timeout)


async def _pump(
    reader: asyncio.StreamReader | None,
    out: Any,
    label: str,
    matcher: Callable[[str], Any] | None,
    found: asyncio.Future[Any],
) -> None:
    if reader is None:
        return
    try:
        while True:
            try:
                raw = await reader.readline()
            except ValueError:  # a line above the stream limit: its head was dropped
                continue
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\n")
            out.write(f"[{label}] {line}\n")
            if matcher is not None and not found.done():
                value = matcher(line)
                if value is not None:
                    found.set_result(value)
    finally:
        if not out.closed:
            out.flush()
