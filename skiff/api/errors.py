"""The one error vocabulary of the API, and its one mapping to and from gRPC codes.

The apiserver raises these and its gRPC edge turns them into status codes with
:func:`to_grpc`; clients turn a failed call back into the same exception with
:func:`from_grpc`. So "the object changed under you" is ``Conflict`` everywhere, and
``ABORTED`` only on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


class APIError(Exception):
    """An error the API reports to its caller; ``code`` is what goes on the wire."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


class NotFound(APIError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(APIError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(APIError):
    """A stale resource_version, a failed precondition, a pod bound twice."""

    code = grpc.StatusCode.ABORTED


class Gone(APIError):
    """Kubernetes' 410: the requested resource version has been compacted."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unavailable(APIError):
    """The store (or the server) cannot answer now; the caller should retry."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(APIError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Forbidden(APIError):
    """Refused by policy: creating in a terminating namespace, say."""

    code = grpc.StatusCode.PERMISSION_DENIED


class BadRequest(APIError):
    """Malformed request parameters (a selector that does not parse, a bad token)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


@dataclass(frozen=True)
class FieldError:
    """One invalid field: its path (``spec.containers[0].image``) and what is wrong."""

    field: str
    detail: str

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}"


class Invalid(APIError):
    """An object that fails validation; the message names every offending field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, kind: str, name: str, errors: list[FieldError]) -> None:
        self.kind, self.name, self.errors = kind, name, errors
        listed = "; ".join(str(e) for e in errors)
        super().__init__(f'{kind} "{name}" is invalid: {listed}' if name
                         else f"{kind} is invalid: {listed}")


_BY_CODE: dict[grpc.StatusCode, type[APIError]] = {
    cls.code: cls for cls in (NotFound, AlreadyExists, Conflict, Gone, Unavailable,
                              Unauthenticated, Forbidden, BadRequest)
}


def to_grpc(error: APIError) -> tuple[grpc.StatusCode, str]:
    """The status code and message a server sends for ``error``."""
    return error.code, str(error)


def from_grpc(error: grpc.RpcError) -> APIError:
    """The API error a failed call stands for (``APIError`` for codes outside the table).

    INVALID_ARGUMENT comes back as ``BadRequest``: the field names are in its message.
    DEADLINE_EXCEEDED counts as ``Unavailable``: the caller may retry.
    """
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    detail = error.details() if hasattr(error, "details") else str(error)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        code = grpc.StatusCode.UNAVAILABLE
    cls = _BY_CODE.get(code)
    if cls is None:
        result = APIError(f"{code.name}: {detail}")
        result.code = code
        return result
    return cls(detail or code.name)
