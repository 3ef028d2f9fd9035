"""Chaos: cut the power of store replicas under load; nothing acknowledged may be lost.

Three real replicas log every sync they make (``SKIFF_STORE_SYNC_LOG``). Several
clients put distinct keys, remembering each acknowledged put and its revision. At a
random moment the replicas are SIGKILLed and their files left as a power loss could
leave them (``skiff.testing.power_loss``: cut back to what was synced, part of the
unsynced tail kept and garbled, names never made durable removed). They restart; a
leader must be elected, every acknowledged put must be there with its value at its
revision, and the store's revision must not be below the highest acknowledged one.

Variants: all three lose power (20 seeds), only two do (the third keeps running), and
all three run with ``--unsafe-no-fsync``, where the same check must find lost writes
(the test can fail).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc
from skiff.testing.power_loss import Acked, Cut, apply_power_loss, find_losses
from skiff.testing.processes import StoreCluster, wait_for

#: Names the sync log for the replicas (``services.store.disk.SYNC_LOG_ENV``; tests do
#: not import services).
SYNC_LOG_ENV = "SKIFF_STORE_SYNC_LOG"
PREFIX = b"/power/"
PREFIX_END = PREFIX[:-1] + bytes([PREFIX[-1] + 1])
WRITERS = 6
#: Acknowledged puts before the power can go, then a random stretch of further writing.
MIN_ACKED = 30
WRITE_SECONDS = (0.1, 1.5)
CALL_TIMEOUT = 2.0
RETRY_BACKOFF = 0.02
#: Dumps and log compactions happen within the few seconds of writes, so the power also
#: goes mid-dump and mid-compaction.
STORE_ARGS = ["--snapshot-count", "40"]
HEALTHY_TIMEOUT = 45.0
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50),
                   ("grpc.min_reconnect_backoff_ms", 50),
                   ("grpc.max_reconnect_backoff_ms", 200)]


@dataclass
class Run:
    acked: dict[bytes, Acked]
    losses: list[str]
    cut_bytes: int


async def write(index: int, endpoints: list[str], acked: dict[bytes, Acked], seed: int) -> None:
    """Put fresh keys one at a time, moving to the next replica when a call fails."""
    channels = [grpc.aio.insecure_channel(e, options=CHANNEL_OPTIONS) for e in endpoints]
    stubs = [rpc_pb2_grpc.KVStub(c) for c in channels]
    current = index % len(stubs)
    try:
        for seq in itertools.count():
            key = PREFIX + f"{index}/{seq}".encode()
            value = f"seed {seed} writer {index} put {seq}".encode()
            try:
                response = await stubs[current].Put(rpc_pb2.PutRequest(key=key, value=value),
                                                    timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError:
                current = (current + 1) % len(stubs)
                await asyncio.sleep(RETRY_BACKOFF)
                continue
            acked[key] = Acked(value, response.header.revision)
    finally:
        for channel in channels:
            await channel.close(grace=None)


async def read_all(cluster: StoreCluster) -> tuple[dict[bytes, tuple[bytes, int]], int]:
    """Every key under PREFIX (value, mod_revision) and the revision, read linearizably."""

    async def attempt() -> tuple[dict[bytes, tuple[bytes, int]], int] | None:
        for member in cluster.members:
            async with grpc.aio.insecure_channel(member.endpoint) as channel:
                try:
                    response = await rpc_pb2_grpc.KVStub(channel).Range(
                        rpc_pb2.RangeRequest(key=PREFIX, range_end=PREFIX_END), timeout=5.0)
                except grpc.aio.AioRpcError:
                    continue
            return ({kv.key: (kv.value, kv.mod_revision) for kv in response.kvs},
                    response.header.revision)
        return None

    return await wait_for(attempt, timeout=HEALTHY_TIMEOUT, what="a linearizable read")


async def power_loss_run(base: Path, seed: int, *, victims: int = 3,
                         unsafe_no_fsync: bool = False) -> Run:
    """One run: write, cut the power of ``victims`` replicas, restart, check."""
    rng = random.Random(seed)
    sync_log = base / "syncs.log"
    cluster = StoreCluster(base / "store", extra_args=STORE_ARGS, unsafe_no_fsync=unsafe_no_fsync,
                           env={SYNC_LOG_ENV: str(sync_log)})
    acked: dict[bytes, Acked] = {}
    cluster.start()
    try:
        await cluster.wait_healthy(timeout=HEALTHY_TIMEOUT)
        endpoints = cluster.endpoints
        writers = [asyncio.create_task(write(i, endpoints, acked, seed)) for i in range(WRITERS)]
        try:
            async def enough() -> bool:
                return len(acked) >= MIN_ACKED

            await wait_for(enough, timeout=30.0, what=f"{MIN_ACKED} acknowledged puts")
            # The power goes at a random moment of the load: the moment is the point.
            await asyncio.sleep(rng.uniform(*WRITE_SECONDS))
            down = sorted(rng.sample(range(len(cluster.members)), victims))
            for index in down:
                cluster.kill(index)
        finally:
            for task in writers:
                task.cancel()
            await asyncio.gather(*writers, return_exceptions=True)
        plan = apply_power_loss([cluster.members[i].data_dir for i in down], sync_log, rng)
        for index in down:
            cluster.members[index].daemon.start()
        await cluster.wait_healthy(timeout=HEALTHY_TIMEOUT)
        await cluster.leader(timeout=HEALTHY_TIMEOUT)
        found, revision = await read_all(cluster)
        losses = find_losses(acked, found, revision)
        cuts = [a for a in plan if isinstance(a, Cut)]
        kept = sum(a.length - a.synced for a in cuts)
        print(f"seed {seed}: {len(acked)} acknowledged, revision {revision}; "
              f"{len(plan) - len(cuts)} files removed, {len(cuts)} cut "
              f"({kept} unsynced bytes kept, {sum(1 for a in cuts if a.garbage)} garbled); "
              f"{len(losses)} lost{': ' + losses[0] if losses else ''}")
        return Run(acked, losses, kept)
    except BaseException:
        print(cluster.logs(lines=80))
        raise
    finally:
        cluster.stop()


@pytest.mark.chaos
@pytest.mark.parametrize("seed", range(20))
async def test_acknowledged_writes_survive_a_power_loss_of_every_replica(tmp_path, seed):
    run = await power_loss_run(tmp_path, seed)
    assert run.acked
    assert run.losses == []


@pytest.mark.chaos
@pytest.mark.parametrize("seed", range(3))
async def test_acknowledged_writes_survive_a_power_loss_of_two_replicas(tmp_path, seed):
    run = await power_loss_run(tmp_path, 1000 + seed, victims=2)
    assert run.acked
    assert run.losses == []


@pytest.mark.chaos
async def test_without_fsync_a_power_loss_loses_acknowledged_writes(tmp_path):
    """The check finds losses when the store does not sync: it can fail."""
    run = await power_loss_run(tmp_path, 2000, unsafe_no_fsync=True)
    assert run.acked
    assert run.losses, "nothing was synced, yet every acknowledged put survived"
