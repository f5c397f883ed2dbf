"""Generated gRPC/protobuf stubs for trustmesh wire contracts.

The sources are the ``.proto`` files beside the stubs; ``scripts/gen-protos``
regenerates the stubs (which are committed). Import the CA service messages as::

    from sdk.proto import ca_pb2, ca_pb2_grpc
"""

from sdk.proto.trustmesh.ca.v1 import ca_pb2, ca_pb2_grpc

__all__ = ["ca_pb2", "ca_pb2_grpc"]
