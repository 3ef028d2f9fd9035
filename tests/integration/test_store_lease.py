"""Lease: grant, revoke, keep-alive, time-to-live, listing, and expiry decided by the leader.

Expiry is real time: a lease of 1 s that nobody keeps alive is revoked by the leader
within about a second, its keys deleted in one revision that watchers see.
"""

from __future__ import annotations

import asyncio
import time

import grpc
from storeclient import DEADLINE, connect_all, expect_error, summary

from skiff.store.v1 import rpc_pb2
from skiff.testing.processes import wait_for


async def grant(client, ttl: int, lease_id: int = 0) -> int:  # type: ignore[no-untyped-def]
    response = await client.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id))
    assert (response.TTL, response.error) == (ttl, "")
    return response.ID


async def time_to_live(client, lease_id: int, keys: bool = False  # type: ignore[no-untyped-def]
                       ) -> rpc_pb2.LeaseTimeToLiveResponse:
    return await client.lease.LeaseTimeToLive(
        rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys))


async def lease_ids(client) -> list[int]:  # type: ignore[no-untyped-def]
    return sorted(s.ID for s in (await client.lease.LeaseLeases(
        rpc_pb2.LeaseLeasesRequest())).leases)


async def test_grant_time_to_live_leases_and_revoke(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, c):
        first = await grant(a, 60)
        chosen = await grant(b, 30, lease_id=12345)
        assert first > 0 and chosen == 12345
        await expect_error(a.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=5, ID=12345)),
                           grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: lease already exists")
        assert await a.revision() == 1  # granting writes no revision
        for client in (a, b, c):
            assert await lease_ids(client) == sorted([first, chosen])

        await a.put(b"l/1", b"x", lease=chosen)     # 2
        await b.put(b"l/2", b"y", lease=chosen)     # 3
        await c.put(b"free", b"z")                  # 4
        for client in (a, b, c):
            ttl = await time_to_live(client, chosen, keys=True)
            assert (ttl.ID, ttl.grantedTTL, list(ttl.keys)) == (chosen, 30, [b"l/1", b"l/2"])
            assert 28 <= ttl.TTL <= 30
        assert list((await time_to_live(a, chosen)).keys) == []  # keys only when asked
        unknown = await time_to_live(b, 999)
        assert (unknown.ID, unknown.TTL, unknown.grantedTTL) == (999, -1, 0)

        async with a.watch() as stream:
            await stream.create(b"\0", b"\0", prev_kv=True)
            revoked = await c.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=chosen))
            assert revoked.header.revision == 5
            events = await stream.events(2)
            assert summary(events) == [("DELETE", b"l/1", b"", 5), ("DELETE", b"l/2", b"", 5)]
            assert [e.prev_kv.lease for e in events] == [chosen, chosen]
        assert await b.values(b"\0", b"\0") == [(b"free", b"z")]
        assert (await time_to_live(a, chosen)).TTL == -1
        for client in (a, b, c):
            assert await lease_ids(client) == [first]
        await expect_error(b.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=chosen)),
                           grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
        # Revoking a lease without keys deletes nothing and writes no revision.
        await a.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=first))
        assert await c.revision() == 5
        assert await lease_ids(c) == []


async def test_keep_alive_stream_renews_and_answers_zero_for_unknown_leases(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, c):
        lease = await grant(a, 2)
        await a.put(b"kept", b"v", lease=lease)     # 2
        call = c.lease.LeaseKeepAlive()
        try:
            # Renew on a follower every half second for longer than the TTL: the key stays.
            started = time.monotonic()
            while time.monotonic() - started < 3.0:
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease))
                response = await asyncio.wait_for(call.read(), DEADLINE)
                assert (response.ID, response.TTL) == (lease, 2)
                ttl = await time_to_live(b, lease)
                assert ttl.TTL in (1, 2), ttl
                await asyncio.sleep(0.5)  # the client's renewal period, not a wait for state
            assert await a.values(b"kept") == [(b"kept", b"v")]
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=4242))
            response = await asyncio.wait_for(call.read(), DEADLINE)
            assert (response.ID, response.TTL) == (4242, 0)
        finally:
            call.cancel()
        assert await b.revision() == 2


async def test_a_lease_not_kept_alive_expires_and_its_keys_are_deleted(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, c):
        granted = time.monotonic()
        lease = await grant(a, 1)
        long_lived = await grant(a, 60)
        await b.put(b"e/1", b"x", lease=lease)          # 2
        await b.put(b"e/2", b"y", lease=lease)          # 3
        await b.put(b"e/3", b"z", lease=long_lived)     # 4
        async with c.watch() as stream:
            # From revision 2, so the deletions are seen however soon they come.
            await stream.create(b"e/", b"e0", start_revision=2,
                                filters=[rpc_pb2.WatchCreateRequest.NOPUT])
            events = await stream.events(2, timeout=DEADLINE)
            lived = time.monotonic() - granted
            assert summary(events) == [("DELETE", b"e/1", b"", 5), ("DELETE", b"e/2", b"", 5)]
        assert 1.0 <= lived < 4.0, lived
        assert await a.values(b"e/", b"e0") == [(b"e/3", b"z")]
        assert (await time_to_live(b, lease)).TTL == -1
        await wait_for(lambda: _lease_listed_only(c, long_lived), timeout=DEADLINE,
                       what="the expired lease gone from Leases")
        await expect_error(a.put(b"late", lease=lease), grpc.StatusCode.NOT_FOUND,
                           "etcdserver: requested lease not found")


async def _lease_listed_only(client, lease_id: int) -> bool:  # type: ignore[no-untyped-def]
    return await lease_ids(client) == [lease_id]


async def test_keys_move_between_leases(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        one, two = await grant(a, 60), await grant(a, 60)
        await a.put(b"k", b"1", lease=one)              # 2
        await b.put(b"k", b"2", lease=two)              # 3: now held by two only
        assert list((await time_to_live(a, one, keys=True)).keys) == []
        assert list((await time_to_live(a, two, keys=True)).keys) == [b"k"]
        await b.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=one))
        assert await a.values(b"k") == [(b"k", b"2")]   # revoking one did not touch k
        assert await a.revision() == 3
        await a.put(b"k", b"3")                         # 4: detached from two
        await b.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=two))
        assert await a.values(b"k") == [(b"k", b"3")]
        assert await b.revision() == 4
