"""The Recreate strategy (Kubernetes' ``recreate.go``): scale every old ReplicaSet to
zero, wait until none of their pods exists (even terminating), then scale the new one up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from services.controller_manager.deployment.progress import ProgressSyncer
from services.controller_manager.deployment.util import (
    Deployment,
    ReplicaSet,
    deployment_complete,
    plan_recreate_scale_down,
    spec_replicas,
)
from services.controller_manager.replication import (
    TERMINAL_PHASES,
    controller_ref,
    desired_replicas,
    selector_of,
)
from skiff.api.v1 import core_pb2
from skiff.client.informer import Informer


def old_pods_running(new_rs: ReplicaSet | None, old_rss: Iterable[ReplicaSet],
                     pods_by_replica_set: Mapping[str, Sequence[core_pb2.Pod]]) -> bool:
    """Whether any pod of an old ReplicaSet still exists, even terminating (pure; Recreate
    starts new pods only after that). ``pods_by_replica_set`` is keyed by the uid of a
    pod's controlling ReplicaSet; finished pods do not count."""
    if sum(rs.status.replicas for rs in old_rss) > 0:
        return True
    new_uid = new_rs.metadata.uid if new_rs is not None else None
    for uid, pods in pods_by_replica_set.items():
        if uid == new_uid:
            continue
        if any(p.status.phase not in TERMINAL_PHASES for p in pods):
            return True
    return False


# ------------------------------------------------------------------ controller


class Recreator(ProgressSyncer):
    """One step of a Recreate rollout per sync."""

    pods: Informer

    async def _rollout_recreate(self, d: Deployment, rss: list[ReplicaSet],
                                new_rs: ReplicaSet | None, old_rss: list[ReplicaSet]) -> None:
        sizes = plan_recreate_scale_down(old_rss)
        if sizes:
            old_rss = await self._apply_sizes(d, old_rss, sizes)
            await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
            return
        if old_pods_running(new_rs, old_rss, self._pods_by_replica_set(d, rss)):
            await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
            return
        if new_rs is None:
            d, new_rs, old_rss = await self._new_and_old(d, rss, create=True)
            assert new_rs is not None
        if spec_replicas(new_rs) != desired_replicas(d):
            new_rs = await self._scale(d, new_rs, desired_replicas(d))
        if deployment_complete(d, d.status):
            await self._cleanup(d, old_rss)
        await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)

    def _pods_by_replica_set(self, d: Deployment,
                             rss: Iterable[ReplicaSet]) -> dict[str, list[core_pb2.Pod]]:
        """The deployment's pods (any state), by the uid of their ReplicaSet."""
        selector = selector_of(d)
        uids = {rs.metadata.uid for rs in rss}
        found: dict[str, list[core_pb2.Pod]] = {uid: [] for uid in uids}
        for pod in self.pods.store.by_index("namespace", d.metadata.namespace):
            ref = controller_ref(pod)
            if ref is not None and ref.uid in uids and selector.matches(pod.metadata.labels):  # type: ignore[attr-defined]
                found[ref.uid].append(pod)  # type: ignore[arg-type]
        return found
