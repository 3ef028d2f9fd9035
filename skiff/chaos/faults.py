"""The fault injection: every few seconds pick a victim (mostly a store replica, the
raft leader or a follower; sometimes an apiserver, a leader-elected component's leader
or a kubelet), SIGKILL it, restart it after a moment and wait until it serves again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import grpc

from skiff.api import errors
from skiff.chaos.config import (
    APISERVER,
    CALL_TIMEOUT,
    HEALTHY_TIMEOUT,
    KILL_INTERVAL,
    KILL_WEIGHTS,
    KUBELET,
    LEADER_ELECTED,
    LEADER_LEASES,
    LEADER_RESTART_DELAY,
    RESTART_DELAY,
    STORE,
)
from skiff.chaos.history import History, Kill
from skiff.chaos.targets import Component, Target
from skiff.client.client import Client
from skiff.health import wait_for
from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc


async def store_role(component: Component) -> str:
    """"leader" or "follower", as the replica itself says."""
    try:
        async with grpc.aio.insecure_channel(component.endpoint) as channel:
            status = await rpc_pb2_grpc.MaintenanceStub(channel).Status(
                rpc_pb2.StatusRequest(), timeout=1.0)
    except grpc.aio.AioRpcError:
        return "unknown"
    return "leader" if status.leader and status.leader == status.header.member_id else "follower"


async def lease_holder(client: Client, kind: str) -> tuple[str, float]:
    """The holderIdentity of the kind's leader Lease and its renewTime (epoch seconds)."""
    found = await client.leases.get(LEADER_LEASES[kind], "kube-system")
    return found.spec.holder_identity, found.spec.renew_time.ToNanoseconds() / 1e9


async def choose_victim(target: Target, client: Client, rng: random.Random
                        ) -> tuple[Component, str]:
    """A component to kill and its role: the store leader or a follower at random;
    an apiserver; the scheduler or controller-manager leader (from its Lease)."""
    kinds = list(KILL_WEIGHTS)
    kind = rng.choices(kinds, weights=[KILL_WEIGHTS[k] for k in kinds])[0]
    candidates = [c for c in target.components() if c.kind == kind]
    if kind == STORE:
        roles = {c.name: await store_role(c) for c in candidates}
        want = "leader" if rng.random() < 0.5 else "follower"
        chosen = [c for c in candidates if roles[c.name] == want] or candidates
        victim = rng.choice(chosen)
        return victim, roles[victim.name]
    if kind in (APISERVER, KUBELET):
        return rng.choice(candidates), "-"
    try:
        holder, _ = await lease_holder(client, kind)
    except errors.APIError:
        holder = ""
    for candidate in candidates:
        if holder and await target.identity(candidate) == holder:
            return candidate, "leader"
    return rng.choice(candidates), "standby"


async def run_killer(target: Target, history: History, *, until: float,
                     rng: random.Random, log: Callable[[str], None]) -> None:
    """Kill, restart, wait healthy (and led again), repeat until ``until``."""
    async with Client(target.apiservers, timeout=CALL_TIMEOUT, retry_deadline=30) as client:
        while time.monotonic() < until:
            await asyncio.sleep(rng.uniform(*KILL_INTERVAL))  # deliberate pacing
            victim, role = await choose_victim(target, client, rng)
            kill = Kill(victim.name, victim.kind, role, time.monotonic(), time.time())
            await target.kill(victim)
            history.kills.append(kill)
            delay = LEADER_RESTART_DELAY if victim.kind in LEADER_ELECTED else RESTART_DELAY
            await asyncio.sleep(rng.uniform(*delay))  # deliberate: dead a while
            await target.restart(victim)
            await target.wait_healthy(victim, HEALTHY_TIMEOUT)
            kill.healthy = time.monotonic()
            if victim.kind in LEADER_ELECTED:
                async def led(kind: str = victim.kind, after: float = kill.wall) -> bool:
                    holder, renewed = await lease_holder(client, kind)
                    return bool(holder) and renewed > after
                await wait_for(led, timeout=HEALTHY_TIMEOUT, interval=0.1,
                               what=f"a {victim.kind} leading again")
                kill.led = time.monotonic()
            log(f"killed {victim.name} ({role}) at {kill.at - history.began:.1f}s, "
                f"healthy after {kill.healthy - kill.at:.1f}s"
                + (f", led after {kill.led - kill.at:.1f}s" if kill.led else ""))
