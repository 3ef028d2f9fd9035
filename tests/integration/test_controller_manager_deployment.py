"""The deployment controller, in a real controller-manager process (with the replication
controller and the garbage collector) against the session's real apiserver and
three-replica store.

Hollow nodes stand in for kubelets: each test starts one, and its Deployments' pod
templates name it in ``nodeName`` (no scheduler needed), so their pods are reported
Running and Ready by it, and deleted pods are finished at once. What is checked is what
a user sees: ReplicaSets named by the template hash, pods, status and conditions,
revisions, and, through a watch on the namespace's pods checked at every event, that a
rolling update keeps within maxSurge and maxUnavailable and that Recreate removes every
old pod before any new one exists.

Each test works in a namespace of its own; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from skiff.api import errors
from skiff.api.manifest import from_dict, to_dict
from skiff.api.v1 import apps_pb2, core_pb2
from skiff.cli.skiffctl.rollout import rollback_template
from skiff.client.client import Client
from skiff.health import wait_for
from skiff.testing.fixtures import failed, running_controller_manager
from skiff.testing.hollow import HollowNode
from skiff.testing.processes import ControllerManager

#: How long a test waits for the controllers (a slow, shared machine).
DEADLINE = 60.0
HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
TERMINAL = ("Succeeded", "Failed")


@pytest.fixture(scope="module")
def controller_manager(shared_cluster, tmp_path_factory) -> Iterator[ControllerManager]:
    with running_controller_manager(tmp_path_factory.mktemp("cm-deploy"),
                                    [shared_cluster.apiserver.address],
                                    ["deployment", "replication", "garbagecollector"]) as manager:
        yield manager


@pytest.fixture
async def client(shared_cluster, controller_manager, request) -> AsyncIterator[Client]:
    api = Client(shared_cluster.apiserver.address, retry_deadline=DEADLINE)
    try:
        yield api
    finally:
        await api.close()
        if failed(request):
            print(controller_manager.logs(200))


@pytest.fixture
async def ns(client: Client) -> str:
    name = f"dp-{secrets.token_hex(4)}"
    await client.namespaces.create(from_dict(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    return name


@pytest.fixture
async def node(client: Client, ns: str) -> AsyncIterator[HollowNode]:
    """A hollow node of the test's own; pods labelled ``ready: never`` never get Ready."""
    hollow = HollowNode(client, f"hollow-{ns}", heartbeat=2.0,
                        ready=lambda pod: pod.metadata.labels.get("ready") != "never")
    await hollow.start()
    try:
        yield hollow
    finally:
        await hollow.die()
        with contextlib.suppress(errors.APIError):
            await client.nodes.delete(hollow.node_name, "")


# ------------------------------------------------------------------ helpers


def manifest(name: str, ns: str, node: HollowNode, replicas: int, *, image: str = "busybox:1",
             labels: dict[str, str] | None = None, **spec: Any) -> apps_pb2.Deployment:
    """A Deployment of ``replicas`` pods on ``node``; ``spec`` adds fields (camelCase)."""
    pod_labels = {"app": name, **(labels or {})}
    return from_dict({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": pod_labels},
                              "spec": {"nodeName": node.node_name,
                                       "containers": [{"name": "app", "image": image}]}},
                 **spec}})


def condition(d: apps_pb2.Deployment, type_: str) -> apps_pb2.DeploymentCondition | None:
    return next((c for c in d.status.conditions if c.type == type_), None)


def is_active(pod: core_pb2.Pod) -> bool:
    """Counted as Kubernetes counts a ReplicaSet's replicas: not terminating, not done."""
    return not pod.metadata.HasField("deletion_timestamp") and pod.status.phase not in TERMINAL


def is_ready(pod: core_pb2.Pod) -> bool:
    return is_active(pod) and any(c.type == "Ready" and c.status == "True"
                                  for c in pod.status.conditions)


async def replica_sets(client: Client, ns: str) -> list[apps_pb2.ReplicaSet]:
    return list((await client.replica_sets.list(ns)).items)  # type: ignore[attr-defined]


async def pods(client: Client, ns: str) -> list[core_pb2.Pod]:
    return list((await client.pods.list(ns)).items)  # type: ignore[attr-defined]


async def modify(client: Client, name: str, ns: str,
                 change: Callable[[apps_pb2.Deployment], None]) -> apps_pb2.Deployment:
    """Read, change, write the Deployment; again on Conflict (the controller writes it)."""
    for _ in range(50):
        d = await client.deployments.get(name, ns)
        change(d)  # type: ignore[arg-type]
        try:
            return await client.deployments.update(d)  # type: ignore[return-value]
        except errors.Conflict:
            continue
    raise AssertionError("kept conflicting")


def set_image(image: str) -> Callable[[apps_pb2.Deployment], None]:
    def change(d: apps_pb2.Deployment) -> None:
        d.spec.template.spec.containers[0].image = image
    return change


async def wait_complete(client: Client, name: str, ns: str, image: str,
                        what: str = "") -> tuple[apps_pb2.Deployment, apps_pb2.ReplicaSet]:
    """Wait until the rollout of ``image`` is done: status says so (observed, every
    replica updated and available, Progressing NewReplicaSetAvailable) and exactly
    ``replicas`` pods exist, Ready, all of the new ReplicaSet."""
    seen: list[str] = ["nothing yet"]

    async def check() -> tuple[apps_pb2.Deployment, apps_pb2.ReplicaSet] | None:
        d: apps_pb2.Deployment = await client.deployments.get(name, ns)  # type: ignore[assignment]
        s, want = d.status, d.spec.replicas
        progressing = condition(d, "Progressing")
        seen[0] = f"deployment status {to_dict(d)['status']}"
        if (s.observed_generation < d.metadata.generation or progressing is None
                or progressing.reason != "NewReplicaSetAvailable"
                or (s.replicas, s.updated_replicas, s.available_replicas) != (want,) * 3):
            return None
        rss = await replica_sets(client, ns)
        seen[0] = f"replica sets {[to_dict(rs) for rs in rss]}"
        current = [rs for rs in rss if rs.spec.template.spec.containers[0].image == image]
        if len(current) != 1 or current[0].spec.replicas != want:
            return None
        rs = current[0]
        present = await pods(client, ns)
        listing = [(p.metadata.name, dict(p.metadata.labels), is_ready(p)) for p in present]
        seen[0] = f"pods {listing}"
        if len(present) != want or not all(
                is_ready(p) and p.metadata.labels.get(HASH) == rs.metadata.labels.get(HASH)
                for p in present):
            return None
        return d, rs
    try:
        return await wait_for(check, timeout=DEADLINE, interval=0.1,
                              what=what or f"{name} rolled out with {image}")
    except TimeoutError as e:
        raise AssertionError(f"{e}; last seen: {seen[0]}") from None


class PodWatch:
    """A watch on a namespace's pods from a listed resource version: every event is
    applied to a model of the pods, then ``check(model, event)`` runs; the first
    failed check is raised by :meth:`stop`."""

    def __init__(self, client: Client, ns: str,
                 check: Callable[[dict[str, core_pb2.Pod], Any], None]) -> None:
        self.client, self.ns, self.check = client, ns, check
        self.pods: dict[str, core_pb2.Pod] = {}
        self.events = 0
        self.failure: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listed = await self.client.pods.list(self.ns)
        self.pods = {p.metadata.name: p for p in listed.items}  # type: ignore[attr-defined]
        self._task = asyncio.create_task(self._run(listed.metadata.resource_version),  # type: ignore[attr-defined]
                                         name=f"pod watch {self.ns}")

    async def _run(self, version: str) -> None:
        while True:
            try:
                async for event in self.client.pods.watch(self.ns, resource_version=version,
                                                          allow_bookmarks=True):
                    version = event.object.metadata.resource_version or version
                    if event.type == "BOOKMARK":
                        continue
                    pod = event.object
                    if event.type == "DELETED":
                        self.pods.pop(pod.metadata.name, None)
                    else:
                        self.pods[pod.metadata.name] = pod
                    self.events += 1
                    try:
                        self.check(self.pods, event)
                    except AssertionError as e:
                        if self.failure is None:
                            self.failure = e
            except errors.Unavailable:
                continue  # the stream broke: resume where it was, nothing lost

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.failure is not None:
            raise self.failure


# -------------------------------------------------------------------- tests


async def test_deployment_runs_its_pods_and_scales(client: Client, ns: str,
                                                   node: HollowNode) -> None:
    created = await client.deployments.create(manifest("web", ns, node, 3))
    d, rs = await wait_complete(client, "web", ns, "busybox:1")

    # One ReplicaSet, named by its template's hash, which its selector, template and
    # pods carry; owned by the deployment; revision 1 on both.
    h = rs.metadata.labels[HASH]
    assert rs.metadata.name == f"web-{h}"
    assert dict(rs.spec.selector.match_labels) == {"app": "web", HASH: h}
    assert rs.spec.template.metadata.labels[HASH] == h
    ref = rs.metadata.owner_references[0]
    assert (ref.kind, ref.uid, ref.controller) == ("Deployment", created.metadata.uid, True)
    assert rs.metadata.annotations[REVISION] == "1" == d.metadata.annotations[REVISION]
    assert len(await replica_sets(client, ns)) == 1
    assert all(p.metadata.labels[HASH] == h and p.spec.node_name == node.node_name
               for p in await pods(client, ns))

    s = d.status
    assert (s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas,
            s.unavailable_replicas, s.observed_generation) == (3, 3, 3, 3, 0,
                                                               d.metadata.generation)
    available = condition(d, "Available")
    assert (available.status, available.reason) == ("True", "MinimumReplicasAvailable")
    assert condition(d, "Progressing").status == "True"

    # Scaling is not a rollout: the same ReplicaSet grows and shrinks.
    def scale(replicas: int) -> Callable[[apps_pb2.Deployment], None]:
        def change(dep: apps_pb2.Deployment) -> None:
            dep.spec.replicas = replicas
        return change

    await modify(client, "web", ns, scale(5))
    _, scaled = await wait_complete(client, "web", ns, "busybox:1", "scaled up to 5")
    assert scaled.metadata.uid == rs.metadata.uid
    await modify(client, "web", ns, scale(2))
    _, scaled = await wait_complete(client, "web", ns, "busybox:1", "scaled down to 2")
    assert scaled.metadata.uid == rs.metadata.uid
    assert len(await replica_sets(client, ns)) == 1

    reasons = {e.reason for e in (await client.events.list(ns)).items}  # type: ignore[attr-defined]
    assert "ScalingReplicaSet" in reasons


@pytest.mark.parametrize(("replicas", "surge", "unavailable", "bounds"), [
    (4, "25%", "25%", (5, 3)),  # the defaults: surge 1 (up), unavailable 1 (down)
    (5, 2, 0, (7, 5)),  # never below 5 ready
    (3, 0, 1, (3, 2)),  # never above 3 pods
], ids=["percent", "no-unavailable", "no-surge"])
async def test_rolling_update_stays_within_surge_and_unavailable(
        client: Client, ns: str, node: HollowNode, replicas: int, surge: Any,
        unavailable: Any, bounds: tuple[int, int]) -> None:
    most, fewest_ready = bounds
    await client.deployments.create(manifest(
        "web", ns, node, replicas,
        strategy={"type": "RollingUpdate",
                  "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}))
    _, old_rs = await wait_complete(client, "web", ns, "busybox:1")
    seen = {"most": 0, "fewest_ready": replicas}

    def check(model: dict[str, core_pb2.Pod], event: Any) -> None:
        active = [p for p in model.values() if is_active(p)]
        ready = [p for p in active if is_ready(p)]
        seen["most"] = max(seen["most"], len(active))
        seen["fewest_ready"] = min(seen["fewest_ready"], len(ready))
        assert len(active) <= most, (
            f"{len(active)} pods after {event.type} {event.object.metadata.name}: "
            f"more than replicas + maxSurge = {most}")
        assert len(ready) >= fewest_ready, (
            f"{len(ready)} ready pods after {event.type} {event.object.metadata.name}: "
            f"fewer than replicas - maxUnavailable = {fewest_ready}")

    watch = PodWatch(client, ns, check)
    await watch.start()
    try:
        await modify(client, "web", ns, set_image("busybox:2"))
        d, new_rs = await wait_complete(client, "web", ns, "busybox:2")

        async def all_new_seen() -> bool:
            # The watch has caught up with the end: only new, ready pods.
            return len(watch.pods) == replicas and all(
                is_ready(p) and p.metadata.labels[HASH] == new_rs.metadata.labels[HASH]
                for p in watch.pods.values())
        await wait_for(all_new_seen, timeout=DEADLINE, interval=0.1, what="the watch caught up")
    finally:
        await watch.stop()
    assert watch.events >= 3 * replicas  # every pod replaced: created, ready, deleted
    assert new_rs.metadata.uid != old_rs.metadata.uid
    assert new_rs.metadata.annotations[REVISION] == "2" == d.metadata.annotations[REVISION]
    old = await client.replica_sets.get(old_rs.metadata.name, ns)
    assert old.spec.replicas == 0 and old.metadata.annotations[REVISION] == "1"  # type: ignore[attr-defined]
    # The surge side was used where allowed (the bound is not vacuous).
    if most > replicas:
        assert seen["most"] > replicas


async def test_recreate_removes_every_old_pod_before_any_new_one(
        client: Client, ns: str, node: HollowNode) -> None:
    await client.deployments.create(manifest("db", ns, node, 3, strategy={"type": "Recreate"}))
    _, old_rs = await wait_complete(client, "db", ns, "busybox:1")
    old_hash = old_rs.metadata.labels[HASH]
    new_pods_seen = []

    def check(model: dict[str, core_pb2.Pod], event: Any) -> None:
        if event.type == "ADDED" and event.object.metadata.labels.get(HASH) != old_hash:
            new_pods_seen.append(event.object.metadata.name)
            old = [name for name, p in model.items() if p.metadata.labels.get(HASH) == old_hash]
            assert not old, f"new pod {event.object.metadata.name} while old pods exist: {old}"

    watch = PodWatch(client, ns, check)
    await watch.start()
    try:
        await modify(client, "db", ns, set_image("busybox:2"))
        d, new_rs = await wait_complete(client, "db", ns, "busybox:2")

        async def new_pods_watched() -> bool:
            return len(new_pods_seen) >= 3
        await wait_for(new_pods_watched, timeout=DEADLINE, interval=0.1,
                       what="the watch saw the new pods")
    finally:
        await watch.stop()
    assert d.metadata.annotations[REVISION] == "2"
    assert new_rs.metadata.labels[HASH] != old_hash


async def test_rollback_reuses_the_old_replica_set(client: Client, ns: str,
                                                   node: HollowNode) -> None:
    await client.deployments.create(manifest("api", ns, node, 2))
    _, first = await wait_complete(client, "api", ns, "busybox:1")
    await modify(client, "api", ns, set_image("busybox:2"))
    _, second = await wait_complete(client, "api", ns, "busybox:2")

    # What `skiffctl rollout undo` does: put revision 1's template back.
    def undo(d: apps_pb2.Deployment) -> None:
        template, annotations = rollback_template(d, first)  # type: ignore[misc]
        d.spec.template.CopyFrom(template)
        d.metadata.annotations.clear()
        d.metadata.annotations.update(annotations)

    await modify(client, "api", ns, undo)
    d, current = await wait_complete(client, "api", ns, "busybox:1", "rolled back")
    assert current.metadata.uid == first.metadata.uid  # the same ReplicaSet, again
    assert current.metadata.name == first.metadata.name
    assert current.metadata.annotations[REVISION] == "3" == d.metadata.annotations[REVISION]
    assert current.metadata.annotations["deployment.kubernetes.io/revision-history"] == "1"
    rss = await replica_sets(client, ns)
    assert {rs.metadata.uid for rs in rss} == {first.metadata.uid, second.metadata.uid}
    assert next(rs for rs in rss if rs.metadata.uid == second.metadata.uid).spec.replicas == 0


async def test_paused_deployment_scales_but_does_not_roll_out(client: Client, ns: str,
                                                              node: HollowNode) -> None:
    await client.deployments.create(manifest("web", ns, node, 2))
    _, rs = await wait_complete(client, "web", ns, "busybox:1")

    def pause(paused: bool) -> Callable[[apps_pb2.Deployment], None]:
        def change(d: apps_pb2.Deployment) -> None:
            d.spec.paused = paused
        return change

    await modify(client, "web", ns, pause(True))
    changed = await modify(client, "web", ns, set_image("busybox:2"))

    async def observed_paused() -> apps_pb2.Deployment | None:
        d: apps_pb2.Deployment = await client.deployments.get("web", ns)  # type: ignore[assignment]
        progressing = condition(d, "Progressing")
        if (d.status.observed_generation >= changed.metadata.generation
                and progressing is not None and progressing.reason == "DeploymentPaused"):
            return d
        return None
    await wait_for(observed_paused, timeout=DEADLINE, interval=0.1,
                   what="the paused template change observed")
    # Observed, and no rollout: the one ReplicaSet and its pods, as they were.
    assert [r.metadata.uid for r in await replica_sets(client, ns)] == [rs.metadata.uid]

    def scale(d: apps_pb2.Deployment) -> None:
        d.spec.replicas = 3
    await modify(client, "web", ns, scale)

    async def scaled() -> bool:
        current = await replica_sets(client, ns)
        ready = [p for p in await pods(client, ns) if is_ready(p)]
        return (len(current) == 1 and current[0].spec.replicas == 3 and len(ready) == 3
                and all(p.spec.containers[0].image == "busybox:1" for p in ready))
    await wait_for(scaled, timeout=DEADLINE, interval=0.1, what="scaled while paused")
    assert len(await replica_sets(client, ns)) == 1

    await modify(client, "web", ns, pause(False))
    d, new_rs = await wait_complete(client, "web", ns, "busybox:2", "rolled out once resumed")
    assert new_rs.metadata.uid != rs.metadata.uid and d.spec.replicas == 3


async def test_revision_history_limit_prunes_old_replica_sets(client: Client, ns: str,
                                                              node: HollowNode) -> None:
    await client.deployments.create(manifest("web", ns, node, 1, revisionHistoryLimit=1))
    await wait_complete(client, "web", ns, "busybox:1")
    await modify(client, "web", ns, set_image("busybox:2"))
    _, second = await wait_complete(client, "web", ns, "busybox:2")
    await modify(client, "web", ns, set_image("busybox:3"))
    _, third = await wait_complete(client, "web", ns, "busybox:3")

    async def pruned() -> list[apps_pb2.ReplicaSet] | None:
        rss = await replica_sets(client, ns)
        return rss if len(rss) == 2 else None
    rss = await wait_for(pruned, timeout=DEADLINE, interval=0.1, what="revision 1 pruned")
    assert {rs.metadata.uid for rs in rss} == {second.metadata.uid, third.metadata.uid}


async def test_deleting_the_deployment_cascades(client: Client, ns: str,
                                                node: HollowNode) -> None:
    await client.deployments.create(manifest("web", ns, node, 3))
    await wait_complete(client, "web", ns, "busybox:1")
    await client.deployments.delete("web", ns)

    async def all_gone() -> bool:
        return not await replica_sets(client, ns) and not await pods(client, ns)
    await wait_for(all_gone, timeout=DEADLINE, interval=0.1,
                   what="ReplicaSets and pods garbage collected")


async def test_orphan_replica_set_is_adopted_as_the_new_one(client: Client, ns: str,
                                                            node: HollowNode) -> None:
    d = manifest("web", ns, node, 2)
    orphan = from_dict({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": {"name": "hand-made", "namespace": ns,
                                     "labels": {"app": "web"}},
                        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}}})
    orphan.spec.template.CopyFrom(d.spec.template)  # type: ignore[attr-defined]
    await client.replica_sets.create(orphan)
    created = await client.deployments.create(d)
    _, rs = await wait_complete(client, "web", ns, "busybox:1")
    assert rs.metadata.name == "hand-made"
    ref = rs.metadata.owner_references[0]
    assert (ref.uid, ref.controller) == (created.metadata.uid, True)
    assert len(await replica_sets(client, ns)) == 1


async def test_released_replica_set_and_a_hash_collision(client: Client, ns: str,
                                                        node: HollowNode) -> None:
    created = await client.deployments.create(manifest("web", ns, node, 2))
    _, first = await wait_complete(client, "web", ns, "busybox:1")

    # Relabelled out of the selector: released. Its name is the one the template hashes
    # to, so the next ReplicaSet collides and is named after collisionCount 1.
    for _ in range(50):
        rs = await client.replica_sets.get(first.metadata.name, ns)
        rs.metadata.labels["app"] = "elsewhere"  # type: ignore[attr-defined]
        try:
            await client.replica_sets.update(rs)
            break
        except errors.Conflict:
            continue

    async def replaced() -> tuple[apps_pb2.Deployment, apps_pb2.ReplicaSet] | None:
        d: apps_pb2.Deployment = await client.deployments.get("web", ns)  # type: ignore[assignment]
        owned = [rs for rs in await replica_sets(client, ns)
                 if any(r.uid == created.metadata.uid for r in rs.metadata.owner_references)]
        if len(owned) != 1 or d.status.available_replicas != 2:
            return None
        return d, owned[0]
    d, second = await wait_for(replaced, timeout=DEADLINE, interval=0.1,
                               what="a new ReplicaSet after the collision")
    assert d.status.collision_count == 1
    assert second.metadata.name != first.metadata.name
    assert second.metadata.name == f"web-{second.metadata.labels[HASH]}"
    released = await client.replica_sets.get(first.metadata.name, ns)
    assert not released.metadata.owner_references  # type: ignore[attr-defined]


async def test_a_stuck_rollout_exceeds_its_progress_deadline(client: Client, ns: str,
                                                             node: HollowNode) -> None:
    await client.deployments.create(manifest("stuck", ns, node, 2, labels={"ready": "never"},
                                             progressDeadlineSeconds=2))

    async def timed_out() -> apps_pb2.Deployment | None:
        d: apps_pb2.Deployment = await client.deployments.get("stuck", ns)  # type: ignore[assignment]
        progressing = condition(d, "Progressing")
        if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
            return d
        return None
    d = await wait_for(timed_out, timeout=DEADLINE, interval=0.2, what="deadline exceeded")
    assert condition(d, "Progressing").status == "False"
    available = condition(d, "Available")
    assert (available.status, available.reason) == ("False", "MinimumReplicasUnavailable")
    assert (d.status.replicas, d.status.available_replicas, d.status.unavailable_replicas) == (
        2, 0, 2)
