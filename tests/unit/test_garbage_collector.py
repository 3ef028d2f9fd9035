"""The garbage collector's pure helpers: work items, pending finalizer work, and the
copies it writes (an ownerReference or a finalizer removed)."""

from __future__ import annotations

from services.controller_manager.garbage_collector import (
    Deletion,
    item_key,
    parse_item,
    pending_deletion,
    without_finalizer,
    without_owner,
)
from skiff.api.v1 import core_pb2, meta_pb2


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
