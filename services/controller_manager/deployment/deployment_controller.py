"""The deployment controller (Kubernetes' ``deployment_controller.go``): informers on
Deployments, ReplicaSets and pods, handlers that enqueue a deployment's key, and
``sync(key)``, which claims the deployment's ReplicaSets and hands it to a strategy
(:mod:`.rolling`, :mod:`.recreate`) or to proportional scaling (:mod:`.sync`). The
package's ``__init__`` describes the whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from services.controller_manager.deployment.recreate import Recreator
from services.controller_manager.deployment.rolling import RollingUpdater
from services.controller_manager.deployment.sync import is_scaling_event
from services.controller_manager.deployment.util import (
    DEPLOYMENT,
    REPLICA_SET,
    Deployment,
    ReplicaSet,
    WrittenObjects,
    copy_of,
    is_rolling_update,
)
from services.controller_manager.garbage_collector import without_owner
from services.controller_manager.replication import (
    controller_ref,
    owner_reference,
    plan_claims,
    selector_of,
)
from skiff.api import errors
from skiff.api.labels import Selector
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.client.events import WARNING, EventRecorder
from skiff.client.informer import SharedInformerFactory
from skiff.client.store import key_of


class DeploymentController(RollingUpdater, Recreator):
    """Rolls every Deployment's template out through its ReplicaSets (see the module)."""

    def __init__(self, client: Client, factory: SharedInformerFactory, recorder: EventRecorder,
                 config: Any = None, *, now: Callable[[], float] = time.time) -> None:
        super().__init__("deployment", workers=getattr(config, "concurrent_syncs", 5))
        self.client = client
        self.recorder = recorder
        self.now = now  # wall clock: conditions carry timestamps, deadlines compare them
        # What this controller wrote, per kind, until its informers show it.
        self.written_deployments = WrittenObjects()
        self.written_rss = WrittenObjects()
        self.deployments = factory.informer(DEPLOYMENT)
        self.replica_sets = factory.informer(REPLICA_SET)
        self.pods = factory.informer("pods")
        self.deployments.add_handler(self.enqueue, self._deployment_updated,
                                     self._deployment_deleted, name="deployment deployments")
        self.replica_sets.add_handler(self._rs_added, self._rs_updated, self._rs_deleted,
                                      name="deployment replicasets")
        self.pods.add_handler(None, None, self._pod_deleted, name="deployment pods")
        self.wait_for(self.deployments, self.replica_sets, self.pods)

    # -------------------------------------------------------------- handlers

    def _deployment_updated(self, old: Deployment, new: Deployment) -> None:
        self.enqueue(new)

    def _deployment_deleted(self, d: Deployment) -> None:
        self.written_deployments.forget(key_of(d))
        self.enqueue(d)

    def _deployment_key(self, namespace: str,
                        ref: meta_pb2.OwnerReference | None) -> str | None:
        """The key of the cached Deployment ``ref`` names, if it is one and exists."""
        if ref is None or ref.kind != DEPLOYMENT.kind:
            return None
        key = f"{namespace}/{ref.name}"
        d = self.deployments.store.get(key)
        if d is None or d.metadata.uid != ref.uid:  # type: ignore[attr-defined]
            return None
        return key

    def _enqueue_matching(self, rs: ReplicaSet) -> None:
        """An orphan ReplicaSet: every Deployment whose selector matches may adopt it."""
        for d in self.deployments.store.by_index("namespace", rs.metadata.namespace):
            if selector_of(d).matches(rs.metadata.labels):
                self.enqueue(d)

    def _rs_added(self, rs: ReplicaSet) -> None:
        if rs.metadata.HasField("deletion_timestamp"):
            self._rs_deleted(rs)
            return
        ref = controller_ref(rs)
        if ref is not None:
            if (key := self._deployment_key(rs.metadata.namespace, ref)) is not None:
                self.enqueue(key)
            return
        self._enqueue_matching(rs)

    def _rs_updated(self, old: ReplicaSet, new: ReplicaSet) -> None:
        if old.metadata.resource_version == new.metadata.resource_version:
            return  # a resync: nothing changed
        old_ref, new_ref = controller_ref(old), controller_ref(new)
        namespace = new.metadata.namespace
        if old_ref != new_ref and (old_key := self._deployment_key(namespace, old_ref)):
            self.enqueue(old_key)
        if new_ref is not None:
            if (key := self._deployment_key(namespace, new_ref)) is not None:
                self.enqueue(key)
            return
        if old.metadata.labels != new.metadata.labels or old_ref != new_ref:
            self._enqueue_matching(new)

    def _rs_deleted(self, rs: ReplicaSet) -> None:
        self.written_rss.forget(key_of(rs))
        if (key := self._deployment_key(rs.metadata.namespace, controller_ref(rs))) is not None:
            self.enqueue(key)

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        """A Recreate rollout waits for its old pods to be gone: this may be the last."""
        ref = controller_ref(pod)
        if ref is None or ref.kind != REPLICA_SET.kind:
            return
        rs = self.replica_sets.store.get(f"{pod.metadata.namespace}/{ref.name}")
        if rs is None or rs.metadata.uid != ref.uid:  # type: ignore[attr-defined]
            return
        key = self._deployment_key(pod.metadata.namespace, controller_ref(rs))
        if key is None:
            return
        d = self.deployments.store.get(key)
        if d is not None and not is_rolling_update(d):  # type: ignore[arg-type]
            self.enqueue(key)

    # ------------------------------------------------------------------ sync

    async def sync(self, key: str) -> None:
        started = time.monotonic()
        cached = self.deployments.store.get(key)
        if cached is None:
            return  # deleted: the garbage collector removes its ReplicaSets
        d: Deployment = copy_of(self.written_deployments.fresher(cached))
        selector = selector_of(d)
        if selector.empty:
            await self._selecting_all(d)
            return
        rss = await self._claim_replica_sets(d, selector)
        if d.metadata.HasField("deletion_timestamp"):
            d, new_rs, old_rss = await self._new_and_old(d, rss, create=False)
            await self._sync_status(d, [*old_rss, new_rs], new_rs)
            return
        d = await self._check_paused_conditions(d)
        d, new_rs, old_rss = await self._new_and_old(d, rss, create=False)
        if d.spec.paused or is_scaling_event(d, new_rs, old_rss):
            await self._scale_and_sync(d, new_rs, old_rss)
        elif is_rolling_update(d):
            await self._rollout_rolling(d, rss, new_rs, old_rss)
        else:
            await self._rollout_recreate(d, rss, new_rs, old_rss)
        self._log.debug("synced deployment", key=key, replica_sets=len(rss),
                        seconds=round(time.monotonic() - started, 6))

    async def _selecting_all(self, d: Deployment) -> None:
        # Validation refuses empty selectors; one that slipped through would adopt every
        # ReplicaSet in the namespace, so it is reported and left alone (as Kubernetes).
        self.recorder.event(d, WARNING, "SelectingAll", "This deployment is selecting all "
                            "pods. A non-empty selector is required.")
        if d.status.observed_generation < d.metadata.generation:
            status = copy_of(d.status)
            status.observed_generation = d.metadata.generation
            await self._write_status(d, status)

    # -------------------------------------------------------------- claiming

    async def _claim_replica_sets(self, d: Deployment, selector: Selector) -> list[ReplicaSet]:
        """Adopt and release as :func:`plan_claims` says; the ReplicaSets owned after."""
        namespace = d.metadata.namespace
        cached = [self.written_rss.fresher(rs)
                  for rs in self.replica_sets.store.by_index("namespace", namespace)]
        # Ours but not in the cache yet (created by the last sync): they count too, or
        # a sync right after a create would plan without the new ReplicaSet.
        cached += self.written_rss.unseen(namespace, self.replica_sets.store)
        plan = plan_claims(d.metadata.uid, selector, cached,  # type: ignore[arg-type]
                           owner_deleting=d.metadata.HasField("deletion_timestamp"))
        owned: list[ReplicaSet] = list(plan.owned)  # type: ignore[arg-type]
        if plan.adopt and await self._can_adopt(d):
            for rs in plan.adopt:
                adopted = copy_of(rs)
                adopted.metadata.owner_references.append(owner_reference(d, DEPLOYMENT))
                if (result := await self._update_rs(adopted)) is not None:
                    self._log.info("adopted replica set", deployment=key_of(d),
                                   replica_set=rs.metadata.name)
                    owned.append(result)
        for rs in plan.release:
            if await self._update_rs(without_owner(rs, [d.metadata.uid])) is not None:
                self._log.info("released replica set", deployment=key_of(d),
                               replica_set=rs.metadata.name)
        return owned

    async def _can_adopt(self, d: Deployment) -> bool:
        # A live read (Kubernetes' canAdopt): a stale cache must not adopt for a
        # deployment that was deleted, replaced, or is being deleted.
        try:
            fresh = await self.client.deployments.get(d.metadata.name, d.metadata.namespace)
        except errors.NotFound:
            return False
        return (fresh.metadata.uid == d.metadata.uid  # type: ignore[attr-defined]
                and not fresh.metadata.HasField("deletion_timestamp"))  # type: ignore[attr-defined]
