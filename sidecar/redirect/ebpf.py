"""eBPF capture: build, load, configure and attach ``bpf/redirect.c`` to the pod's cgroup v2.

Outbound TCP is captured by ``cgroup/connect4`` and ``cgroup/connect6``; the
original destination is answered by ``cgroup/getsockopt`` (see the C
source). Inbound capture, the proxy self-call rule and the UDP/IPv6 refusals
need the packet path, which cgroup socket hooks do not see, so this mode
also puts ``table inet trustmesh`` in force without its outbound redirect
(see :mod:`sidecar.redirect.nft_rules`).

The object is compiled once with clang from Debian's ``libbpf-dev`` headers
and cached outside the repository (``$TRUSTMESH_BPF_CACHE`` or
``/var/cache/trustmesh/bpf``), keyed by the source's hash. Programs and maps
are pinned under ``/sys/fs/bpf/trustmesh-<name>`` so that ``remove``,
``print`` and ``verify`` find them from another process. If anything cannot
be built, loaded or attached, everything done so far is undone and a
:class:`RedirectError` says why; there is never a silent fallback.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

from sidecar.redirect import nftables
from sidecar.redirect._run import run
from sidecar.redirect.config import RedirectConfig
from sidecar.redirect.errors import RedirectError

__all__ = ["PROGRAMS", "apply", "build_object", "cgroup_path", "pin_dir", "plan", "remove", "show", "verify"]

SOURCE = Path(__file__).with_name("bpf") / "redirect.c"
BPFFS = Path("/sys/fs/bpf")
# program name in the object → bpftool cgroup attach type
PROGRAMS = {
    "trustmesh_connect4": "connect4",
    "trustmesh_connect6": "connect6",
    "trustmesh_sockops": "sock_ops",
    "trustmesh_getsockopt": "getsockopt",
}


def cgroup_path(config: RedirectConfig) -> Path:
    """The pod's cgroup v2 directory (``--cgroup``), checked: a cgroup v2, and not the root.

    There is no default: in Kubernetes the init container's own cgroup holds
    neither the app nor the sidecar, and the root would capture the whole host.
    """
    if not config.cgroup:
        raise RedirectError("--cgroup is required with --mode ebpf")
    path = Path(config.cgroup)
    if not (path / "cgroup.procs").is_file():
        raise RedirectError(f"--cgroup: {path} is not a cgroup v2 directory")
    if not _on_cgroup2(path):
        raise RedirectError(f"--cgroup: {path} is a cgroup v1 directory; eBPF needs cgroup v2")
    if any(str(path.resolve()) == m for m, t in _mounts() if t == "cgroup2"):
        raise RedirectError(f"--cgroup: {path} is the root cgroup; capture there would take every process on the host")
    return path


def pin_dir(config: RedirectConfig, cgroup: Path) -> Path:
    """Where programs and maps are pinned: ``/sys/fs/bpf/trustmesh-<name>``."""
    name = config.bpf_name or hashlib.sha256(str(cgroup).encode()).hexdigest()[:12]
    return BPFFS / f"trustmesh-{name}"


def _mounts() -> list[tuple[str, str]]:
    with open("/proc/self/mounts") as f:
        return [(p[1], p[2]) for p in (line.split() for line in f) if len(p) > 2]


def _on_cgroup2(path: Path) -> bool:
    resolved = str(path.resolve())
    roots = [m for m, t in _mounts() if t == "cgroup2"]
    return any(resolved == r or resolved.startswith(r.rstrip("/") + "/") for r in roots)


def _ensure_bpffs() -> None:
    """Mount bpffs on /sys/fs/bpf unless it is; locked, so two callers never stack two mounts."""
    lock_dir = "/run" if os.path.isdir("/run") else tempfile.gettempdir()
    with open(os.path.join(lock_dir, "trustmesh-bpffs.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if any(m == str(BPFFS) and t == "bpf" for m, t in _mounts()):
            return
        BPFFS.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "bpf", "bpf", str(BPFFS)])


def build_object() -> Path:
    """Compile ``bpf/redirect.c`` with clang (``-target bpf -O2 -g``), cached by source hash."""
    source = SOURCE.read_bytes()
    cache = Path(os.environ.get("TRUSTMESH_BPF_CACHE", "/var/cache/trustmesh/bpf"))
    obj = cache / f"redirect-{hashlib.sha256(source).hexdigest()[:16]}.o"
    if obj.is_file():
        return obj
    cache.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{Path(p).parent.parent}" for p in glob.glob("/usr/include/*-linux-gnu*/asm/types.h")]
    with tempfile.NamedTemporaryFile(dir=cache, suffix=".o", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        run(["clang", "-target", "bpf", "-O2", "-g", *includes, "-c", str(SOURCE), "-o", str(tmp_path)])
        tmp_path.replace(obj)
    finally:
        tmp_path.unlink(missing_ok=True)
    return obj


# Maps apply fills; the others (tm_by_cookie, tm_by_peer) belong to the programs.
CONFIG_MAPS = ("tm_build", "tm_excl_ports", "tm_excl4", "tm_incl4", "tm_excl6", "tm_incl6", "tm_config")
_ARRAYS = ("tm_build", "tm_config")
Entry = tuple[str, bytes, bytes]  # map name, key, value


def _build_id() -> bytes:
    return hashlib.sha256(SOURCE.read_bytes()).digest()[:8]


def _entries(config: RedirectConfig) -> list[Entry]:
    """What the configuration maps must hold for ``config`` (``tm_config`` last)."""
    cfg = struct.pack(
        "=5I",
        config.proxy_uid,
        config.proxy_gid,
        config.outbound_port,
        1 if config.outbound_cidrs is None else 0,
        1 if config.ipv6 == "drop" else 0,
    )
    zero = struct.pack("=I", 0)
    entries: list[Entry] = [("tm_build", zero, _build_id())]
    entries += [("tm_excl_ports", struct.pack("=H", p), b"\x01") for p in config.exclude_outbound_ports]
    for field, prefix in (("exclude_outbound_cidrs", "tm_excl"), ("outbound_cidrs", "tm_incl")):
        for net in getattr(config, field) or ():
            # LPM key: prefix length (host order), then the address in network order
            key = struct.pack("=I", net.prefixlen) + net.network_address.packed
            entries.append((f"{prefix}{net.version}", key, b"\x01"))
    entries.append(("tm_config", zero, cfg))
    return entries


def _update(maps: Path, entry: Entry) -> str:
    name, key, value = entry
    return f"map update pinned {maps / name} key hex {key.hex(' ')} value hex {value.hex(' ')}"


def _delete(maps: Path, name: str, key: bytes) -> str:
    return f"map delete pinned {maps / name} key hex {key.hex(' ')}"


def _map_updates(config: RedirectConfig, maps: Path) -> list[str]:
    """bpftool batch lines that fill freshly created configuration maps."""
    return [_update(maps, e) for e in _entries(config)]


def _batch(lines: list[str]) -> None:
    if not lines:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".bpftool") as batch:
        batch.write("\n".join(lines) + "\n")
        batch.flush()
        run(["bpftool", "batch", "file", batch.name])


def _dump(maps: Path, name: str) -> dict[bytes, bytes]:
    dump = json.loads(run(["bpftool", "-j", "map", "dump", "pinned", str(maps / name)]).stdout)
    return {_bytes(e["key"]): _bytes(e["value"]) for e in dump}


def _bytes(values: list[str]) -> bytes:
    return bytes(int(v, 16) for v in values)


def _rewrite(maps: Path, have: dict[str, dict[bytes, bytes]], want: list[Entry]) -> list[str]:
    """Batch lines turning the maps' contents ``have`` into ``want``."""
    wanted: dict[str, set[bytes]] = {}
    for name, key, _ in want:
        wanted.setdefault(name, set()).add(key)
    lines = [
        _delete(maps, name, key)
        for name in CONFIG_MAPS
        if name not in _ARRAYS
        for key in have.get(name, {})
        if key not in wanted.get(name, set())
    ]
    return lines + [_update(maps, e) for e in want]


def plan(config: RedirectConfig) -> str:
    """What ``apply`` would do (``--dry-run``): object, pins, cgroup, map contents, nft table."""
    cgroup = Path(config.cgroup or "")
    pins = pin_dir(config, cgroup)
    lines = [
        f"# build: clang -target bpf -O2 -g -c {SOURCE}",
        f"# load:  bpftool prog loadall <object> {pins}/progs pinmaps {pins}/maps",
        *(f"# attach: bpftool cgroup attach {cgroup} {t} pinned {pins}/progs/{p} multi" for p, t in PROGRAMS.items()),
        *(f"# {line}" for line in _map_updates(config, pins / "maps")),
        "# inbound, self-call and UDP/IPv6 refusals:",
        nftables.plan(config),
    ]
    return "\n".join(lines)


def _prog_id(path: Path) -> int:
    return json.loads(run(["bpftool", "-j", "prog", "show", "pinned", str(path)]).stdout)["id"]


def _attached_ids(cgroup: Path) -> set[int]:
    done = run(["bpftool", "-j", "cgroup", "show", str(cgroup)], check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return set()
    return {entry["id"] for entry in json.loads(done.stdout)}


def apply(config: RedirectConfig) -> None:
    """Load, configure and attach the programs, then the nft table; undo all on any failure."""
    cgroup = cgroup_path(config)
    pins = pin_dir(config, cgroup)
    if pins.exists():
        if not verify(config):
            return  # already exactly as asked
        if _reconfigure(config, cgroup, pins):
            return  # same programs, still attached: only the maps and the table changed
        remove(config)
    try:
        obj = build_object()
    except OSError as err:
        raise RedirectError(f"the eBPF object could not be built: {err}") from err
    _ensure_bpffs()
    attached: list[tuple[str, Path]] = []
    try:
        pins.mkdir()
        try:
            run(["bpftool", "prog", "loadall", str(obj), str(pins / "progs"), "pinmaps", str(pins / "maps")])
        except RedirectError as err:
            raise RedirectError(f"eBPF programs could not be loaded into this kernel: {err}") from err
        _batch(_map_updates(config, pins / "maps"))
        for prog, attach_type in PROGRAMS.items():
            run(["bpftool", "cgroup", "attach", str(cgroup), attach_type, "pinned", str(pins / "progs" / prog), "multi"])
            attached.append((attach_type, pins / "progs" / prog))
        nftables.apply(config)
    except (RedirectError, OSError) as err:
        _undo(cgroup, pins, attached)
        raise RedirectError(f"eBPF apply failed and was rolled back: {err}") from err


def _reconfigure(config: RedirectConfig, cgroup: Path, pins: Path) -> bool:
    """Rewrite the maps (and table) in place when this build's programs are all attached.

    The programs stay attached throughout, so there is no moment without
    capture. On failure the maps are put back as they were. ``False`` when
    in-place is not possible (other build, a program missing or detached).
    """
    maps, progs = pins / "maps", pins / "progs"
    try:
        on_cgroup = _attached_ids(cgroup)
        if not all((progs / p).exists() and _prog_id(progs / p) in on_cgroup for p in PROGRAMS):
            return False
        have = {name: _dump(maps, name) for name in CONFIG_MAPS}
    except RedirectError:
        return False
    if have["tm_build"].get(struct.pack("=I", 0)) != _build_id():
        return False
    try:
        _batch(_rewrite(maps, have, _entries(config)))
        nftables.apply(config)
    except RedirectError as err:
        now = {name: _dump(maps, name) for name in CONFIG_MAPS}
        before = [(name, k, v) for name in CONFIG_MAPS for k, v in have[name].items()]
        _batch(_rewrite(maps, now, before))
        raise RedirectError(f"eBPF apply failed and was rolled back: {err}") from err
    return True


def _undo(cgroup: Path, pins: Path, attached: list[tuple[str, Path]]) -> None:
    for attach_type, prog in reversed(attached):
        run(["bpftool", "cgroup", "detach", str(cgroup), attach_type, "pinned", str(prog)], check=False)
    if pins.exists():
        shutil.rmtree(pins, ignore_errors=True)


def remove(config: RedirectConfig) -> None:
    """Detach the programs from the cgroup, unpin everything, delete the nft table.

    If the cgroup is already gone (the pod ended), the kernel has detached
    the programs with it; only the pins and the table are left to remove.
    """
    try:
        cgroup = cgroup_path(config)
    except RedirectError:
        if not config.cgroup or Path(config.cgroup).exists():
            raise
        pins = pin_dir(config, Path(config.cgroup))
        shutil.rmtree(pins, ignore_errors=True)
        nftables.remove(config)
        return
    pins = pin_dir(config, cgroup)
    progs = pins / "progs"
    if pins.exists():
        on_cgroup = _attached_ids(cgroup)
        present = [(t, progs / p) for p, t in PROGRAMS.items() if (progs / p).exists()]
        _undo(cgroup, pins, [(t, p) for t, p in present if _prog_id(p) in on_cgroup])
    nftables.remove(config)


def show(config: RedirectConfig) -> str:
    """The programs attached to the cgroup, the configuration maps and the nft table."""
    cgroup = cgroup_path(config)
    pins = pin_dir(config, cgroup)
    parts = [f"# cgroup {cgroup}", run(["bpftool", "cgroup", "show", str(cgroup)], check=False).stdout.rstrip()]
    if pins.exists():
        for name in CONFIG_MAPS:
            dump = run(["bpftool", "map", "dump", "pinned", str(pins / "maps" / name)], check=False)
            parts += [f"# map {name}", dump.stdout.rstrip()]
    else:
        parts.append(f"# nothing pinned at {pins}")
    parts += ["# nft", nftables.show(config).rstrip()]
    return "\n".join(parts) + "\n"


def verify(config: RedirectConfig) -> list[str]:
    """What differs from ``config``: missing programs or attachments, map contents, nft table."""
    cgroup = cgroup_path(config)
    pins = pin_dir(config, cgroup)
    problems: list[str] = []
    on_cgroup = _attached_ids(cgroup)
    for prog, attach_type in PROGRAMS.items():
        path = pins / "progs" / prog
        if not path.exists():
            problems.append(f"- program {prog} is not pinned at {path}")
        elif _prog_id(path) not in on_cgroup:
            problems.append(f"- program {prog} is not attached to {cgroup} ({attach_type})")
    if not problems:
        problems += _verify_maps(config, pins / "maps")
    problems += nftables.verify(config)
    return problems


def _verify_maps(config: RedirectConfig, maps: Path) -> list[str]:
    want: dict[str, dict[bytes, bytes]] = {name: {} for name in CONFIG_MAPS}
    for name, key, value in _entries(config):
        want[name][key] = value
    problems = []
    for name in CONFIG_MAPS:
        have = _dump(maps, name)
        if have != want[name]:
            problems.append(f"- map {name} holds {_show(have)}, wanted {_show(want[name])}")
    return problems


def _show(entries: dict[bytes, bytes]) -> str:
    return "{" + ", ".join(f"{k.hex()}: {v.hex()}" for k, v in sorted(entries.items())) + "}"
