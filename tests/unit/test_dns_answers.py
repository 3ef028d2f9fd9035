"""The DNS responder: query bytes in, a decision out (reply, forward, chase), no sockets.

Checks the wire-level rules: error rcodes for bad queries, the cache keyed by the
query's bytes after its ID (the ID patched in, emptied when the table moves),
truncation to 512 bytes or the EDNS payload size, EDNS echoed.
"""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from services.dns.answers import (
    CLASSIC_UDP_PAYLOAD,
    MAX_UDP_PAYLOAD,
    Chase,
    Forward,
    Reply,
    Responder,
)
from services.dns.forwarder import parse_upstream, resolv_conf_upstreams, without_self
from services.dns.records import RecordTable
from skiff.api.v1 import core_pb2, meta_pb2


def service(name: str, *, cluster_ip: str = "10.96.0.20", type_: str = "ClusterIP",
            external_name: str = "") -> core_pb2.Service:
    spec = core_pb2.ServiceSpec(cluster_ip=cluster_ip, type=type_, external_name=external_name)
    spec.ports.add(name="http", port=80, protocol="TCP")
    return core_pb2.Service(metadata=meta_pb2.ObjectMeta(name=name, namespace="default"),
                            spec=spec)


def headless_with(count: int) -> tuple[core_pb2.Service, core_pb2.EndpointsObject]:
    svc = service("many", cluster_ip="None")
    endpoints = core_pb2.EndpointsObject(
        metadata=meta_pb2.ObjectMeta(name="many", namespace="default"))
    subset = endpoints.subsets.add()
    for i in range(count):
        subset.addresses.add(ip=f"10.1.{i // 250}.{i % 250 + 1}")
    return svc, endpoints


@pytest.fixture
def table() -> RecordTable:
    table = RecordTable()
    table.set_service("default/web", service("web"), None)
    return table


def query(name: str, rdtype: str = "A", *, edns: int | None = None, qid: int = 7) -> bytes:
    if edns is None:
        message = dns.message.make_query(name, rdtype, use_edns=False)
    else:
        message = dns.message.make_query(name, rdtype, use_edns=0, payload=edns)
    message.id = qid
    return message.to_wire()


def reply_to(responder: Responder, data: bytes, *, tcp: bool = False) -> dns.message.Message:
    decision = responder.decide(data, tcp=tcp)
    assert isinstance(decision, Reply)
    return dns.message.from_wire(decision.wire)


def test_a_zone_answer_is_authoritative_with_the_question_as_asked(table):
    response = reply_to(Responder(table), query("WEB.default.svc.cluster.local."))
    assert response.id == 7
    assert response.flags & dns.flags.AA and response.flags & dns.flags.QR
    assert response.question[0].name.to_text() == "WEB.default.svc.cluster.local."
    assert [r.address for r in response.answer[0]] == ["10.96.0.20"]
    assert response.answer[0].ttl == 5


def test_negative_answers_carry_the_soa(table):
    responder = Responder(table)
    nx = reply_to(responder, query("nope.default.svc.cluster.local."))
    nodata = reply_to(responder, query("web.default.svc.cluster.local.", "AAAA"))
    assert nx.rcode() == dns.rcode.NXDOMAIN and nodata.rcode() == dns.rcode.NOERROR
    for response in (nx, nodata):
        assert not response.answer
        assert response.authority[0].rdtype == dns.rdatatype.SOA
        assert response.authority[0][0].minimum == 5


def test_names_outside_the_zone_are_forwarded(table):
    decision = Responder(table).decide(query("example.org."), tcp=False)
    assert isinstance(decision, Forward)
    assert decision.query.question[0].name.to_text() == "example.org."


def test_an_external_name_out_of_the_zone_is_chased_but_cname_queries_are_not(table):
    table.set_service("default/ext", service("ext", cluster_ip="", type_="ExternalName",
                                             external_name="db.example.org"), None)
    responder = Responder(table)
    decision = responder.decide(query("ext.default.svc.cluster.local."), tcp=False)
    assert isinstance(decision, Chase) and decision.target.to_text() == "db.example.org."
    upstream = dns.message.make_response(dns.message.from_wire(responder.chase_query(decision)))
    upstream.answer.append(dns.rrset.from_text("db.example.org.", 30, "IN", "A", "192.0.2.8"))
    reply = dns.message.from_wire(responder.add_chased(decision, upstream.to_wire(),
                                                       tcp=False).wire)
    assert [rrset.rdtype for rrset in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    failed = dns.message.from_wire(responder.add_chased(decision, None, tcp=False).wire)
    assert [rrset.rdtype for rrset in failed.answer] == [dns.rdatatype.CNAME]
    assert isinstance(responder.decide(query("ext.default.svc.cluster.local.", "CNAME"),
                                       tcp=False), Reply)


def test_an_external_name_into_the_zone_is_not_chased(table):
    table.set_service("default/alias", service(
        "alias", cluster_ip="", type_="ExternalName",
        external_name="web.default.svc.cluster.local"), None)
    assert isinstance(Responder(table).decide(
        query("alias.default.svc.cluster.local."), tcp=False), Reply)


def test_bad_queries(table):
    responder = Responder(table)
    garbage = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x05abc"
    decision = responder.decide(garbage, tcp=False)
    assert isinstance(decision, Reply) and decision.rcode == dns.rcode.FORMERR
    assert decision.wire[:2] == b"\xbe\xef" and decision.wire[2] & 0x80

    assert responder.decide(b"\x01\x02\x03", tcp=False) is None  # no header to answer
    response = dns.message.make_response(dns.message.from_wire(query("x.")))
    assert responder.decide(response.to_wire(), tcp=False) is None  # never answer answers

    two = dns.message.from_wire(query("web.default.svc.cluster.local."))
    two.question.append(two.question[0])
    assert responder.decide(two.to_wire(), tcp=False).rcode == dns.rcode.FORMERR

    chaos = dns.message.make_query("version.bind.", "TXT", rdclass=dns.rdataclass.CH)
    assert responder.decide(chaos.to_wire(), tcp=False).rcode == dns.rcode.REFUSED
    assert responder.decide(query("cluster.local.", "AXFR"), tcp=True).rcode == \
        dns.rcode.REFUSED

    notify = dns.message.from_wire(query("web.default.svc.cluster.local."))
    notify.set_opcode(dns.opcode.NOTIFY)
    assert responder.decide(notify.to_wire(), tcp=False).rcode == dns.rcode.NOTIMP


def test_servfail_keeps_the_question(table):
    responder = Responder(table)
    decision = responder.decide(query("example.org."), tcp=False)
    assert isinstance(decision, Forward)
    failed = dns.message.from_wire(responder.servfail(decision.query, tcp=False).wire)
    assert failed.rcode() == dns.rcode.SERVFAIL and failed.id == 7
    assert failed.question[0].name.to_text() == "example.org."


def test_srv_targets_come_with_their_addresses(table):
    table.set_service("default/many", headless_with(3)[0], _named(headless_with(3)[1]))
    response = reply_to(Responder(table), query("_http._tcp.many.default.svc.cluster.local.",
                                                "SRV"))
    targets = sorted(r.target.to_text() for r in response.answer[0])
    assert targets == [f"10-1-0-{i}.many.default.svc.cluster.local." for i in (1, 2, 3)]
    extra = {rrset.name.to_text(): [r.address for r in rrset] for rrset in response.additional
             if rrset.rdtype == dns.rdatatype.A}
    assert extra == {f"10-1-0-{i}.many.default.svc.cluster.local.": [f"10.1.0.{i}"]
                     for i in (1, 2, 3)}


def _named(endpoints: core_pb2.EndpointsObject) -> core_pb2.EndpointsObject:
    endpoints.subsets[0].ports.add(name="http", port=8080, protocol="TCP")
    return endpoints


def test_a_tcp_answer_past_64_kib_is_cut_too():
    table = RecordTable()
    table.set_service("default/many", *headless_with(5000))
    decision = Responder(table).decide(query("many.default.svc.cluster.local."), tcp=True)
    assert isinstance(decision, Reply) and len(decision.wire) <= 65535
    assert dns.message.from_wire(decision.wire).flags & dns.flags.TC


# ----------------------------------------------------------------------- the cache


def test_the_cache_answers_the_same_bytes_with_the_new_id(table):
    responder = Responder(table)
    first = responder.decide(query("web.default.svc.cluster.local.", qid=1), tcp=False)
    assert isinstance(first, Reply)
    again = query("web.default.svc.cluster.local.", qid=2)
    hit = responder.cached(again, tcp=False)
    assert hit is not None and responder.cache_hits == 1
    assert again[:2] + hit.wire == b"\x00\x02" + first.wire[2:]
    # Another spelling is another key; TCP has a cache of its own.
    assert responder.cached(query("Web.default.svc.cluster.local."), tcp=False) is None
    assert responder.cached(again, tcp=True) is None


def test_the_cache_is_emptied_when_the_table_changes(table):
    responder = Responder(table)
    data = query("web.default.svc.cluster.local.")
    responder.decide(data, tcp=False)
    table.set_service("default/web", service("web", cluster_ip="10.96.0.21"), None)
    assert responder.cached(data, tcp=False) is None
    response = reply_to(responder, data)
    assert [r.address for r in response.answer[0]] == ["10.96.0.21"]


def test_forwarded_names_are_not_cached(table):
    responder = Responder(table)
    data = query("example.org.")
    responder.decide(data, tcp=False)
    assert responder.cached(data, tcp=False) is None


def test_a_full_cache_starts_again():
    table = RecordTable()
    table.set_service("default/web", service("web"), None)
    responder = Responder(table, cache_entries=2)
    for i in range(3):
        responder.decide(query(f"n{i}.default.svc.cluster.local."), tcp=False)
    assert responder.cached(query("n2.default.svc.cluster.local."), tcp=False) is not None
    assert responder.cached(query("n0.default.svc.cluster.local."), tcp=False) is None


# ---------------------------------------------------------------------- truncation


@pytest.mark.parametrize(("edns", "limit"), [(None, CLASSIC_UDP_PAYLOAD),
                                             (4096, MAX_UDP_PAYLOAD), (900, 900),
                                             (100, CLASSIC_UDP_PAYLOAD)])
def test_udp_answers_are_cut_to_what_the_client_takes(edns, limit):
    table = RecordTable()
    table.set_service("default/many", *headless_with(200))
    responder = Responder(table)
    decision = responder.decide(query("many.default.svc.cluster.local.", edns=edns),
                                tcp=False)
    assert isinstance(decision, Reply)
    assert limit - 20 < len(decision.wire) <= limit
    response = dns.message.from_wire(decision.wire)
    assert response.flags & dns.flags.TC
    assert 0 < len(response.answer[0]) < 200
    assert (response.edns >= 0) == (edns is not None)  # EDNS answered with EDNS


def test_tcp_answers_are_whole():
    table = RecordTable()
    table.set_service("default/many", *headless_with(200))
    response = reply_to(Responder(table), query("many.default.svc.cluster.local.", edns=1232),
                        tcp=True)
    assert not response.flags & dns.flags.TC and len(response.answer[0]) == 200


def test_small_answers_are_not_truncated(table):
    response = reply_to(Responder(table), query("web.default.svc.cluster.local."))
    assert not response.flags & dns.flags.TC


# ---------------------------------------------------------------------- upstreams


def test_upstreams_parse_and_leave_this_server_out(tmp_path):
    assert parse_upstream("10.0.0.1") == ("10.0.0.1", 53)
    assert parse_upstream("127.0.0.1:5300") == ("127.0.0.1", 5300)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_upstream("127.0.0.1:dns")
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.org\nnameserver 127.0.0.53  # systemd\n"
                    "nameserver 10.0.0.2\noptions ndots:5\n")
    assert resolv_conf_upstreams(conf) == [("127.0.0.53", 53), ("10.0.0.2", 53)]
    assert resolv_conf_upstreams(tmp_path / "missing") == []
    assert without_self([("127.0.0.53", 53), ("10.0.0.2", 53)], [("0.0.0.0", 53)]) == [
        ("10.0.0.2", 53)]
    assert without_self([("10.0.0.2", 53)], [("10.0.0.2", 53)]) == []
