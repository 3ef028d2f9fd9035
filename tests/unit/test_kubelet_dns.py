"""A pod's resolv.conf by dnsPolicy, dnsConfig merged in, the limits (services/kubelet/dns.py)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from services.kubelet.config import parse_args
from services.kubelet.dns import (
    DNS_CONFIG_FORMING,
    MISSING_CLUSTER_DNS,
    DNSSettings,
    ResolvConf,
    fit_limits,
    parse_resolv_conf,
    pod_resolv_conf,
)
from skiff.api.v1 import core_pb2

HOST_TEXT = """# written by the host
nameserver 192.168.1.1
nameserver 192.168.1.2 ; trailing comment
search old.example
search corp.example. lab.example .
options timeout:2 attempts:3
options timeout:1
"""
HOST = parse_resolv_conf(HOST_TEXT)
CLUSTER = DNSSettings(cluster_dns=("10.96.0.10",), cluster_domain="cluster.local", host=HOST)


def pod(namespace: str = "shop", **spec: Any) -> core_pb2.Pod:
    p = core_pb2.Pod()
    json_format.ParseDict({"metadata": {"name": "web", "namespace": namespace, "uid": "u1"},
                           "spec": {"containers": [{"name": "c", "image": "busybox"}],
                                    **spec}}, p)
    return p


def resolv(p: core_pb2.Pod, settings: DNSSettings = CLUSTER) -> str:
    conf, warnings = pod_resolv_conf(p, settings)
    assert warnings == []
    return conf.render()


def test_parse_takes_the_last_search_line_and_the_last_of_each_option():
    assert HOST == ResolvConf(("192.168.1.1", "192.168.1.2"), ("corp.example", "lab.example"),
                              ("timeout:1", "attempts:3"))
    assert parse_resolv_conf("") == ResolvConf()


def test_cluster_first_is_the_default():
    assert resolv(pod()) == ("nameserver 10.96.0.10\n"
                             "search shop.svc.cluster.local svc.cluster.local cluster.local "
                             "corp.example lab.example\n"
                             "options ndots:5\n")
    assert resolv(pod(dnsPolicy="ClusterFirst")) == resolv(pod())


def test_cluster_first_follows_the_cluster_domain():
    settings = DNSSettings(cluster_dns=("10.0.0.10", "10.0.0.11"), cluster_domain="k8s.test")
    assert resolv(pod("default"), settings) == (
        "nameserver 10.0.0.10\nnameserver 10.0.0.11\n"
        "search default.svc.k8s.test svc.k8s.test k8s.test\noptions ndots:5\n")


def test_cluster_first_without_a_cluster_domain_keeps_the_host_searches():
    settings = DNSSettings(cluster_dns=("10.96.0.10",), cluster_domain="", host=HOST)
    conf, _ = pod_resolv_conf(pod(), settings)
    assert conf.searches == ("corp.example", "lab.example")


def test_default_is_the_host_file():
    assert resolv(pod(dnsPolicy="Default")) == (
        "nameserver 192.168.1.1\nnameserver 192.168.1.2\n"
        "search corp.example lab.example\noptions timeout:1 attempts:3\n")


def test_default_without_a_host_file_is_the_local_resolver():
    assert resolv(pod(dnsPolicy="Default"), DNSSettings(cluster_dns=("10.96.0.10",))) == (
        "nameserver 127.0.0.1\nsearch .\n")


def test_none_is_the_dns_config_alone():
    p = pod(dnsPolicy="None", dnsConfig={
        "nameservers": ["1.1.1.1", "1.1.1.1", "8.8.8.8"], "searches": ["a.example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]})
    assert resolv(p) == ("nameserver 1.1.1.1\nnameserver 8.8.8.8\nsearch a.example\n"
                         "options ndots:2 edns0\n")


def test_host_network_pods_get_default_unless_they_ask_for_the_cluster():
    assert resolv(pod(hostNetwork=True)) == resolv(pod(dnsPolicy="Default"))
    assert resolv(pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")) == resolv(pod())
    # Without host networking, ClusterFirstWithHostNet is ClusterFirst.
    assert resolv(pod(dnsPolicy="ClusterFirstWithHostNet")) == resolv(pod())


@pytest.mark.parametrize("policy", ["ClusterFirst", "ClusterFirstWithHostNet"])
def test_cluster_first_without_cluster_dns_falls_back_to_default_with_a_warning(policy):
    settings = DNSSettings(cluster_domain="cluster.local", host=HOST)
    p = pod(dnsPolicy=policy, hostNetwork=policy == "ClusterFirstWithHostNet")
    conf, warnings = pod_resolv_conf(p, settings)
    assert conf == HOST
    assert [w.reason for w in warnings] == [MISSING_CLUSTER_DNS]
    assert f'"{policy}" policy. Falling back to "Default" policy' in warnings[0].message
    assert "web_shop(u1)" in warnings[0].message


def test_dns_config_is_appended_deduplicated_and_its_options_override():
    p = pod(dnsConfig={"nameservers": ["10.96.0.10", "9.9.9.9"],
                       "searches": ["svc.cluster.local", "extra.example"],
                       "options": [{"name": "ndots", "value": "1"}, {"name": "rotate"},
                                   {"name": "timeout", "value": ""}]})
    conf, warnings = pod_resolv_conf(p, CLUSTER)
    assert warnings == []
    assert conf.nameservers == ("10.96.0.10", "9.9.9.9")
    assert conf.searches == ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local",
                             "corp.example", "lab.example", "extra.example")
    assert conf.options == ("ndots:1", "rotate", "timeout")


def test_default_options_are_overridden_by_name_in_place():
    p = pod(dnsPolicy="Default", dnsConfig={"options": [{"name": "attempts", "value": "5"}]})
    conf, _ = pod_resolv_conf(p, CLUSTER)
    assert conf.options == ("timeout:1", "attempts:5")


def test_nameservers_beyond_three_are_dropped_with_a_warning():
    p = pod(dnsPolicy="Default", dnsConfig={"nameservers": ["1.1.1.1", "8.8.8.8"]})
    conf, warnings = pod_resolv_conf(p, CLUSTER)
    assert conf.nameservers == ("192.168.1.1", "192.168.1.2", "1.1.1.1")
    assert [w.reason for w in warnings] == [DNS_CONFIG_FORMING]
    assert warnings[0].message.endswith(
        "the applied nameserver line is: 192.168.1.1 192.168.1.2 1.1.1.1")


def test_search_paths_beyond_32_are_dropped_with_a_warning():
    conf, warnings = fit_limits(ResolvConf(searches=tuple(f"s{i}.example" for i in range(40))))
    assert conf.searches == tuple(f"s{i}.example" for i in range(32))
    assert [w.reason for w in warnings] == [DNS_CONFIG_FORMING]
    assert "Search Line limits were exceeded" in warnings[0].message


def test_a_search_line_over_2048_characters_loses_paths_from_its_end():
    paths = tuple(f"{i:02d}" + "a" * 248 for i in range(9))  # 9 * 250 + 8 spaces = 2258
    conf, warnings = fit_limits(ResolvConf(searches=paths))
    assert conf.searches == paths[:8]  # 2007 characters
    assert len(" ".join(conf.searches)) <= 2048
    assert len(warnings) == 1


def test_search_paths_longer_than_253_characters_are_dropped():
    long = "a" * 254
    conf, warnings = fit_limits(ResolvConf(searches=("ok.example", long, "b.example")))
    assert conf.searches == ("ok.example", "b.example")
    assert warnings and warnings[0].message.endswith("line is: ok.example b.example")


def test_within_the_limits_nothing_is_said():
    conf = ResolvConf(("1.1.1.1", "2.2.2.2", "3.3.3.3"),
                      tuple(f"s{i}.example" for i in range(32)))
    assert fit_limits(conf) == (conf, [])


def test_render_leaves_out_empty_lines():
    assert ResolvConf(("10.0.0.1",)).render() == "nameserver 10.0.0.1\n"
    assert ResolvConf().render() == ""


def test_the_kubelets_dns_flags():
    defaults = parse_args(["--node-name", "n1"])
    assert defaults.cluster_dns == ()
    assert (defaults.cluster_domain, defaults.resolv_conf, defaults.state_dir) == (
        "cluster.local", "/etc/resolv.conf", "/var/lib/skiff/kubelet-n1")
    given = parse_args(["--node-name", "n1", "--cluster-dns", "10.96.0.10, fd00::a",
                        "--cluster-domain", "k8s.test.", "--resolv-conf", "",
                        "--root-dir", "/srv/kubelet"])
    assert given.cluster_dns == ("10.96.0.10", "fd00::a")
    assert (given.cluster_domain, given.resolv_conf, given.root_dir) == (
        "k8s.test", "", "/srv/kubelet")
    assert given.state_dir == "/srv/kubelet"


def test_a_cluster_dns_that_is_not_an_ip_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--node-name", "n1", "--cluster-dns", "10.96.0.300"])
    assert "--cluster-dns: '10.96.0.300' is not an IP address" in capsys.readouterr().err
