"""What the store relies on inside pysyncobj, checked when ``services.store.raft_transport``
is imported (which importing ``services.store.raft`` does).

The store drives pysyncobj through more than its public API: it replaces module
globals (the journal factory, zlib, the pickle protocol), overrides name-mangled
methods, and reads and writes name-mangled attributes. pyproject.toml pins the one
version this was written against; if another is installed, this check names the first
thing that moved instead of letting the replica fail later, mid-election, with an
AttributeError.

Instance attributes are only set in ``__init__``, so they are checked in the compiled
code of the class that sets them (a mangled name assigned there appears among its
code object's names).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

#: The pysyncobj release the store was written and tested against (pyproject.toml).
PINNED_VERSION = "0.3.17"


class PysyncobjMismatch(ImportError):
    """The installed pysyncobj lacks something the store uses."""


@dataclass(frozen=True)
class Requirement:
    """``name`` must exist in ``where``: a module (``kind="global"``), a class attribute
    (``"attribute"``), or an instance attribute its ``__init__`` sets (``"instance"``)."""

    where: str  # "module" or "module:Class"
    name: str
    kind: str
    why: str


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("pysyncobj.syncobj", "createJournal", "global",
                "the store hands pysyncobj its own durable journal through it"),
    Requirement("pysyncobj.pickle", "__protocol", "global",
                "raised to pickle protocol 5 so batches travel as bytes"),
    Requirement("pysyncobj.tcp_connection", "zlib", "global",
                "replaced so peer messages are not compressed"),
    Requirement("pysyncobj.journal", "Journal", "global", "the journal interface implemented"),
    Requirement("pysyncobj.syncobj:SyncObj", "_SyncObj__sendAppendEntries", "attribute",
                "overridden to send append_entries once per tick"),
    Requirement("pysyncobj.syncobj:SyncObj", "_getLeader", "attribute", "who leads"),
    Requirement("pysyncobj.syncobj:SyncObj", "_isLeader", "attribute", "whether this leads"),
    Requirement("pysyncobj.syncobj:SyncObj", "isReady", "attribute", "health"),
    Requirement("pysyncobj.syncobj:SyncObj", "doTick", "attribute", "ticked by the loop"),
    Requirement("pysyncobj.syncobj:SyncObj", "encryptor", "attribute",
                "overridden by the peer cipher"),
    Requirement("pysyncobj.syncobj:SyncObj", "raftCurrentTerm", "attribute", "status"),
    Requirement("pysyncobj.syncobj:SyncObj", "raftCommitIndex", "attribute", "status"),
    Requirement("pysyncobj.syncobj:SyncObj", "raftLastApplied", "attribute", "status"),
    Requirement("pysyncobj.syncobj:SyncObj", "otherNodes", "attribute", "election stagger"),
    Requirement("pysyncobj.syncobj:SyncObj", "selfNode", "attribute", "election stagger"),
    Requirement("pysyncobj.syncobj:SyncObj", "_SyncObj__raftLog", "instance",
                "read by the append_entries repair"),
    Requirement("pysyncobj.syncobj:SyncObj", "_SyncObj__raftCommitIndex", "instance",
                "read by the append_entries repair"),
    Requirement("pysyncobj.syncobj:SyncObj", "_SyncObj__raftMatchIndex", "instance",
                "capped while a leader commits, so its own copy counts only once synced"),
    Requirement("pysyncobj.syncobj:SyncObj", "_SyncObj__raftElectionDeadline", "instance",
                "moved forward when the leader's connection closes"),
    Requirement("pysyncobj.syncobj:SyncObj", "_SyncObj__transport", "instance",
                "the replica sends and flushes through it"),
    Requirement("pysyncobj.syncobj:SyncObj", "_SyncObj__pipeNotifier", "instance",
                "replaced: the loop ticks instead of a pipe"),
    Requirement("pysyncobj.syncobj:SyncObj", "_poller", "instance",
                "overridden: the loop's poller"),
    Requirement("pysyncobj.syncobj:SyncObj", "_SyncObj__serializer", "instance",
                "its received dumps are verified before they are installed"),
    Requirement("pysyncobj.serializer:Serializer", "setTransmissionData", "attribute",
                "wrapped to verify a received dump before it replaces ours"),
    Requirement("pysyncobj.pipe_notifier:PipeNotifier", "_PipeNotifier__pipeR", "instance",
                "its pipe is closed"),
    Requirement("pysyncobj.pipe_notifier:PipeNotifier", "_PipeNotifier__pipeW", "instance",
                "its pipe is closed"),
    Requirement("pysyncobj.transport:TCPTransport", "_connections", "instance",
                "the bundled sends look up each peer's connection"),
    Requirement("pysyncobj.transport:TCPTransport", "_syncObj", "instance",
                "the transport reads raft state"),
)


def missing(requirements: tuple[Requirement, ...] = REQUIREMENTS) -> list[Requirement]:
    """The requirements the installed pysyncobj does not meet (pure but for imports)."""
    absent = []
    for req in requirements:
        module_name, _, class_name = req.where.partition(":")
        try:
            owner: object = importlib.import_module(module_name)
            if class_name:
                owner = getattr(owner, class_name)
        except (ImportError, AttributeError):
            absent.append(req)
            continue
        if req.kind == "instance":
            init = getattr(owner, "__init__", None)
            code = getattr(inspect.unwrap(init), "__code__", None) if init else None
            if code is None or req.name not in code.co_names:
                absent.append(req)
        elif not hasattr(owner, req.name):
            absent.append(req)
    return absent


def check(requirements: tuple[Requirement, ...] = REQUIREMENTS) -> None:
    """Raise :class:`PysyncobjMismatch` naming the first missing attribute, if any."""
    absent = missing(requirements)
    if not absent:
        return
    try:
        from pysyncobj.version import VERSION as installed
    except ImportError:
        installed = "unknown"
    first = absent[0]
    names = ", ".join(f"{r.where}.{r.name}" for r in absent)
    raise PysyncobjMismatch(
        f"pysyncobj {installed} lacks {first.where}.{first.name} ({first.kind}; "
        f"{first.why}); the store is pinned to pysyncobj=={PINNED_VERSION} "
        f"(pip install pysyncobj=={PINNED_VERSION}). Missing: {names}")
