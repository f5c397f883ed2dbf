from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FetchResourceRequest(_message.Message):
    __slots__ = ("appname", "resource_id")
    APPNAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    appname: str
    resource_id: str
    def __init__(self, appname: _Optional[str] = ..., resource_id: _Optional[str] = ...) -> None: ...

class ListResourcesRequest(_message.Message):
    __slots__ = ("appname", "prefix")
    APPNAME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    appname: str
    prefix: str
    def __init__(self, appname: _Optional[str] = ..., prefix: _Optional[str] = ...) -> None: ...

class PutResourceRequest(_message.Message):
    __slots__ = ("appname", "resource")
    APPNAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    appname: str
    resource: Resource
    def __init__(self, appname: _Optional[str] = ..., resource: _Optional[_Union[Resource, _Mapping]] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("appname", "resource_id", "content", "labels", "version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    APPNAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    appname: str
    resource_id: str
    content: bytes
    labels: _containers.ScalarMap[str, str]
    version: int
    def __init__(self, appname: _Optional[str] = ..., resource_id: _Optional[str] = ..., content: _Optional[bytes] = ..., labels: _Optional[_Mapping[str, str]] = ..., version: _Optional[int] = ...) -> None: ...

class PutResourcesSummary(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: int
    def __init__(self, stored: _Optional[int] = ...) -> None: ...
