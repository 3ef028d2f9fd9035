"""Emulating a power loss after killing store replicas, and checking what survived.

A SIGKILL loses nothing a process wrote: the page cache survives it. A power loss
keeps only what was synced. Replicas started with ``SKIFF_STORE_SYNC_LOG`` append a
JSON line to that file after each successful sync (``services.store.disk`` writes it):

- ``{"file": path, "inode": n, "length": n}``: the file (inode) is durable up to length;
- ``{"dir": path, "entries": {name: inode}}``: the directory's names as they stood at
  its fsync are durable (files created, renamed in, removed).

After the kill, :func:`plan_power_loss` (pure) turns the log and the files found on
disk into what a power loss could have left, and :func:`apply_power_loss` does it:

- a name not durable in its directory (created or renamed in after the directory's last
  sync) is removed: so is a file whose name is durable but that was never synced;
- a file whose name is durable is cut back to its synced length plus a random part of
  its unsynced tail (at most ``UNSYNCED_WINDOW``), in which a random stretch is
  overwritten with garbage (a torn write: pages written back out of order);
- not modelled: a rename over an existing name after the directory's last sync cannot
  be undone, because the file it replaced is gone (unlinked by the rename). The new
  file is kept (cut to its synced length, or removed if never synced), which is one of
  the two outcomes a real power loss allows. The store syncs the directory right after
  each of its renames, so the window is a few microseconds. Likewise a name removed
  after the last directory sync stays removed.

:func:`find_losses` (pure) checks what clients were told against what a restarted
cluster holds.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Acked", "Cut", "DurableState", "Remove", "apply_power_loss", "find_losses",
           "plan_power_loss", "read_sync_log"]


#: How far past a file's synced length a torn write is placed.
UNSYNCED_WINDOW = 64 * 1024


@dataclass
class DurableState:
    """What the sync log says is durable: each inode's synced length, each directory's
    names (name -> inode) as of its last sync."""

    synced: dict[int, int] = field(default_factory=dict)
    directories: dict[str, dict[str, int]] = field(default_factory=dict)


def read_sync_log(lines: Iterable[str]) -> DurableState:
    """Replay the sync log's lines, in order, into a :class:`DurableState`.

    An inode that a directory sync shows gone (durably unlinked) forgets its synced
    length, since the file system may give the number to a new file; but only if that
    length is the gone file's: its last sync named a file in that directory and came
    before the directory's previous sync, which named the inode. The replicas share one
    log and sync from several threads, so the lines of a freed inode's next holder may
    precede the line showing it freed: replica A unlinks inode N, replica B's new dump
    gets N and syncs it, then A's directory sync (listed after the unlink) is logged.
    Forgetting there erased B's sync, and the emulation removed B's dump as "never
    synced" although it was synced and durably named: a real disk keeps it, and B
    restarted with a journal compacted past a dump it no longer had.
    """
    state = DurableState()
    #: inode -> (line number, directory) of its last file sync.
    last_sync: dict[int, tuple[int, str]] = {}
    #: directory -> line number of its last sync.
    listed_at: dict[str, int] = {}
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        record = json.loads(line)
        if "file" in record:
            inode = int(record["inode"])
            state.synced[inode] = int(record["length"])
            last_sync[inode] = (number, os.path.dirname(record["file"]))
        else:
            directory = record["dir"]
            entries = {name: int(inode) for name, inode in record["entries"].items()}
            before = state.directories.get(directory, {})
            previous_listing = listed_at.get(directory, -1)
            state.directories[directory] = entries
            listed_at[directory] = number
            still_named = {i for names in state.directories.values() for i in names.values()}
            for inode in set(before.values()) - still_named:
                synced_at, synced_in = last_sync.get(inode, (-1, directory))
                if synced_in == directory and synced_at < previous_listing:
                    state.synced.pop(inode, None)
    return state


@dataclass(frozen=True)
class Remove:
    path: str
    why: str


@dataclass(frozen=True)
class Cut:
    """Cut ``path`` to ``length`` bytes, then write ``garbage`` at ``garbage_at``."""

    path: str
    length: int
    synced: int
    garbage_at: int = 0
    garbage: bytes = b""


def plan_power_loss(state: DurableState, found: Mapping[str, Mapping[str, tuple[int, int]]],
                    rng: random.Random) -> list[Remove | Cut]:
    """What a power loss leaves of the files ``found`` ({dir: {name: (inode, size)}}).

    Pure: the caller lists the files and carries out the plan (see the module docstring).
    """
    plan: list[Remove | Cut] = []
    for directory in sorted(found):
        durable = state.directories.get(directory, {})
        for name, (inode, size) in sorted(found[directory].items()):
            path = os.path.join(directory, name)
            if name not in durable:
                plan.append(Remove(path, "its name was never made durable"))
                continue
            synced = state.synced.get(inode)
            if synced is None:
                plan.append(Remove(path, "never synced" if durable[name] == inode else
                                   "renamed over after the last directory sync, never synced"))
                continue
            if size <= synced:
                continue  # all of it synced (or truncated since: either may survive)
            # What was written since the last sync is near its end (past it, a
            # preallocated file holds zeros): tear within the first UNSYNCED_WINDOW.
            kept = synced + rng.randint(0, min(size - synced, UNSYNCED_WINDOW))
            garbage_at, garbage = synced, b""
            if kept > synced:
                garbage_at = rng.randint(synced, kept - 1)
                length = rng.randint(1, min(kept - garbage_at, 4096))
                garbage = rng.randbytes(length)
            plan.append(Cut(path, kept, synced, garbage_at, garbage))
    return plan


def list_files(directories: Iterable[Path]) -> dict[str, dict[str, tuple[int, int]]]:
    """{dir: {name: (inode, size)}} of the regular files in each directory."""
    found: dict[str, dict[str, tuple[int, int]]] = {}
    for directory in directories:
        entries: dict[str, tuple[int, int]] = {}
        if directory.is_dir():
            for entry in os.scandir(directory):
                if entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    entries[entry.name] = (stat.st_ino, stat.st_size)
        found[str(directory.resolve())] = entries
    return found


def apply_power_loss(directories: Iterable[Path], sync_log: Path,
                     rng: random.Random) -> list[Remove | Cut]:
    """Leave ``directories`` (of killed processes) as a power loss could; the plan done."""
    lines = sync_log.read_text().splitlines() if sync_log.exists() else []
    plan = plan_power_loss(read_sync_log(lines), list_files(directories), rng)
    for action in plan:
        if isinstance(action, Remove):
            os.unlink(action.path)
        else:
            os.truncate(action.path, action.length)
            if action.garbage:
                with open(action.path, "r+b") as f:
                    f.seek(action.garbage_at)
                    f.write(action.garbage)
    return plan


@dataclass(frozen=True)
class Acked:
    """A put the store acknowledged: its value and the revision it answered."""

    value: bytes
    revision: int


def find_losses(acknowledged: Mapping[bytes, Acked],
                found: Mapping[bytes, tuple[bytes, int]], revision: int) -> list[str]:
    """What the cluster lost: ``found`` is {key: (value, mod_revision)} read after the
    restart, ``revision`` the store's revision then. Each key was put once."""
    losses = []
    for key, acked in sorted(acknowledged.items()):
        if key not in found:
            losses.append(f"{key!r}: acknowledged at revision {acked.revision}, missing")
        elif found[key] != (acked.value, acked.revision):
            value, mod_revision = found[key]
            losses.append(f"{key!r}: acknowledged {acked.value!r} at revision {acked.revision}, "
                          f"found {value!r} at {mod_revision}")
    highest = max((a.revision for a in acknowledged.values()), default=0)
    if revision < highest:
        losses.append(f"the store's revision went back to {revision}, below the highest "
                      f"acknowledged ({highest})")
    return losses
