"""The proxy's kernel rules as pure functions: service ports in, nftables commands out.

Text checks of the rules that matter in both modes, validation of bad input, the
incremental update an Endpoints change produces, and (where ``nft`` and ``unshare`` are
available and we are root) a parse/load check in a private network namespace that
exists only for the one command, so the host's ruleset is never consulted or touched.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess

import pytest

from services.proxy.nftables import NftablesApplier, NftablesError, describe_drift
from services.proxy.nftables_rules import (
    NFTABLES,
    USERSPACE,
    Endpoint,
    ServicePort,
    Settings,
    build_ruleset,
    plan_update,
    render,
    service_ports_of,
    table_name,
)
from skiff.api.v1 import core_pb2, meta_pb2

CAN_RUN_NFT = bool(shutil.which("nft") and shutil.which("unshare") and os.geteuid() == 0)
needs_nft = pytest.mark.skipif(not CAN_RUN_NFT, reason="needs nft, unshare and root")


def web(**overrides: object) -> ServicePort:
    base = ServicePort(namespace="ns", name="web", protocol="TCP", cluster_ip="10.96.0.20",
                       port=80, port_name="http", proxy_port=40001,
                       endpoints=(Endpoint("10.244.1.5", 8080), Endpoint("10.244.2.7", 8080),
                                  Endpoint("10.244.3.9", 8080)))
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def dns() -> ServicePort:
    return ServicePort(namespace="kube-system", name="dns", protocol="UDP",
                       cluster_ip="10.96.0.10", port=53, proxy_port=40002,
                       endpoints=(Endpoint("10.244.1.2", 53),))


def rules_of(ruleset, chain: str) -> tuple[str, ...]:
    return ruleset.chains[chain].rules


def nft_load(tmp_path, *scripts: str) -> subprocess.CompletedProcess[str]:
    """Load ``scripts`` one after the other into a throwaway network namespace."""
    files = []
    for i, script in enumerate(scripts):
        files.append(tmp_path / f"step{i}.nft")
        files[-1].write_text(script)
    loads = " && ".join(f"nft -f {f}" for f in files)
    return subprocess.run(["unshare", "--net", "sh", "-c", f"{loads} && nft list ruleset"],
                          capture_output=True, text=True, timeout=60)


# ----------------------------------------------------------------- userspace


def test_userspace_redirects_cluster_ips_external_ips_and_node_ports_to_the_listener():
    ruleset = build_ruleset(
        [web(node_port=30080, external_ips=("192.0.2.10",)), dns()],
        Settings(mode=USERSPACE))
    tcp = ruleset.collections["userspace-tcp"].elements
    assert tcp == {"10.96.0.20 . 80": "40001", "192.0.2.10 . 80": "40001"}
    assert ruleset.collections["userspace-udp"].elements == {"10.96.0.10 . 53": "40002"}
    assert ruleset.collections["userspace-nodeports-tcp"].elements == {"30080": "40001"}
    services = rules_of(ruleset, "services")
    assert "meta l4proto tcp redirect to : ip daddr . tcp dport map @userspace-tcp" in services
    assert ("fib daddr type local ip daddr != 127.0.0.0/8 th dport 30000-32767 "
            "meta l4proto tcp redirect to : tcp dport map @userspace-nodeports-tcp") in services
    # Pods and other hosts come through prerouting, host processes through output.
    assert "hook prerouting" in ruleset.chains["nat-prerouting"].hook
    assert "hook output" in ruleset.chains["nat-output"].hook
    assert rules_of(ruleset, "nat-prerouting") == ("jump services",)
    assert rules_of(ruleset, "nat-output") == ("jump services",)
    # The kernel does no balancing in this mode: no endpoint chains, no DNAT, no NAT mark.
    text = render(ruleset)
    assert "dnat" not in text and "ep-" not in text and "masquerade" not in text


def test_every_chain_of_ours_accepts_by_default():
    for mode in (USERSPACE, NFTABLES):
        ruleset = build_ruleset([web(node_port=30080)], Settings(mode=mode))
        for chain in ruleset.chains.values():
            assert not chain.hook or "policy accept" in chain.hook


# ------------------------------------------------------------------ nftables


def test_nftables_mode_maps_the_service_to_a_random_endpoint_chain_that_dnats():
    ruleset = build_ruleset([web()], Settings(mode=NFTABLES))
    assert ruleset.collections["service-ips"].elements == {
        "10.96.0.20 . tcp . 80": "goto svc-ns/web/tcp/80"}
    service = rules_of(ruleset, "svc-ns/web/tcp/80")
    assert service[-1] == (
        "numgen random mod 3 vmap { 0 : goto ep-ns/web/tcp/80/10.244.1.5/8080, "
        "1 : goto ep-ns/web/tcp/80/10.244.2.7/8080, 2 : goto ep-ns/web/tcp/80/10.244.3.9/8080 }")
    endpoint = rules_of(ruleset, "ep-ns/web/tcp/80/10.244.2.7/8080")
    assert endpoint[-1] == "meta l4proto tcp dnat to 10.244.2.7:8080"
    assert "services" in rules_of(ruleset, "nat-prerouting")[0]
    assert "services" in rules_of(ruleset, "nat-output")[0]


def test_masquerade_marks_off_cluster_sources_hairpin_and_node_ports_only():
    ruleset = build_ruleset([web(node_port=30080, external_ips=("192.0.2.10",))],
                            Settings(mode=NFTABLES, cluster_cidr="10.244.0.0/16"))
    assert ("ip daddr 10.96.0.20 tcp dport 80 ip saddr != 10.244.0.0/16 "
            "jump mark-for-masquerade") == rules_of(ruleset, "svc-ns/web/tcp/80")[0]
    # Hairpin: an endpoint reaching its own service is masqueraded, or it would answer
    # itself directly and the client would drop the reply.
    assert rules_of(ruleset, "ep-ns/web/tcp/80/10.244.1.5/8080")[0] == (
        "ip saddr 10.244.1.5 jump mark-for-masquerade")
    assert ruleset.collections["service-nodeports"].elements == {
        "tcp . 30080": "goto ext-ns/web/tcp/80"}
    assert ruleset.collections["service-ips"].elements["192.0.2.10 . tcp . 80"] == (
        "goto ext-ns/web/tcp/80")
    assert rules_of(ruleset, "ext-ns/web/tcp/80") == (
        "jump mark-for-masquerade", "goto svc-ns/web/tcp/80")
    assert rules_of(ruleset, "mark-for-masquerade") == ("meta mark set meta mark | 0x4000",)
    postrouting = rules_of(ruleset, "nat-postrouting")
    assert postrouting[0] == "meta mark & 0x4000 == 0 return"
    assert postrouting[-1].startswith("masquerade")
    assert "hook postrouting" in ruleset.chains["nat-postrouting"].hook
    node_ports = [r for r in rules_of(ruleset, "services") if "@service-nodeports" in r]
    assert node_ports == ["fib daddr type local ip daddr != 127.0.0.0/8 th dport 30000-32767 "
                          "meta l4proto . th dport vmap @service-nodeports"]


def test_client_ip_affinity_records_the_client_and_sends_it_back_before_the_random_pick():
    ruleset = build_ruleset([web(session_affinity="ClientIP", affinity_timeout=600)],
                            Settings(mode=NFTABLES))
    sets = {n: c for n, c in ruleset.collections.items() if n.startswith("aff-")}
    assert len(sets) == 3
    for collection in sets.values():
        assert collection.kind == "set"
        assert "flags dynamic,timeout" in collection.spec and "timeout 600s" in collection.spec
    service = rules_of(ruleset, "svc-ns/web/tcp/80")
    lookups = [r for r in service if r.startswith("ip saddr @aff-")]
    assert lookups[0] == ("ip saddr @aff-ns/web/tcp/80/10.244.1.5/8080 "
                          "goto ep-ns/web/tcp/80/10.244.1.5/8080")
    assert len(lookups) == 3
    assert service.index(lookups[-1]) < len(service) - 1  # before numgen
    assert service[-1].startswith("numgen random mod 3")
    endpoint = rules_of(ruleset, "ep-ns/web/tcp/80/10.244.1.5/8080")
    assert "update @aff-ns/web/tcp/80/10.244.1.5/8080 { ip saddr }" in endpoint
    assert endpoint.index("update @aff-ns/web/tcp/80/10.244.1.5/8080 { ip saddr }") < 2

    without = build_ruleset([web()], Settings(mode=NFTABLES))
    assert not [n for n in without.collections if n.startswith("aff-")]


def test_a_service_port_with_no_endpoints_is_rejected_not_dnated():
    ruleset = build_ruleset([web(endpoints=(), node_port=30080)], Settings(mode=NFTABLES))
    assert ruleset.collections["service-ips"].elements == {}
    assert "svc-ns/web/tcp/80" not in ruleset.chains
    assert ruleset.collections["no-endpoint-services"].elements == {
        "10.96.0.20 . tcp . 80": "goto reject-chain"}
    assert ruleset.collections["no-endpoint-nodeports"].elements == {
        "tcp . 30080": "goto reject-chain"}
    assert rules_of(ruleset, "reject-chain") == ("meta l4proto tcp reject with tcp reset",
                                                 "reject")
    for hook in ("filter-input", "filter-forward", "filter-output"):
        assert "ct state new jump service-endpoints-check" in rules_of(ruleset, hook)
    assert "ct state new jump nodeport-endpoints-check" in rules_of(ruleset, "filter-input")


def test_udp_services_get_udp_rules():
    ruleset = build_ruleset([dns()], Settings(mode=NFTABLES))
    assert ruleset.collections["service-ips"].elements == {
        "10.96.0.10 . udp . 53": "goto svc-kube-system/dns/udp/53"}
    assert rules_of(ruleset, "ep-kube-system/dns/udp/53/10.244.1.2/53")[-1] == (
        "meta l4proto udp dnat to 10.244.1.2:53")


def test_given_node_addresses_replace_the_any_local_address_match():
    ruleset = build_ruleset([web(node_port=30080)],
                            Settings(mode=NFTABLES, node_addresses=("192.0.2.1", "192.0.2.2")))
    assert ruleset.collections["nodeport-ips"].elements == {"192.0.2.1": None,
                                                            "192.0.2.2": None}
    assert ("ip daddr @nodeport-ips th dport 30000-32767 meta l4proto . th dport vmap "
            "@service-nodeports") in rules_of(ruleset, "services")


def test_the_ruleset_does_not_depend_on_input_order():
    ports = [web(), dns(), web(name="api", cluster_ip="10.96.0.30", proxy_port=40003)]
    for mode in (USERSPACE, NFTABLES):
        assert render(build_ruleset(ports, Settings(mode=mode))) == render(
            build_ruleset(list(reversed(ports)), Settings(mode=mode)))


@pytest.mark.parametrize(("port", "settings", "message"), [
    (web(protocol="SCTP"), Settings(), "protocol 'SCTP' is not TCP or UDP"),
    (web(cluster_ip="127.10.0.1"), Settings(), "outside the service CIDR 10.96.0.0/12"),
    (web(cluster_ip="10.96.0"), Settings(), "cluster IP: '10.96.0' is not an IPv4"),
    (web(node_port=8080), Settings(), "nodePort 8080 is outside 30000-32767"),
    (web(proxy_port=0), Settings(mode=USERSPACE), "needs the proxy's listener port"),
    (web(endpoints=(Endpoint("pod-a", 80),)), Settings(mode=NFTABLES),
     "endpoint: 'pod-a' is not an IPv4"),
    (web(external_ips=("::1",)), Settings(), "external IP: '::1' is not an IPv4"),
    (web(), Settings(mode="ipvs"), "proxy mode 'ipvs'"),
])
def test_bad_input_is_refused_naming_the_service_port(port, settings, message):
    with pytest.raises(ValueError) as caught:
        build_ruleset([port], settings)
    assert message in str(caught.value)
    if settings.mode != "ipvs":
        assert "service port ns/web/" in str(caught.value)


def test_a_service_port_given_twice_is_refused():
    with pytest.raises(ValueError, match="given twice"):
        build_ruleset([web(), web()], Settings())


# ----------------------------------------------------------------- rendering


def test_render_replaces_the_whole_table_in_one_transaction():
    text = render(build_ruleset([web()], Settings(mode=NFTABLES)))
    lines = text.splitlines()
    assert lines[:3] == ["add table ip skiff", "delete table ip skiff", "add table ip skiff"]
    # Chains exist before any rule refers to them; every command names our table.
    first_rule = next(i for i, line in enumerate(lines) if line.startswith("add rule"))
    assert all(not line.startswith("add chain") for line in lines[first_rule:])
    assert all(" ip skiff " in line or line.endswith(" ip skiff") for line in lines)


def test_an_endpoints_change_touches_only_that_service_port():
    ports = [web(), dns()]
    old = build_ruleset(ports, Settings(mode=NFTABLES))
    moved = web(endpoints=(Endpoint("10.244.1.5", 8080), Endpoint("10.244.4.4", 8080)))
    new = build_ruleset([moved, dns()], Settings(mode=NFTABLES))
    update = plan_update(old, new)
    assert "delete table" not in update
    assert "dns" not in update
    lines = update.splitlines()
    assert "add chain ip skiff ep-ns/web/tcp/80/10.244.4.4/8080" in lines
    assert "flush chain ip skiff svc-ns/web/tcp/80" in lines
    # Gone endpoints' chains are emptied first and deleted last, after the service chain
    # that jumped to them was rewritten.
    for gone in ("ep-ns/web/tcp/80/10.244.2.7/8080", "ep-ns/web/tcp/80/10.244.3.9/8080"):
        assert lines.index(f"flush chain ip skiff {gone}") < lines.index(
            f"delete chain ip skiff {gone}")
        assert lines.index(f"delete chain ip skiff {gone}") > max(
            i for i, line in enumerate(lines) if line.startswith("add rule"))
    assert len(lines) < 15
    assert plan_update(new, new) == ""


def test_removing_a_service_deletes_its_map_element_before_its_chains():
    old = build_ruleset([web(), dns()], Settings(mode=NFTABLES))
    new = build_ruleset([dns()], Settings(mode=NFTABLES))
    lines = plan_update(old, new).splitlines()
    element = lines.index("delete element ip skiff service-ips { 10.96.0.20 . tcp . 80 }")
    assert element < lines.index("delete chain ip skiff svc-ns/web/tcp/80")


def test_a_changed_affinity_timeout_or_no_previous_state_replaces_the_table():
    old = build_ruleset([web(session_affinity="ClientIP")], Settings(mode=NFTABLES))
    new = build_ruleset([web(session_affinity="ClientIP", affinity_timeout=60)],
                        Settings(mode=NFTABLES))
    assert plan_update(old, new).startswith("add table ip skiff\ndelete table ip skiff")
    assert plan_update(None, new) == render(new)


def test_userspace_endpoint_changes_need_no_kernel_change():
    old = build_ruleset([web()], Settings(mode=USERSPACE))
    new = build_ruleset([web(endpoints=())], Settings(mode=USERSPACE))
    assert plan_update(old, new) == ""


# ------------------------------------------------------------- nft accepts it


@needs_nft
@pytest.mark.parametrize("mode", [USERSPACE, NFTABLES])
def test_nft_loads_the_ruleset_and_its_updates(mode, tmp_path):
    settings = Settings(mode=mode)
    first = build_ruleset([web(node_port=30080, external_ips=("192.0.2.10",),
                               session_affinity="ClientIP"), dns()], settings)
    second = build_ruleset([web(node_port=30080, session_affinity="ClientIP",
                                endpoints=(Endpoint("10.244.9.9", 8080),)),
                            web(name="api", cluster_ip="10.96.0.30", proxy_port=40003,
                                endpoints=())], settings)
    done = nft_load(tmp_path, render(first), plan_update(first, second))
    assert done.returncode == 0, done.stderr
    assert "table ip skiff" in done.stdout
    if mode == NFTABLES:
        assert "ep-ns/web/tcp/80/10.244.9.9/8080" in done.stdout
        assert "10.244.1.5" not in done.stdout  # the old endpoint's chain is gone
        assert "dns" not in done.stdout
        assert "10.96.0.30 . tcp . 80 : goto reject-chain" in done.stdout
    else:
        assert "10.96.0.30 . 80 : 40003" in done.stdout
        assert "192.0.2.10" not in done.stdout


@needs_nft
def test_nft_loads_a_ruleset_with_given_node_addresses(tmp_path):
    ruleset = build_ruleset([web(node_port=30080)],
                            Settings(mode=NFTABLES, node_addresses=("192.0.2.1",)))
    done = nft_load(tmp_path, render(ruleset), render(ruleset))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("chain svc-ns/web/tcp/80 {") == 1


# --------------------------------------------------------------- drift check


def kernel_view(ruleset) -> list[dict]:
    """What ``nft -j list table`` gives for ``ruleset`` (names, hooks, counts)."""
    objects: list[dict] = []
    for name, collection in ruleset.collections.items():
        objects.append({collection.kind: {"name": name, "elem": [
            [k, v] if v is not None else k for k, v in collection.elements.items()]}})
    for name, chain in ruleset.chains.items():
        entry: dict = {"name": name}
        if chain.hook:
            entry |= {"hook": chain.hook.split("hook ")[1].split()[0], "policy": "accept"}
        objects.append({"chain": entry})
        objects += [{"rule": {"chain": name, "expr": []}} for _ in chain.rules]
    return objects


def test_drift_is_empty_when_the_kernel_has_what_was_written():
    ruleset = build_ruleset([web(session_affinity="ClientIP"), dns()],
                            Settings(mode=NFTABLES))
    view = kernel_view(ruleset)
    assert describe_drift(ruleset, view) == []
    # Affinity sets fill themselves: their elements are not drift.
    for obj in view:
        if "set" in obj and obj["set"]["name"].startswith("aff-"):
            obj["set"]["elem"] = ["10.244.9.9"]
    assert describe_drift(ruleset, view) == []


def test_drift_names_what_differs():
    ruleset = build_ruleset([web(), dns()], Settings(mode=NFTABLES))
    assert describe_drift(ruleset, None) == ["table missing"]
    view = [o for o in kernel_view(ruleset)
            if o.get("chain", {}).get("name") != "svc-ns/web/tcp/80"]
    view.append({"rule": {"chain": "services", "expr": []}})
    view.append({"chain": {"name": "intruder"}})
    for obj in view:
        if "map" in obj and obj["map"]["name"] == "service-ips":
            obj["map"]["elem"] = obj["map"]["elem"][:1]
        if obj.get("chain", {}).get("name") == "nat-output":
            obj["chain"]["policy"] = "drop"
    drift = describe_drift(ruleset, view)
    assert "chain svc-ns/web/tcp/80 missing" in drift
    assert "chain intruder unexpected" in drift
    assert "chain services: 3 rules, expected 2" in drift
    assert "map service-ips: 1 elements, expected 2" in drift
    assert "chain nat-output: hook output policy drop" in drift


# ---------------------------------------------------------- Services and Endpoints in


def api_service(*ports: tuple[str, str, int, int], type_: str = "ClusterIP",
                cluster_ip: str = "10.96.0.20", affinity: str = "None",
                timeout: int = 0, ingress: tuple[str, ...] = ()) -> core_pb2.Service:
    """Ports of (name, protocol, port, node port)."""
    svc = core_pb2.Service(metadata=meta_pb2.ObjectMeta(name="web", namespace="ns"))
    svc.spec.type = type_
    svc.spec.cluster_ip = cluster_ip
    svc.spec.session_affinity = affinity
    if timeout:
        svc.spec.session_affinity_config.client_ip.timeout_seconds = timeout
    for name, protocol, number, node_port in ports:
        svc.spec.ports.add(name=name, protocol=protocol, port=number, node_port=node_port)
    for ip in ingress:
        svc.status.load_balancer.ingress.add(ip=ip)
    return svc


def api_endpoints(*subsets: tuple[list[str], list[str], list[tuple[str, str, int]]]
                  ) -> core_pb2.EndpointsObject:
    """Subsets of (ready ips, not-ready ips, [(port name, protocol, port)])."""
    obj = core_pb2.EndpointsObject(metadata=meta_pb2.ObjectMeta(name="web", namespace="ns"))
    for ready, not_ready, ports in subsets:
        subset = obj.subsets.add()
        for ip in ready:
            subset.addresses.add(ip=ip)
        for ip in not_ready:
            subset.not_ready_addresses.add(ip=ip)
        for name, protocol, number in ports:
            subset.ports.add(name=name, protocol=protocol, port=number)
    return obj


def test_service_ports_of_match_endpoint_ports_by_name_and_protocol():
    svc = api_service(("http", "TCP", 80, 30080), ("dns", "UDP", 53, 0),
                      ("dns-tcp", "TCP", 53, 0), ("sctp", "SCTP", 9, 0),
                      type_="NodePort", affinity="ClientIP", timeout=60)
    eps = api_endpoints(
        (["10.244.1.3", "10.244.1.2", "10.244.1.2"], ["10.244.1.9"],
         [("http", "TCP", 8080), ("dns", "UDP", 5353), ("dns-tcp", "TCP", 5354)]))
    ports = {p.key: p for p in service_ports_of(
        svc, eps, proxy_ports={"ns/web/tcp/80": 40001})}
    assert set(ports) == {"ns/web/tcp/80", "ns/web/udp/53", "ns/web/tcp/53"}
    http = ports["ns/web/tcp/80"]
    assert http.endpoints == (Endpoint("10.244.1.2", 8080), Endpoint("10.244.1.3", 8080))
    assert (http.node_port, http.proxy_port, http.port_name) == (30080, 40001, "http")
    assert (http.session_affinity, http.affinity_timeout) == ("ClientIP", 60)
    assert ports["ns/web/udp/53"].endpoints[0] == Endpoint("10.244.1.2", 5353)
    assert ports["ns/web/tcp/53"].endpoints[0] == Endpoint("10.244.1.2", 5354)
    assert ports["ns/web/udp/53"].proxy_port == 0


def test_service_ports_of_unnamed_port_takes_the_only_port_of_its_protocol():
    svc = api_service(("", "UDP", 53, 0), affinity="ClientIP")
    eps = api_endpoints((["10.244.1.2"], [], [("", "UDP", 5353)]),
                        (["10.244.1.4"], [], [("a", "UDP", 1), ("b", "UDP", 2)]))
    (port,) = service_ports_of(svc, eps)
    assert port.endpoints == (Endpoint("10.244.1.2", 5353),)
    assert port.affinity_timeout == 10800
    assert service_ports_of(svc, None)[0].endpoints == ()


def test_service_ports_of_headless_external_name_and_load_balancer():
    assert service_ports_of(api_service(("", "TCP", 80, 0), cluster_ip="None"), None) == []
    assert service_ports_of(api_service(("", "TCP", 80, 0), type_="ExternalName"), None) == []
    lb = service_ports_of(api_service(("", "TCP", 80, 30080), type_="LoadBalancer",
                                      ingress=("192.0.2.7",)), None)
    assert (lb[0].node_port, lb[0].external_ips) == (30080, ("192.0.2.7",))
    cluster_ip = service_ports_of(api_service(("", "TCP", 80, 30080)), None)
    assert cluster_ip[0].node_port == 0  # a ClusterIP Service has no NodePort


async def test_a_missing_nft_is_a_clear_error():
    applier = NftablesApplier(nft="/nonexistent/nft")
    with pytest.raises(NftablesError, match="not found: the proxy's kernel rules need nft"):
        await applier.apply(build_ruleset([web()], Settings()))
    assert applier.installed is None


# ------------------------------------------------------------ one table per node


def test_the_table_is_the_settings_and_every_command_names_it():
    settings = Settings(mode=NFTABLES, table="skiff-proxy-node-2")
    ruleset = build_ruleset([web(node_port=30080)], settings)
    text = render(ruleset)
    assert text.startswith("add table ip skiff-proxy-node-2\n"
                           "delete table ip skiff-proxy-node-2\n")
    assert " skiff " not in text and "ip skiff\n" not in text
    changed = build_ruleset([web(endpoints=(Endpoint("10.244.9.9", 8080),))], settings)
    update = plan_update(ruleset, changed)
    assert update and all(" ip skiff-proxy-node-2 " in line
                          for line in update.splitlines())
    # Another table's ruleset is never an update of this one: written whole.
    other = build_ruleset([web()], Settings(mode=NFTABLES, table="skiff-proxy-node-3"))
    assert plan_update(ruleset, other) == render(other)


async def test_an_applier_refuses_another_tables_ruleset():
    applier = NftablesApplier(table="skiff-proxy-a", nft="/nonexistent/nft")
    with pytest.raises(ValueError, match="skiff-proxy-b"):
        await applier.apply(build_ruleset([web()], Settings(table="skiff-proxy-b")))


def test_with_a_pod_bridge_only_this_nodes_pods_and_traffic_from_elsewhere_match():
    for mode in (USERSPACE, NFTABLES):
        ruleset = build_ruleset([web()], Settings(mode=mode, pod_bridge="skb-node-1"))
        # This node's pods; then other nodes' pods on this machine are left to their
        # own proxies; then everything else (other hosts).
        assert rules_of(ruleset, "nat-prerouting") == (
            'iifname "skb-node-1" jump services', 'iifname "skb-*" return', "jump services")
        # Host processes: every proxy's table (the first NAT binding wins).
        assert rules_of(ruleset, "nat-output") == ("jump services",)


def test_a_bad_pod_bridge_or_table_is_refused():
    with pytest.raises(ValueError, match="pod bridge"):
        build_ruleset([web()], Settings(pod_bridge='x" accept'))
    with pytest.raises(ValueError, match="table"):
        build_ruleset([web()], Settings(table=""))
    with pytest.raises(ValueError, match="node name"):
        table_name("a b")


@needs_nft
def test_nft_loads_the_rules_of_two_nodes_side_by_side(tmp_path):
    scripts = [render(build_ruleset([web(node_port=30080), dns()],
                                    Settings(mode=mode, table=table_name(node),
                                             pod_bridge=bridge_name)))
               for mode, node, bridge_name in ((USERSPACE, "node-1", "skb-node-1"),
                                               (NFTABLES, "node-2", "skb-node-2"))]
    done = nft_load(tmp_path, *scripts)
    assert done.returncode == 0, done.stderr
    assert "table ip skiff-proxy-node-1" in done.stdout
    assert "table ip skiff-proxy-node-2" in done.stdout
    assert 'iifname "skb-node-2" jump services' in done.stdout
