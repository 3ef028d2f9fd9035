"""The apiserver answers gRPC health and lists its services through reflection, so a
generic client (grpcurl, grpc_cli) can discover the API."""

from __future__ import annotations

import grpc
from backends import ON_BOTH_BACKENDS
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from skiff.api.kinds import KINDS
from skiff.health import grpc_healthy

pytestmark = ON_BOTH_BACKENDS


async def test_health_and_reflection_list_every_kinds_service(api_cluster) -> None:
    address = api_cluster.apiserver.address
    assert await grpc_healthy(address)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        await call.done_writing()
    listed = {s.name for s in reply.list_services_response.service}
    expected = {f"skiff.api.v1.{kind.service_name}" for kind in KINDS}
    assert expected <= listed, sorted(expected - listed)
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed
