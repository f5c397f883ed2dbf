"""`trustmesh sidecar run --config FILE`: run the data plane next to an app.

Once its ports are bound the sidecar prints ``{"event": "listening", "ports": {...}}``
on stdout; once it is ready to serve (a valid SVID and, if configured, a loaded
policy: what ``/healthz/ready`` reports) it prints ``{"event": "ready", ...}``
once. Then one JSON access-log line per request, unless ``access_log`` says
otherwise. A port that cannot be bound ends the command with one line naming
the listener and the port (exit 1). SIGTERM or SIGINT: readiness fails,
listeners stop accepting, in-flight requests get ``limits.drain_grace``
seconds, then exit 0.

The log level is ``--log-level``, else ``TRUSTMESH_LOG_LEVEL`` (set by the
injector from the ``trustmesh.io/log-level`` annotation), else the config
file's ``log_level``, else ``info``. ``TRUSTMESH_APP_PROBERS`` holds the app
probes the health port serves (:mod:`sidecar.app_probes`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["register", "tune_malloc", "trim_heap_forever", "resolve_log_level", "LOG_LEVEL_ENV", "HEAP_TRIM_SECONDS"]

LOG_LEVEL_ENV = "TRUSTMESH_LOG_LEVEL"
_TRACE = 5  # below DEBUG; Python's logging has no TRACE level of its own


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sidecar run``."""
    parser = subparsers.add_parser(
        "sidecar",
        help="the mTLS sidecar proxy (inbound policy enforcement, outbound mTLS)",
        description="The per-pod data plane. See docs/sidecar.md.",
    )
    sub = parser.add_subparsers(dest="sidecar_command", metavar="SUBCOMMAND")
    sub.required = True
    run = sub.add_parser(
        "run",
        help="run the sidecar",
        description="Run the sidecar with the given YAML configuration. An invalid file is refused "
        "with one error naming the field; nothing is started.",
    )
    run.add_argument("--config", required=True, metavar="FILE", help="sidecar configuration (YAML)")
    run.add_argument("--check", action="store_true", help="validate the configuration and exit")
    run.add_argument(
        "--log-level",
        metavar="LEVEL",
        help=f"trace, debug, info, warning or error "
        f"(default: ${LOG_LEVEL_ENV}, else the config's log_level, else info)",
    )
    run.set_defaults(func=_run)


# How often the sidecar hands free heap pages back to the kernel (see tune_malloc).
HEAP_TRIM_SECONDS = 2.0


def tune_malloc() -> Callable[[], object] | None:
    """Raise glibc's mmap threshold: uvloop's TLS layer allocates a 256 KiB buffer per read,
    which otherwise becomes an mmap/munmap pair on every read (measured: ~2x CPU).

    The price: those buffers now come from the heap, and glibc returns freed heap memory to
    the kernel only from the top of the heap. With many short-lived TLS connections (opaque
    TCP ports: one upstream handshake per connection) the freed memory stays resident — a
    sidecar grew from 45 to over 110 MB in 1,920 connections, 8.5 MB of its heap in use. Returns
    ``malloc_trim(0)`` (which also releases free pages inside the heap) for
    :func:`trim_heap_forever`; None where this is not glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 8 * 1024 * 1024)  # M_TRIM_THRESHOLD
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)


async def trim_heap_forever(trim: Callable[[], object] | None, every: float = HEAP_TRIM_SECONDS) -> None:
    """Every ``every`` seconds: a full cyclic collection, then ``trim`` (None: no trim).

    A closed TLS connection is a cycle (transport, protocol, ``SSLObject`` and its memory
    BIOs) that only the cyclic collector frees, and connections live long enough to reach
    the oldest generation, which the collector visits rarely (start-up objects are frozen
    and the young thresholds raised, see ``_main``). Until then each one holds ~34 KB of
    OpenSSL and buffer memory. Cost, measured here: ~0.3 ms when idle; under heavy churn
    (64 new TLS connections a second) 3–8 ms for the collection and 1–2 ms for the trim —
    start-up objects are frozen, so the collection walks only recent connections' objects.
    """
    import asyncio
    import gc

    while True:
        await asyncio.sleep(every)
        gc.collect()
        if trim is not None:
            trim()


def resolve_log_level(flag: str | None, env: str | None, file_value: str | None) -> tuple[str, int]:
    """(name, logging level): the flag, else the environment variable, else the config file, else info.

    An unknown name is a :class:`~sdk.errors.UsageError` naming where it came from.
    """
    import logging

    from sdk.errors import UsageError
    from sidecar.config import LOG_LEVELS

    levels = {"trace": _TRACE, "debug": logging.DEBUG, "info": logging.INFO,
              "warning": logging.WARNING, "error": logging.ERROR}
    assert set(levels) == set(LOG_LEVELS)
    for source, value in (("--log-level", flag), (LOG_LEVEL_ENV, env), ("config: log_level", file_value)):
        if value is None or (source == LOG_LEVEL_ENV and not value.strip()):
            continue
        name = value.strip().lower()
        if name not in levels:
            raise UsageError(f"{source}: must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
        return name, levels[name]
    return "info", logging.INFO


def _own_ports(config) -> set[int]:  # type: ignore[no-untyped-def]
    ports = {config.inbound_port, config.outbound_port, config.admin_port, config.health_port}
    return ports | {up.listen for up in config.upstreams}


def _run(args: argparse.Namespace) -> int:
    import os

    from sidecar.app_probes import PROBERS_ENV, parse_probers
    from sidecar.config import load_config

    config = load_config(args.config)
    level_name, level = resolve_log_level(args.log_level, os.environ.get(LOG_LEVEL_ENV), config.log_level)
    probes = parse_probers(os.environ.get(PROBERS_ENV), _own_ports(config))
    if args.check:
        print(f"config ok: trust domain {config.trust_domain}, mode {config.mode}, log level {level_name}, "
              f"{len(probes)} app probe(s)")
        return 0
    import logging

    import uvloop

    trim = tune_malloc()
    logging.addLevelName(_TRACE, "TRACE")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return uvloop.run(_main(config, probes, trim))


async def _main(config, probes, trim=None) -> int:  # type: ignore[no-untyped-def]
    import asyncio
    import gc
    import json
    import signal
    import sys
    from datetime import timedelta

    from sdk.spiffeid import TrustDomain
    from sidecar.accesslog import open_access_log
    from sidecar.app import Sidecar
    from sidecar.app_probes import AppProbes
    from sidecar.attributes import PolicyAuthorizer
    from sidecar.identity import IdentityManager, StaticIdentity
    from sidecar.policy_watch import PolicyWatcher

    from policy_dsl import PolicyStore

    client = None
    if config.identity is not None:
        ident = config.identity
        identity = StaticIdentity.load(ident.cert_file, ident.key_file, ident.bundle_file,
                                       TrustDomain.parse(config.trust_domain))
    else:
        from sdk.ca_client import CaClient

        ca = config.ca
        if ca.token_file is not None:
            token_file = ca.token_file

            def token_source() -> str:
                return token_file.read_text().strip()
        else:
            static = ca.token

            def token_source() -> str:
                return static

        client = CaClient(ca.address, ca.bundle_file.read_bytes(), token_source, server_name=ca.server_name)
        identity = IdentityManager(
            client,
            TrustDomain.parse(config.trust_domain),
            ttl=timedelta(seconds=ca.svid_ttl) if ca.svid_ttl else None,
            renew_with_svid=ca.renew_with_svid,
        )
    store = PolicyStore()
    watcher = PolicyWatcher(store, config.policy_file) if config.policy_file else None
    sidecar = Sidecar(
        config,
        identity,
        PolicyAuthorizer(store),
        policy_ready=(lambda: store.generation > 0) if watcher else (lambda: True),
        access_log=open_access_log(config.access_log, config.access_log_omit),
    )
    sidecar.admin.app_probes = AppProbes(probes)
    workload_api = None
    announce: asyncio.Task[None] | None = None
    trimmer: asyncio.Task[None] | None = None
    grace = 0.0  # nothing in flight unless the sidecar got as far as serving
    try:
        # Bind every port before asking the CA: a port in use must not cost a one-time join token.
        await sidecar.start()
        if config.workload_api_socket is not None:
            from sidecar.workload_api.server import WorkloadApiServer

            workload_api = WorkloadApiServer(identity, config.workload_api_socket)
            await workload_api.start()
        if watcher is not None:
            watcher.metrics = sidecar.metrics
            watcher.start()
        if isinstance(identity, IdentityManager):
            await identity.start()
        # Everything allocated so far lives as long as the process: keep it out of the cyclic
        # collector's way, and collect the young generation less often on the request path.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20000, 50, 100)
        if trim is not None:  # hand back what loading a large policy used only for a moment
            trim()
        print(json.dumps({"event": "listening", "ports": sidecar.ports}), flush=True)
        announce = asyncio.create_task(_announce_ready(sidecar), name="announce-ready")
        trimmer = asyncio.create_task(trim_heap_forever(trim), name="reclaim-memory")

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        grace = config.limits.drain_grace
        await stop.wait()
        print(json.dumps({"event": "draining"}), flush=True)
    finally:
        # Also after a failed start (a port in use): stop what runs, so only the error is printed.
        if announce is not None:
            announce.cancel()
        if trimmer is not None:
            trimmer.cancel()
        if getattr(sidecar, "app_pool", None) is not None:
            await sidecar.shutdown(grace)
        if workload_api is not None:
            await workload_api.stop()
        if watcher is not None:
            await watcher.stop()
        if isinstance(identity, IdentityManager):
            await identity.stop()
        if client is not None:
            await client.close()
        sys.stdout.flush()
    return 0


async def _announce_ready(sidecar) -> None:  # type: ignore[no-untyped-def]
    """Print ``{"event": "ready"}`` the first time the sidecar is ready (what /healthz/ready says)."""
    import asyncio
    import json

    while not sidecar.readiness()[0]:
        await asyncio.sleep(0.05)
    svid = {"spiffe_id": str(sidecar.identity.spiffe_id), "expires_at": sidecar.identity.expires_at.isoformat()}
    print(json.dumps({"event": "ready", **svid}), flush=True)
