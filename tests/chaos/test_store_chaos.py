"""Chaos: SIGKILL store replicas under load, then check what clients saw against a model.

For ``SKIFF_CHAOS_SECONDS`` (default 60) three real replicas serve three kinds of client
at once:

- writers, each with a channel to every replica, moving to the next replica when a call
  fails with UNAVAILABLE or DEADLINE_EXCEEDED. They Put unique keys, and increment a
  few shared counters by compare-and-swap: read the counter, then one Txn that, if the
  counter's mod_revision is unchanged, writes counter+1 and a marker key naming the
  operation. Each write is recorded with what the client learnt of it: acknowledged
  (with its revision), conflict (a Txn whose compare failed), failed (no connection:
  never sent) or ambiguous (sent, no answer: applied or not, nobody knows).
- a watcher over the test's prefix on one replica, resuming on another from its last
  revision + 1 whenever its stream breaks, recording every event;
- two watchers as the apiserver's store watch is (:func:`skiff.chaos_watch.run_store_watcher`):
  progress notifications asked for several times a second, resuming from the last
  revision they were told of (an event's or a progress notification's) + 1, one over
  the whole prefix and one over the counters only (most revisions are not theirs, so
  their progress marks carry them past revisions they never see);
- a killer: every few seconds SIGKILL the leader, or a follower, or both (losing quorum
  until one is back); restart the victims after a short random delay and wait until
  they are healthy.

Then load stops, every replica is killed at once and restarted, and the outcome is
checked: replicas agree (HashKV and a full read at one revision); every acknowledged
Put is there with its value at its revision; each counter equals its acknowledged
increments plus the ambiguous ones whose marker exists, and its number of markers;
nothing else was written; and the watcher saw every revision from its first to the
final one exactly once, in order, and replaying its events gives the final state; the
progress watchers saw, in order and once, every change the first watcher's history holds
under their prefix, and nothing at or below a revision a progress mark had claimed
(:func:`skiff.watchcheck.check_watch`).
Nothing but this test writes to the store, and the store's own commands (compaction)
make no revision, so revisions are contiguous. A JSON report line is printed.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from skiff.chaos_watch import run_store_watcher
from skiff.store.v1 import kv_pb2, rpc_pb2, rpc_pb2_grpc
from skiff.testing.processes import StoreCluster, wait_for
from skiff.watchcheck import Change, WatchRecord, check_watch, history_from

CHAOS_SECONDS = float(os.environ.get("SKIFF_CHAOS_SECONDS", "60"))
#: A run is reproducible in its choices (not its timing) from the seed in the report.
SEED = int(os.environ.get("SKIFF_CHAOS_SEED", random.randrange(2**32)))

PREFIX = b"/chaos/"
PREFIX_END = PREFIX[:-1] + bytes([PREFIX[-1] + 1])
KEYS = PREFIX + b"keys/"
MARKERS = PREFIX + b"markers/"
COUNTERS = tuple(PREFIX + b"counters/" + str(i).encode() for i in range(3))
#: How often the progress watchers ask for progress (the apiserver asks once a second).
PROGRESS_INTERVAL = 0.2

WRITERS = 8
#: The share of operations that are counter increments; the rest are Puts.
INCREMENT_SHARE = 0.3
#: A call with no answer by then is abandoned: the replica is dead, or has no leader.
CALL_TIMEOUT = 3.0
#: Pause after an operation failed, before the next one goes to the next replica.
RETRY_BACKOFF = 0.05
#: Seconds between one round of kills (victims healthy again) and the next.
KILL_INTERVAL = (1.0, 4.0)
#: Seconds a victim stays dead before it is restarted.
RESTART_DELAY = (0.1, 1.5)
HEALTHY_TIMEOUT = 30.0

UNANSWERED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
#: Reconnect to a restarted replica soon (gRPC's default backoff grows to two minutes).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


# ------------------------------------------------------------------ the history


class Outcome(enum.Enum):
    """What the client learnt of one write."""

    ACKNOWLEDGED = "acknowledged"  # answered OK (a Txn: its compare held, it wrote)
    CONFLICT = "conflict"          # a Txn answered with its compare failed: wrote nothing
    FAILED = "failed"              # no connection, so never sent: wrote nothing
    AMBIGUOUS = "ambiguous"        # sent, not answered: wrote or not


@dataclass(frozen=True)
class Put:
    key: bytes
    value: bytes
    outcome: Outcome
    revision: int  # the acknowledged revision, else 0
    started: float
    finished: float


@dataclass(frozen=True)
class Increment:
    """A compare-and-swap of ``counter`` to ``value``, writing ``marker`` in the same Txn."""

    counter: bytes
    value: int
    marker: bytes
    outcome: Outcome
    revision: int
    started: float
    finished: float


def marker_value(counter: bytes, value: int) -> bytes:
    return counter + b"=" + str(value).encode()


@dataclass(frozen=True)
class Seen:
    """One event as the watcher received it, and from which replica."""

    kv: kv_pb2.KeyValue
    deleted: bool
    replica: int


@dataclass
class Kill:
    member: int
    role: str  # "leader" or "follower"
    at: float
    healthy: float = 0.0


@dataclass
class History:
    """Everything the clients did and saw, in the order they saw it."""

    puts: list[Put] = field(default_factory=list)
    increments: list[Increment] = field(default_factory=list)
    events: list[Seen] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    #: Calls answered UNAVAILABLE or DEADLINE_EXCEEDED (each moved a writer on).
    failed_calls: int = 0
    watch_resumes: int = 0
    #: The next revision the watcher waits for.
    watch_next: int = 0
    #: What the progress watchers saw.
    progress_watches: list[WatchRecord] = field(default_factory=list)

    def acknowledged_writes(self) -> list[Put | Increment]:
        return [op for op in (*self.puts, *self.increments)
                if op.outcome is Outcome.ACKNOWLEDGED]


# -------------------------------------------------------------------- clients


class Unanswered(Exception):
    """A call failed with UNAVAILABLE or DEADLINE_EXCEEDED."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(f"{error.code().name}: {error.details()}")
        self.error = error

    @property
    def outcome(self) -> Outcome:
        """For a write: FAILED when no connection was made (nothing sent), else AMBIGUOUS."""
        if (self.error.code() == grpc.StatusCode.UNAVAILABLE
                and "failed to connect" in (self.error.details() or "")):
            return Outcome.FAILED
        return Outcome.AMBIGUOUS


class Failover:
    """KV stubs for every replica; an unanswered call moves the next one to the next replica.

    Any other error is not the chaos's doing and propagates: it fails the test.
    """

    def __init__(self, endpoints: list[str], history: History, *, first: int) -> None:
        self._channels = [grpc.aio.insecure_channel(e, options=CHANNEL_OPTIONS)
                          for e in endpoints]
        self._stubs = [rpc_pb2_grpc.KVStub(c) for c in self._channels]
        self._history = history
        self._current = first

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def call(self, method: str, request: object) -> object:
        try:
            return await getattr(self._stubs[self._current], method)(request,
                                                                     timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            if e.code() not in UNANSWERED:
                raise
            self._history.failed_calls += 1
            self._current = (self._current + 1) % len(self._stubs)
            raise Unanswered(e) from e


async def put(kv: Failover, op_id: bytes, history: History) -> bool:
    """Put a unique key; record the outcome; True if acknowledged."""
    key, value = KEYS + op_id, b"value-" + op_id
    started = time.monotonic()
    try:
        response = await kv.call("Put", rpc_pb2.PutRequest(key=key, value=value))
    except Unanswered as e:
        history.puts.append(Put(key, value, e.outcome, 0, started, time.monotonic()))
        return False
    history.puts.append(Put(key, value, Outcome.ACKNOWLEDGED, response.header.revision,
                            started, time.monotonic()))
    return True


async def increment(kv: Failover, counter: bytes, op_id: bytes, history: History) -> bool:
    """Read ``counter``, then compare-and-swap it to +1 with a marker; record the outcome."""
    try:
        got = await kv.call("Range", rpc_pb2.RangeRequest(key=counter))
    except Unanswered:
        return False  # nothing written yet: not an operation
    current = got.kvs[0] if got.kvs else kv_pb2.KeyValue()
    value = int(current.value or b"0") + 1
    marker = MARKERS + op_id
    request = rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(key=counter, target=rpc_pb2.Compare.MOD,
                                 result=rpc_pb2.Compare.EQUAL,
                                 mod_revision=current.mod_revision)],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                     key=counter, value=str(value).encode())),
                 rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                     key=marker, value=marker_value(counter, value)))],
    )
    started = time.monotonic()
    try:
        response = await kv.call("Txn", request)
    except Unanswered as e:
        history.increments.append(
            Increment(counter, value, marker, e.outcome, 0, started, time.monotonic()))
        return False
    outcome = Outcome.ACKNOWLEDGED if response.succeeded else Outcome.CONFLICT
    history.increments.append(Increment(counter, value, marker, outcome,
                                        response.header.revision if response.succeeded else 0,
                                        started, time.monotonic()))
    return True


async def run_writer(index: int, endpoints: list[str], history: History, *,
                     stop: asyncio.Event, rng: random.Random) -> None:
    """Write until ``stop``: Puts of fresh keys and counter increments, one at a time."""
    kv = Failover(endpoints, history, first=index % len(endpoints))
    try:
        for seq in itertools.count():
            if stop.is_set():
                return
            op_id = f"w{index}-{seq}".encode()
            if rng.random() < INCREMENT_SHARE:
                answered = await increment(kv, rng.choice(COUNTERS), op_id, history)
            else:
                answered = await put(kv, op_id, history)
            if not answered:
                await asyncio.sleep(RETRY_BACKOFF)
    finally:
        await kv.close()


async def _open_stream(first: rpc_pb2.WatchRequest) -> AsyncIterator[rpc_pb2.WatchRequest]:
    yield first
    await asyncio.get_running_loop().create_future()  # hold the stream open until cancelled


async def run_watcher(endpoints: list[str], history: History, *, start_revision: int) -> None:
    """Watch PREFIX from ``start_revision``; on a broken stream, resume on the next replica.

    Runs until cancelled. A canceled watch (compacted past its cursor) fails the test.
    """
    history.watch_next = start_revision
    for attempt in itertools.count():
        replica = attempt % len(endpoints)
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=PREFIX, range_end=PREFIX_END, start_revision=history.watch_next))
        async with grpc.aio.insecure_channel(endpoints[replica],
                                             options=CHANNEL_OPTIONS) as channel:
            try:
                async for response in rpc_pb2_grpc.WatchStub(channel).Watch(
                        _open_stream(create)):
                    assert not response.canceled, (
                        f"watch from {history.watch_next} canceled on replica {replica}: "
                        f"{response.cancel_reason!r}, compacted at {response.compact_revision}")
                    for event in response.events:
                        history.events.append(
                            Seen(event.kv, event.type == kv_pb2.Event.DELETE, replica))
                    if response.events:
                        history.watch_next = response.events[-1].kv.mod_revision + 1
            except grpc.aio.AioRpcError as e:
                if e.code() not in UNANSWERED:
                    raise
        history.watch_resumes += 1
        await asyncio.sleep(RETRY_BACKOFF)


async def run_killer(cluster: StoreCluster, history: History, *, until: float,
                     rng: random.Random) -> None:
    """Every few seconds kill the leader (2 in 3), a follower, or both; bring them back."""
    members = range(len(cluster.members))
    while True:
        await asyncio.sleep(rng.uniform(*KILL_INTERVAL))
        if time.monotonic() >= until:
            return
        leader = await cluster.leader()
        follower = rng.choice([i for i in members if i != leader])
        roll = rng.random()
        if roll < 1 / 6:
            victims = [(follower, "follower")]
        elif roll < 1 / 3:
            victims = [(leader, "leader"), (follower, "follower")]
        else:
            victims = [(leader, "leader")]
        kills = []
        for member, role in victims:
            cluster.kill(member)
            kills.append(Kill(member, role, at=time.monotonic()))
        history.kills.extend(kills)
        await asyncio.sleep(rng.uniform(*RESTART_DELAY))
        for kill in kills:
            cluster.restart(kill.member)
        await cluster.wait_healthy(timeout=HEALTHY_TIMEOUT, members=[k.member for k in kills])
        for kill in kills:
            kill.healthy = time.monotonic()


# ------------------------------------------------------------- final state


@dataclass(frozen=True)
class ReplicaState:
    """One replica's answer at the final revision: HashKV and every key it holds."""

    hash: int
    compact_revision: int
    kvs: dict[bytes, kv_pb2.KeyValue]


async def current_revision(endpoints: list[str]) -> int:
    """The cluster's revision, by a linearizable read on whichever replica answers."""

    async def read() -> int:
        for endpoint in endpoints:
            async with grpc.aio.insecure_channel(endpoint) as channel:
                try:
                    response = await rpc_pb2_grpc.KVStub(channel).Range(
                        rpc_pb2.RangeRequest(key=PREFIX, range_end=PREFIX_END, count_only=True),
                        timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError as e:
                    if e.code() not in UNANSWERED:
                        raise
                    continue
                return response.header.revision
        return 0

    return await wait_for(read, timeout=HEALTHY_TIMEOUT, what="a linearizable read")


async def read_replicas(endpoints: list[str], revision: int) -> list[ReplicaState]:
    """Each replica's HashKV and full serializable read, once all have applied ``revision``.

    Compaction may still be in flight when load stops; HashKV covers compacted history,
    so the hashes are read again until every replica reports the same compaction.
    """
    # The whole keyspace in one reply: more than gRPC's default 4 MB after a busy run.
    channels = [grpc.aio.insecure_channel(e, options=[
        ("grpc.max_receive_message_length", 256 * 1024 * 1024)]) for e in endpoints]
    try:
        kv = [rpc_pb2_grpc.KVStub(c) for c in channels]
        maintenance = [rpc_pb2_grpc.MaintenanceStub(c) for c in channels]
        for i, stub in enumerate(kv):
            async def applied(stub: rpc_pb2_grpc.KVStub = stub) -> bool:
                response = await stub.Range(rpc_pb2.RangeRequest(
                    key=PREFIX, serializable=True, count_only=True), timeout=CALL_TIMEOUT)
                return response.header.revision >= revision
            await wait_for(applied, timeout=HEALTHY_TIMEOUT,
                           what=f"replica {i} at revision {revision}")

        async def agreed_compaction() -> list[rpc_pb2.HashKVResponse] | None:
            hashes = [await m.HashKV(rpc_pb2.HashKVRequest(revision=revision),
                                     timeout=CALL_TIMEOUT) for m in maintenance]
            return hashes if len({h.compact_revision for h in hashes}) == 1 else None

        hashes = await wait_for(agreed_compaction, timeout=HEALTHY_TIMEOUT,
                                what="replicas at the same compaction")
        states = []
        for stub, hashed in zip(kv, hashes, strict=True):
            response = await stub.Range(rpc_pb2.RangeRequest(
                key=b"\0", range_end=b"\0", serializable=True), timeout=CALL_TIMEOUT)
            assert response.header.revision == revision, "a write after load stopped"
            states.append(ReplicaState(hashed.hash, hashed.compact_revision,
                                       {kv.key: kv for kv in response.kvs}))
        return states
    finally:
        for channel in channels:
            await channel.close()


# ---------------------------------------------------------------- checks
# Each returns what it found wrong, as sentences; empty when all is well.


def check_replicas_agree(states: list[ReplicaState]) -> list[str]:
    problems = []
    if len({s.hash for s in states}) != 1:
        problems.append(f"HashKV differs between replicas: {[s.hash for s in states]}")
    first = states[0].kvs
    for i, state in enumerate(states[1:], start=1):
        if state.kvs != first:
            differing = sorted(k for k in first.keys() | state.kvs.keys()
                               if first.get(k) != state.kvs.get(k))
            problems.append(f"replica {i} differs from replica 0 on {len(differing)} keys, "
                            f"e.g. {differing[:5]}")
    return problems


def check_puts(puts: list[Put], kvs: dict[bytes, kv_pb2.KeyValue]) -> list[str]:
    problems = []
    for op in puts:
        kv = kvs.get(op.key)
        if kv is not None and kv.version != 1:
            problems.append(f"put {op.key!r} was applied {kv.version} times")
        if op.outcome is Outcome.ACKNOWLEDGED:
            if kv is None or (kv.value, kv.mod_revision) != (op.value, op.revision):
                problems.append(f"acknowledged put {op.key!r}@{op.revision} lost: holds "
                                f"{(kv.value, kv.mod_revision) if kv else None}")
        elif op.outcome is Outcome.AMBIGUOUS:
            if kv is not None and kv.value != op.value:
                problems.append(f"ambiguous put {op.key!r} holds a value never written")
        elif kv is not None:
            problems.append(f"put {op.key!r} that was never sent was applied")
    return problems


def check_counters(increments: list[Increment], kvs: dict[bytes, kv_pb2.KeyValue]
                   ) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Each counter = acknowledged + landed ambiguous increments = its markers, 1..n."""
    problems = []
    summary = {}
    for counter in COUNTERS:
        ops = [op for op in increments if op.counter == counter]
        value = int(kvs[counter].value) if counter in kvs else 0
        markers = sorted(int(kv.value.partition(b"=")[2]) for key, kv in kvs.items()
                         if key.startswith(MARKERS) and kv.value.partition(b"=")[0] == counter)
        acknowledged = [op for op in ops if op.outcome is Outcome.ACKNOWLEDGED]
        landed = [op for op in ops if op.outcome is Outcome.AMBIGUOUS and op.marker in kvs]
        if not value == len(acknowledged) + len(landed) == len(markers):
            problems.append(f"counter {counter!r} is {value}: {len(acknowledged)} acknowledged "
                            f"+ {len(landed)} ambiguous-and-landed increments, "
                            f"{len(markers)} markers")
        if markers != list(range(1, len(markers) + 1)):
            problems.append(f"counter {counter!r} markers are not 1..{len(markers)}: "
                            f"duplicates {[v for v, n in Counter(markers).items() if n > 1][:5]}")
        for op in acknowledged:
            kv = kvs.get(op.marker)
            if kv is None or (kv.value, kv.mod_revision) != (marker_value(counter, op.value),
                                                             op.revision):
                problems.append(f"acknowledged increment {op.marker!r}@{op.revision} lost")
        for op in ops:
            if op.outcome in (Outcome.CONFLICT, Outcome.FAILED) and op.marker in kvs:
                problems.append(f"increment {op.marker!r} ({op.outcome.value}) was applied")
            if op.marker in kvs and kvs[op.marker].version != 1:
                problems.append(f"increment {op.marker!r} was applied "
                                f"{kvs[op.marker].version} times")
        summary[counter.decode()] = {"value": value, "acknowledged": len(acknowledged),
                                     "ambiguous_landed": len(landed)}
    return problems, summary


def check_nothing_else(history: History, kvs: dict[bytes, kv_pb2.KeyValue]) -> list[str]:
    """Every key in the store is one this test wrote (or may have written)."""
    expected = {op.key for op in history.puts} | {op.marker for op in history.increments}
    strangers = sorted(k for k in kvs if k not in expected and k not in COUNTERS)
    return [f"{len(strangers)} keys nobody wrote, e.g. {strangers[:5]}"] if strangers else []


def check_progress_watches(history: History, *, start_revision: int,
                           final_revision: int) -> list[str]:
    """The progress watchers against the first watcher's history (itself checked for
    every revision once, in order, by :func:`check_first_watch`)."""
    truth = history_from((Change(e.kv.mod_revision, e.kv.key.decode(), e.deleted)
                          for e in history.events), base=start_revision - 1)
    return [problem for record in history.progress_watches
            for problem in check_watch(record, truth, until=final_revision)]


def check_first_watch(history: History, *, start_revision: int, final_revision: int,
                      kvs: dict[bytes, kv_pb2.KeyValue]) -> list[str]:
    """Every revision once, in order, contiguous; the events replay to the final state."""
    problems = []
    events = history.events
    seen = [e.kv.mod_revision for e in events]
    backwards = [(a, b) for a, b in itertools.pairwise(seen) if b < a]
    if backwards:
        problems.append(f"watch went back {len(backwards)} times, e.g. {backwards[:5]}")
    twice = [k for k, n in Counter((e.kv.mod_revision, e.kv.key) for e in events).items()
             if n > 1]
    if twice:
        problems.append(f"watch delivered {len(twice)} events twice, e.g. {twice[:5]}")
    missing = sorted(set(range(start_revision, final_revision + 1)) - set(seen))
    if missing:
        problems.append(f"watch missed {len(missing)} revisions, e.g. {missing[:10]}")
    beyond = sorted({r for r in seen if not start_revision <= r <= final_revision})
    if beyond:
        problems.append(f"watch saw revisions outside [{start_revision}, {final_revision}]: "
                        f"{beyond[:10]}")
    replayed: dict[bytes, kv_pb2.KeyValue] = {}
    for event in events:
        if event.deleted:
            replayed.pop(event.kv.key, None)
        else:
            replayed[event.kv.key] = event.kv
    ours = {k: kv for k, kv in kvs.items() if k.startswith(PREFIX)}
    if replayed != ours:
        differing = sorted(k for k in replayed.keys() | ours.keys()
                           if replayed.get(k) != ours.get(k))
        problems.append(f"replaying the watch differs from the store on {len(differing)} "
                        f"keys, e.g. {differing[:5]}")
    at = {(e.kv.mod_revision, e.kv.key): e.kv.value for e in events}
    for op in history.acknowledged_writes():
        key = op.key if isinstance(op, Put) else op.counter
        if at.get((op.revision, key)) != (op.value if isinstance(op, Put)
                                          else str(op.value).encode()):
            problems.append(f"watch has no event for acknowledged write of {key!r} "
                            f"at {op.revision}")
    for counter in COUNTERS:
        values = [int(e.kv.value) for e in events if e.kv.key == counter]
        if values != list(range(1, len(values) + 1)):
            problems.append(f"watch saw counter {counter!r} go {values[:20]}...")
    return problems


# ------------------------------------------------------------------ report


def recovery_seconds(kill: Kill, acknowledged: list[Put | Increment]) -> float | None:
    """From the kill to the first acknowledgement of a write started after it."""
    after = [op.finished for op in acknowledged if op.started >= kill.at]
    return round(min(after) - kill.at, 3) if after else None


def outcomes(ops: list[Put] | list[Increment]) -> dict[str, int]:
    counts = Counter(op.outcome.value for op in ops)
    return {o.value: counts[o.value] for o in Outcome}


def make_report(history: History, *, began: float, load_seconds: float,
                start_revision: int, final_revision: int, compact_revision: int,
                counters: dict[str, dict[str, int]], problems: list[str]) -> dict:
    acknowledged = history.acknowledged_writes()
    kills = [{
        "member": f"s{k.member}", "role": k.role, "at_s": round(k.at - began, 2),
        "recovery_s": recovery_seconds(k, acknowledged),
        "healthy_after_s": round(k.healthy - k.at, 2),
    } for k in history.kills]
    recoveries = [k["recovery_s"] for k in kills if k["recovery_s"] is not None]
    return {
        "seed": SEED, "seconds": CHAOS_SECONDS, "load_seconds": round(load_seconds, 1),
        "writers": WRITERS,
        "puts": outcomes(history.puts), "increments": outcomes(history.increments),
        "counters": counters, "failed_calls": history.failed_calls,
        "kills": len(kills),
        "leader_kills": sum(k["role"] == "leader" for k in kills),
        "follower_kills": sum(k["role"] == "follower" for k in kills),
        "max_recovery_s": max(recoveries, default=None),
        "watch_events": len(history.events), "watch_resumes": history.watch_resumes,
        "progress_watches": {r.name: {"entries": len(r.entries), "resumes": r.resumes}
                             for r in history.progress_watches},
        "start_revision": start_revision, "final_revision": final_revision,
        "compact_revision": compact_revision,
        "problems": problems, "kill_log": kills,
    }


# -------------------------------------------------------------------- test


def _spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro, name=name)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _condition(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def poll() -> bool:
        return check()
    return poll


@pytest.mark.chaos
@pytest.mark.timeout(CHAOS_SECONDS * 2 + 300)
async def test_store_keeps_acknowledged_writes_and_agrees_through_kills(chaos_cluster):
    cluster = chaos_cluster
    endpoints = cluster.endpoints
    rng = random.Random(SEED)
    history = History()
    start_revision = await current_revision(endpoints) + 1
    watcher = _spawn(run_watcher(endpoints, history, start_revision=start_revision),
                     "chaos-watcher")
    history.progress_watches = [
        WatchRecord("progress watcher of everything", PREFIX.decode(), start_revision - 1),
        WatchRecord("progress watcher of the counters", PREFIX.decode() + "counters/",
                    start_revision - 1)]
    progress_watchers = [
        _spawn(run_store_watcher(endpoints, record, first=i + 1,
                                 progress_interval=PROGRESS_INTERVAL), f"chaos-{record.name}")
        for i, record in enumerate(history.progress_watches)]
    stop = asyncio.Event()
    writers = [_spawn(run_writer(i, endpoints, history, stop=stop,
                                 rng=random.Random(f"{SEED}-{i}")), f"chaos-writer-{i}")
               for i in range(WRITERS)]
    began = time.monotonic()
    try:
        await run_killer(cluster, history, until=began + CHAOS_SECONDS, rng=rng)
        # The cluster is available again after the last kill: a write started after it
        # is acknowledged (so every kill has a recovery time).
        last_kill = max((k.at for k in history.kills), default=began)
        await wait_for(_condition(lambda: any(
            op.started >= last_kill for op in history.acknowledged_writes())),
            timeout=HEALTHY_TIMEOUT, what="a write acknowledged after the last kill")
        stop.set()
        await asyncio.gather(*writers)
        load_seconds = time.monotonic() - began

        # Every replica crashes at once and comes back from its own disk.
        cluster.crash_all()
        await cluster.wait_healthy(timeout=HEALTHY_TIMEOUT)

        final_revision = await current_revision(endpoints)
        states = await read_replicas(endpoints, final_revision)

        async def watcher_caught_up() -> bool:
            if watcher.done():
                watcher.result()  # raises what stopped it
                raise AssertionError("the watcher stopped")
            return history.watch_next > final_revision

        await wait_for(watcher_caught_up, timeout=HEALTHY_TIMEOUT,
                       what=f"the watcher at revision {final_revision}")

        async def progress_watchers_caught_up() -> bool:
            for task in progress_watchers:
                if task.done():
                    task.result()
                    raise AssertionError("a progress watcher stopped")
            return all(r.reached >= final_revision for r in history.progress_watches)

        await wait_for(progress_watchers_caught_up, timeout=HEALTHY_TIMEOUT,
                       what=f"the progress watchers at revision {final_revision}")
    finally:
        await _cancel([watcher, *progress_watchers, *writers])

    kvs = states[0].kvs
    counter_problems, counters = check_counters(history.increments, kvs)
    problems = [
        *check_replicas_agree(states),
        *check_puts(history.puts, kvs),
        *counter_problems,
        *check_nothing_else(history, kvs),
        *check_first_watch(history, start_revision=start_revision,
                           final_revision=final_revision, kvs=kvs),
        *check_progress_watches(history, start_revision=start_revision,
                                final_revision=final_revision),
    ]
    report = make_report(history, began=began, load_seconds=load_seconds,
                         start_revision=start_revision, final_revision=final_revision,
                         compact_revision=states[0].compact_revision, counters=counters,
                         problems=problems)
    print("chaos report:", json.dumps(report))
    assert history.kills, "nothing was killed: SKIFF_CHAOS_SECONDS too short"
    assert any(op.outcome is Outcome.ACKNOWLEDGED for op in history.increments)
    assert not problems, "\n".join(problems)
