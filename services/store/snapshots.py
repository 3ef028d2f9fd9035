"""Full dumps of a replica's state, written on a thread of their own, so that pysyncobj can
compact its log without stopping the replica.

pysyncobj compacts its log (every ``log_compaction_entries`` entries) by writing a full
dump, then dropping the entries the dump covers. Left to itself it builds the dump, then
pickles and gzips it (level 9), all on its own thread: with tens of MB of keys that is
seconds in which the replica neither commits nor applies, and since replicas reach the
same log length together, all three stall at once (measured: a 43 MB store stopped
every write for 6.5 s, past the client's timeout).

So the store uses pysyncobj's custom serializer hooks instead:

- :meth:`Snapshotter.serialize` runs in a raft tick, between two applied batches. It
  takes a :class:`~services.store.mvcc.StoreImage` (a list copy per key) and hands it
  to a background thread (started at pysyncobj's next ``check``, once pysyncobj has
  renamed its stand-in, see below), which serializes it and writes
  a self-verifying dump (``services.store.dump_format``: a header with the payload's
  length and sha256, then ``pickle(raft state) | Snapshot``) to a side file, fsyncs it,
  renames it over the dump and fsyncs the directory.
- :meth:`Snapshotter.check` tells pysyncobj when that is done; only then does it drop
  the log entries the dump covers (and send the dump to a follower that needs it), so
  the dump is durable before the journal entries it replaces are gone. A replica
  killed (or powered off) mid-dump restarts from its previous dump and its whole
  journal.
- pysyncobj renames ``<dump>.tmp`` over the dump as soon as ``serialize`` returns. That
  file is made a hard link to the current dump (or an empty placeholder before the
  first one, removed again on start), so the rename changes nothing.
- :meth:`Snapshotter.deserialize` loads a dump: at start, and when the leader installs
  one on this follower (which abandons any dump of this replica's still being written:
  it is older). pysyncobj writes an installed dump without syncing it, so it is synced
  here, before the tick that installs it clears the journal and acknowledges it. A
  dump is verified before anything in it is applied; one a leader sends is verified as
  it arrives (:func:`check_received_dumps`), before pysyncobj renames it over ours.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any

from pysyncobj.config import SERIALIZER_STATE

from services.store.disk import SNAP_FSYNC_SECONDS, Disk
from services.store.dump_format import (
    MAGIC,
    DumpCheck,
    DumpCorrupt,
    DumpWriter,
    RaftState,
    decode,
)
from services.store.mvcc import Store, StoreImage
from skiff.logging import get_logger

log = get_logger("store.snapshots")

#: Keys serialized between two rests of the dump's writer (about half a millisecond).
CHUNK_KEYS = 64
#: The writer rests this many times as long as it worked: it holds the GIL a third of
#: the time at most, and a dump takes up to three times its CPU time to write.
REST_PER_WORK = 2.0

__all__ = ["MAGIC", "DumpCorrupt", "RaftState", "Snapshotter", "check_received_dumps",
           "read_dump", "write_dump"]


def write_dump(path: Path, raft_state: RaftState, image: StoreImage, disk: Disk | None = None,
               ) -> None:
    """Write a dump to ``path`` and fsync it, leaving the GIL to the loop most of the time."""
    with open(path, "wb") as f:
        writer = DumpWriter(f, raft_state)
        started = time.perf_counter()
        for chunk in image.chunks(keys_per_chunk=CHUNK_KEYS):
            writer.write(chunk)
            # Serializing holds the GIL; meanwhile every request on the loop waits for
            # it (each time the loop releases it for a syscall, it waits up to a switch
            # interval to get it back). Resting in between bounds that share.
            time.sleep((time.perf_counter() - started) * REST_PER_WORK)
            started = time.perf_counter()
        writer.finish()
        f.flush()
        (disk or Disk()).fsync(f.fileno(), str(path), metric=SNAP_FSYNC_SECONDS)


def read_dump(path: Path) -> tuple[RaftState, bytes]:
    """A dump's raft state and serialized store snapshot, verified (see ``dump_format``).

    Raises :class:`DumpCorrupt` for a dump cut short, damaged, or not a dump.
    """
    return decode(path.read_bytes(), str(path))


def check_received_dumps(serializer: Any) -> None:
    """Verify each dump a leader sends before pysyncobj installs it.

    pysyncobj (``Serializer.setTransmissionData``) writes the pieces to ``<dump>.1.tmp``,
    renames it over this replica's dump on the last (empty) piece, loads it and
    acknowledges it, even when loading fails. Wrapped here, the last piece reaches
    pysyncobj only if the whole transfer verified: a bad one is dropped (logged), the
    replica keeps its dump, acknowledges nothing, and the leader, finding its log still
    behind, sends the dump again.
    """
    receive = serializer.setTransmissionData
    check: DumpCheck | None = None

    def set_transmission_data(data: Any) -> bool:
        nonlocal check
        if data is None:
            return receive(data)
        piece, is_first, is_last = data
        if is_first:
            check = DumpCheck()
        if check is None:
            return False  # the rest of a transfer already refused (or never started)
        check.feed(piece)
        if is_last:
            problem, check = check.problem(), None
            if problem is not None:
                log.error("a dump received from the leader is damaged: refused; it is "
                          "sent again", problem=problem)
                return False
        return receive(data)

    serializer.setTransmissionData = set_transmission_data


class Snapshotter:
    """pysyncobj's serializer, checker and deserializer for one replica's store.

    ``serialize`` and ``deserialize`` run in raft ticks, each dump's writing on a
    thread of its own. ``lock`` is the replica's store lock.
    """

    def __init__(self, store: Store, lock: threading.Lock, dump_file: str, *,
                 disk: Disk | None = None) -> None:
        self._store = store
        self._disk = disk if disk is not None else Disk()
        self._lock = lock
        self._dump = Path(dump_file)
        self._jobs = itertools.count(1)
        self._mutex = threading.Lock()
        #: The dump being written; a loaded dump clears it, so an older one never lands.
        self._current: int | None = None
        #: The outcome of the last dump, until pysyncobj has been told of it.
        self._state = SERIALIZER_STATE.NOT_SERIALIZING
        self._writer: threading.Thread | None = None
        #: A dump ``serialize`` prepared, and its writer, started by ``check``.
        self._unstarted: tuple[int, threading.Thread] | None = None
        #: The raft state of the dump :meth:`preload` restored, for pysyncobj's first load.
        self._preloaded: RaftState | None = None

    def prepare(self) -> None:
        """Clear what a replica killed mid-dump left; call before pysyncobj starts."""
        for partial in self._dump.parent.glob(self._dump.name + ".writing.*"):
            partial.unlink(missing_ok=True)
        self._remove_placeholder()

    def preload(self) -> bool:
        """At start, before pysyncobj: restore the store from the dump, if there is one.

        A dump that exists but cannot be read (cut short, overwritten, unreadable) would
        leave the replica stuck: pysyncobj logs the failure and goes on with a journal
        that follows a state this replica does not have, never ready. Such a dump is
        moved aside (``<dump>.unreadable.<unix time>``, kept for whoever investigates)
        and logged as an error; the replica then starts as if it had lost its dump
        (see ``Replica._discard_journal_without_dump``) and the leader sends it its
        own. Returns False when it did that.
        """
        if not self._dump.exists():
            return True
        try:
            raft_state, snapshot = read_dump(self._dump)
            with self._lock:
                self._store.restore(snapshot)
        except Exception as e:
            with self._lock:
                self._store.__init__()  # type: ignore[misc]  # whatever restore left
            aside = self._dump.with_name(f"{self._dump.name}.unreadable.{int(time.time())}")
            os.replace(self._dump, aside)
            self._disk.sync_directory(self._dump.parent, metric=SNAP_FSYNC_SECONDS)
            log.error("the dump cannot be read: moved aside; this replica recovers from its "
                      "peers", file=str(self._dump), moved_to=str(aside), error=repr(e))
            return False
        self._preloaded = raft_state
        log.info("store restored from a dump", file=str(self._dump),
                 revision=self._store.revision)
        return True

    def _remove_placeholder(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self._dump.stat().st_size == 0:
                self._dump.unlink()  # the stand-in of a first dump that never finished

    def serialize(self, tmp_file: str, raft_state: RaftState) -> None:
        """pysyncobj's ``serializer``: start a dump of the store as applied right now."""
        job = next(self._jobs)
        try:
            started = time.perf_counter()
            with self._lock:
                image = self._store.image()
            log.info("store dump started", revision=image.revision,
                     image_ms=round((time.perf_counter() - started) * 1000, 1))
            tmp = Path(tmp_file)
            tmp.unlink(missing_ok=True)
            if self._dump.exists():
                os.link(self._dump, tmp)
            else:
                tmp.touch()
            writer = threading.Thread(target=self._write, args=(job, raft_state, image),
                                      name=f"store-dump-{job}", daemon=True)
            with self._mutex:
                self._current, self._state = job, SERIALIZER_STATE.SERIALIZING
                # Started by the next ``check``: pysyncobj renames the stand-in over the
                # dump after this returns, and a writer faster than that would see its
                # new dump replaced by the old one (then the log truncated past it).
                self._unstarted = (job, writer)
        except Exception:
            # Raising would leave pysyncobj's serializer marked busy for good.
            log.exception("starting a store dump failed")
            with self._mutex:
                self._current, self._state = None, SERIALIZER_STATE.FAILED

    def _write(self, job: int, raft_state: RaftState, image: StoreImage) -> None:
        partial = self._dump.with_name(f"{self._dump.name}.writing.{job}")
        try:
            write_dump(partial, raft_state, image, self._disk)
            with self._mutex:
                landed = self._current == job
                if landed:
                    os.replace(partial, self._dump)
            if landed:
                # The rename durable before pysyncobj hears of the dump and drops the
                # journal entries it covers (outside the mutex: ``check`` runs in ticks).
                self._disk.sync_directory(self._dump.parent, metric=SNAP_FSYNC_SECONDS)
                with self._mutex:
                    # A dump installed meanwhile replaced ours and already said FAILED.
                    if self._current == job:
                        self._current, self._state = None, SERIALIZER_STATE.SUCCESS
        except Exception:
            log.exception("writing a store dump failed", file=str(partial))
            with self._mutex:
                landed = False
                if self._current == job:
                    self._current, self._state = None, SERIALIZER_STATE.FAILED
        if landed:
            log.info("store dump written", revision=image.revision,
                     bytes=self._dump.stat().st_size)
        else:
            partial.unlink(missing_ok=True)

    def wait(self, timeout: float) -> bool:
        """Wait for the dump being written, if any, to land; False if still writing."""
        writer = self._writer
        if writer is not None:
            writer.join(timeout)
            return not writer.is_alive()
        return True

    def check(self) -> int:
        """pysyncobj's ``serializeChecker``: the state of the dump it asked for.

        pysyncobj calls it in every tick; the first call after ``serialize`` starts the
        writer (see there).
        """
        with self._mutex:
            if self._unstarted is not None:
                job, writer = self._unstarted
                self._unstarted = None
                if self._current == job:
                    self._writer = writer
                    writer.start()
            state = self._state
            if state != SERIALIZER_STATE.SERIALIZING:
                self._state = SERIALIZER_STATE.NOT_SERIALIZING
            if state == SERIALIZER_STATE.FAILED:
                # Here, not in the writer: pysyncobj renames the stand-in over the dump
                # after ``serialize`` returns, which a fast failing writer can precede.
                self._remove_placeholder()
        return state

    def deserialize(self, dump_file: str) -> RaftState:
        """pysyncobj's ``deserializer``: restore the store from a dump; its raft state.

        pysyncobj's first load, at start, finds the dump :meth:`preload` restored.
        """
        preloaded, self._preloaded = self._preloaded, None
        if preloaded is not None and Path(dump_file) == self._dump:
            return preloaded
        with self._mutex:
            if self._current is not None:
                # The leader sent a newer state than the one being written: drop that one.
                self._current, self._state = None, SERIALIZER_STATE.FAILED
        # An installed dump was written (and renamed) by pysyncobj, unsynced.
        self._disk.sync_file(dump_file, metric=SNAP_FSYNC_SECONDS)
        self._disk.sync_directory(Path(dump_file).parent, metric=SNAP_FSYNC_SECONDS)
        raft_state, snapshot = read_dump(Path(dump_file))
        with self._lock:
            self._store.restore(snapshot)
            revision = self._store.revision
        log.info("store restored from a dump", file=dump_file, revision=revision)
        return raft_state
