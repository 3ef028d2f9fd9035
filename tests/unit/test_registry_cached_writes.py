"""Updates and deletes start from the watch cache's copy; the store's compare keeps them right.

The registry reads the object it changes from the watch cache and writes it with a
compare on the cached mod_revision, as Kubernetes' GuaranteedUpdate does. These tests
run the registry over an in-memory store and a cache whose copy is current, stale, or
missing, and check that what ends up stored is what the client asked for, that a
current copy saves the store read, and that the cache's shared objects are never
changed.
"""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from services.apiserver.admission import Chain
from services.apiserver.admission.namespace_lifecycle import NamespaceLifecycle
from services.apiserver.binding import bind
from services.apiserver.registry import Registry
from services.apiserver.storage_types import (
    GuardMoved,
    KeyConflict,
    KeyExists,
    KeyNotFound,
    StoredObject,
    decode,
    object_key,
)
from services.apiserver.strategies import STRATEGIES
from skiff.api import errors
from skiff.api.kinds import Kind, lookup
from skiff.api.v1 import core_pb2, meta_pb2

PODS = lookup("pods")
NAMESPACES = lookup("namespaces")
KEY = object_key(PODS, "default", "web")


class MemoryStorage:
    """The part of ``Storage`` the registry's writes use, in memory, counting reads."""

    def __init__(self) -> None:
        self.revision = 1
        self.data: dict[str, StoredObject] = {}
        self.reads = 0

    async def get(self, key: str) -> StoredObject | None:
        self.reads += 1
        return self.data.get(key)

    def _put(self, key: str, value: bytes) -> int:
        self.revision += 1
        old = self.data.get(key)
        self.data[key] = StoredObject(key, value, self.revision,
                                      old.create_revision if old else self.revision)
        return self.revision

    def _check(self, key: str, mod_revision: int) -> None:
        current = self.data.get(key)
        if current is None:
            raise KeyNotFound(key)
        if mod_revision and current.mod_revision != mod_revision:
            raise KeyConflict(key, mod_revision, current)

    async def create(self, key: str, value: bytes, *, puts=(), absent=(),  # type: ignore[no-untyped-def]
                     unchanged=None) -> int:
        if key in self.data:
            raise KeyExists(key)
        for kept, revision in (unchanged or {}).items():
            current = self.data.get(kept)
            if current is None or current.mod_revision != revision:
                raise GuardMoved(kept)
        return self._put(key, value)

    async def update(self, key: str, value: bytes, *, mod_revision: int, puts=(),  # type: ignore[no-untyped-def]
                     deletes=(), absent=()) -> int:
        self._check(key, mod_revision)
        return self._put(key, value)

    async def delete(self, key: str, *, mod_revision: int, deletes=()) -> int:  # type: ignore[no-untyped-def]
        self._check(key, mod_revision)
        del self.data[key]
        self.revision += 1
        return self.revision


class FixedCache:
    """A watch cache holding one copy of each object, as old as the test makes it."""

    ready = True

    def __init__(self) -> None:
        self.objects: dict[str, Message] = {}

    def get(self, key: str) -> Message | None:
        return self.objects.get(key)

    def remember(self, storage: MemoryStorage, key: str = KEY, kind: Kind = PODS) -> Message:
        """Make the cache's copy of ``key`` what the store holds now; returns it."""
        stored = storage.data[key]
        self.objects[key] = decode(kind, stored.value, stored.mod_revision)
        return self.objects[key]


def pod(**labels: str) -> core_pb2.Pod:
    return core_pb2.Pod(
        metadata=meta_pb2.ObjectMeta(name="web", namespace="default", labels=labels),
        spec=core_pb2.PodSpec(containers=[core_pb2.Container(name="c", image="busybox")]))


@pytest.fixture
def setup() -> tuple[Registry, MemoryStorage, FixedCache]:
    storage, cache = MemoryStorage(), FixedCache()
    registry = Registry(PODS, STRATEGIES["Pod"], storage, cache, Chain([]))  # type: ignore[arg-type]
    return registry, storage, cache


def stored_labels(storage: MemoryStorage) -> dict[str, str]:
    stored = storage.data[KEY]
    return dict(decode(PODS, stored.value, stored.mod_revision).metadata.labels)


async def test_a_current_copy_saves_the_store_read(setup) -> None:  # type: ignore[no-untyped-def]
    registry, storage, cache = setup
    await registry.create(pod(v="1"))
    cached = cache.remember(storage)
    before = cached.SerializeToString()
    storage.reads = 0
    updated = await registry.update(pod(v="2"))
    assert storage.reads == 0
    assert stored_labels(storage) == {"v": "2"}
    assert updated.metadata.resource_version == str(storage.revision)
    assert cached.SerializeToString() == before  # the cache's object is shared: untouched


async def test_a_stale_copy_is_caught_by_the_compare(setup) -> None:  # type: ignore[no-untyped-def]
    registry, storage, cache = setup
    await registry.create(pod(v="1"))
    cache.remember(storage)
    await registry.update(pod(v="2"))  # the cache does not see this one
    updated = await registry.update(pod(v="3"))
    assert stored_labels(storage) == {"v": "3"}
    assert updated.metadata.resource_version == str(storage.revision)


async def test_a_no_op_against_a_stale_copy_is_checked_on_the_store(setup) -> None:  # type: ignore[no-untyped-def]
    registry, storage, cache = setup
    await registry.create(pod(v="1"))
    cache.remember(storage)
    await registry.update(pod(v="2"))  # the cache still says v=1
    written = storage.revision
    await registry.update(pod(v="1"))  # back to v=1: a change for the store
    assert storage.revision == written + 1
    assert stored_labels(storage) == {"v": "1"}
    storage.reads = 0
    cache.remember(storage)
    same = await registry.update(pod(v="1"))  # a real no-op: no write, one check
    assert storage.revision == written + 1 and storage.reads == 1
    assert same.metadata.resource_version == str(written + 1)


async def test_a_client_version_ahead_of_the_cache_reads_the_store(setup) -> None:  # type: ignore[no-untyped-def]
    registry, storage, cache = setup
    await registry.create(pod(v="1"))
    cache.remember(storage)
    await registry.update(pod(v="2"))
    newer = pod(v="3")
    newer.metadata.resource_version = str(storage.revision)
    await registry.update(newer)
    assert stored_labels(storage) == {"v": "3"}


async def test_a_client_version_behind_the_cache_is_a_conflict(setup) -> None:  # type: ignore[no-untyped-def]
    registry, storage, cache = setup
    created = await registry.create(pod(v="1"))
    await registry.update(pod(v="2"))
    cache.remember(storage)
    older = pod(v="3")
    older.metadata.resource_version = created.metadata.resource_version
    storage.reads = 0
    with pytest.raises(errors.Conflict):
        await registry.update(older)
    assert stored_labels(storage) == {"v": "2"}


async def test_a_refusal_on_a_stale_copy_is_checked_on_the_store(setup) -> None:  # type: ignore[no-untyped-def]
    registry, storage, cache = setup
    await registry.create(pod(v="1"))
    stale = cache.remember(storage)
    await registry.update(pod(v="2"))
    # A copy so stale that the request looks invalid against it (another image is a
    # pod update the rules allow, but another container name is not).
    renamed = core_pb2.Pod()
    renamed.CopyFrom(stale)
    renamed.spec.containers[0].name = "old"
    cache.objects[KEY] = renamed
    await registry.update(pod(v="3"))
    assert stored_labels(storage) == {"v": "3"}


async def test_a_delete_from_a_stale_copy(setup) -> None:  # type: ignore[no-untyped-def]
    registry, storage, cache = setup
    await registry.create(pod(v="1"))
    cached = cache.remember(storage)
    before = cached.SerializeToString()
    await registry.update(pod(v="2"))
    deleted = await registry.delete(meta_pb2.DeleteRequest(namespace="default", name="web"))
    assert KEY not in storage.data
    assert deleted.metadata.labels["v"] == "2"
    assert cached.SerializeToString() == before


async def test_a_delete_of_what_only_the_cache_still_holds_is_not_found(setup) -> None:  # type: ignore[no-untyped-def]
    registry, storage, cache = setup
    await registry.create(pod(v="1"))
    cache.remember(storage)
    await registry.delete(meta_pb2.DeleteRequest(namespace="default", name="web"))
    with pytest.raises(errors.NotFound):
        await registry.delete(meta_pb2.DeleteRequest(namespace="default", name="web"))
    with pytest.raises(errors.NotFound):
        await registry.update(pod(v="2"))


async def test_a_delete_with_preconditions_reads_the_store(setup) -> None:  # type: ignore[no-untyped-def]
    registry, storage, cache = setup
    await registry.create(pod(v="1"))
    cache.remember(storage)
    updated = await registry.update(pod(v="2"))
    storage.reads = 0
    await registry.delete(meta_pb2.DeleteRequest(
        namespace="default", name="web",
        preconditions=meta_pb2.Preconditions(
            resource_version=updated.metadata.resource_version)))
    assert KEY not in storage.data and storage.reads == 1


# ------------------------------------------------------------------------ binding


def binding(node: str = "n1", uid: str = "") -> core_pb2.Binding:
    return core_pb2.Binding(metadata=meta_pb2.ObjectMeta(name="web", namespace="default",
                                                         uid=uid),
                            target=meta_pb2.ObjectReference(kind="Node", name=node))


def stored_node(storage: MemoryStorage) -> str:
    stored = storage.data[KEY]
    return decode(PODS, stored.value, stored.mod_revision).spec.node_name  # type: ignore[attr-defined]


async def test_bind_from_a_current_copy_reads_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    registry, storage, cache = setup
    created = await registry.create(pod())
    cached = cache.remember(storage)
    before = cached.SerializeToString()
    storage.reads = 0
    result = await bind(registry, binding(uid=created.metadata.uid))
    assert storage.reads == 0 and stored_node(storage) == "n1"
    assert result.metadata.resource_version == str(storage.revision)
    assert cached.SerializeToString() == before


async def test_bind_from_a_stale_copy_goes_to_the_store(setup) -> None:  # type: ignore[no-untyped-def]
    registry, storage, cache = setup
    await registry.create(pod())
    cache.remember(storage)
    await registry.update(pod(v="2"))  # the cache does not see this one
    await bind(registry, binding())
    assert stored_node(storage) == "n1" and stored_labels(storage) == {"v": "2"}


async def test_bind_refusals_come_from_the_store_not_a_stale_copy(setup) -> None:  # type: ignore[no-untyped-def]
    registry, storage, cache = setup
    await registry.create(pod())
    cache.remember(storage)  # says unbound
    await bind(registry, binding("n1"))  # the cache does not see this one
    with pytest.raises(errors.Conflict, match='already assigned to node "n1"'):
        await bind(registry, binding("n2"))
    # A copy that names another uid (the pod was replaced) is checked on the store too.
    old = cache.remember(storage)
    replaced = core_pb2.Pod()
    replaced.CopyFrom(old)
    replaced.metadata.uid = "someone-else"
    cache.objects[KEY] = replaced
    storage.reads = 0
    with pytest.raises(errors.Conflict, match="already assigned"):
        await bind(registry, binding("n2", uid=old.metadata.uid))
    assert storage.reads == 1


# ------------------------------------------ namespace lifecycle from the watch cache


def lifecycle_registries() -> tuple[Registry, Registry, MemoryStorage, FixedCache]:
    """Pods and namespaces over one store, with NamespaceLifecycle reading a namespace
    from ``cache`` and falling back to the store, as the apiserver wires it."""
    storage, cache = MemoryStorage(), FixedCache()

    async def from_store(name: str) -> Message | None:
        stored = await storage.get(object_key(NAMESPACES, "", name))
        return decode(NAMESPACES, stored.value, stored.mod_revision) if stored else None

    admission = Chain([NamespaceLifecycle(
        from_store, cached=lambda name: cache.get(object_key(NAMESPACES, "", name)),
        key=lambda name: object_key(NAMESPACES, "", name))])
    pods = Registry(PODS, STRATEGIES["Pod"], storage, cache, admission)  # type: ignore[arg-type]
    namespaces = Registry(NAMESPACES, STRATEGIES["Namespace"], storage, FixedCache(),  # type: ignore[arg-type]
                          admission)
    return pods, namespaces, storage, cache


TEAM_KEY = object_key(PODS, "team", "web")
TEAM_NS_KEY = object_key(NAMESPACES, "", "team")


async def team_namespace(namespaces: Registry, storage: MemoryStorage, cache: FixedCache, *,
                         cached: bool = True) -> None:
    """Create namespace ``team``; ``cached``: the watch cache has seen it."""
    await namespaces.create(core_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name="team")))
    if cached:
        cache.remember(storage, TEAM_NS_KEY, NAMESPACES)


def team_pod() -> core_pb2.Pod:
    made = pod()
    made.metadata.namespace = "team"
    return made


async def test_a_cached_namespace_admits_a_create_without_a_store_read() -> None:
    pods, namespaces, storage, cache = lifecycle_registries()
    await team_namespace(namespaces, storage, cache)
    storage.reads = 0
    await pods.create(team_pod())
    assert storage.reads == 0 and TEAM_KEY in storage.data


async def test_a_namespace_missing_from_the_cache_is_read_from_the_store() -> None:
    pods, namespaces, storage, cache = lifecycle_registries()
    await team_namespace(namespaces, storage, cache, cached=False)
    storage.reads = 0
    await pods.create(team_pod())
    assert storage.reads == 1 and TEAM_KEY in storage.data


async def test_a_namespace_terminating_behind_the_cache_refuses_the_create() -> None:
    pods, namespaces, storage, cache = lifecycle_registries()
    await team_namespace(namespaces, storage, cache)
    # Terminating in the store; the cache still shows it active.
    await namespaces.delete(meta_pb2.DeleteRequest(name="team"))
    with pytest.raises(errors.Forbidden, match="being terminated"):
        await pods.create(team_pod())
    assert TEAM_KEY not in storage.data


async def test_a_namespace_deleted_behind_the_cache_is_not_found() -> None:
    pods, namespaces, storage, cache = lifecycle_registries()
    await team_namespace(namespaces, storage, cache)
    del storage.data[TEAM_NS_KEY]  # gone from the store (finalized); the cache lags
    with pytest.raises(errors.NotFound, match='namespaces "team" not found'):
        await pods.create(team_pod())
    assert TEAM_KEY not in storage.data
