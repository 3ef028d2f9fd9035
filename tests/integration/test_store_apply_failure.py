"""A replica that cannot apply a committed command stops, as etcd panics, and replays it.

Three real replicas; one of them runs with a fault injected into its state machine (a
``sitecustomize`` module on its PYTHONPATH makes applying one key's put raise, as a bug
would). The command commits on the two others and the faulty replica exits with
status 70, saying which command it could not apply, instead of going on without it.
Started again with the fault still there, it replays the command and stops again;
without the fault it replays it, catches up and hashes the same as its peers.
"""

from __future__ import annotations

import os

from storeclient import DEADLINE, connect_all
from test_store_cluster import hashes, rejoin

from services.store.raft_node import APPLY_FAILED_EXIT
from skiff.testing.processes import StoreCluster, wait_for

POISON = b"poison/key"

FAULT = f'''
"""Injected by test_store_apply_failure.py: applying a put of {POISON!r} raises."""
from services.store import mvcc

_put = mvcc.Store._put


def _failing_put(self, request, rev, writes):
    if request.key == {POISON!r}:
        raise RuntimeError("injected: a bug applying this put")
    return _put(self, request, rev, writes)


mvcc.Store._put = _failing_put
'''


async def exited(cluster: StoreCluster, index: int) -> int:
    """Wait for replica ``index`` to exit by itself; its exit status."""
    process = cluster.members[index].daemon.process
    assert process is not None

    async def stopped() -> bool:
        return process.poll() is not None

    await wait_for(stopped, timeout=DEADLINE, what=f"replica {index} exits")
    return process.returncode


async def test_a_replica_that_cannot_apply_a_command_stops_and_replays_it(make_store_cluster,
                                                                          tmp_path):
    cluster = await make_store_cluster()
    leader = await cluster.leader()
    victim = (leader + 1) % 3
    fault_dir = tmp_path / "fault"
    fault_dir.mkdir()
    (fault_dir / "sitecustomize.py").write_text(FAULT)
    daemon = cluster.members[victim].daemon
    daemon.env["PYTHONPATH"] = os.pathsep.join(
        [str(fault_dir), *filter(None, [os.environ.get("PYTHONPATH")])])
    async with connect_all(cluster.endpoints) as clients:
        await clients[leader].put(b"before", b"1")                    # 2
        await rejoin(cluster, clients, victim, revision=2)            # now with the fault

        await clients[leader].put(POISON, b"2")                       # 3
        assert await exited(cluster, victim) == APPLY_FAILED_EXIT
        log = daemon.log_path.read_text()
        assert "cannot apply a committed raft entry" in log
        assert '"level": "critical"' in log and POISON.decode() in log
        # The others go on.
        assert (await clients[leader].put(b"after", b"3")).header.revision == 4

        # Still faulty: it replays the command and stops again rather than skip it.
        cluster.restart(victim)
        assert await exited(cluster, victim) == APPLY_FAILED_EXIT

        del daemon.env["PYTHONPATH"]  # the bug fixed
        restarted = await rejoin(cluster, clients, victim, revision=4)
        assert await restarted.values(POISON, serializable=True) == [(POISON, b"2")]
        assert len(await hashes(clients, 4)) == 1
