"""Making the store's files durable: fsync, fdatasync and directory syncs, timed and logged.

Every sync the store makes goes through a :class:`Disk`, so that three things hold in
one place:

- ``--unsafe-no-fsync`` (etcd's flag) skips the syncs and nothing else: files are still
  written, renamed and truncated as usual, so a killed process loses nothing, but a
  power loss can lose acknowledged writes.
- Each sync's duration is observed in a histogram, with etcd's buckets (1 ms to 8 s,
  doubling): ``skiff_store_wal_fsync_duration_seconds`` for the journal and its term
  and vote (etcd keeps both in its WAL), ``skiff_store_snap_fsync_duration_seconds``
  for dumps.
- With ``SKIFF_STORE_SYNC_LOG=<path>`` set, every successful sync appends one JSON
  line to that file, so a test can emulate a power loss after killing the process
  (the page cache survives a kill; see ``skiff.testing.power_loss``, which reads it):

  ``{"file": <abs path>, "inode": <n>, "length": <bytes made durable>}`` after a file's
  fsync/fdatasync, and ``{"dir": <abs path>, "entries": {<name>: <inode>, ...}}``
  after a directory's fsync (its entries as they stood then, which that sync made
  durable: created files, renames and removals).

  The log is opened with O_APPEND and each line is one ``write``; it is not synced
  itself (tests kill processes; they do not cut power).

Rule for callers, which the emulation relies on: a file is synced (even when empty)
before the directory sync that makes its name durable, so the last file line for an
inode always describes the file that name now holds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Histogram

#: Names the sync log (a test-only switch).
SYNC_LOG_ENV = "SKIFF_STORE_SYNC_LOG"

#: etcd's buckets for wal_fsync_duration_seconds: 1 ms doubling 14 times (8.192 s).
FSYNC_BUCKETS = tuple(0.001 * 2 ** i for i in range(14))

WAL_FSYNC_SECONDS = Histogram(
    "skiff_store_wal_fsync_duration_seconds",
    "Latency of the syncs that make the raft journal and its term and vote durable",
    buckets=FSYNC_BUCKETS)
SNAP_FSYNC_SECONDS = Histogram(
    "skiff_store_snap_fsync_duration_seconds",
    "Latency of the syncs that make a dump of the store's state durable",
    buckets=FSYNC_BUCKETS)


@dataclass
class Disk:
    """How one replica makes its files durable (see the module docstring).

    ``unsafe_no_fsync`` skips every sync; ``sync_log`` names the test-only sync log.
    Safe to use from several threads (the journal's on the loop, a dump's on its own).
    """

    unsafe_no_fsync: bool = False
    sync_log: str | None = None
    _log_fd: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.sync_log is not None:
            self._log_fd = os.open(self.sync_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @classmethod
    def from_environment(cls, *, unsafe_no_fsync: bool) -> Disk:
        """A Disk that logs its syncs where ``$SKIFF_STORE_SYNC_LOG`` says, if set."""
        return cls(unsafe_no_fsync=unsafe_no_fsync, sync_log=os.environ.get(SYNC_LOG_ENV) or None)

    def datasync(self, fd: int, path: str, *, length: int | None = None,
                 metric: Histogram = WAL_FSYNC_SECONDS) -> None:
        """fdatasync ``fd`` (the file at ``path``): its data and size, not its times.

        ``length``: how much of it holds data (a preallocated file is longer), for the
        sync log; else its size.
        """
        if self.unsafe_no_fsync:
            return
        with self._timed(metric):
            os.fdatasync(fd)
        self._log_file(fd, path, length)

    def record_datasync(self, path: str, inode: int, length: int, seconds: float) -> None:
        """Observe and log an fdatasync of ``path`` (``inode``) run by another process
        (the journal's sync helper), as :meth:`datasync` does for its own."""
        WAL_FSYNC_SECONDS.observe(seconds)
        if self.sync_log is not None:
            self._append({"file": os.path.abspath(path), "inode": inode, "length": length})

    def fsync(self, fd: int, path: str, *, metric: Histogram = WAL_FSYNC_SECONDS) -> None:
        """fsync ``fd`` (the file at ``path``)."""
        if self.unsafe_no_fsync:
            return
        with self._timed(metric):
            os.fsync(fd)
        self._log_file(fd, path)

    def sync_file(self, path: str | Path, *, metric: Histogram = WAL_FSYNC_SECONDS) -> None:
        """Open ``path`` and fsync it (a file written by someone else, e.g. pysyncobj)."""
        if self.unsafe_no_fsync:
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            self.fsync(fd, str(path), metric=metric)
        finally:
            os.close(fd)

    def sync_directory(self, path: str | Path, *, metric: Histogram = WAL_FSYNC_SECONDS) -> None:
        """fsync directory ``path``: the names created, renamed or removed in it last."""
        if self.unsafe_no_fsync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with self._timed(metric):
                os.fsync(fd)
        finally:
            os.close(fd)
        if self.sync_log is not None:
            entries = {}
            with os.scandir(path) as it:
                for entry in it:
                    try:
                        entries[entry.name] = entry.inode()
                    except OSError:
                        continue  # removed meanwhile (a dump's writer thread)
            self._append({"dir": os.path.abspath(path), "entries": entries})

    def replace(self, source: str | Path, target: str | Path, *,
                metric: Histogram = WAL_FSYNC_SECONDS) -> None:
        """Rename ``source`` (already synced) over ``target`` and sync the directory."""
        os.replace(source, target)
        self.sync_directory(os.path.dirname(os.path.abspath(target)), metric=metric)

    @contextmanager
    def _timed(self, metric: Histogram) -> Iterator[None]:
        started = time.perf_counter()
        yield
        metric.observe(time.perf_counter() - started)

    def _log_file(self, fd: int, path: str, length: int | None = None) -> None:
        if self.sync_log is None:
            return
        stat = os.fstat(fd)
        self._append({"file": os.path.abspath(path), "inode": stat.st_ino,
                      "length": stat.st_size if length is None else length})

    def _append(self, record: dict) -> None:
        assert self._log_fd is not None
        os.write(self._log_fd, (json.dumps(record) + "\n").encode())
