"""The committed gRPC stubs match ca.proto and load under the installed protobuf runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
PROTO = "sdk/proto/trustmesh/ca/v1/ca.proto"


def test_committed_stubs_are_what_protoc_generates(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", PROTO],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for name in ("ca_pb2.py", "ca_pb2.pyi", "ca_pb2_grpc.py"):
        generated = (tmp_path / "sdk/proto/trustmesh/ca/v1" / name).read_text()
        committed = (ROOT / "sdk/proto/trustmesh/ca/v1" / name).read_text()
        assert generated == committed, f"{name} is stale: run scripts/gen-protos"


def test_stubs_pass_the_runtime_version_guard():
    # A fresh interpreter, so the guard in ca_pb2 really runs at import.
    code = "from sdk.proto import ca_pb2, ca_pb2_grpc; print(ca_pb2.DESCRIPTOR.package, hasattr(ca_pb2_grpc, 'CAStub'))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["trustmesh.ca.v1", "True"]
