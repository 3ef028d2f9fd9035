"""``skiff-store``: run one store replica (flags -> config -> run)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.store.config import StoreConfig, parse_args
from services.store.disk import Disk
from services.store.leader import LeaderDuties
from services.store.lessor import Lessor
from services.store.raft import Replica, ReplicaOptions
from services.store.server import SERVICE_NAMES, Context, add_services
from services.store.validation import MAX_REQUEST_BYTES
from skiff import metrics
from skiff.daemon import run, wait_for_signal
from skiff.logging import configure
from skiff.store.v1 import raft_pb2, rpc_pb2
from skiff.tasks import spawn

#: How often health is re-evaluated (a leader known, caught up).
HEALTH_PERIOD = 0.1


async def serve(config: StoreConfig) -> None:
    """Run the replica until SIGTERM or SIGINT."""
    log = configure("store", config.log_level, member=config.name)
    # Raft and gRPC both run on this thread; a short GIL switch interval keeps it from
    # waiting the default 5 ms for a dump being written, or for gRPC's poller thread.
    sys.setswitchinterval(0.0005)
    # The store keeps many long-lived objects; collect the young generation less often
    # so request handling does not keep paying for scans of them.
    gc.set_threshold(20_000, 20, 20)
    loop = asyncio.get_running_loop()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    disk = Disk.from_environment(unsafe_no_fsync=config.unsafe_no_fsync)
    if config.unsafe_no_fsync:
        log.warning("--unsafe-no-fsync: nothing is synced to disk; a power loss or OS crash "
                    "can lose acknowledged writes")
    own = config.member
    replica = Replica(ReplicaOptions(
        self_address=own.peer_address,
        peer_addresses=[m.peer_address for m in config.initial_cluster if m != own],
        journal_file=str(config.data_dir / "journal"),
        dump_file=str(config.data_dir / "snapshot"),
        password=config.peer_password,
        timings=config.timings,
        log_compaction_entries=config.snapshot_count,
        disk=disk,
    ), loop=loop)
    lessor = Lessor()
    replica.add_apply_hook(lessor.observe)
    ctx = Context(config, replica, lessor)

    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES + 512 * 1024),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.so_reuseport", 0),
    ])
    add_services(server, ctx)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    for url in config.client_urls:
        host, port = metrics.parse_url(url)
        try:
            server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            log.error("cannot listen for clients", url=url)
            replica.destroy()
            raise SystemExit(f"skiff-store: cannot listen on {url} (address in use?)") from None
    await server.start()
    gc.freeze()  # what exists now lives as long as the process: never scan it again
    if config.metrics_url:
        metrics.serve(config.metrics_url)
    log.info("serving", client_urls=list(config.client_urls), peer_url=own.peer_url,
             member_id=f"{own.id:x}", cluster_id=f"{config.cluster_id:x}")

    tasks = [
        spawn(LeaderDuties(config, replica, lessor).run(), name="leader-duties"),
        spawn(_track_health(replica, health_servicer), name="health"),
        spawn(_publish_member(config, ctx), name="publish-member"),
    ]
    await wait_for_signal()
    log.info("stopping")
    await health_servicer.enter_graceful_shutdown()
    for task in tasks:
        task.cancel()
    await server.stop(grace=1.0)
    replica.destroy()


async def _track_health(replica: Replica, servicer: health.aio.HealthServicer) -> None:
    """SERVING while a leader is known and this replica has caught up, as etcd's /health."""
    serving = None
    while True:
        now = replica.ready
        if now != serving:
            serving = now
            status = (health_pb2.HealthCheckResponse.SERVING if now
                      else health_pb2.HealthCheckResponse.NOT_SERVING)
            for name in ("", *SERVICE_NAMES):
                await servicer.set(name, status)
        await asyncio.sleep(HEALTH_PERIOD)


async def _publish_member(config: StoreConfig, ctx: Context) -> None:
    """Record this member's client URLs in the replicated state, for MemberList."""
    own = config.member
    member = rpc_pb2.Member(ID=own.id, name=own.name, peerURLs=[own.peer_url],
                            clientURLs=list(config.client_urls))
    while True:
        with contextlib.suppress(Exception):
            await ctx.propose(raft_pb2.Command(member_publish=member))
            return
        await asyncio.sleep(0.5)


def main(argv: list[str] | None = None) -> None:
    run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
