"""The bytes of a store dump, self-verifying: a dump cut short or damaged anywhere is refused.

Format 2 (written since format 1 was found to load a dump cut in half as a valid, smaller
one: a protobuf message is a run of fields, so a cut at a field boundary parses)::

    MAGIC ("SKIFF-DUMP/2\\n") | payload length (8 bytes, big endian) | sha256(payload) | payload
    payload = raft state length (8 bytes) | pickle(raft state) | raft_pb2.Snapshot

A dump is accepted only if its length is exactly the header's and the payload hashes to
the header's digest; nothing is unpickled or parsed before that. The writer streams the
payload and fills the header in last (:class:`DumpWriter`); a dump a leader sends is
checked as it arrives (:class:`DumpCheck`), before pysyncobj renames it over the dump.

Older formats still load, for upgrades: pysyncobj's own gzip (which carries its own
CRC-32 and length, so it is verified too) and format 1 (``SKIFF-DUMP/1``, which cannot
be verified: read as before, with a warning, until the next compaction replaces it).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
from typing import IO, Any

from pysyncobj.pickle import load as pysyncobj_load

from skiff.logging import get_logger

log = get_logger("store.dump_format")

MAGIC = b"SKIFF-DUMP/2\n"
#: Format 1: the same payload with no length or checksum before it.
MAGIC_V1 = b"SKIFF-DUMP/1\n"
_GZIP_MAGIC = b"\x1f\x8b"
_LENGTH = struct.Struct(">Q")
_HEADER = struct.Struct(">Q32s")
#: Where the payload starts.
PAYLOAD_OFFSET = len(MAGIC) + _HEADER.size

#: What pysyncobj keeps in a dump besides the state: its last two applied entries and
#: the cluster's nodes.
RaftState = tuple[Any, ...]


class DumpCorrupt(ValueError):
    """A dump that is not a whole, intact dump (cut short, damaged, or not a dump)."""


class DumpWriter:
    """Writes a format-2 dump to an open binary file: :meth:`write` the payload after the
    raft state, then :meth:`finish`, which fills in the header."""

    def __init__(self, f: IO[bytes], raft_state: RaftState) -> None:
        self._f = f
        self._digest = hashlib.sha256()
        self._length = 0
        f.write(MAGIC + bytes(_HEADER.size))  # filled in by finish
        state = pickle.dumps(raft_state, protocol=pickle.HIGHEST_PROTOCOL)
        self.write(_LENGTH.pack(len(state)))
        self.write(state)

    def write(self, data: bytes) -> None:
        """Append ``data`` to the payload."""
        self._f.write(data)
        self._digest.update(data)
        self._length += len(data)

    def finish(self) -> None:
        """Write the header (payload length and digest); the caller flushes and syncs."""
        end = self._f.tell()
        self._f.seek(len(MAGIC))
        self._f.write(_HEADER.pack(self._length, self._digest.digest()))
        self._f.seek(end)


def encode(raft_state: RaftState, snapshot: bytes) -> bytes:
    """A whole format-2 dump in memory (tests, small stores)."""
    out = io.BytesIO()
    writer = DumpWriter(out, raft_state)
    writer.write(snapshot)
    writer.finish()
    return out.getvalue()


def decode(data: bytes, name: str = "dump") -> tuple[RaftState, bytes]:
    """A dump's raft state and serialized store snapshot, verified first (any format).

    Raises :class:`DumpCorrupt` naming ``name`` if it is not a whole, intact dump.
    """
    if data.startswith(MAGIC):
        return _split(_verified(data, name), name)
    if data.startswith(MAGIC_V1):
        log.warning("loading a format-1 dump, which carries no checksum (written by an "
                    "older Skiff); the next compaction replaces it", file=name)
        return _split(data[len(MAGIC_V1):], name)
    if data.startswith(_GZIP_MAGIC):
        # pysyncobj's own: gzip(pickle((consumers' states, *raft state))); gzip checks
        # its CRC-32 and length, raising on a cut or damaged file.
        try:
            states, *raft_state = pysyncobj_load(io.BytesIO(gzip.decompress(data)))
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DumpCorrupt(f"{name}: damaged pysyncobj dump: {e}") from e
        return tuple(raft_state), states[1]
    raise DumpCorrupt(f"{name}: not a store dump ({len(data)} bytes)")


def _verified(data: bytes, name: str) -> memoryview:
    if len(data) < PAYLOAD_OFFSET:
        raise DumpCorrupt(f"{name}: cut short in its header ({len(data)} bytes)")
    length, digest = _HEADER.unpack_from(data, len(MAGIC))
    if len(data) != PAYLOAD_OFFSET + length:
        raise DumpCorrupt(f"{name}: {len(data)} bytes, its header says "
                          f"{PAYLOAD_OFFSET + length} (cut short or overwritten)")
    payload = memoryview(data)[PAYLOAD_OFFSET:]
    if hashlib.sha256(payload).digest() != digest:
        raise DumpCorrupt(f"{name}: checksum mismatch (the dump is damaged)")
    return payload


def _split(payload: bytes | memoryview, name: str) -> tuple[RaftState, bytes]:
    if len(payload) < _LENGTH.size:
        raise DumpCorrupt(f"{name}: cut short before its raft state")
    (state_length,) = _LENGTH.unpack_from(payload, 0)
    start = _LENGTH.size
    if start + state_length > len(payload):
        raise DumpCorrupt(f"{name}: raft state of {state_length} bytes runs past the end")
    try:
        raft_state = pickle.loads(payload[start:start + state_length])
    except Exception as e:  # a format-1 dump's only check
        raise DumpCorrupt(f"{name}: raft state unreadable: {e!r}") from e
    return raft_state, bytes(payload[start + state_length:])


class DumpCheck:
    """Verifies a dump fed in pieces (a dump a leader sends, as it arrives).

    :meth:`problem` at the end: None if the bytes fed are a whole, intact format-2 dump
    (or an older format, which is checked when loaded), else what is wrong.
    """

    def __init__(self) -> None:
        self._head = bytearray()
        self._digest = hashlib.sha256()
        self._received = 0
        self._legacy = False

    def feed(self, data: bytes) -> None:
        """Take the next piece of the dump."""
        if len(self._head) < PAYLOAD_OFFSET:
            take = PAYLOAD_OFFSET - len(self._head)
            self._head += data[:take]
            data = data[take:]
        self._digest.update(data)
        self._received += len(data)

    def problem(self) -> str | None:
        """None if what was fed is an acceptable dump, else why not."""
        head = bytes(self._head)
        if head.startswith((MAGIC_V1, _GZIP_MAGIC)):
            return None  # older formats: checked by decode when loaded
        if not head.startswith(MAGIC):
            return f"not a store dump (starts {head[:16]!r})"
        if len(head) < PAYLOAD_OFFSET:
            return f"cut short in its header ({len(head)} bytes)"
        length, digest = _HEADER.unpack_from(head, len(MAGIC))
        if self._received != length:
            return f"payload of {self._received} bytes, its header says {length}"
        if self._digest.digest() != digest:
            return "checksum mismatch"
        return None
