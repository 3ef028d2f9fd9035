"""The raft journal's group commit, synced on a thread of its own while the loop runs on.

An fdatasync takes from a fraction of a millisecond to several; run on the loop's
thread it stopped everything (gRPC, raft messages, applies, watch events) meanwhile.
Here only the syscall moves: :meth:`JournalSyncer.kick` (on the loop) writes what the
journal queued and hands the job's fdatasync (and the term/vote file, if it changed) to
a single worker thread; when it returns, the loop records what became durable and
releases what waited for it. One job runs at a time: records appended during a job go
to the next one, which starts as soon as the running one returns (group commit: one
sync covers everything appended before it began).

Generations say who waits for what. A message produced while the journal has
unsynced changes needs the job that will cover them, ``started + 1``; one produced
while a job runs and nothing new is queued needs that job, ``started``; otherwise
nothing (``done`` is already there). pysyncobj's state is touched only on the loop:
the worker thread calls :meth:`SyncJob.run` and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable

from services.store.journal import RaftJournal, SyncJob
from skiff.logging import get_logger

log = get_logger("store.journal_sync")

#: The replica's exit status when its journal cannot be synced (sysexits' EX_SOFTWARE).
SYNC_FAILED_EXIT = 70


class JournalSyncer:
    """Runs ``journal``'s sync jobs one at a time on a worker thread (see module docstring).

    ``on_synced`` runs on the loop after each job: the replica releases the messages
    that waited for it and ticks (the leader's own copy now counts towards commit).
    ``inline``: run each job on the loop's thread instead, before returning (a single
    replica, whose own copy is its whole majority, or syncs turned off).
    """

    def __init__(self, journal: RaftJournal, loop: asyncio.AbstractEventLoop,
                 on_synced: Callable[[], None], *, inline: bool = False) -> None:
        self._journal = journal
        self._loop = loop
        self._on_synced = on_synced
        self._inline = inline
        #: Jobs for the worker thread (None: stop); a SimpleQueue and call_soon_threadsafe
        #: are the cheapest handoff there is both ways (an executor's futures cost more).
        self._jobs: queue.SimpleQueue[SyncJob | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if not inline:
            self._thread = threading.Thread(target=self._work, name="journal-sync", daemon=True)
            self._thread.start()
        #: Jobs started and jobs finished.
        self.started = 0
        self.done = 0
        self._closed = False

    @property
    def running(self) -> bool:
        return self.started != self.done

    def required(self) -> int:
        """The generation that makes durable everything the journal holds now."""
        return self.started + (1 if self._journal.unsynced else 0)

    def kick(self) -> None:
        """Start a job if the journal has unsynced changes and none is running."""
        if self.running or self._closed:
            return
        job = self._journal.begin_sync()
        if job is None:
            return
        self.started += 1
        if self._thread is None:
            try:
                job.run()
            except OSError as e:
                _stop(e)
            self._finished(job)
            return
        self._jobs.put(job)

    def _work(self) -> None:
        """The worker thread: run each job's syscalls, then hand it back to the loop."""
        while (job := self._jobs.get()) is not None:
            try:
                job.run()
            except OSError as e:
                _stop(e)
            try:
                self._loop.call_soon_threadsafe(self._after, job)
            except RuntimeError:
                return  # the loop is closed: the replica is stopping

    def _after(self, job: SyncJob) -> None:
        self._finished(job)

    def _finished(self, job: SyncJob) -> None:
        self._journal.finish_sync(job)
        self.done += 1
        if self._closed:
            return
        self._on_synced()
        self.kick()  # what was appended during this job

    def close(self) -> None:
        """Wait for a running job's syscalls, and start no more (the journal syncs what
        is left when pysyncobj destroys it)."""
        self._closed = True
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()


def _stop(error: BaseException) -> None:
    """After a failed fsync the kernel may have dropped the dirty pages: retrying could
    report durable what is not. Stop, as etcd does, rather than acknowledge it."""
    log.critical("syncing the raft journal failed; stopping", error=str(error))
    os._exit(SYNC_FAILED_EXIT)
