"""Stand-in processes for the redirect tests: a tiny proxy, an app, and a client.

Run with the venv python inside a namespace (see tests/support/netns.py):

  probe.py serve NAME ROLE:IP:PORT ...   listen; print "ready"; answer each connection
  probe.py connect IP PORT [TIMEOUT [BIND_IP]]  connect, print the JSON answer (or the errno)
  probe.py udp-echo IP:PORT ...         echo UDP datagrams; print "ready"
  probe.py udp-send IP PORT             send one datagram, print the echo (or the error)

Roles: ``outbound`` asks :func:`original_destination` and forwards there (as
the sidecar's outbound listener would); ``inbound`` asks it and forwards to
loopback on the original port (as the inbound listener would); ``app``
answers with its own name. Every answer is one JSON line
``{"hop": NAME-ROLE, "orig": [ip, port] | null, "next": <answer of next hop>}``,
so a client sees the whole path its connection took.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import threading

from sidecar.redirect import RedirectError, original_destination

_TIMEOUT_S = 3.0


def _ask(ip: str, port: int, timeout: float = _TIMEOUT_S, bind: str | None = None) -> dict:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            if bind:
                s.bind((bind, 0))
            s.connect((ip, port))
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data) if data else {"error": "EOF"}
    except TimeoutError:
        return {"error": "TIMEOUT"}
    except OSError as err:
        return {"error": errno.errorcode.get(err.errno or 0, str(err))}


def _answer(conn: socket.socket, hop: str, role: str) -> None:
    reply: dict = {"hop": f"{hop}-{role}", "orig": None}
    try:
        if role != "app":
            try:
                ip, port = original_destination(conn)
                reply["orig"] = [ip, port]
            except RedirectError as err:
                reply["error"] = str(err)
            else:
                target = ip if role == "outbound" else ("::1" if ":" in ip else "127.0.0.1")
                reply["next"] = _ask(target, port)
        else:
            reply["local"] = list(conn.getsockname()[:2])
    except Exception as err:  # report, never hang the client
        reply["error"] = f"{type(err).__name__}: {err}"
    try:
        conn.sendall(json.dumps(reply).encode() + b"\n")
    finally:
        conn.close()


def _serve_one(sock: socket.socket, hop: str, role: str) -> None:
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=_answer, args=(conn, hop, role), daemon=True).start()


def _listen(ip: str, port: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((ip, port))
    if kind == socket.SOCK_STREAM:
        sock.listen(128)
    return sock


def _split(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    return host.strip("[]"), int(port)


def serve(hop: str, specs: list[str]) -> None:
    threads = []
    for spec in specs:
        role, _, rest = spec.partition(":")
        sock = _listen(*_split(rest))
        threads.append(threading.Thread(target=_serve_one, args=(sock, hop, role), daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    threading.Event().wait()


def udp_echo(specs: list[str]) -> None:
    socks = [_listen(*_split(spec), kind=socket.SOCK_DGRAM) for spec in specs]

    def echo(s: socket.socket) -> None:
        while True:
            data, peer = s.recvfrom(2048)
            s.sendto(data, peer)

    for s in socks:
        threading.Thread(target=echo, args=(s,), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def udp_send(ip: str, port: int) -> dict:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        try:
            s.connect((ip, port))  # connected, so a local reject is reported
            s.send(b"ping")
            data = s.recv(2048)
            return {"echo": data.decode()}
        except TimeoutError:
            return {"error": "TIMEOUT"}
        except OSError as err:
            return {"error": errno.errorcode.get(err.errno or 0, str(err))}


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "serve":
        serve(argv[1], argv[2:])
    elif command == "udp-echo":
        udp_echo(argv[1:])
    elif command == "connect":
        timeout = float(argv[3]) if len(argv) > 3 else _TIMEOUT_S
        bind = argv[4] if len(argv) > 4 else None
        print(json.dumps(_ask(argv[1], int(argv[2]), timeout, bind)))
    elif command == "udp-send":
        print(json.dumps(udp_send(argv[1], int(argv[2]))))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
