"""Streams whose responses may come already serialized.

A watch sends the same event to many streams. Serializing it once and handing every
stream the bytes (the store's shared watch responses, the apiserver's encoded watch
events; Kubernetes' cacher does the same with its ``CachingObject``) saves a
serialization per stream per event. gRPC's generated registration serializes with
the message's ``SerializeToString``; :func:`accepting_bytes` makes a method handler
whose serializer passes bytes through and serializes anything else as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc


def passthrough(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """A response serializer: bytes as they are, messages through ``serialize``."""

    def serializer(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serialize(response)

    return serializer


def accepting_bytes(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` with a response serializer that also takes pre-serialized bytes."""
    serialize = handler.response_serializer or (lambda message: message.SerializeToString())
    return handler._replace(response_serializer=passthrough(serialize))  # type: ignore[attr-defined]
