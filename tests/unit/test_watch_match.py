"""Which changes a watcher reports (the pure part of watch.py)."""

from __future__ import annotations

from services.store.mvcc import RevisionEvents
from services.store.watch import Watcher
from skiff.store.v1 import kv_pb2


def watcher(key: bytes, range_end: bytes = b"", **options) -> Watcher:
    defaults = dict(watch_id=0, next_revision=1, prev_kv=False, no_put=False, no_delete=False,
                    progress_notify=False)
    return Watcher(key=key, range_end=range_end, **{**defaults, **options})


def kv(key: bytes, version: int = 1) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(key=key, version=version, mod_revision=5)


def test_ranges():
    assert watcher(b"a").matches(kv(b"a"), False)
    assert not watcher(b"a").matches(kv(b"ab"), False)
    assert watcher(b"a", b"b").matches(kv(b"ab"), False)
    assert not watcher(b"a", b"b").matches(kv(b"b"), False)
    assert watcher(b"m", b"\0").matches(kv(b"zz"), False)
    assert not watcher(b"m", b"\0").matches(kv(b"a"), False)


def test_filters_and_prev_kv():
    changes = RevisionEvents(5, [(kv(b"a"), kv(b"a")), (kv(b"b", version=0), kv(b"b"))])
    every = watcher(b"\0", b"\0", prev_kv=True).events([changes])
    assert [(e.type, e.kv.key, e.HasField("prev_kv")) for e in every] == [
        (kv_pb2.Event.PUT, b"a", True), (kv_pb2.Event.DELETE, b"b", True)]
    assert [e.kv.key for e in watcher(b"\0", b"\0", no_put=True).events([changes])] == [b"b"]
    assert [e.kv.key for e in watcher(b"\0", b"\0", no_delete=True).events([changes])] == [b"a"]
    assert not watcher(b"\0", b"\0").events([changes])[0].HasField("prev_kv")
