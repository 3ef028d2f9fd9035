"""The garbage collector's pure helpers: work items, pending finalizer work, and the
copies it writes (an ownerReference or a finalizer removed); and its foreground
deletion over a fake API (caches filled by hand, writes recorded; no sockets)."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from services.controller_manager.garbage_collector import (
    FOREGROUND_FINALIZER,
    Deletion,
    GarbageCollector,
    item_key,
    parse_item,
    pending_deletion,
    without_finalizer,
    without_owner,
)
from skiff.api import errors
from skiff.api.kinds import Kind, for_message, lookup
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.informer import SharedInformerFactory


def owned_pod(*uids: str) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace = "web-1", "prod"
    for uid in uids:
        p.metadata.owner_references.append(meta_pb2.OwnerReference(kind="ReplicaSet",
                                                                   name=uid, uid=uid))
    return p


def test_items_round_trip() -> None:
    key = item_key(owned_pod(), "Pod")
    assert key == "Pod:prod/web-1"
    assert parse_item(key) == ("Pod", "prod", "web-1")


def test_pending_deletion_reads_finalizers() -> None:
    rc = core_pb2.ReplicationController()
    assert pending_deletion(rc) is None
    rc.metadata.finalizers.append("orphan")
    assert pending_deletion(rc) is None  # not deleting yet
    rc.metadata.deletion_timestamp.FromSeconds(5)
    assert pending_deletion(rc) == Deletion(orphan=True, foreground=False)
    rc.metadata.finalizers[:] = ["foregroundDeletion", "example.com/keep"]
    assert pending_deletion(rc) == Deletion(orphan=False, foreground=True)


def test_without_owner_and_finalizer_copy() -> None:
    pod = owned_pod("a", "b")
    stripped = without_owner(pod, ["a"])
    assert [r.uid for r in stripped.metadata.owner_references] == ["b"]
    assert [r.uid for r in pod.metadata.owner_references] == ["a", "b"]  # untouched
    assert without_owner(pod, ["zzz"]) == pod
    pod.metadata.finalizers.extend(["orphan", "other"])
    assert list(without_finalizer(pod, "orphan").metadata.finalizers) == ["other"]
    assert list(pod.metadata.finalizers) == ["orphan", "other"]


# ------------------------------------------------- foreground deletion, with a fake API


class FakeResource:
    """One kind's objects as the API holds them, and the writes made to them."""

    def __init__(self, kind: str, calls: list[tuple[str, ...]]) -> None:
        self.kind = kind
        self.objects: dict[tuple[str, str], Message] = {}
        self.calls = calls

    async def get(self, name: str, namespace: str = "default", **_: Any) -> Message:
        found = self.objects.get((namespace, name))
        if found is None:
            raise errors.NotFound(f"{self.kind} {namespace}/{name} not found")
        return found

    async def update(self, obj: Message) -> Message:
        md = obj.metadata  # type: ignore[attr-defined]
        self.objects[(md.namespace, md.name)] = obj
        self.calls.append(("update", self.kind, md.name))
        return obj

    async def delete(self, name: str, namespace: str = "default", *,
                     propagation_policy: str = "", **_: Any) -> Message:
        self.calls.append(("delete", self.kind, name, propagation_policy))
        return self.objects[(namespace, name)]


class FakeClient:
    """The API as the collector sees it: a FakeResource per kind (no sockets)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.kinds: dict[str, FakeResource] = {}

    def resource(self, kind: Kind | str) -> FakeResource:
        name = (lookup(kind) if isinstance(kind, str) else kind).kind
        return self.kinds.setdefault(name, FakeResource(name, self.calls))


def obj(kind: str, name: str, *owners: Message, deleting: str = "") -> Message:
    """A ``kind`` object in ``prod`` controlled (blocking) by ``owners``; being deleted
    with the finalizer ``deleting`` if given."""
    made = lookup(kind).message()
    md = made.metadata
    md.name, md.namespace, md.uid = name, "prod", f"uid-{name}"
    for owner in owners:
        md.owner_references.append(meta_pb2.OwnerReference(
            kind=for_message(owner).kind,
            name=owner.metadata.name, uid=owner.metadata.uid,  # type: ignore[attr-defined]
            controller=True, block_owner_deletion=True))
    if deleting:
        md.deletion_timestamp.FromSeconds(100)
        md.finalizers.append(deleting)
    return made


def collector(*objects: Message) -> tuple[GarbageCollector, FakeClient]:
    """A collector whose caches (and the fake API) hold ``objects``."""
    client = FakeClient()
    gc = GarbageCollector(client, SharedInformerFactory(client), None)  # type: ignore[arg-type]
    for found in objects:
        kind = for_message(found).kind
        gc.informers[kind].store.put(found)
        md = found.metadata  # type: ignore[attr-defined]
        client.resource(kind).objects[(md.namespace, md.name)] = found
    return gc, client


async def test_foreground_deletion_goes_down_the_whole_tree() -> None:
    # A dependent with dependents of its own was deleted in the background: it went at
    # once, its owner's finalizer right after, while its pods were still there.
    rc = obj("ReplicationController", "web", deleting=FOREGROUND_FINALIZER)
    rs = obj("ReplicaSet", "web-1", rc)
    pod = obj("Pod", "web-1-a", rs)
    gc, client = collector(rc, rs, pod)
    await gc.sync("ReplicationController:prod/web")
    assert client.calls == [("delete", "ReplicaSet", "web-1", "Foreground")]
    # The ReplicaSet, now deleting in the foreground, deletes its pod in the background.
    rs = obj("ReplicaSet", "web-1", rc, deleting=FOREGROUND_FINALIZER)
    gc.informers["ReplicaSet"].store.put(rs)
    client.calls.clear()
    await gc.sync("ReplicaSet:prod/web-1")
    assert client.calls == [("delete", "Pod", "web-1-a", "Background")]


async def test_foreground_deletion_releases_a_dependent_held_by_another_owner() -> None:
    doomed = obj("ReplicationController", "old", deleting=FOREGROUND_FINALIZER)
    keeper = obj("ReplicationController", "keeper")
    shared = obj("Pod", "shared", doomed, keeper)
    gc, client = collector(doomed, keeper, shared)
    await gc.sync("ReplicationController:prod/old")
    # The pod stays with its other owner; nothing blocks the owner's deletion any more.
    assert client.calls == [("update", "Pod", "shared"),
                            ("update", "ReplicationController", "old")]
    kept = client.resource("Pod").objects[("prod", "shared")]
    assert [r.uid for r in kept.metadata.owner_references] == ["uid-keeper"]  # type: ignore[attr-defined]
    finalizers = client.resource("ReplicationController").objects[("prod", "old")]
    assert FOREGROUND_FINALIZER not in finalizers.metadata.finalizers  # type: ignore[attr-defined]
