from skiff.store.v1 import kv_pb2 as _kv_pb2
from skiff.store.v1 import rpc_pb2 as _rpc_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Command(_message.Message):
    __slots__ = ("id", "put", "delete_range", "txn", "compaction", "lease_grant", "lease_revoke", "lease_keep_alive", "member_publish", "origin")
    ID_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_RANGE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    COMPACTION_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANT_FIELD_NUMBER: _ClassVar[int]
    LEASE_REVOKE_FIELD_NUMBER: _ClassVar[int]
    LEASE_KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_PUBLISH_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    id: int
    put: _rpc_pb2.PutRequest
    delete_range: _rpc_pb2.DeleteRangeRequest
    txn: _rpc_pb2.TxnRequest
    compaction: _rpc_pb2.CompactionRequest
    lease_grant: _rpc_pb2.LeaseGrantRequest
    lease_revoke: _rpc_pb2.LeaseRevokeRequest
    lease_keep_alive: _rpc_pb2.LeaseKeepAliveRequest
    member_publish: _rpc_pb2.Member
    origin: int
    def __init__(self, id: _Optional[int] = ..., put: _Optional[_Union[_rpc_pb2.PutRequest, _Mapping]] = ..., delete_range: _Optional[_Union[_rpc_pb2.DeleteRangeRequest, _Mapping]] = ..., txn: _Optional[_Union[_rpc_pb2.TxnRequest, _Mapping]] = ..., compaction: _Optional[_Union[_rpc_pb2.CompactionRequest, _Mapping]] = ..., lease_grant: _Optional[_Union[_rpc_pb2.LeaseGrantRequest, _Mapping]] = ..., lease_revoke: _Optional[_Union[_rpc_pb2.LeaseRevokeRequest, _Mapping]] = ..., lease_keep_alive: _Optional[_Union[_rpc_pb2.LeaseKeepAliveRequest, _Mapping]] = ..., member_publish: _Optional[_Union[_rpc_pb2.Member, _Mapping]] = ..., origin: _Optional[int] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("origin", "seq", "commands", "forwarded")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FIELD_NUMBER: _ClassVar[int]
    origin: int
    seq: int
    commands: _containers.RepeatedCompositeFieldContainer[Command]
    forwarded: _containers.RepeatedCompositeFieldContainer[Forwarded]
    def __init__(self, origin: _Optional[int] = ..., seq: _Optional[int] = ..., commands: _Optional[_Iterable[_Union[Command, _Mapping]]] = ..., forwarded: _Optional[_Iterable[_Union[Forwarded, _Mapping]]] = ...) -> None: ...

class Forwarded(_message.Message):
    __slots__ = ("origin", "seq")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    origin: int
    seq: int
    def __init__(self, origin: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("origin", "id", "put", "delete_range", "txn", "compaction", "lease_grant", "lease_revoke", "lease_keep_alive", "member_publish", "error")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_RANGE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    COMPACTION_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANT_FIELD_NUMBER: _ClassVar[int]
    LEASE_REVOKE_FIELD_NUMBER: _ClassVar[int]
    LEASE_KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_PUBLISH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    origin: int
    id: int
    put: _rpc_pb2.PutResponse
    delete_range: _rpc_pb2.DeleteRangeResponse
    txn: _rpc_pb2.TxnResponse
    compaction: _rpc_pb2.CompactionResponse
    lease_grant: _rpc_pb2.LeaseGrantResponse
    lease_revoke: _rpc_pb2.LeaseRevokeResponse
    lease_keep_alive: _rpc_pb2.LeaseKeepAliveResponse
    member_publish: _rpc_pb2.MemberListResponse
    error: Error
    def __init__(self, origin: _Optional[int] = ..., id: _Optional[int] = ..., put: _Optional[_Union[_rpc_pb2.PutResponse, _Mapping]] = ..., delete_range: _Optional[_Union[_rpc_pb2.DeleteRangeResponse, _Mapping]] = ..., txn: _Optional[_Union[_rpc_pb2.TxnResponse, _Mapping]] = ..., compaction: _Optional[_Union[_rpc_pb2.CompactionResponse, _Mapping]] = ..., lease_grant: _Optional[_Union[_rpc_pb2.LeaseGrantResponse, _Mapping]] = ..., lease_revoke: _Optional[_Union[_rpc_pb2.LeaseRevokeResponse, _Mapping]] = ..., lease_keep_alive: _Optional[_Union[_rpc_pb2.LeaseKeepAliveResponse, _Mapping]] = ..., member_publish: _Optional[_Union[_rpc_pb2.MemberListResponse, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class KeyHistory(_message.Message):
    __slots__ = ("revisions",)
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    revisions: _containers.RepeatedCompositeFieldContainer[_kv_pb2.KeyValue]
    def __init__(self, revisions: _Optional[_Iterable[_Union[_kv_pb2.KeyValue, _Mapping]]] = ...) -> None: ...

class LeaseState(_message.Message):
    __slots__ = ("id", "ttl")
    ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    id: int
    ttl: int
    def __init__(self, id: _Optional[int] = ..., ttl: _Optional[int] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("revision", "compact_revision", "keys", "leases", "members", "results", "applied_batches", "forgotten")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    revision: int
    compact_revision: int
    keys: _containers.RepeatedCompositeFieldContainer[KeyHistory]
    leases: _containers.RepeatedCompositeFieldContainer[LeaseState]
    members: _containers.RepeatedCompositeFieldContainer[_rpc_pb2.Member]
    results: _containers.RepeatedCompositeFieldContainer[Result]
    applied_batches: int
    forgotten: _containers.RepeatedCompositeFieldContainer[Forgotten]
    def __init__(self, revision: _Optional[int] = ..., compact_revision: _Optional[int] = ..., keys: _Optional[_Iterable[_Union[KeyHistory, _Mapping]]] = ..., leases: _Optional[_Iterable[_Union[LeaseState, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[_rpc_pb2.Member, _Mapping]]] = ..., results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ..., applied_batches: _Optional[int] = ..., forgotten: _Optional[_Iterable[_Union[Forgotten, _Mapping]]] = ...) -> None: ...

class Forgotten(_message.Message):
    __slots__ = ("origin", "id")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    origin: int
    id: int
    def __init__(self, origin: _Optional[int] = ..., id: _Optional[int] = ...) -> None: ...
