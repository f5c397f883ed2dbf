"""The cost of a reconnect between sidecars: a full mutual-TLS handshake (what every new
connection costs now that the mesh profile turns session resumption off) against a resumed one
(what a client resuming a session would have paid had resumption been offered).

Run: ``flock /tmp/bench.lock .venv/bin/python bench/tls_reconnect.py [--rounds 15] [--per-round 40]``

Both handshakes use the sidecar's own contexts (``sidecar.tls``: ECDSA P-256 SVIDs under an
intermediate, client certificate required, X25519) and run in one thread over memory BIOs, so
the figures are CPU per handshake, client and server sides together, without sockets or
scheduling. "full + re-verify" adds the sidecar's post-handshake check of the peer chain
(``sidecar.tls.verify_peer``), which a correct resumption would have had to repeat as well.
Rounds interleave the variants; the report gives medians per handshake and their ratios.
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdk.bundle import Bundle, BundleSet  # noqa: E402
from sdk.spiffeid import TrustDomain  # noqa: E402
from sidecar.tls import authorities_pem, make_client_context, make_server_context, verify_peer  # noqa: E402
from tests.support.pki import chain_pem, make_intermediate, make_leaf, make_root  # noqa: E402


def _pump(client: ssl.SSLObject, server: ssl.SSLObject, bios: tuple[ssl.MemoryBIO, ...]) -> None:
    """Drive both ends of one handshake to completion (bounded)."""
    c_in, c_out, s_in, s_out = bios
    done = [False, False]
    for _ in range(20):
        for i, (obj, out, peer_in) in enumerate(((client, c_out, s_in), (server, s_out, c_in))):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            if out.pending:
                peer_in.write(out.read())
        if all(done):
            # TLS 1.3 tickets (when issued) travel after the handshake: let the client read them
            try:
                client.read(1)
            except ssl.SSLWantReadError:
                pass
            return
    raise RuntimeError("handshake did not finish")


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
    bios = tuple(ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(bios[0], bios[1], session=session)
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    _pump(client, server, bios)
    if session is not None and not client.session_reused:
        raise RuntimeError("the session was not resumed: the comparison would be meaningless")
    return client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=40)
    args = parser.parse_args()
    if not (1 <= args.rounds <= 200 and 1 <= args.per_round <= 1000):
        parser.error("bounded: 1..200 rounds, 1..1000 handshakes per round")

    root = make_root("example.org")
    mid = make_intermediate(root)
    server_leaf, client_leaf = make_leaf(mid, "spiffe://example.org/ns/b/sa/server"), make_leaf(mid, "spiffe://example.org/ns/a/sa/client")
    bundle = Bundle.parse_pem(root.pem, TrustDomain.parse("example.org"))
    cadata = authorities_pem([bundle])
    bundles = BundleSet([bundle])
    mesh_server = make_server_context(chain_pem(server_leaf, mid), server_leaf.key_pem, cadata)
    mesh_client = make_client_context(chain_pem(client_leaf, mid), client_leaf.key_pem, cadata)
    # the same contexts with resumption left as OpenSSL has it (tickets on): only for comparison
    resuming_server = make_server_context(chain_pem(server_leaf, mid), server_leaf.key_pem, cadata)
    resuming_server.options &= ~ssl.OP_NO_TICKET
    resuming_server.num_tickets = 2
    resuming_client = make_client_context(chain_pem(client_leaf, mid), client_leaf.key_pem, cadata)
    resuming_client.options &= ~ssl.OP_NO_TICKET
    session = handshake(resuming_server, resuming_client).session

    variants = {
        "full (mesh profile)": lambda: handshake(mesh_server, mesh_client),
        "full + re-verify": lambda: verify_peer(handshake(mesh_server, mesh_client), bundles),
        "resumed (tickets on)": lambda: handshake(resuming_server, resuming_client, session),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            for _ in range(args.per_round):
                run()
            times[name].append((time.perf_counter() - start) / args.per_round)
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["resumed (tickets on)"]
    print(f"{'handshake':<24} {'median ms':>10} {'x resumed':>10}")
    for name, value in medians.items():
        print(f"{name:<24} {value * 1000:>10.3f} {value / base:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
