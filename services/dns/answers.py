"""From a query's bytes to the reply's: checks, the zone's answer packed, a cache.

:class:`Responder` decides what a query gets (no I/O here: the server sends, the
forwarder asks upstream):

- a reply from the cluster zone (:class:`Reply`), authoritative (AA), with the SOA in
  the authority section of a negative answer;
- :class:`Forward` for a name the zone does not hold;
- :class:`Chase` for an ExternalName's CNAME to a name outside the zone: the reply is
  ready, and the server appends what upstream says of the target (CoreDNS does too),
  so a stub resolver that does not follow CNAMEs itself still gets an address;
- an error reply: FORMERR (unparsable, or not exactly one question), NOTIMP (an
  opcode other than QUERY), REFUSED (a class other than IN, zone transfers);
- None: nothing is sent (a datagram too short to carry an ID, or a response).

Over UDP a reply longer than the client can take (512 bytes, or its EDNS payload size
up to :data:`MAX_UDP_PAYLOAD`) keeps the answer records that fit and is flagged TC, so
the client asks again over TCP, where it gets everything (up to 64 KiB).

Wire format by dnspython. Parsing and packing cost ~0.2 ms per query on this machine,
so zone replies are cached as bytes, keyed by the query's bytes after its ID (so the
flags, the question as spelled, and EDNS are all in the key); a hit costs one dict
lookup, and the reply only needs the query's ID in front. The cache is emptied when
the record table's generation moves, so an answer is never older than the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.SRV import SRV

from services.dns.records import Answer, Record, RecordTable, RType, Soa, Srv

#: The most a UDP reply may be without EDNS (RFC 1035).
CLASSIC_UDP_PAYLOAD = 512
#: The most a UDP reply may be with EDNS, whatever the client offers, and what we offer
#: (DNS flag day 2020: avoids IP fragmentation).
MAX_UDP_PAYLOAD = 1232
#: The fewest bytes a record of ours takes on the wire (a compressed name, the fixed
#: fields, an A's address): how many records a reply of some size can hold at most.
MIN_RECORD_SIZE = 16
#: The most a TCP message can carry (its two-byte length prefix).
TCP_MAX_MESSAGE = 65535
#: Cached replies per transport; past this the cache is emptied (cheaper than LRU
#: bookkeeping on every hit, and the zone's working set is far smaller).
CACHE_ENTRIES = 50_000

_IN = dns.rdataclass.IN
_REFUSED_TYPES = {dns.rdatatype.AXFR, dns.rdatatype.IXFR}


@dataclass(frozen=True, slots=True)
class Reply:
    """Bytes to send, and their rcode (for metrics)."""

    wire: bytes
    rcode: int


@dataclass(frozen=True, slots=True)
class Forward:
    """Ask upstream; ``query`` serves to build a SERVFAIL if none answers."""

    query: dns.message.Message


@dataclass(frozen=True, slots=True)
class Chase:
    """A zone reply ending in a CNAME out of the zone: look ``target`` up upstream."""

    query: dns.message.Message
    answer: Answer
    target: dns.name.Name
    rdtype: int


Decision = Reply | Forward | Chase | None

class Responder:
    """Answers queries from a :class:`RecordTable` (see module docstring)."""

    def __init__(self, table: RecordTable, *, cache_entries: int = CACHE_ENTRIES) -> None:
        self.table = table
        self.cache_entries = cache_entries
        self._generation = table.generation
        self._udp_cache: dict[bytes, Reply] = {}
        self._tcp_cache: dict[bytes, Reply] = {}
        self.cache_hits = 0

    # ------------------------------------------------------------ the hot path

    def cached(self, data: bytes, *, tcp: bool) -> Reply | None:
        """The cached reply to ``data`` (its ID not yet patched in), if there is one."""
        if self._generation != self.table.generation:
            self._generation = self.table.generation
            self._udp_cache.clear()
            self._tcp_cache.clear()
            return None
        reply = (self._tcp_cache if tcp else self._udp_cache).get(data[2:])
        if reply is not None:
            self.cache_hits += 1
        return reply

    # ------------------------------------------------------------ the full path

    def decide(self, data: bytes, *, tcp: bool) -> Decision:
        """What ``data`` gets (see module docstring); zone replies are cached."""
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return _header_error(data, dns.rcode.FORMERR)
        if query.flags & dns.flags.QR:
            return None  # a response sent to us: answering it could start a loop
        if query.opcode() != dns.opcode.QUERY:
            return self._error(query, dns.rcode.NOTIMP, tcp=tcp)
        if len(query.question) != 1:
            return self._error(query, dns.rcode.FORMERR, tcp=tcp)
        question = query.question[0]
        if question.rdclass != _IN or question.rdtype in _REFUSED_TYPES:
            return self._error(query, dns.rcode.REFUSED, tcp=tcp)
        answer = self.table.lookup(question.name.to_text(), question.rdtype)
        if answer is None:
            return Forward(query)
        chase = self._out_of_zone_target(answer, question.rdtype)
        if chase is not None:
            return Chase(query, answer, chase, question.rdtype)
        response = self._response(query, answer, limit=size_limit(query, tcp=tcp))
        reply = Reply(self.pack(query, response, tcp=tcp), answer.rcode)
        cache = self._tcp_cache if tcp else self._udp_cache
        if len(cache) >= self.cache_entries:
            cache.clear()
        cache[data[2:]] = Reply(reply.wire[2:], reply.rcode)
        return reply

    def _out_of_zone_target(self, answer: Answer, rdtype: int) -> dns.name.Name | None:
        if (not answer.answer or rdtype in (RType.CNAME, RType.ANY)
                or answer.answer[-1].type != RType.CNAME):
            return None
        target = answer.answer[-1].data
        assert isinstance(target, str)
        if self.table.in_zone(target):
            return None
        return dns.name.from_text(target)

    def _response(self, query: dns.message.Message, answer: Answer, *,
                  limit: int) -> dns.message.Message:
        response = dns.message.make_response(query, recursion_available=True,
                                             our_payload=MAX_UDP_PAYLOAD)
        response.flags |= dns.flags.AA
        response.set_rcode(answer.rcode)
        # Records past what ``limit`` could hold are never built: a headless Service
        # with thousands of endpoints costs what fits in the reply, not what it has.
        # (The first record past the limit is built, so packing sees it and sets TC.)
        records = answer.answer[:limit // MIN_RECORD_SIZE + 1]
        response.answer = _rrsets(records)
        response.authority = _rrsets(answer.authority)
        response.additional = _rrsets(self._srv_target_addresses(records))
        return response

    def _srv_target_addresses(self, records: tuple[Record, ...]) -> tuple[Record, ...]:
        """The A records of SRV targets in the zone (CoreDNS adds them as additional
        records, saving the client a query per target)."""
        found: list[Record] = []
        for record in records:
            if record.type == RType.SRV and isinstance(record.data, Srv):
                target = self.table.lookup(record.data.target, RType.A)
                if target is not None:
                    found += [r for r in target.answer if r.type == RType.A]
        return tuple(dict.fromkeys(found))

    def add_chased(self, chase: Chase, upstream: bytes | None, *, tcp: bool) -> Reply:
        """``chase``'s reply with upstream's answer of its target appended (if any)."""
        response = self._response(chase.query, chase.answer,
                                  limit=size_limit(chase.query, tcp=tcp))
        if upstream is not None:
            try:
                found = dns.message.from_wire(upstream)
            except dns.exception.DNSException:
                found = None
            if found is not None and found.rcode() == dns.rcode.NOERROR:
                response.answer.extend(found.answer)
        return Reply(self.pack(chase.query, response, tcp=tcp), response.rcode())

    def chase_query(self, chase: Chase) -> bytes:
        """The query upstream gets for a chased CNAME target."""
        return dns.message.make_query(chase.target, chase.rdtype, use_edns=0,
                                      payload=MAX_UDP_PAYLOAD).to_wire()

    def servfail(self, query: dns.message.Message, *, tcp: bool) -> Reply:
        """What a client gets when no upstream answered."""
        return self._error(query, dns.rcode.SERVFAIL, tcp=tcp)

    def _error(self, query: dns.message.Message, rcode: int, *, tcp: bool) -> Reply:
        response = dns.message.make_response(query, recursion_available=True,
                                             our_payload=MAX_UDP_PAYLOAD)
        response.set_rcode(rcode)
        return Reply(self.pack(query, response, tcp=tcp), rcode)

    @staticmethod
    def pack(query: dns.message.Message, response: dns.message.Message, *,
             tcp: bool) -> bytes:
        """``response`` as bytes, cut to what the client takes (TC set if answers were).

        Every record is its own rrset in ``response`` (the same bytes on the wire), so
        dnspython stops at the first record that does not fit rather than dropping a
        whole rrset: a client that cannot use TCP still gets some addresses of a large
        headless Service (CoreDNS does the same). Additional records that do not fit
        are left out without TC (RFC 2181 9).
        """
        return response.to_wire(max_size=size_limit(query, tcp=tcp), prefer_truncation=True)


def size_limit(query: dns.message.Message, *, tcp: bool) -> int:
    """The most the reply to ``query`` may be: TCP's 65535, else 512 without EDNS, else
    the client's payload size within [512, MAX_UDP_PAYLOAD]."""
    if tcp:
        return TCP_MAX_MESSAGE
    if query.edns < 0:
        return CLASSIC_UDP_PAYLOAD
    return min(max(query.payload, CLASSIC_UDP_PAYLOAD), MAX_UDP_PAYLOAD)


def _header_error(data: bytes, rcode: int) -> Reply | None:
    """A header-only reply to bytes that do not parse (FORMERR), if they carry an ID and
    are not themselves a response."""
    if len(data) < 12 or data[2] & 0x80:
        return None
    opcode_rd = data[2] & 0x79  # opcode and RD, echoed
    flags = bytes([0x80 | opcode_rd, 0x80 | rcode])  # QR; RA and the rcode
    return Reply(data[:2] + flags + bytes(8), rcode)


# --------------------------------------------------------------- records to wire


def _rrsets(records: tuple[Record, ...]) -> list[dns.rrset.RRset]:
    """One rrset per record, in order (see :meth:`Responder.pack`); names parsed once."""
    names: dict[str, dns.name.Name] = {}
    rrsets = []
    for record in records:
        name = names.get(record.name)
        if name is None:
            name = names[record.name] = dns.name.from_text(record.name)
        rrset = dns.rrset.RRset(name, _IN, record.type)
        rrset.add(_rdata(record), record.ttl)
        rrsets.append(rrset)
    return rrsets


def _rdata(record: Record) -> dns.rdata.Rdata:
    data = record.data
    match record.type:
        case RType.A:
            return A(_IN, dns.rdatatype.A, data)
        case RType.CNAME:
            return CNAME(_IN, dns.rdatatype.CNAME, dns.name.from_text(str(data)))
        case RType.PTR:
            return PTR(_IN, dns.rdatatype.PTR, dns.name.from_text(str(data)))
        case RType.SRV:
            assert isinstance(data, Srv)
            return SRV(_IN, dns.rdatatype.SRV, data.priority, data.weight, data.port,
                       dns.name.from_text(data.target))
        case RType.TXT:
            assert isinstance(data, tuple)
            return TXT(_IN, dns.rdatatype.TXT, [s.encode() for s in data])
        case RType.SOA:
            assert isinstance(data, Soa)
            return SOA(_IN, dns.rdatatype.SOA, dns.name.from_text(data.mname),
                       dns.name.from_text(data.rname), data.serial, data.refresh,
                       data.retry, data.expire, data.minimum)
    raise ValueError(f"no wire form for record type {record.type!r}")


__all__ = ["CLASSIC_UDP_PAYLOAD", "MAX_UDP_PAYLOAD", "Chase", "Decision", "Forward", "Reply",
           "Responder"]
