"""Chaos over the whole cluster: SIGKILL store replicas, an apiserver, the scheduler and
controller-manager leaders while clients write and a Deployment scales; then check.

The cluster is :class:`skiff.chaos.targets.ProcessTarget` (three store replicas, two
apiservers, two schedulers and two controller-managers with short leases, kubelets on
the real Docker engine); the load, the kills and the checks are
:func:`skiff.chaos.runner.run_chaos` (see the package's docstring).
``SKIFF_CLUSTER_CHAOS_SECONDS`` (default 300: the issue asks for five minutes in CI) sets
how long the kills go on, ``SKIFF_CLUSTER_CHAOS_NODES`` how many kubelets run (default 1),
``SKIFF_CHAOS_SEED`` the seed. The JSON report is printed (``pytest -s`` shows it) whether
or not the run found problems.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import AsyncIterator

import pytest

from skiff.chaos.runner import run_chaos
from skiff.chaos.targets import ProcessTarget
from skiff.testing.fixtures import failed

CHAOS_SECONDS = float(os.environ.get("SKIFF_CLUSTER_CHAOS_SECONDS", "300"))
NODES = int(os.environ.get("SKIFF_CLUSTER_CHAOS_NODES", "1"))
#: A run is reproducible in its choices (not its timing) from the seed in the report.
SEED = int(os.environ.get("SKIFF_CHAOS_SEED", random.randrange(2**32)))




@pytest.fixture
async def cluster(tmp_path, request) -> AsyncIterator[ProcessTarget]:
    """The whole cluster as processes; stopped after (containers removed), logs on failure."""
    target = ProcessTarget(tmp_path / "cluster", nodes=NODES)
    try:
        await target.start()
        yield target
    finally:
        await target.stop()
        if failed(request):
            print(target.logs(lines=150))


@pytest.mark.chaos
@pytest.mark.timeout(CHAOS_SECONDS * 2 + 600)
async def test_cluster_keeps_writes_and_converges_through_kills(cluster):
    report = await run_chaos(cluster, seconds=CHAOS_SECONDS, seed=SEED)
    print("cluster chaos report:", json.dumps(report, indent=2))
    assert report["kills"]["total"], "nothing was killed: SKIFF_CLUSTER_CHAOS_SECONDS too short"
    assert report["operations"]["update"]["acknowledged"], "no write went through"
    assert not report["problems"], "\n".join(report["problems"])
