"""The floor of the store's put throughput: three grpc.aio servers that do nothing.

Each member is a process serving etcd's KV and Maintenance services the way the store's
replicas serve them (grpc.aio on uvloop, one port each) but answering at once: no
validation, no raft, no state. ``bench/store.py --start all`` runs the same closed-loop
put load against them as against the store and etcd, so a report can tell how much of
the store's cost is Python's gRPC server itself. Only ``put_throughput`` is meaningful
here (nothing is stored, so there is nothing to read or watch).

A :class:`~skiff.testing.processes.ProcessCluster`, as the store's and etcd's clusters.

    python bench/grpc_floor.py --port 2379 [--leader]   # one member, by hand
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc
from skiff.testing.processes import LOOPBACK, Daemon, ProcessCluster, free_port

#: The member id every member reports as leader (the first member's own id).
LEADER_ID = 1


class _KV(rpc_pb2_grpc.KVServicer):
    async def Put(self, request, context):
        return rpc_pb2.PutResponse()

    async def Range(self, request, context):
        return rpc_pb2.RangeResponse()

    async def DeleteRange(self, request, context):
        return rpc_pb2.DeleteRangeResponse()


class _Maintenance(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, member_id: int) -> None:
        self._member_id = member_id

    async def Status(self, request, context):
        response = rpc_pb2.StatusResponse(version="floor", leader=LEADER_ID)
        response.header.member_id = self._member_id
        return response


async def serve(port: int, member_id: int) -> None:
    server = grpc.aio.server()
    rpc_pb2_grpc.add_KVServicer_to_server(_KV(), server)
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(_Maintenance(member_id), server)
    server.add_insecure_port(f"{LOOPBACK}:{port}")
    await server.start()
    await server.wait_for_termination()


@dataclass
class FloorMember:
    name: str
    client_port: int
    daemon: Daemon

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.client_port}"


class FloorCluster(ProcessCluster):
    """``size`` do-nothing members, logs under ``base_dir``; member 0 claims to lead."""

    kind = "floor member"

    def __init__(self, base_dir: Path, *, size: int = 3) -> None:
        base_dir.mkdir(parents=True, exist_ok=True)
        self.members = []
        for i in range(size):
            port = free_port()
            argv = [sys.executable, str(Path(__file__).resolve()), "--port", str(port),
                    "--member-id", str(LEADER_ID + i)]
            self.members.append(FloorMember(f"n{i}", port,
                                            Daemon(f"n{i}", argv, base_dir / f"n{i}.log")))

    async def _healthy(self, endpoint: str) -> bool:
        async with grpc.aio.insecure_channel(endpoint) as channel:
            await rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest(),
                                                               timeout=1.0)
        return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--member-id", type=int, default=LEADER_ID)
    args = p.parse_args()
    import uvloop

    uvloop.run(serve(args.port, args.member_id))


if __name__ == "__main__":
    main()
