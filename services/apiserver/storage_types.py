"""What the apiserver's storage layer speaks (Kubernetes' ``storage`` interfaces and
errors, for Skiff): where objects live (keys), how they are stored (:func:`encode`,
:func:`decode`: the store's ``mod_revision`` is the resource version), the values
:class:`~services.apiserver.storage.Storage` returns and the errors it raises, the one
table mapping store errors to the API's (:func:`map_error`), and the retry backoff.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import grpc
from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.kinds import Kind

REGISTRY = "/registry"
#: Codes after which another endpoint (or the same one, later) may answer.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
#: Backoff between attempts: the first waits up to BACKOFF_BASE, doubling to BACKOFF_CAP.
BACKOFF_BASE = 0.05
BACKOFF_CAP = 1.0


# --------------------------------------------------------------------------- keys


def kind_prefix(kind: Kind, namespace: str = "") -> str:
    """Where objects of ``kind`` (in ``namespace``, if given) live; ends with ``/``."""
    if namespace and kind.namespaced:
        return f"{REGISTRY}/{kind.plural}/{namespace}/"
    return f"{REGISTRY}/{kind.plural}/"


def object_key(kind: Kind, namespace: str, name: str) -> str:
    """The key of one object: ``/registry/pods/default/web-0``, ``/registry/nodes/n1``."""
    if kind.namespaced:
        return f"{REGISTRY}/{kind.plural}/{namespace}/{name}"
    return f"{REGISTRY}/{kind.plural}/{name}"


def key_after(key: str) -> str:
    """The smallest key greater than ``key``: where the next page of a list starts."""
    return key + "\0"


def prefix_end(prefix: str) -> str:
    """etcd's range end for every key that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def key_bytes(key: str) -> bytes:
    """A key as the store takes it."""
    return key.encode()


# -------------------------------------------------------------------------- codec


def encode(obj: Message) -> bytes:
    """An object as stored: protobuf bytes, deterministic, without its resource version.

    Deterministic so that equal objects are equal bytes (map fields in key order): a
    retried write recognises its own earlier success by comparing bytes.
    """
    if obj.metadata.resource_version:  # type: ignore[attr-defined]
        copy = type(obj)()
        copy.CopyFrom(obj)
        copy.metadata.resource_version = ""  # type: ignore[attr-defined]
        obj = copy
    return obj.SerializeToString(deterministic=True)


def decode(kind: Kind, value: bytes, revision: int) -> Message:
    """A stored value as an object of ``kind`` whose resource version is ``revision``."""
    obj = kind.message()
    obj.ParseFromString(value)
    obj.metadata.resource_version = str(revision)  # type: ignore[attr-defined]
    return obj


# ------------------------------------------------------------------------- values


@dataclass(frozen=True)
class StoredObject:
    """One key as read from the store."""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@dataclass(frozen=True)
class ListResult:
    """One page of a list: its items in key order, the revision it was read at, and
    whether more keys follow (read them from ``key_after(items[-1].key)``)."""

    items: tuple[StoredObject, ...]
    revision: int
    more: bool


ChangeType = Literal["PUT", "DELETE"]


@dataclass(frozen=True)
class Change:
    """One key changed by one revision; ``prev_value`` is the value before (if any)."""

    type: ChangeType
    key: str
    value: bytes
    prev_value: bytes | None
    mod_revision: int


@dataclass(frozen=True)
class WatchBatch:
    """What one watch response reports: the changes (in revision order) up to and
    including ``revision``. No changes is a progress notification: nothing in the
    prefix changed up to ``revision``."""

    revision: int
    changes: tuple[Change, ...] = ()


class KeyExists(errors.AlreadyExists):
    """A create found ``key`` already there (the object itself, or an ``absent`` key)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key} already exists")
        self.key = key


class GuardMoved(errors.Conflict):
    """A create's ``unchanged`` key was no longer at the revision admission saw."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key} changed since admission read it")
        self.key = key


class KeyConflict(errors.Conflict):
    """An update or delete expected another mod_revision of ``key``; ``current`` is now."""

    def __init__(self, key: str, expected: int, current: StoredObject) -> None:
        super().__init__(f"key {key} was modified: expected revision {expected}, "
                         f"it is at {current.mod_revision}")
        self.key, self.expected, self.current = key, expected, current


class KeyNotFound(errors.NotFound):
    """An update or delete of ``key``, which does not exist (any more)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key} not found")
        self.key = key


class RevisionAhead(errors.Unavailable):
    """A read at a revision the store replica answering has not applied yet."""


# ------------------------------------------------------------------------- errors


#: The one mapping of store errors: (gRPC code, a fragment of etcd's message or "" for
#: any) -> the API error to raise, built from the store's message. First match wins.
_ERROR_TABLE: tuple[tuple[grpc.StatusCode, str, Callable[[str], errors.APIError]], ...] = (
    (grpc.StatusCode.OUT_OF_RANGE, "required revision has been compacted",
     lambda d: errors.Gone(f"too old resource version: the store has compacted it ({d})")),
    # Kubernetes answers a resource version from the future with "Too large resource
    # version" and a retry hint (504): the caller is ahead of this replica, try again.
    (grpc.StatusCode.OUT_OF_RANGE, "future revision",
     lambda d: RevisionAhead(f"too large resource version: the store has not reached "
                             f"it yet ({d})")),
    (grpc.StatusCode.UNAVAILABLE, "", lambda d: errors.Unavailable(f"store unavailable: {d}")),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "",
     lambda d: errors.Unavailable(f"store did not answer in time: {d}")),
    (grpc.StatusCode.INVALID_ARGUMENT, "", lambda d: errors.BadRequest(f"store refused: {d}")),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "",
     lambda d: errors.BadRequest(f"store refused (too large): {d}")),
    (grpc.StatusCode.NOT_FOUND, "", lambda d: errors.NotFound(f"store: {d}")),
    (grpc.StatusCode.FAILED_PRECONDITION, "", lambda d: errors.Conflict(f"store: {d}")),
)


def map_error(error: grpc.RpcError) -> errors.APIError:
    """The API error a failed store call stands for (INTERNAL outside the table)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else str(error)) or code.name
    for table_code, fragment, make in _ERROR_TABLE:
        if code == table_code and fragment in details:
            return make(details)
    result = errors.APIError(f"store error {code.name}: {details}")
    result.code = grpc.StatusCode.INTERNAL
    return result


def raise_if_cancelling(error: grpc.aio.AioRpcError) -> None:
    """Give the current task back a cancellation that grpc.aio turned into CANCELLED.

    A task cancelled while it awaits a unary call gets no CancelledError: grpc.aio's
    own task under the call swallows it, and the call ends CANCELLED. A caller that
    retries on errors would then never stop (a watch cache that could not be stopped).
    """
    task = asyncio.current_task()
    if error.code() == grpc.StatusCode.CANCELLED and task is not None and task.cancelling():
        raise asyncio.CancelledError from error


def backoff(failures: int) -> float:
    """Jittered exponential backoff after ``failures`` consecutive failures (>= 1)."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (failures - 1))
    return random.uniform(ceiling / 2, ceiling)
