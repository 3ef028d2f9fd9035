"""The cluster DNS's records, per Kubernetes' DNS specification: pure functions and the
incrementally kept table, no sockets."""

from __future__ import annotations

import pytest

from services.dns.records import (
    NOT_OURS,
    TTL,
    Answer,
    Rcode,
    Record,
    RecordTable,
    RType,
    Soa,
    Srv,
    pod_address,
    reverse_name,
    service_records,
)
from skiff.api.v1 import core_pb2, meta_pb2

ZONE = "cluster.local."


def svc(name: str, ns: str = "default", *, cluster_ip: str = "10.96.0.20",
        ports: list[tuple[str, int, str]] | None = None, type_: str = "ClusterIP",
        external_name: str = "", publish_not_ready: bool = False) -> core_pb2.Service:
    spec = core_pb2.ServiceSpec(cluster_ip=cluster_ip, type=type_, external_name=external_name,
                                publish_not_ready_addresses=publish_not_ready)
    for port_name, number, protocol in ports or [("http", 80, "TCP")]:
        spec.ports.add(name=port_name, port=number, protocol=protocol)
    return core_pb2.Service(metadata=meta_pb2.ObjectMeta(name=name, namespace=ns), spec=spec)


def eps(name: str, ns: str = "default", *, ready: list[tuple[str, str]] = (),
        not_ready: list[tuple[str, str]] = (),
        ports: list[tuple[str, int, str]] | None = None) -> core_pb2.EndpointsObject:
    """``ready``/``not_ready``: (ip, hostname) pairs in one subset."""
    obj = core_pb2.EndpointsObject(metadata=meta_pb2.ObjectMeta(name=name, namespace=ns))
    subset = obj.subsets.add()
    subset.addresses.extend(core_pb2.EndpointAddress(ip=ip, hostname=h) for ip, h in ready)
    subset.not_ready_addresses.extend(
        core_pb2.EndpointAddress(ip=ip, hostname=h) for ip, h in not_ready)
    for port_name, number, protocol in ports or [("http", 8080, "TCP")]:
        subset.ports.add(name=port_name, port=number, protocol=protocol)
    return obj


def headless(name: str = "db", ns: str = "default", **kw) -> core_pb2.Service:
    return svc(name, ns, cluster_ip="None", **kw)


def table_with(*pairs: tuple[core_pb2.Service, core_pb2.EndpointsObject | None]) -> RecordTable:
    table = RecordTable(ZONE)
    for service, endpoints in pairs:
        table.set_service(f"{service.metadata.namespace}/{service.metadata.name}", service,
                          endpoints)
    return table


def datas(answer: Answer | None) -> list:
    assert answer is not None
    return [r.data for r in answer.answer]


def is_nodata(answer: Answer | None) -> bool:
    return (answer is not None and answer.rcode == Rcode.NOERROR and not answer.answer
            and [r.type for r in answer.authority] == [RType.SOA])


def is_nxdomain(answer: Answer | None) -> bool:
    return (answer is not None and answer.rcode == Rcode.NXDOMAIN and not answer.answer
            and [r.type for r in answer.authority] == [RType.SOA])


# ------------------------------------------------------------ ClusterIP services


def test_cluster_ip_service_has_a_srv_and_ptr():
    table = table_with((svc("web", ports=[("http", 80, "TCP"), ("dns", 53, "UDP")]), None))
    a = table.lookup("web.default.svc.cluster.local.", RType.A)
    assert a == Answer(Rcode.NOERROR, (Record("web.default.svc.cluster.local.", RType.A,
                                              "10.96.0.20", TTL),))
    assert a.answer[0].ttl == 5
    assert datas(table.lookup("_http._tcp.web.default.svc.cluster.local.", RType.SRV)) == [
        Srv(0, 100, 80, "web.default.svc.cluster.local.")]
    assert datas(table.lookup("_dns._udp.web.default.svc.cluster.local.", RType.SRV)) == [
        Srv(0, 100, 53, "web.default.svc.cluster.local.")]
    assert datas(table.lookup("20.0.96.10.in-addr.arpa.", RType.PTR)) == [
        "web.default.svc.cluster.local."]


def test_names_are_case_insensitive_and_may_lack_the_final_dot():
    table = table_with((svc("web"), None))
    assert datas(table.lookup("WEB.Default.SVC.cluster.LOCAL", RType.A)) == ["10.96.0.20"]


def test_aaaa_of_an_existing_name_is_nodata_not_nxdomain():
    table = table_with((svc("web"), None))
    assert is_nodata(table.lookup("web.default.svc.cluster.local.", RType.AAAA))
    assert is_nodata(table.lookup("web.default.svc.cluster.local.", RType.TXT))


def test_unnamed_ports_have_no_srv():
    table = table_with((svc("web", ports=[("", 80, "TCP")]), None))
    assert not [r for r in table.records() if r.type == RType.SRV]
    assert is_nxdomain(table.lookup("_._tcp.web.default.svc.cluster.local.", RType.SRV))


def test_missing_names_in_the_zone_are_nxdomain():
    table = table_with((svc("web"), None))
    for name in ("nope.default.svc.cluster.local.", "web.other.svc.cluster.local.",
                 "x.web.default.svc.cluster.local.", "_ftp._tcp.web.default.svc.cluster.local.",
                 "web.default.cluster.local."):
        assert is_nxdomain(table.lookup(name, RType.A)), name


def test_empty_non_terminals_are_nodata():
    table = table_with((svc("web", ports=[("http", 80, "TCP")]), None))
    for name in ("default.svc.cluster.local.", "svc.cluster.local.", "cluster.local.",
                 "_tcp.web.default.svc.cluster.local."):
        assert is_nodata(table.lookup(name, RType.A)), name


def test_the_apex_answers_its_soa_and_the_schema_version():
    table = RecordTable(ZONE)
    soa = table.lookup("cluster.local.", RType.SOA)
    assert soa is not None and soa.rcode == Rcode.NOERROR
    assert isinstance(soa.answer[0].data, Soa) and soa.answer[0].data.minimum == TTL
    assert datas(table.lookup("dns-version.cluster.local.", RType.TXT)) == [("1.1.0",)]


def test_names_outside_the_zone_are_not_ours():
    table = table_with((svc("web"), None))
    assert table.lookup("example.org.", RType.A) is NOT_OURS
    assert table.lookup("web.default.svc.cluster.other.", RType.A) is NOT_OURS
    assert table.lookup("1.0.0.127.in-addr.arpa.", RType.PTR) is NOT_OURS


def test_another_zone():
    table = RecordTable("k8s.test")
    table.set_service("a/web", svc("web", "a"), None)
    assert datas(table.lookup("web.a.svc.k8s.test.", RType.A)) == ["10.96.0.20"]
    assert table.lookup("web.a.svc.cluster.local.", RType.A) is NOT_OURS


def test_a_service_without_a_cluster_ip_yet_has_no_records():
    assert service_records(svc("web", cluster_ip=""), None, zone=ZONE) == []


# ------------------------------------------------------------- headless services


def test_headless_service_answers_ready_addresses_only():
    service = headless()
    endpoints = eps("db", ready=[("10.1.0.1", ""), ("10.1.0.2", "")],
                    not_ready=[("10.1.0.3", "")])
    table = table_with((service, endpoints))
    assert datas(table.lookup("db.default.svc.cluster.local.", RType.A)) == [
        "10.1.0.1", "10.1.0.2"]


def test_headless_service_publishes_not_ready_addresses_when_asked():
    service = headless(publish_not_ready=True)
    table = table_with((service, eps("db", ready=[("10.1.0.1", "")],
                                     not_ready=[("10.1.0.3", "")])))
    assert datas(table.lookup("db.default.svc.cluster.local.", RType.A)) == [
        "10.1.0.1", "10.1.0.3"]


def test_headless_service_without_ready_endpoints_does_not_exist():
    table = table_with((headless(), eps("db", not_ready=[("10.1.0.3", "")])))
    assert is_nxdomain(table.lookup("db.default.svc.cluster.local.", RType.A))
    table = table_with((headless(), None))
    assert is_nxdomain(table.lookup("db.default.svc.cluster.local.", RType.A))


def test_pod_hostnames_under_their_subdomain_and_dashed_addresses_otherwise():
    table = table_with((headless(), eps("db", ready=[("10.1.0.1", "db-0"), ("10.1.0.2", "")])))
    assert datas(table.lookup("db-0.db.default.svc.cluster.local.", RType.A)) == ["10.1.0.1"]
    assert datas(table.lookup("10-1-0-2.db.default.svc.cluster.local.", RType.A)) == [
        "10.1.0.2"]
    assert is_nxdomain(table.lookup("db-1.db.default.svc.cluster.local.", RType.A))


def test_headless_srv_has_one_target_per_endpoint_with_the_endpoint_port():
    table = table_with((headless(ports=[("pg", 5432, "TCP")]),
                        eps("db", ready=[("10.1.0.1", "db-0"), ("10.1.0.2", "")],
                            ports=[("pg", 15432, "TCP")])))
    assert datas(table.lookup("_pg._tcp.db.default.svc.cluster.local.", RType.SRV)) == [
        Srv(0, 50, 15432, "10-1-0-2.db.default.svc.cluster.local."),
        Srv(0, 50, 15432, "db-0.db.default.svc.cluster.local.")]


def test_ptr_for_endpoint_addresses_names_their_host():
    table = table_with((headless(), eps("db", ready=[("10.1.0.1", "db-0"), ("10.1.0.2", "")])))
    assert datas(table.lookup("1.0.1.10.in-addr.arpa.", RType.PTR)) == [
        "db-0.db.default.svc.cluster.local."]
    assert datas(table.lookup("2.0.1.10.in-addr.arpa.", RType.PTR)) == [
        "10-1-0-2.db.default.svc.cluster.local."]
    assert is_nodata(table.lookup("2.0.1.10.in-addr.arpa.", RType.A))


def test_one_pod_behind_two_headless_services_keeps_both_ptrs_until_both_go():
    a, b = headless("a"), headless("b")
    table = table_with((a, eps("a", ready=[("10.1.0.1", "")])),
                       (b, eps("b", ready=[("10.1.0.1", "")])))
    assert len(datas(table.lookup("1.0.1.10.in-addr.arpa.", RType.PTR))) == 2
    table.set_service("default/a", None, None)
    assert datas(table.lookup("1.0.1.10.in-addr.arpa.", RType.PTR)) == [
        "10-1-0-1.b.default.svc.cluster.local."]
    table.set_service("default/b", None, None)
    assert table.lookup("1.0.1.10.in-addr.arpa.", RType.PTR) is NOT_OURS


def test_the_same_address_twice_gives_one_a_record():
    endpoints = eps("db", ready=[("10.1.0.1", "")])
    endpoints.subsets.add().CopyFrom(endpoints.subsets[0])
    endpoints.subsets[1].ports[0].port = 9090
    endpoints.subsets[1].ports[0].name = "metrics"
    table = table_with((headless(), endpoints))
    assert datas(table.lookup("db.default.svc.cluster.local.", RType.A)) == ["10.1.0.1"]
    assert datas(table.lookup("_metrics._tcp.db.default.svc.cluster.local.", RType.SRV)) == [
        Srv(0, 100, 9090, "10-1-0-1.db.default.svc.cluster.local.")]


def test_endpoints_of_a_cluster_ip_service_add_nothing():
    with_eps = service_records(svc("web"), eps("web", ready=[("10.1.0.1", "w")]), zone=ZONE)
    assert with_eps == service_records(svc("web"), None, zone=ZONE)


# ---------------------------------------------------------------- ExternalName


def test_external_name_is_a_cname_for_every_type_but_cname_answers_itself():
    table = table_with((svc("ext", type_="ExternalName", cluster_ip="",
                            external_name="DB.Example.org"), None))
    for qtype in (RType.A, RType.AAAA, RType.CNAME):
        answer = table.lookup("ext.default.svc.cluster.local.", qtype)
        assert answer is not None and answer.answer == (
            Record("ext.default.svc.cluster.local.", RType.CNAME, "db.example.org."),)


# ----------------------------------------------------------------- pod records


def test_dashed_pod_names_resolve_to_their_address():
    table = RecordTable(ZONE)
    assert datas(table.lookup("10-1-0-9.default.pod.cluster.local.", RType.A)) == ["10.1.0.9"]
    assert is_nodata(table.lookup("10-1-0-9.default.pod.cluster.local.", RType.AAAA))
    assert pod_address("10-1-0-999.default.pod.cluster.local.", ZONE) is None
    assert is_nxdomain(table.lookup("10-1-0-999.default.pod.cluster.local.", RType.A))
    assert is_nxdomain(table.lookup("x.10-1-0-9.default.pod.cluster.local.", RType.A))
    assert is_nxdomain(table.lookup("xpod.cluster.local.", RType.A))
    for name in ("default.pod.cluster.local.", "pod.cluster.local."):
        assert is_nodata(table.lookup(name, RType.A)), name
    assert reverse_name("10.1.0.9") == "9.0.1.10.in-addr.arpa."


# ------------------------------------------------------------ incremental updates


def test_updates_replace_only_the_changed_records_and_move_the_generation():
    table = table_with((headless(), eps("db", ready=[("10.1.0.1", "db-0")])))
    before = table.generation
    assert not table.set_service("default/db", headless(),
                                 eps("db", ready=[("10.1.0.1", "db-0")]))
    assert table.generation == before
    assert table.set_service("default/db", headless(),
                             eps("db", ready=[("10.1.0.2", "db-0")]))
    assert table.generation > before
    assert datas(table.lookup("db-0.db.default.svc.cluster.local.", RType.A)) == ["10.1.0.2"]
    assert table.lookup("1.0.1.10.in-addr.arpa.", RType.PTR) is NOT_OURS


def test_deleting_the_last_service_of_a_namespace_removes_its_non_terminals():
    table = table_with((svc("web", "a"), None), (svc("web", "b", cluster_ip="10.96.0.21"), None))
    table.set_service("a/web", None, None)
    assert is_nxdomain(table.lookup("a.svc.cluster.local.", RType.A))
    assert is_nodata(table.lookup("b.svc.cluster.local.", RType.A))
    table.set_service("b/web", None, None)
    assert is_nxdomain(table.lookup("svc.cluster.local.", RType.A))
    assert table.services == 0
    # Only the static schema-version record is left.
    assert [r.name for r in table.records()] == ["dns-version.cluster.local."]


def test_a_table_built_by_events_equals_one_built_at_once():
    """Any order of adds, updates and deletes ends in the records of the final state."""
    final = {f"default/s{i}": (svc(f"s{i}", cluster_ip=f"10.96.1.{i}"), None)
             for i in range(10)}
    final["default/db"] = (headless(), eps("db", ready=[("10.1.0.1", "db-0")]))
    events = RecordTable(ZONE)
    for i in range(10):
        events.set_service(f"default/s{i}", svc(f"s{i}", cluster_ip=f"10.96.2.{i}"), None)
    events.set_service("default/gone", svc("gone", cluster_ip="10.96.3.1"), None)
    events.set_service("default/db", headless(), eps("db", ready=[("10.1.0.7", "x")]))
    for key, (service, endpoints) in final.items():
        events.set_service(key, service, endpoints)
    events.set_service("default/gone", None, None)
    at_once = table_with(*final.values())
    assert events.records() == at_once.records()


@pytest.mark.parametrize("qtype", [RType.A, RType.ANY])
def test_any_returns_every_rrset_at_the_name(qtype):
    table = table_with((headless(), eps("db", ready=[("10.1.0.1", "")])))
    answer = table.lookup("10-1-0-1.db.default.svc.cluster.local.", qtype)
    assert datas(answer) == ["10.1.0.1"]
