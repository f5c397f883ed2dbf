"""`trustmesh sidecar run --config FILE`: run the data plane next to an app.

On start the sidecar prints one JSON line ``{"event": "listening", "ports": {...}}``
on stdout (then one JSON access-log line per request, unless ``access_log``
says otherwise). SIGTERM or SIGINT: readiness fails, listeners stop
accepting, in-flight requests get ``limits.drain_grace`` seconds, then exit 0.
"""

from __future__ import annotations

import argparse

__all__ = ["register", "tune_malloc"]


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
    run.set_defaults(func=_run)


def tune_malloc() -> None:
    """Raise glibc's mmap threshold: uvloop's TLS layer allocates a 256 KiB buffer per read,
    which otherwise becomes an mmap/munmap pair on every read (measured: ~2x CPU)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 8 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _run(args: argparse.Namespace) -> int:
    from sidecar.config import load_config

    config = load_config(args.config)
    if args.check:
        print(f"config ok: trust domain {config.trust_domain}, mode {config.mode}")
        return 0
    import logging

    import uvloop

    tune_malloc()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return uvloop.run(_main(config))


async def _main(config) -> int:  # type: ignore[no-untyped-def]
    import asyncio
    import gc
    import json
    import signal
    import sys
    from datetime import timedelta

    from sdk.spiffeid import TrustDomain
    from sidecar.accesslog import open_access_log
    from sidecar.app import Sidecar
    from sidecar.attributes import PolicyAuthorizer
    from sidecar.identity import IdentityManager, StaticIdentity
    from sidecar.policy_watch import PolicyWatcher

    from policy_dsl import PolicyStore

    client = None
    if config.identity is not None:
        ident = config.identity
        identity = StaticIdentity.load(ident.cert_file, ident.key_file, ident.bundle_file)
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
        )
        await identity.start()
    store = PolicyStore()
    watcher = PolicyWatcher(store, config.policy_file) if config.policy_file else None
    sidecar = Sidecar(
        config,
        identity,
        PolicyAuthorizer(store),
        policy_ready=(lambda: store.generation > 0) if watcher else (lambda: True),
        access_log=open_access_log(config.access_log),
    )
    if watcher is not None:
        watcher.metrics = sidecar.metrics
        watcher.start()
    await sidecar.start()
    workload_api = None
    if config.workload_api_socket is not None:
        from sidecar.workload_api.server import WorkloadApiServer

        workload_api = WorkloadApiServer(identity, config.workload_api_socket)
        await workload_api.start()
    # Everything allocated so far lives as long as the process: keep it out of the cyclic
    # collector's way, and collect the young generation less often on the request path.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 50, 100)
    print(json.dumps({"event": "listening", "ports": sidecar.ports}), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(json.dumps({"event": "draining"}), flush=True)
    await sidecar.shutdown()
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
