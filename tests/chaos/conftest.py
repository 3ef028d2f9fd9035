"""Chaos fixtures: a store cluster that also compacts under load, its logs shown on failure."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from skiff.testing.fixtures import failed
from skiff.testing.processes import StoreCluster

#: Compaction runs often enough to happen during a run, and keeps far more revisions
#: than a watcher falls behind while it resumes on another replica. Replicas dump their
#: state and truncate their raft logs every 1,000 entries, so kills land mid-dump and
#: restarted replicas catch up from the leader's dump as well as from its log.
COMPACTION_ARGS = ["--auto-compaction-retention", "20000", "--auto-compaction-interval", "5",
                   "--snapshot-count", "1000"]




@pytest.fixture
async def chaos_cluster(tmp_path, request) -> AsyncIterator[StoreCluster]:
    """Three real replicas that compact every few seconds; stopped after, logs on failure."""
    cluster = StoreCluster(tmp_path / "store", extra_args=COMPACTION_ARGS)
    cluster.start()
    try:
        await cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()
        if failed(request):
            print(cluster.logs(lines=200))
