"""Pod workers: one sync at a time per pod, requests during a sync coalesce into one more."""

import asyncio

from services.kubelet.pod_workers import PodWorkers


async def test_syncs_of_one_pod_are_serialised_and_coalesced():
    release = asyncio.Event()
    b_synced = asyncio.Event()
    a_twice = asyncio.Event()
    calls: list[str] = []
    running: set[str] = set()
    overlap = False

    async def sync(uid: str) -> None:
        nonlocal overlap
        overlap |= uid in running
        running.add(uid)
        calls.append(uid)
        if len(calls) == 1:
            await release.wait()
        running.discard(uid)
        if uid == "b":
            b_synced.set()
        if calls.count("a") == 2:
            a_twice.set()

    workers = PodWorkers(sync)
    workers.update("a")
    await asyncio.sleep(0)            # let the first sync begin and block
    for _ in range(5):
        workers.update("a")           # all while "a" is syncing: one more sync
    workers.update("b")               # another pod runs in parallel
    await asyncio.wait_for(b_synced.wait(), 5)   # b did not wait for a
    release.set()
    await asyncio.wait_for(a_twice.wait(), 5)
    assert calls.count("a") == 2 and calls.count("b") == 1 and not overlap
    await workers.stop()


async def test_a_failing_sync_is_retried_and_a_wish_to_look_again_is_kept():
    seen = asyncio.Queue()
    attempts = 0

    async def sync(uid: str) -> float | None:
        nonlocal attempts
        attempts += 1
        await seen.put(attempts)
        if attempts == 1:
            raise RuntimeError("boom")
        return 0.01 if attempts == 2 else None

    workers = PodWorkers(sync)
    workers.update("a")
    assert [await asyncio.wait_for(seen.get(), 5) for _ in range(3)] == [1, 2, 3]
    await workers.stop()
