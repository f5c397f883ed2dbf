from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignX509SVIDRequest(_message.Message):
    __slots__ = ("csr", "requested_ttl_seconds", "renew_chain", "renew_signature", "dns_names")
    CSR_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RENEW_CHAIN_FIELD_NUMBER: _ClassVar[int]
    RENEW_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DNS_NAMES_FIELD_NUMBER: _ClassVar[int]
    csr: bytes
    requested_ttl_seconds: int
    renew_chain: _containers.RepeatedScalarFieldContainer[bytes]
    renew_signature: bytes
    dns_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, csr: _Optional[bytes] = ..., requested_ttl_seconds: _Optional[int] = ..., renew_chain: _Optional[_Iterable[bytes]] = ..., renew_signature: _Optional[bytes] = ..., dns_names: _Optional[_Iterable[str]] = ...) -> None: ...

class SignX509SVIDResponse(_message.Message):
    __slots__ = ("cert_chain", "spiffe_id", "bundle", "federation")
    CERT_CHAIN_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    cert_chain: _containers.RepeatedScalarFieldContainer[bytes]
    spiffe_id: str
    bundle: Bundle
    federation: FederationScope
    def __init__(self, cert_chain: _Optional[_Iterable[bytes]] = ..., spiffe_id: _Optional[str] = ..., bundle: _Optional[_Union[Bundle, _Mapping]] = ..., federation: _Optional[_Union[FederationScope, _Mapping]] = ...) -> None: ...

class FederationScope(_message.Message):
    __slots__ = ("trust_domains",)
    TRUST_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    trust_domains: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, trust_domains: _Optional[_Iterable[str]] = ...) -> None: ...

class MintJWTSVIDRequest(_message.Message):
    __slots__ = ("audiences", "requested_ttl_seconds")
    AUDIENCES_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    audiences: _containers.RepeatedScalarFieldContainer[str]
    requested_ttl_seconds: int
    def __init__(self, audiences: _Optional[_Iterable[str]] = ..., requested_ttl_seconds: _Optional[int] = ...) -> None: ...

class MintJWTSVIDResponse(_message.Message):
    __slots__ = ("token", "spiffe_id", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    spiffe_id: str
    expires_at: int
    def __init__(self, token: _Optional[str] = ..., spiffe_id: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class FetchBundleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchBundleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Bundle(_message.Message):
    __slots__ = ("trust_domain", "jwks", "sequence", "federated_bundles")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    JWKS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FEDERATED_BUNDLES_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    jwks: bytes
    sequence: int
    federated_bundles: _containers.RepeatedCompositeFieldContainer[Bundle]
    def __init__(self, trust_domain: _Optional[str] = ..., jwks: _Optional[bytes] = ..., sequence: _Optional[int] = ..., federated_bundles: _Optional[_Iterable[_Union[Bundle, _Mapping]]] = ...) -> None: ...
