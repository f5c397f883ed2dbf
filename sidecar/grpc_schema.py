"""gRPC request messages as policy attributes, decoded with the services' descriptors.

The descriptors come from a FileDescriptorSet file named in the sidecar's config
(``grpc.descriptors``), the output of::

    protoc --include_imports --descriptor_set_out=api.binpb api.proto

It is the one source this module takes, chosen over asking the app through gRPC
server reflection: the file is fixed when the pod starts, can be reviewed beside the
policy that reads it, and cannot be changed by the app the policy protects (a
reflection answer comes from that very app, at a time of its choosing).

:meth:`GrpcSchema.message_attributes` parses one request message with the method's
input type (``google.protobuf``, bounded by the caller's message limit and protobuf's
own nesting limit) and returns only the fields a policy reads, as plain values:
strings, numbers, booleans, enum value names, lists for repeated fields, dicts for
maps and sub-messages. ``bytes`` fields are not exposed. A proto3 field without
presence reads as its default when absent (what the app sees), a field with presence
(``optional``, sub-messages) is missing when absent: policy treats it fail-closed.

    >>> from pathlib import Path
    >>> schema = GrpcSchema.load(Path(__file__).parents[1] / "sdk/proto/trustmesh/demo/v1/resource.binpb")
    >>> from sidecar.grpc_wire import GrpcCall
    >>> call = GrpcCall("trustmesh.demo.v1.DynamicResourceService", "FetchResource")
    >>> schema.message_attributes(call, b"\\n\\x07billing\\x12\\x02db", (("appname",),))
    {'appname': 'billing'}
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

from sidecar.errors import ConfigError, GrpcError
from sidecar.grpc_wire import GrpcCall

__all__ = ["GrpcSchema", "FieldPath"]

FieldPath = tuple[str, ...]
_MISSING = object()


class GrpcSchema:
    """The request types of every method in one or more FileDescriptorSets."""

    def __init__(self, descriptor_sets: Iterable[bytes], source: str = "<bytes>") -> None:
        pool = descriptor_pool.DescriptorPool()
        files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        for data in descriptor_sets:
            fds = descriptor_pb2.FileDescriptorSet()
            try:
                fds.ParseFromString(data)
            except DecodeError as err:
                raise ValueError(f"{source}: not a FileDescriptorSet: {err}") from None
            for file in fds.file:
                files.setdefault(file.name, file)
        added: set[str] = set()

        def add(name: str, chain: tuple[str, ...]) -> None:
            if name in added:
                return
            if name in chain:
                raise ValueError(f"{source}: import cycle through {name}")
            file = files.get(name)
            if file is None:
                raise ValueError(f"{source}: {chain[-1]} imports {name}, which the set does not hold "
                                 "(build it with protoc --include_imports)")
            for dependency in file.dependency:
                add(dependency, (*chain, name))
            try:
                pool.Add(file)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{source}: {name}: {err}") from None
            added.add(name)

        for name in files:
            add(name, ())
        self._inputs: dict[tuple[str, str], Any] = {}  # (service, method) -> request message class
        for file in files.values():
            for service in file.service:
                full = f"{file.package}.{service.name}" if file.package else service.name
                described = pool.FindServiceByName(full)
                for method in described.methods:
                    self._inputs[(full, method.name)] = message_factory.GetMessageClass(method.input_type)
        self.source = source

    @classmethod
    def load(cls, *paths: str | Path, field: str = "grpc.descriptors") -> GrpcSchema:
        """Read FileDescriptorSet files; a problem raises ``ConfigError`` naming ``field`` and the file."""
        blobs = []
        for path in paths:
            try:
                blobs.append(Path(path).read_bytes())
            except OSError as err:
                raise ConfigError(field, f"cannot read {path}: {err.strerror}") from err
        try:
            return cls(blobs, ", ".join(map(str, paths)))
        except ValueError as err:
            raise ConfigError(field, str(err)) from err

    @property
    def methods(self) -> tuple[tuple[str, str], ...]:
        """Every (service, method) described, sorted."""
        return tuple(sorted(self._inputs))

    def describes(self, call: GrpcCall) -> bool:
        return (call.service, call.method) in self._inputs

    def field_error(self, call: GrpcCall, path: FieldPath) -> str | None:
        """Why ``path`` names no field of the call's request type (None: it does)."""
        cls = self._inputs.get((call.service, call.method))
        if cls is None:
            return f"no descriptor for {call.service}/{call.method}"
        descriptor = cls.DESCRIPTOR
        index = 0
        while index < len(path):
            if descriptor is None:
                return f"{'.'.join(path[:index])} has no fields"
            field = descriptor.fields_by_name.get(path[index])
            if field is None:
                return f"{descriptor.full_name} has no field {path[index]!r}"
            if _is_map(field):  # the next segment is a key: any key
                value = field.message_type.fields_by_name["value"]
                descriptor = value.message_type if value.type == FieldDescriptor.TYPE_MESSAGE else None
                index += 2
                continue
            nested = field.type == FieldDescriptor.TYPE_MESSAGE and not _repeated(field)
            descriptor = field.message_type if nested else None
            index += 1
        return None

    def message_attributes(self, call: GrpcCall, payload: bytes, paths: Iterable[FieldPath]) -> dict[str, Any]:
        """The fields at ``paths`` of one request message of ``call`` (see the module doc).

        Raises :class:`GrpcError` when the call has no descriptor or the bytes are not a
        message of its request type: either way the policy cannot see what the app would.
        """
        cls = self._inputs.get((call.service, call.method))
        if cls is None:
            raise GrpcError(f"no descriptor for {call.service}/{call.method} in {self.source}")
        message = cls()
        try:
            message.ParseFromString(payload)
        except (DecodeError, RecursionError) as err:
            raise GrpcError(f"request message is not a valid {cls.DESCRIPTOR.full_name}: {err}") from None
        out: dict[str, Any] = {}
        for path in paths:
            if not path:
                return _message_value(message)
            value = _read(message, path)
            if value is _MISSING or value is None:
                continue
            node = out
            for name in path[:-1]:
                node = node.setdefault(name, {})
            node[path[-1]] = value
        return out


def _is_map(field: FieldDescriptor) -> bool:
    return _repeated(field) and field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _read(message: Any, path: FieldPath) -> Any:
    node = message
    index = 0
    while index < len(path):
        field = node.DESCRIPTOR.fields_by_name.get(path[index])
        if field is None:
            return _MISSING
        last = index == len(path) - 1
        if _is_map(field):
            entries = getattr(node, field.name)
            value_field = field.message_type.fields_by_name["value"]
            if last:
                return {str(k): _field_value(value_field, v) for k, v in entries.items()}
            key = path[index + 1]
            try:
                if key not in entries:
                    return _MISSING
                entry = entries[key]
            except (TypeError, ValueError):  # a key of another type than the map's
                return _MISSING
            if index + 1 == len(path) - 1:
                return _field_value(value_field, entry)
            if value_field.type != FieldDescriptor.TYPE_MESSAGE:
                return _MISSING
            node = entry
            index += 2
            continue
        if _repeated(field):
            return [_field_value(field, v) for v in getattr(node, field.name)] if last else _MISSING
        if field.has_presence and not node.HasField(field.name):
            return _MISSING
        value = getattr(node, field.name)
        if last:
            return _field_value(field, value)
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            return _MISSING
        node = value
        index += 1
    return _MISSING


def _field_value(field: FieldDescriptor, value: Any) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE or kind == FieldDescriptor.TYPE_GROUP:
        return _message_value(value)
    if kind == FieldDescriptor.TYPE_ENUM:
        named = field.enum_type.values_by_number.get(value)
        return named.name if named is not None else value
    if kind == FieldDescriptor.TYPE_BYTES:
        return None  # not exposed: policy compares text
    return value


def _message_value(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _field_value(value_field, v) for k, v in value.items()}
        elif _repeated(field):
            out[field.name] = [_field_value(field, v) for v in value]
        else:
            converted = _field_value(field, value)
            if converted is not None:
                out[field.name] = converted
    return out
