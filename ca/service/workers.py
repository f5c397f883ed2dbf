"""Several CA service processes behind one gRPC port (``workers: N``).

One Python process is bound to one core by the GIL; on a machine with more
cores, ``workers: N`` runs N :class:`~ca.service.app.CaService` processes
that all listen on ``listen.grpc`` with ``SO_REUSEPORT``: the kernel spreads
incoming connections across them. The supervisor (the ``trustmesh ca
serve`` process) starts them, forwards SIGTERM/SIGINT, and exits when they
have drained. What the workers share, and how:

- **The authority**: the on-disk directory or the Kubernetes Secret, exactly
  as replicas share it (a memory store is refused by config validation).
  Only worker 0 runs the rotation schedule (prepare/activate) and publishes
  the ConfigMap; the others re-read the store at every rotation check.
- **Join tokens**: only file-backed (consumed under an exclusive ``flock``
  after re-reading the file, so a token works exactly once across workers);
  in-memory join tokens are refused by config validation.
- **The HTTP ports**: only worker 0 serves the bundle endpoint and the
  metrics/health server. Call counters and latency use prometheus-client's
  multiprocess mode (a fresh private directory, in ``/dev/shm`` when
  writable, that the supervisor creates and removes),
  so worker 0's ``/metrics`` sums every worker's calls.
- **The audit log**: one ``multiprocessing`` lock, held around each line's
  single ``write``, so lines of different workers never interleave.
- **Limits**: each worker enforces 1/N of the per-identity rate and burst
  and of the bundle-stream caps, so the service as a whole never allows more
  than configured.

If any worker exits on its own, the supervisor stops the others and fails.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
from dataclasses import replace
from typing import Any

from ca.service.config import ServiceConfig
from ca.service.errors import ConfigError, StartupError
from ca.service.scratch import scratch_directory

__all__ = ["run_workers"]

log = logging.getLogger(__name__)

_START_TIMEOUT = 120.0  # seconds a worker may take to load the CA and open its ports
_DRAIN_MARGIN = 15.0  # seconds beyond the workers' own grace before they are killed
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # ca.service.metrics.MULTIPROC_ENV (not imported: it loads prometheus)


def run_workers(config: ServiceConfig) -> int:
    """Run ``config.workers`` service processes until SIGTERM/SIGINT; 0 when all drained cleanly."""
    ctx = multiprocessing.get_context("spawn")
    previous_env = os.environ.get(_MULTIPROC_ENV)
    # In RAM when possible, and writable under a read-only root filesystem (see scratch.py).
    with scratch_directory("trustmesh-ca-metrics-") as metrics_dir:
        os.environ[_MULTIPROC_ENV] = str(metrics_dir)  # the spawned workers inherit it before importing prometheus
        supervisor = _Supervisor(ctx, config, ctx.Lock())
        try:
            return supervisor.run()
        finally:
            supervisor.stop_all()
            if previous_env is None:
                os.environ.pop(_MULTIPROC_ENV, None)
            else:
                os.environ[_MULTIPROC_ENV] = previous_env


class _Stopped(Exception):
    """SIGTERM/SIGINT arrived while workers were starting."""


class _Supervisor:
    def __init__(self, ctx: Any, config: ServiceConfig, audit_lock: Any) -> None:
        self.ctx, self.config, self.audit_lock = ctx, config, audit_lock
        self.procs: list[Any] = []
        self.stopping = False

    def run(self) -> int:
        def on_signal(signum: int, frame: object) -> None:
            self.stopping = True

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._run()
        except _Stopped:
            self.stop_all()
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        config = self.config
        port = self._start(0, config)
        host = config.listen.grpc.rpartition(":")[0]
        # With port 0, worker 0 picked the port; the others join it.
        config = replace(config, listen=replace(config.listen, grpc=f"{host}:{port}"))
        for index in range(1, config.workers):
            self._start(index, config)
        log.info("%d CA workers serving gRPC on port %d", config.workers, port)
        return self._watch()

    def _start(self, index: int, config: ServiceConfig) -> int:
        parent, child = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=worker_main, args=(config, index, self.audit_lock, child), name=f"trustmesh-ca-worker-{index}"
        )
        proc.start()
        child.close()
        self.procs.append(proc)
        message = None
        if parent in multiprocessing.connection.wait([parent, proc.sentinel], _START_TIMEOUT):
            try:
                message = parent.recv()
            except EOFError:  # the worker died before reporting
                pass
        parent.close()
        if self.stopping:
            raise _Stopped
        if not message:
            raise StartupError(f"worker {index} did not start within {_START_TIMEOUT:.0f} s (exit code {proc.exitcode})")
        if message[0] == "config":  # the same one-line usage error as without workers
            raise ConfigError(message[1], message[2])
        if message[0] != "ready":
            raise StartupError(f"worker {index}: {message[1]}")
        return int(message[1])

    def _watch(self) -> int:
        while not self.stopping:
            done = multiprocessing.connection.wait([p.sentinel for p in self.procs], timeout=0.5)
            if done and not self.stopping:
                dead = [p for p in self.procs if p.exitcode is not None]
                raise StartupError(
                    "CA worker exited unexpectedly: "
                    + ", ".join(f"{p.name} (exit code {p.exitcode})" for p in dead)
                    + "; stopping the others"
                )
        self.stop_all()
        failed = [p for p in self.procs if p.exitcode != 0]
        for p in failed:
            log.error("%s exited with code %s", p.name, p.exitcode)
        return 1 if failed else 0

    def stop_all(self) -> None:
        """SIGTERM every live worker, wait for them to drain, kill what is left."""
        for proc in self.procs:
            if proc.exitcode is None and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            proc.join(timeout=_DRAIN_MARGIN)
            if proc.exitcode is None:
                log.error("%s did not stop in time; killing it", proc.name)
                proc.kill()
                proc.join(timeout=5)


def worker_main(config: ServiceConfig, index: int, audit_lock: Any, conn: Any) -> None:
    """One worker process: serve until SIGTERM/SIGINT, then drain (entry point of the spawned process)."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s")
    raise SystemExit(asyncio.run(_serve(config, index, audit_lock, conn)))


async def _serve(config: ServiceConfig, index: int, audit_lock: Any, conn: Any) -> int:
    from ca.service.app import CaService
    from ca.service.audit import open_audit_log
    from ca.service.errors import ConfigError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        service = CaService(config, worker=index, audit=open_audit_log(config.audit_log, shared_lock=audit_lock))
        await service.start()
    except ConfigError as err:
        conn.send(("config", err.field, str(err).removeprefix(f"config: {err.field}: ")))
        conn.close()
        return 2
    except Exception as err:  # noqa: BLE001 - reported to the supervisor, which fails with it
        conn.send(("failed", str(err) or type(err).__name__))
        conn.close()
        return 1
    conn.send(("ready", service.grpc_port))
    conn.close()
    try:
        await stop.wait()
    finally:
        await service.stop()
    return 0
