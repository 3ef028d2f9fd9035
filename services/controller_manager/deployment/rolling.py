"""The RollingUpdate strategy (Kubernetes' ``rolling.go``): scale the new ReplicaSet up as
far as ``maxSurge`` allows (:func:`plan_new_replica_set_scale`), then old ones down as
far as ``maxUnavailable`` allows (:func:`plan_old_replica_sets_scale_down`), one step per
sync.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.controller_manager.deployment.progress import ProgressSyncer
from services.controller_manager.deployment.util import (
    Deployment,
    ReplicaSet,
    active,
    available_count,
    creation_key,
    deployment_complete,
    max_unavailable,
    new_rs_new_replicas,
    spec_replicas,
)
from services.controller_manager.replication import (
    desired_replicas,
)


def plan_new_replica_set_scale(d: Deployment, all_rss: Sequence[ReplicaSet | None],
                               new_rs: ReplicaSet) -> int | None:
    """The new ReplicaSet's next size in a rolling update; None: leave it (pure)."""
    replicas, current = desired_replicas(d), spec_replicas(new_rs)
    if current == replicas:
        return None
    if current > replicas:
        return replicas
    size = new_rs_new_replicas(d, all_rss, new_rs)
    return size if size != current else None


def plan_old_replica_sets_scale_down(d: Deployment, all_rss: Sequence[ReplicaSet | None],
                                     old_rss: Sequence[ReplicaSet],
                                     new_rs: ReplicaSet | None) -> dict[str, int]:
    """Old ReplicaSets' next sizes in a rolling update, by name (pure; Kubernetes'
    reconcileOldReplicaSets): first the unhealthy pods of old ReplicaSets (oldest
    first) as far as ``maxScaledDown`` goes, then available ones while more than
    ``replicas - maxUnavailable`` pods stay available."""
    if sum(spec_replicas(rs) for rs in old_rss) == 0:
        return {}
    replicas = desired_replicas(d)
    min_available = replicas - max_unavailable(d)
    all_pods = sum(spec_replicas(rs) for rs in all_rss)
    new_unavailable = spec_replicas(new_rs) - available_count(new_rs)
    max_scaled_down = all_pods - min_available - new_unavailable
    if max_scaled_down <= 0:
        return {}
    before = {rs.metadata.name: spec_replicas(rs) for rs in old_rss}
    sizes = dict(before)
    ordered = sorted(old_rss, key=creation_key)

    # Unhealthy replicas first: they would otherwise block the rollout until it times out.
    cleaned = 0
    for rs in ordered:
        if cleaned >= max_scaled_down:
            break
        name = rs.metadata.name
        unhealthy = sizes[name] - available_count(rs)
        if sizes[name] == 0 or unhealthy <= 0:
            continue
        count = min(max_scaled_down - cleaned, unhealthy)
        sizes[name] -= count
        cleaned += count

    # Then available ones, while more than minAvailable stay available. Old ones count
    # at their size after the step above (it removed only unavailable pods).
    old_names = set(sizes)
    available = sum(available_count(rs) for rs in all_rss
                    if rs is not None and rs.metadata.name not in old_names)
    available += sum(min(available_count(rs), sizes[rs.metadata.name]) for rs in old_rss)
    to_scale_down = available - min_available
    scaled = 0
    for rs in ordered:
        if scaled >= to_scale_down:
            break
        name = rs.metadata.name
        if sizes[name] == 0:
            continue
        count = min(sizes[name], to_scale_down - scaled)
        sizes[name] -= count
        scaled += count
    return {name: size for name, size in sizes.items() if size != before[name]}


# ------------------------------------------------------------------ controller


class RollingUpdater(ProgressSyncer):
    """One step of a rolling update per sync."""

    async def _rollout_rolling(self, d: Deployment, rss: list[ReplicaSet],
                               new_rs: ReplicaSet | None, old_rss: list[ReplicaSet]) -> None:
        if new_rs is None:
            d, new_rs, old_rss = await self._new_and_old(d, rss, create=True)
            assert new_rs is not None  # created, or the create raised
        size = plan_new_replica_set_scale(d, [*old_rss, new_rs], new_rs)
        if size is not None:
            new_rs = await self._scale(d, new_rs, size)
            await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
            return
        sizes = plan_old_replica_sets_scale_down(d, [*old_rss, new_rs], active(old_rss), new_rs)
        if sizes:
            old_rss = await self._apply_sizes(d, old_rss, sizes)
            await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
            return
        if deployment_complete(d, d.status):
            await self._cleanup(d, old_rss)
        await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
