import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogsRequest(_message.Message):
    __slots__ = ("namespace", "pod", "container", "tail_lines", "follow", "timestamps", "previous")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    pod: str
    container: str
    tail_lines: int
    follow: bool
    timestamps: bool
    previous: bool
    def __init__(self, namespace: _Optional[str] = ..., pod: _Optional[str] = ..., container: _Optional[str] = ..., tail_lines: _Optional[int] = ..., follow: _Optional[bool] = ..., timestamps: _Optional[bool] = ..., previous: _Optional[bool] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("namespace", "pod", "container", "command", "timeout")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    pod: str
    container: str
    command: _containers.RepeatedScalarFieldContainer[str]
    timeout: float
    def __init__(self, namespace: _Optional[str] = ..., pod: _Optional[str] = ..., container: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., timeout: _Optional[float] = ...) -> None: ...

class ExecResponse(_message.Message):
    __slots__ = ("stdout", "stderr", "exit_code")
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    stdout: bytes
    stderr: bytes
    exit_code: int
    def __init__(self, stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exit_code: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class ContainerStats(_message.Message):
    __slots__ = ("name", "cpu_nanocores", "memory_working_set_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_NANOCORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_WORKING_SET_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    cpu_nanocores: int
    memory_working_set_bytes: int
    def __init__(self, name: _Optional[str] = ..., cpu_nanocores: _Optional[int] = ..., memory_working_set_bytes: _Optional[int] = ...) -> None: ...

class PodStats(_message.Message):
    __slots__ = ("namespace", "name", "uid", "containers", "cpu_nanocores", "memory_working_set_bytes")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    CPU_NANOCORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_WORKING_SET_BYTES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    uid: str
    containers: _containers.RepeatedCompositeFieldContainer[ContainerStats]
    cpu_nanocores: int
    memory_working_set_bytes: int
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., uid: _Optional[str] = ..., containers: _Optional[_Iterable[_Union[ContainerStats, _Mapping]]] = ..., cpu_nanocores: _Optional[int] = ..., memory_working_set_bytes: _Optional[int] = ...) -> None: ...

class NodeStats(_message.Message):
    __slots__ = ("name", "cpu_nanocores", "memory_working_set_bytes", "cpu_capacity_nanocores", "memory_capacity_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_NANOCORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_WORKING_SET_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_CAPACITY_NANOCORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    cpu_nanocores: int
    memory_working_set_bytes: int
    cpu_capacity_nanocores: int
    memory_capacity_bytes: int
    def __init__(self, name: _Optional[str] = ..., cpu_nanocores: _Optional[int] = ..., memory_working_set_bytes: _Optional[int] = ..., cpu_capacity_nanocores: _Optional[int] = ..., memory_capacity_bytes: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("node", "pods", "time")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PODS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    node: NodeStats
    pods: _containers.RepeatedCompositeFieldContainer[PodStats]
    time: _timestamp_pb2.Timestamp
    def __init__(self, node: _Optional[_Union[NodeStats, _Mapping]] = ..., pods: _Optional[_Iterable[_Union[PodStats, _Mapping]]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
