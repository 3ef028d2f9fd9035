"""A store watch stream's progress reply reports the revision it checked, not a later one.

Raft applies in its own thread, so the store's revision can move between the stream's
"every watcher has been sent everything up to R" check and the building of the reply.
A reply that then claimed R+1 would tell the client (the apiserver's watch cache) that
the events of R+1 were sent, and it would skip them when they came. The fake replica
here moves its revision on after every read from the one the check makes. The same
holds for the "created" reply of a watch from now: its revision is the one the
watch starts after.
"""

from __future__ import annotations

import threading

from services.store.watch import SharedResponses, WatchStream
from skiff.store.v1 import rpc_pb2

SYNCED = 41  # the watcher was sent everything up to here


class BusyStore:
    """A store whose revision goes up after each read from the ``moves_after``-th on."""

    def __init__(self, revision: int) -> None:
        self.reset(revision, moves_after=0)

    def reset(self, revision: int, *, moves_after: int) -> None:
        self._revision, self.reads, self.moves_after = revision, 0, moves_after

    @property
    def revision(self) -> int:
        self.reads += 1
        value = self._revision
        if self.moves_after and self.reads >= self.moves_after:
            self._revision += 1  # raft applied another batch in the meantime
        return value


class FakeReplica:
    def __init__(self, store: BusyStore) -> None:
        self.store = store
        self.lock = threading.Lock()

    def add_applied_listener(self, listener) -> None:  # type: ignore[no-untyped-def]
        pass


def stream_with_a_synced_watcher(*, moves_after: int) -> WatchStream:
    """A stream whose one watcher was sent everything up to SYNCED; the store's revision
    moves on after its ``moves_after``-th read from now on."""
    store = BusyStore(SYNCED)
    replica = FakeReplica(store)

    def fill_header(header: rpc_pb2.ResponseHeader) -> None:  # as the server's Context
        if not header.revision:
            header.revision = replica.store.revision

    stream = WatchStream(replica, fill_header, progress_interval=600.0,  # type: ignore[arg-type]
                         shared=SharedResponses(replica))  # type: ignore[arg-type]
    stream._create(rpc_pb2.WatchCreateRequest(key=b"k/", range_end=b"k0",
                                              start_revision=SYNCED + 1, progress_notify=True))
    stream._drain()  # the "created" reply
    store.reset(SYNCED, moves_after=moves_after)
    return stream


def test_a_requested_progress_reply_reports_the_checked_revision():
    # Reads: the watcher's catch-up, then the "all synced" check.
    stream = stream_with_a_synced_watcher(moves_after=2)
    stream._progress_requested = True
    [reply] = stream._drain()
    assert isinstance(reply, rpc_pb2.WatchResponse) and not reply.events
    assert reply.header.revision == SYNCED


def test_a_periodic_progress_notification_reports_the_checked_revision():
    stream = stream_with_a_synced_watcher(moves_after=1)  # the check's read
    [reply] = stream._progress_notifications()
    assert reply.header.revision == SYNCED


def test_a_watch_from_now_is_created_at_the_revision_it_starts_after():
    # The store moves on after the first read: the cursor's start.
    store = BusyStore(SYNCED)
    replica = FakeReplica(store)

    def fill_header(header: rpc_pb2.ResponseHeader) -> None:
        if not header.revision:
            header.revision = replica.store.revision

    stream = WatchStream(replica, fill_header, progress_interval=600.0,  # type: ignore[arg-type]
                         shared=SharedResponses(replica))  # type: ignore[arg-type]
    store.reset(SYNCED, moves_after=1)
    stream._create(rpc_pb2.WatchCreateRequest(key=b"k/", range_end=b"k0"))
    [created] = stream._control  # the reply, before any catch-up reads the store again
    assert created.created
    [watcher] = stream._watchers.values()
    assert watcher.next_revision == created.header.revision + 1
