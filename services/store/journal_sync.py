"""The raft journal's group commit, synced off the loop while the loop runs on.

An fdatasync takes from a tenth of a millisecond to several; run on the loop's thread
it stopped everything (gRPC, raft messages, applies, watch events) meanwhile. Here only
the syscall moves: :meth:`JournalSyncer.kick` (on the loop) writes what the journal
queued and hands the fdatasync to the sync helper, a small process of its own
(:mod:`services.store.fsync_helper`, which says why not a thread); when its answer
arrives, the loop records what became durable and releases what waited for it. One
job runs at a time: records appended during a job go to the next one, which starts as
soon as the running one returns (group commit: one sync covers everything appended
before it began).

Generations say who waits for what. A message produced while the journal has
unsynced changes needs the job that will cover them, ``started + 1``; one produced
while a job runs and nothing new is queued needs that job, ``started``; otherwise
nothing (``done`` is already there). pysyncobj's state is touched only on the loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Callable

from services.store.fsync_helper import REPLY, REQUEST
from services.store.journal import RaftJournal, SyncJob
from skiff.logging import get_logger

log = get_logger("store.journal_sync")

#: The replica's exit status when its journal cannot be synced (sysexits' EX_SOFTWARE).
SYNC_FAILED_EXIT = 70
#: How long stopping waits for the helper to exit once told to.
HELPER_EXIT_GRACE = 2.0


class JournalSyncer:
    """Runs ``journal``'s sync jobs one at a time in the sync helper (see module docstring).

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
        #: Jobs started and jobs finished.
        self.started = 0
        self.done = 0
        self._closed = False
        self._running: SyncJob | None = None
        self._sock: socket.socket | None = None
        self._helper: subprocess.Popen[bytes] | None = None
        if not inline:
            self._start_helper()

    def _start_helper(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        try:
            self._helper = subprocess.Popen(
                [sys.executable, "-c", "from services.store.fsync_helper import main; main()",
                 str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._loop.add_reader(ours.fileno(), self._answered)

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
        if self._sock is None or job.fd is None:  # inline, or nothing but the meta file
            try:
                job.run()
            except OSError as e:
                _stop(e)
            self._finished(job, None)
            return
        self._running = job
        try:
            socket.send_fds(self._sock, [REQUEST.pack(self.started)], [job.fd])
        except OSError as e:  # the helper is gone: nothing can be made durable
            _stop(e)

    def _answered(self) -> None:
        assert self._sock is not None
        try:
            message = self._sock.recv(REPLY.size)
        except BlockingIOError:
            return
        except OSError as e:
            message, error = b"", e
        else:
            error = None
        if not message:
            if self._closed:
                return
            _stop(error or OSError("the journal's sync helper exited"))
        number, errno, seconds = REPLY.unpack(message)
        job, self._running = self._running, None
        if job is None or number != self.started:
            _stop(OSError(f"the sync helper answered job {number}, not {self.started}"))
        if errno:
            _stop(OSError(errno, os.strerror(errno) if errno > 0 else "no file to sync"))
        self._finished(job, seconds)

    def _finished(self, job: SyncJob, seconds: float | None) -> None:
        self._journal.finish_sync(job, seconds)
        self.done += 1
        if self._closed:
            return
        self._on_synced()
        self.kick()  # what was appended during this job

    def close(self) -> None:
        """Stop the helper (the journal syncs what is left when pysyncobj destroys it)."""
        self._closed = True
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._helper is not None:
            try:
                self._helper.wait(HELPER_EXIT_GRACE)
            except subprocess.TimeoutExpired:
                self._helper.kill()
                self._helper.wait()
            self._helper = None


def _stop(error: BaseException) -> None:
    """After a failed fsync the kernel may have dropped the dirty pages: retrying could
    report durable what is not. Stop, as etcd does, rather than acknowledge it."""
    log.critical("syncing the raft journal failed; stopping", error=str(error))
    os._exit(SYNC_FAILED_EXIT)
