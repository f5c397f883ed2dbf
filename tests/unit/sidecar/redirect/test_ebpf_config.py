"""eBPF mode without the kernel: map contents as the C programs read them, and early refusals."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sidecar.redirect import RedirectConfig, RedirectError
from sidecar.redirect import ebpf
from sidecar.redirect.config import parse_cidrs

POD = "/sys/fs/cgroup/kubepods/pod-x"  # never touched by these tests


def _entries(config: RedirectConfig) -> dict[str, list[tuple[bytes, bytes]]]:
    out: dict[str, list[tuple[bytes, bytes]]] = {}
    for line in ebpf._map_updates(config, Path("/m")):
        words = line.split()
        k, v = words.index("key"), words.index("value")
        key = bytes.fromhex("".join(words[k + 2 : v]))
        out.setdefault(Path(words[3]).name, []).append((key, bytes.fromhex("".join(words[v + 2 :]))))
    return out


def test_config_map_matches_struct_config_in_the_c_source():
    cfg = RedirectConfig(mode="ebpf", cgroup=POD, proxy_uid=2000, proxy_gid=2001, outbound_port=16001, ipv6="drop")
    [(key, value)] = _entries(cfg)["tm_config"]
    assert key == b"\0\0\0\0"
    # struct config { proxy_uid, proxy_gid, outbound_port, capture_all, ipv6_drop } (host order)
    assert struct.unpack("=5I", value) == (2000, 2001, 16001, 1, 1)


def test_exclusions_and_ranges_become_lpm_keys_with_addresses_in_network_order():
    cfg = RedirectConfig(
        mode="ebpf",
        cgroup=POD,
        exclude_outbound_ports=(5432,),
        outbound_cidrs=parse_cidrs("10.0.0.0/8,fd00::/8", "--outbound-cidrs"),
        exclude_outbound_cidrs=parse_cidrs("10.96.0.0/12", "--exclude-outbound-cidrs"),
    )
    maps = _entries(cfg)
    assert maps["tm_excl_ports"] == [(struct.pack("=H", 5432), b"\x01")]
    assert maps["tm_incl4"] == [(struct.pack("=I", 8) + bytes([10, 0, 0, 0]), b"\x01")]
    assert maps["tm_excl4"] == [(struct.pack("=I", 12) + bytes([10, 96, 0, 0]), b"\x01")]
    assert maps["tm_incl6"] == [(struct.pack("=I", 8) + bytes([0xFD]) + bytes(15), b"\x01")]
    assert struct.unpack("=5I", maps["tm_config"][0][1])[3] == 0  # capture_all off: a list was given


def test_a_directory_that_is_not_a_cgroup_is_refused_before_anything_is_loaded(tmp_path):
    with pytest.raises(RedirectError, match=f"--cgroup: {tmp_path} is not a cgroup v2 directory"):
        ebpf.apply(RedirectConfig(mode="ebpf", cgroup=str(tmp_path)))


def test_a_cgroup_v1_directory_is_refused():
    v1 = next((p for p in Path("/sys/fs/cgroup").glob("*") if (p / "cgroup.procs").is_file() and p.name != "unified"), None)
    if v1 is None or not ebpf._mounts() or any(m == str(v1) and t == "cgroup2" for m, t in ebpf._mounts()):
        pytest.skip("no cgroup v1 hierarchy here")
    with pytest.raises(RedirectError, match="cgroup v1 directory; eBPF needs cgroup v2"):
        ebpf.cgroup_path(RedirectConfig(mode="ebpf", cgroup=str(v1)))


def test_the_c_source_ships_in_the_package():
    text = ebpf.SOURCE.read_text()
    for section in ('SEC("cgroup/connect4")', 'SEC("cgroup/connect6")', 'SEC("sockops")', 'SEC("cgroup/getsockopt")'):
        assert section in text


def test_the_root_cgroup_is_refused():
    roots = [m for m, t in ebpf._mounts() if t == "cgroup2"]
    if not roots:
        pytest.skip("no cgroup v2 here")
    with pytest.raises(RedirectError, match="is the root cgroup; capture there would take every process"):
        ebpf.cgroup_path(RedirectConfig(mode="ebpf", cgroup=roots[0]))
