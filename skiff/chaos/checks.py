"""The invariants checked once the cluster is back: reading every store replica and
Docker's running containers, then pure checks (unit-tested) that acknowledged writes
hold everywhere, the replicas agree, the Deployment converged and the containers match
its pods; and the run's JSON report.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from skiff.api.v1 import apps_pb2, coordination_pb2, core_pb2
from skiff.chaos.config import (
    DEPLOYMENT,
    HEALTHY_TIMEOUT,
    KUBELET,
    LEADER_ELECTED,
    UNANSWERED_STORE,
)
from skiff.chaos.history import History, Kill, Outcome, Scale, Write
from skiff.health import wait_for
from skiff.kubelet import labels as kubelet_labels
from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc

# ------------------------------------------------------------------ reading the outcome


@dataclass(frozen=True)
class ReplicaState:
    """One replica's HashKV and full keyspace, at one revision."""

    endpoint: str
    hash: int
    compact_revision: int
    kvs: dict[bytes, tuple[bytes, int]]  # key -> (value, mod_revision)


async def current_revision(endpoints: Sequence[str]) -> int:
    async def read() -> int:
        for endpoint in endpoints:
            async with grpc.aio.insecure_channel(endpoint) as channel:
                try:
                    response = await rpc_pb2_grpc.KVStub(channel).Range(
                        rpc_pb2.RangeRequest(key=b"\0", count_only=True), timeout=3.0)
                except grpc.aio.AioRpcError as e:
                    if e.code() not in UNANSWERED_STORE:
                        raise
                    continue
                return int(response.header.revision)
        return 0

    return await wait_for(read, timeout=HEALTHY_TIMEOUT, what="a linearizable read")


async def read_replicas(endpoints: Sequence[str]) -> tuple[int, list[ReplicaState]]:
    """A revision every replica has applied, and each replica's HashKV and full
    serializable read at it (the components keep writing meanwhile: reading at one
    revision is what makes the replicas comparable). HashKV covers compacted history,
    so it is read again until every replica reports the same compaction."""
    revision = await current_revision(endpoints)
    channels = [grpc.aio.insecure_channel(e) for e in endpoints]
    try:
        kv = [rpc_pb2_grpc.KVStub(c) for c in channels]
        maintenance = [rpc_pb2_grpc.MaintenanceStub(c) for c in channels]
        for i, stub in enumerate(kv):
            async def applied(stub: rpc_pb2_grpc.KVStub = stub) -> bool:
                response = await stub.Range(rpc_pb2.RangeRequest(
                    key=b"\0", serializable=True, count_only=True), timeout=3.0)
                return response.header.revision >= revision
            await wait_for(applied, timeout=HEALTHY_TIMEOUT,
                           what=f"replica {endpoints[i]} at revision {revision}")

        async def agreed() -> list[Any] | None:
            hashes = [await m.HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=5.0)
                      for m in maintenance]
            return hashes if len({h.compact_revision for h in hashes}) == 1 else None

        hashes = await wait_for(agreed, timeout=HEALTHY_TIMEOUT,
                                what="replicas at the same compaction")
        states = []
        for endpoint, stub, hashed in zip(endpoints, kv, hashes, strict=True):
            response = await stub.Range(rpc_pb2.RangeRequest(
                key=b"\0", range_end=b"\0", revision=revision, serializable=True),
                timeout=30.0)
            states.append(ReplicaState(endpoint, hashed.hash, hashed.compact_revision,
                                       {k.key: (k.value, k.mod_revision) for k in response.kvs}))
        return revision, states
    finally:
        for channel in channels:
            await channel.close()


def leases_in_keyspace(kvs: dict[bytes, tuple[bytes, int]], namespace: str
                       ) -> dict[str, tuple[str, int]]:
    """The run's Leases in one replica's keyspace: name -> (holderIdentity, mod_revision)."""
    prefix = f"/registry/leases/{namespace}/".encode()
    return {key[len(prefix):].decode(): (coordination_pb2.Lease.FromString(value)
                                         .spec.holder_identity, revision)
            for key, (value, revision) in kvs.items() if key.startswith(prefix)}


@dataclass(frozen=True)
class RunningContainer:
    """One running Docker container of a kubelet, by its labels."""

    node: str
    uid: str
    pod: str
    container: str
    sandbox: bool


async def running_containers(nodes: Iterable[str]) -> list[RunningContainer]:
    """The running containers the kubelets of ``nodes`` made, read from Docker."""
    import aiodocker

    docker = aiodocker.Docker()
    found = []
    try:
        for node in nodes:
            for container in await docker.containers.list(
                    filters=json.dumps(kubelet_labels.node_filter(node))):
                got = container._container.get("Labels") or {}
                found.append(RunningContainer(
                    node, got.get(kubelet_labels.POD_UID, ""),
                    got.get(kubelet_labels.POD_NAME, ""),
                    got.get(kubelet_labels.CONTAINER_NAME, ""),
                    got.get(kubelet_labels.CONTAINER_TYPE) == kubelet_labels.SANDBOX))
    finally:
        await docker.close()
    return found


# ------------------------------------------------------------------ checks


@dataclass(frozen=True)
class Expectation:
    """What one object may hold after the run, from its writes.

    ``acknowledged``: (value, revision) of the last acknowledged write (value None for a
    delete), None if no write was acknowledged; ``possible``: the values ambiguous writes
    since then would leave (None: deleted); ``never``: values of writes that were
    refused or never sent.
    """

    acknowledged: tuple[str | None, int] | None
    possible: frozenset[str | None]
    never: frozenset[str]


def expectations(writes: Iterable[Write]) -> dict[str, Expectation]:
    by_name: dict[str, list[Write]] = defaultdict(list)
    for write in writes:
        by_name[write.name].append(write)
    result = {}
    for name, ops in by_name.items():
        acknowledged: tuple[str | None, int] | None = None
        possible: set[str | None] = set()
        for op in ops:  # in the owner's order: one writer, one call at a time
            value = op.value if op.verb != "delete" else None
            if op.outcome is Outcome.ACKNOWLEDGED:
                acknowledged, possible = (value, op.revision), set()
            elif op.outcome is Outcome.AMBIGUOUS:
                possible.add(value)
        never = frozenset(op.value for op in ops if op.verb != "delete"
                          and op.outcome in (Outcome.REJECTED, Outcome.FAILED))
        result[name] = Expectation(acknowledged, frozenset(possible), never)
    return result


def check_writes(writes: Iterable[Write], observed: dict[str, tuple[str, int]], *,
                 where: str) -> list[str]:
    """Each object as ``where`` holds it (name -> (value, revision)) against its writes:
    the last acknowledged state exactly, or what an ambiguous write since then left;
    never a refused write's value; no object nobody wrote."""
    problems = []
    expected = expectations(writes)
    for name, exp in sorted(expected.items()):
        got = observed.get(name)
        value = got[0] if got is not None else None
        if value is not None and value in exp.never:
            problems.append(f"{where}: {name} holds {value!r}, a write that was refused "
                            f"or never sent")
            continue
        if exp.acknowledged is not None:
            ack_value, ack_revision = exp.acknowledged
            if (got is None and ack_value is None) or got == (ack_value, ack_revision):
                continue
        elif got is None:
            continue  # never acknowledged, absent: nothing was lost
        if value in exp.possible:
            continue  # an ambiguous write since the last acknowledged one landed
        problems.append(f"{where}: {name} holds {got}, but its last acknowledged write left "
                        f"{exp.acknowledged} (ambiguous since: {sorted(map(str, exp.possible))})")
    strangers = sorted(set(observed) - set(expected))
    if strangers:
        problems.append(f"{where}: objects nobody wrote: {strangers[:5]}")
    return problems


def check_replicas_agree(states: Sequence[ReplicaState]) -> list[str]:
    problems = []
    if len({s.hash for s in states}) != 1:
        problems.append(f"HashKV differs between replicas: "
                        f"{ {s.endpoint: s.hash for s in states} }")
    first = states[0]
    for state in states[1:]:
        if state.kvs != first.kvs:
            differing = sorted(k for k in first.kvs.keys() | state.kvs.keys()
                               if first.kvs.get(k) != state.kvs.get(k))
            problems.append(f"replica {state.endpoint} differs from {first.endpoint} on "
                            f"{len(differing)} keys, e.g. {differing[:5]}")
    return problems


def _owned_by(obj: Any, uid: str) -> bool:
    return any(ref.uid == uid for ref in obj.metadata.owner_references)


def _ready(pod: core_pb2.Pod) -> bool:
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def check_deployment(deploy: apps_pb2.Deployment, replica_sets: Sequence[apps_pb2.ReplicaSet],
                     pods: Sequence[core_pb2.Pod]) -> list[str]:
    """Converged: status says spec; one active ReplicaSet; exactly spec.replicas live pods
    of it, Running and Ready; no pod of its ReplicaSets terminating or twice."""
    name = f"deployment {deploy.metadata.namespace}/{deploy.metadata.name}"
    want = deploy.spec.replicas
    status = deploy.status
    problems = []
    if status.observed_generation < deploy.metadata.generation:
        problems.append(f"{name}: observedGeneration {status.observed_generation} < "
                        f"generation {deploy.metadata.generation}")
    counts = {"replicas": status.replicas, "updated": status.updated_replicas,
              "ready": status.ready_replicas, "available": status.available_replicas}
    if any(v != want for v in counts.values()):
        problems.append(f"{name}: status {counts}, spec.replicas {want}")
    owned = [rs for rs in replica_sets if _owned_by(rs, deploy.metadata.uid)]
    active = [rs for rs in owned if rs.spec.replicas > 0]
    if len(active) != (1 if want else 0):
        problems.append(f"{name}: {len(active)} active ReplicaSets "
                        f"{[rs.metadata.name for rs in active]}")
    for rs in owned:
        mine = [p for p in pods if _owned_by(p, rs.metadata.uid)]
        live = [p for p in mine if not p.metadata.HasField("deletion_timestamp")]
        names = Counter(p.metadata.name for p in mine)
        uids = Counter(p.metadata.uid for p in mine)
        twice = [n for n, c in (*names.items(), *uids.items()) if c > 1]
        if twice:
            problems.append(f"{name}: pods twice in ReplicaSet {rs.metadata.name}: {twice}")
        if len(live) != len(mine):
            problems.append(f"{name}: {len(mine) - len(live)} pods of {rs.metadata.name} "
                            f"still terminating")
        if len(live) != rs.spec.replicas:
            problems.append(f"{name}: ReplicaSet {rs.metadata.name} has {len(live)} live pods, "
                            f"spec.replicas {rs.spec.replicas}")
        not_ready = [p.metadata.name for p in live if not _ready(p)]
        if not_ready:
            problems.append(f"{name}: pods not Running and Ready: {not_ready}")
    orphans = [p.metadata.name for p in pods
               if p.metadata.labels.get("app") == DEPLOYMENT
               and not any(_owned_by(p, rs.metadata.uid) for rs in owned)]
    if orphans:
        problems.append(f"{name}: pods of its template owned by none of its ReplicaSets: "
                        f"{orphans}")
    return problems


def check_containers(pods: Sequence[core_pb2.Pod], running: Sequence[RunningContainer],
                     nodes: Iterable[str]) -> list[str]:
    """Docker's running containers on ``nodes`` against the pods bound there: each
    Running pod has one sandbox and one container per spec container; nothing runs
    for a pod that is gone (a terminating pod's containers may still be stopping)."""
    nodes = set(nodes)
    bound = [p for p in pods if p.spec.node_name in nodes]
    live = {p.metadata.uid: p for p in bound if not p.metadata.HasField("deletion_timestamp")
            and p.status.phase == "Running"}
    terminating = {p.metadata.uid for p in bound if p.metadata.HasField("deletion_timestamp")}
    by_uid: dict[str, list[RunningContainer]] = defaultdict(list)
    for container in running:
        by_uid[container.uid].append(container)
    problems = []
    for uid, containers in sorted(by_uid.items()):
        if uid not in live and uid not in terminating:
            problems.append(f"leaked: {len(containers)} running containers of pod "
                            f"{containers[0].pod!r} (uid {uid}) that is not running here: "
                            f"{sorted(c.container for c in containers)}")
    for uid, pod in sorted(live.items()):
        containers = by_uid.get(uid, [])
        sandboxes = [c for c in containers if c.sandbox]
        if len(sandboxes) != 1 or len({c.node for c in containers}) > 1:
            problems.append(f"pod {pod.metadata.name} ({uid}): {len(sandboxes)} running "
                            f"sandboxes on {sorted({c.node for c in containers})}")
        apps = Counter(c.container for c in containers if not c.sandbox)
        for spec in pod.spec.containers:
            if apps[spec.name] != 1:
                problems.append(f"pod {pod.metadata.name} ({uid}): container {spec.name} "
                                f"running {apps[spec.name]} times")
        extra = set(apps) - {c.name for c in pod.spec.containers}
        if extra:
            problems.append(f"pod {pod.metadata.name} ({uid}): unknown containers {extra}")
    return problems


# ------------------------------------------------------------------ the report


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def recovery_seconds(kill: Kill, acknowledged: Sequence[Write]) -> float | None:
    """For a leader-elected kind: from the kill until a leader renewed its Lease; for a
    kubelet: until its Node is Ready again, from its successor. Else (store, apiserver):
    from the kill to the first acknowledgement of a write started after it."""
    if kill.kind in LEADER_ELECTED:
        return round(kill.led - kill.at, 3) if kill.led is not None else None
    if kill.kind == KUBELET:
        return round(kill.healthy - kill.at, 3)
    after = [w.finished for w in acknowledged if w.started >= kill.at]
    return round(min(after) - kill.at, 3) if after else None


def outcomes(items: Iterable[Write | Scale]) -> dict[str, int]:
    counts = Counter(i.outcome.value for i in items)
    return {o.value: counts[o.value] for o in Outcome}


def make_report(history: History, *, began: float, **extra: Any) -> dict[str, Any]:
    """The JSON-able report of a run: what it did, how the cluster recovered, problems."""
    acknowledged = history.acknowledged_writes()
    kill_log = []
    recoveries: dict[str, list[float]] = defaultdict(list)
    failed_during = 0
    for kill in history.kills:
        recovered = recovery_seconds(kill, acknowledged)
        end = kill.at + (recovered if recovered is not None else kill.healthy - kill.at)
        failed = sum(kill.at <= f.at <= end for f in history.failed_calls)
        failed_during += failed
        if recovered is not None:
            recoveries[kill.kind].append(recovered)
        kill_log.append({"component": kill.component, "kind": kill.kind, "role": kill.role,
                         "at_s": round(kill.at - began, 2),
                         "healthy_after_s": round(kill.healthy - kill.at, 2),
                         "recovery_s": recovered, "failed_calls": failed})
    by_component: dict[str, dict[str, int]] = defaultdict(dict)
    for (kind, role), n in sorted(Counter((k.kind, k.role) for k in history.kills).items()):
        by_component[kind][role] = n
    every = [r for rs in recoveries.values() for r in rs]
    return {
        **extra,
        "operations": {
            **{verb: outcomes(w for w in history.writes if w.verb == verb)
               for verb in ("create", "update", "delete")},
            "scale": outcomes(history.scales),
        },
        "kills": {"total": len(history.kills), "by_component": dict(by_component)},
        "failed_calls": {"total": len(history.failed_calls),
                         "by_client": dict(sorted(Counter(
                             f.client for f in history.failed_calls).items())),
                         "during_failovers": failed_during},
        "recovery_s": {
            **{kind: {"kills": len(rs), "max": max(rs), "p50": percentile(rs, 50),
                      "p90": percentile(rs, 90)} for kind, rs in sorted(recoveries.items())},
            "all": {"max": max(every, default=None), "p50": percentile(every, 50),
                    "p90": percentile(every, 90)},
        },
        "kill_log": kill_log,
    }
