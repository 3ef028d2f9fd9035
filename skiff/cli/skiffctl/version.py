"""``version``: the client's version and what the server says about itself.

The apiserver has no version call; it serves gRPC health and reflection, so the
server line says whether it answers, its health, and how many of the API's services
it offers (reflection), which is what tells two Skiff builds apart today.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import skiff
from skiff.api import errors
from skiff.api.manifest import dump_yaml
from skiff.cli.skiffctl.common import Context

API_PACKAGE = "skiff.api.v1."
PROBE_TIMEOUT = 3.0


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("version", parents=[common],
                                   help="print the client and server versions")
    parser.add_argument("--client", action="store_true", help="the client's only")
    parser.add_argument("-o", "--output", default="", choices=("", "json", "yaml"))
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class ServerInfo:
    address: str
    health: str
    api_services: int

    def __str__(self) -> str:
        return (f"skiff-apiserver at {self.address} ({self.health}, "
                f"{self.api_services} API services)")


async def probe(address: str) -> ServerInfo:
    """Ask the apiserver at ``address`` for its health and its services."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            raise errors.from_grpc(e) from None
        health = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return ServerInfo(address, health, await _count_api_services(channel))


async def _count_api_services(channel: grpc.aio.Channel) -> int:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    call = stub.ServerReflectionInfo(iter([request]), timeout=PROBE_TIMEOUT)
    try:
        async for response in call:
            services = response.list_services_response.service
            return sum(1 for s in services if s.name.startswith(API_PACKAGE))
    except grpc.aio.AioRpcError:
        return 0
    return 0


async def run(ctx: Context, args: argparse.Namespace) -> int:
    client_version = f"v{skiff.__version__}"
    if args.output:
        doc: dict[str, Any] = {"clientVersion": {"gitVersion": client_version}}
        if not args.client:
            doc["serverVersion"] = asdict(await probe(ctx.client.address))
        ctx.out.write(json.dumps(doc, indent=2) + "\n" if args.output == "json"
                      else dump_yaml(doc))
        return 0
    ctx.echo(f"Client Version: {client_version}")
    if not args.client:
        ctx.echo(f"Server Version: {await probe(ctx.client.address)}")
    return 0
