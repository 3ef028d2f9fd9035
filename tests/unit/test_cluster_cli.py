"""``skiff`` (skiff/cli/cluster.py, skiff/cli/layout.py): the supervisord configuration
rendered for N nodes, the flags and environment variables of ``skiff up``, and what it
prints. Nothing starts."""

from __future__ import annotations

import configparser
import ipaddress
import shlex
from pathlib import Path

import pytest

from skiff.cli import cluster
from skiff.cli.cluster import ClusterSettings, DemoEndpoints
from skiff.cli.workloads import ServiceAnswers, crossed_both_tiers, kube_dns_service


def _programs(path: Path) -> dict[str, list[str]]:
    """Each [program:NAME]'s command line, split as a shell would."""
    parser = configparser.RawConfigParser()
    parser.read_string(path.read_text())
    return {section.removeprefix("program:"): shlex.split(parser[section]["command"])
            for section in parser.sections() if section.startswith("program:")}


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_config_for_three_nodes_has_a_kubelet_a_proxy_and_a_dns_each(tmp_path):
    programs = _programs(cluster.render_config(tmp_path, ClusterSettings(nodes=3)))

    assert set(programs) == {
        "store-0", "store-1", "store-2", "apiserver", "scheduler", "controller-manager",
        "kubelet-node-1", "proxy-node-1", "dns-node-1", "kubelet-node-2", "proxy-node-2",
        "dns-node-2", "kubelet-node-3", "proxy-node-3", "dns-node-3"}
    kubelets = {name: argv for name, argv in programs.items() if name.startswith("kubelet-")}
    # Distinct ports, addresses and pod subnets: nodes never collide.
    assert {(_flag(a, "--address"), _flag(a, "--port")) for a in kubelets.values()} == {
        ("127.0.0.1", "10250"), ("127.0.1.2", "10252"), ("127.0.1.3", "10254")}
    assert sorted(_flag(a, "--pod-cidr") for a in kubelets.values()) == [
        "10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    assert _flag(programs["proxy-node-3"], "--node-address") == "127.0.1.3"
    assert _flag(programs["proxy-node-3"], "--health-listen") == "127.0.0.1:10360"
    # Every daemon's health and metrics ports differ.
    ports = [_flag(a, f).rpartition(":")[2] for a in programs.values()
             for f in ("--health-listen", "--listen-metrics-urls") if f in a]
    assert len(ports) == len(set(ports))
    assert cluster.configured_nodes((tmp_path / "supervisord.conf").read_text()) == [
        "node-1", "node-2", "node-3"]


def test_kubelets_get_a_root_dir_each_and_the_cluster_domain(tmp_path, monkeypatch):
    programs = _programs(cluster.render_config(tmp_path, ClusterSettings(nodes=2)))
    kubelets = [programs["kubelet-node-1"], programs["kubelet-node-2"]]
    assert [_flag(a, "--root-dir") for a in kubelets] == [
        str(tmp_path / "kubelet-node-1"), str(tmp_path / "kubelet-node-2")]
    assert {_flag(a, "--cluster-domain") for a in kubelets} == {"cluster.local"}
    assert {_flag(a, "--cluster-dns") for a in kubelets} == {"10.96.0.10"}
    # The docker plugin has no cluster DNS: ClusterFirst pods fall back to Default.
    docker = _programs(cluster.render_config(
        tmp_path, ClusterSettings(nodes=2, network_plugin="docker")))
    assert not any("--cluster-dns" in a for a in docker.values())
    assert not [name for name in docker if name.startswith("dns-")]


def test_the_controller_manager_allocates_node_cidrs_around_the_kubelets_subnets(tmp_path):
    programs = _programs(cluster.render_config(tmp_path, ClusterSettings(nodes=3)))

    manager = programs["controller-manager"]
    assert _flag(manager, "--allocate-node-cidrs") == "true"
    assert (_flag(manager, "--cluster-cidr"), _flag(manager, "--node-cidr-mask-size")) == (
        "10.244.0.0/16", "24")
    # Every kubelet's own subnet is one of the blocks node IPAM marks as taken.
    cluster_cidr = ipaddress.ip_network(_flag(manager, "--cluster-cidr"))
    for name, argv in programs.items():
        if name.startswith("kubelet-"):
            subnet = ipaddress.ip_network(_flag(argv, "--pod-cidr"))
            assert subnet.subnet_of(cluster_cidr) and subnet.prefixlen == 24, name  # type: ignore[arg-type]


def test_node_failure_settings_reach_the_daemons(tmp_path):
    settings = ClusterSettings(nodes=1, node_monitor_grace_period=8, node_monitor_period=1,
                               default_toleration_seconds=2)
    programs = _programs(cluster.render_config(tmp_path, settings))

    manager = programs["controller-manager"]
    assert _flag(manager, "--node-monitor-grace-period") == "8"
    assert _flag(manager, "--node-monitor-period") == "1"
    apiserver = programs["apiserver"]
    assert _flag(apiserver, "--default-not-ready-toleration-seconds") == "2"
    assert _flag(apiserver, "--default-unreachable-toleration-seconds") == "2"
    # Kubelets heartbeat four times per grace period.
    assert _flag(programs["kubelet-node-1"], "--node-lease-renew-interval") == "2"
    assert _flag(programs["kubelet-node-1"], "--node-status-update-frequency") == "2"


def test_default_settings_are_kubernetes_defaults(tmp_path):
    programs = _programs(cluster.render_config(tmp_path, ClusterSettings()))

    assert _flag(programs["controller-manager"], "--node-monitor-grace-period") == "40"
    assert _flag(programs["apiserver"], "--default-unreachable-toleration-seconds") == "300"
    assert _flag(programs["kubelet-node-1"], "--node-lease-renew-interval") == "10"


def test_the_store_starts_first_and_stops_last(tmp_path):
    parser = configparser.RawConfigParser()
    parser.read_string(cluster.render_config(tmp_path, ClusterSettings(nodes=2)).read_text())
    priority = {s.removeprefix("program:"): int(parser[s]["priority"])
                for s in parser.sections() if s.startswith("program:")}

    assert priority["store-0"] < priority["apiserver"] < priority["scheduler"]
    assert priority["apiserver"] < priority["controller-manager"] < priority["kubelet-node-2"]


@pytest.mark.parametrize(("grace", "heartbeat"), [(40, 10.0), (100, 10.0), (8, 2.0), (1, 0.5)])
def test_heartbeat_interval(grace, heartbeat):
    assert ClusterSettings(node_monitor_grace_period=grace).heartbeat_interval == heartbeat


def test_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("SKIFF_NODES", "2")
    monkeypatch.setenv("SKIFF_NODE_MONITOR_GRACE_PERIOD", "8")
    monkeypatch.setenv("SKIFF_DEFAULT_TOLERATION_SECONDS", "5")
    parser = cluster._parser()

    from_env = cluster.settings_from_args(parser.parse_args(["up"]))
    assert from_env == ClusterSettings(nodes=2, node_monitor_grace_period=8.0,
                                       default_toleration_seconds=5)
    args = parser.parse_args(["up", "--nodes", "3", "--data-dir", "/tmp/x",
                              "--node-monitor-grace-period", "12", "--no-demo"])
    assert cluster.settings_from_args(args).nodes == 3
    assert cluster.settings_from_args(args).node_monitor_grace_period == 12.0
    assert args.data_dir == Path("/tmp/x") and args.demo is False


def test_data_dir_before_or_after_the_command():
    parser = cluster._parser()

    assert parser.parse_args(["--data-dir", "a", "down"]).data_dir == Path("a")
    after = parser.parse_args(["down", "--data-dir", "b", "--purge"])
    assert (after.data_dir, after.purge) == (Path("b"), True)
    assert parser.parse_args(["status"]).data_dir is None


@pytest.mark.parametrize("settings", [dict(nodes=0), dict(node_monitor_grace_period=0),
                                      dict(default_toleration_seconds=-1)])
def test_bad_settings_are_refused(settings):
    with pytest.raises(ValueError):
        ClusterSettings(**settings)


def test_bad_node_count_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        cluster.main(["up", "--nodes", "0"])
    assert exited.value.code == 2
    assert "at least one node" in capsys.readouterr().err


def test_ready_condition():
    from skiff.api.v1 import core_pb2

    node = core_pb2.Node()
    assert cluster.ready_condition(node) == ("Unknown", "NoCondition")
    node.status.conditions.add(type="Ready", status="True", reason="KubeletReady")
    assert cluster.ready_condition(node) == ("True", "KubeletReady")


def test_usage_names_the_curl_that_answered(tmp_path):
    demo = DemoEndpoints("http://127.0.0.1:30080/hostname", "http://10.96.0.7:80/hostname",
                         "hello-abc-123")
    text = cluster.usage(tmp_path, ClusterSettings(nodes=2), demo)

    assert "curl 127.0.0.1:30080/hostname" in text
    assert "curl 10.96.0.7/hostname" in text
    assert "hello-abc-123" in text and "node-1, node-2" in text
    without = cluster.usage(tmp_path, ClusterSettings(), None)
    assert "curl 127" not in without and "skiffctl apply -f examples/" in without
    assert f"skiff down --data-dir {tmp_path} [--purge]" in without


def test_apiserver_toleration_flags():
    from services.apiserver.admission.default_tolerations import add_default_tolerations
    from services.apiserver.config import parse_args
    from skiff.api.v1 import core_pb2

    config = parse_args(["--store-endpoints", "127.0.0.1:2379",
                         "--default-not-ready-toleration-seconds", "7",
                         "--default-unreachable-toleration-seconds", "3"])
    assert (config.default_not_ready_toleration_seconds,
            config.default_unreachable_toleration_seconds) == (7, 3)
    assert parse_args(["--store-endpoints", "x:1"]).default_unreachable_toleration_seconds == 300

    pod = core_pb2.Pod()
    add_default_tolerations(pod, 7, unreachable_seconds=3)
    assert {t.key: t.toleration_seconds for t in pod.spec.tolerations} == {
        "node.kubernetes.io/not-ready": 7, "node.kubernetes.io/unreachable": 3}


# ------------------------------------------------------------------ on an existing etcd

ETCD = ("http://127.0.0.1:2379", "http://10.0.0.2:2379")


def test_on_an_existing_etcd_no_store_runs_and_the_apiserver_is_given_it(tmp_path):
    config = cluster.render_config(tmp_path, ClusterSettings(etcd_servers=ETCD))
    programs = _programs(config)

    assert not [name for name in programs if name.startswith("store")]
    assert set(programs) == {"apiserver", "scheduler", "controller-manager",
                             "kubelet-node-1", "proxy-node-1", "dns-node-1"}
    assert _flag(programs["apiserver"], "--store-endpoints") == ",".join(ETCD)
    assert cluster.configured_etcd_servers(config.read_text()) == ETCD
    # The apiserver takes them as they are written.
    from services.apiserver.config import parse_args
    assert parse_args(programs["apiserver"][3:]).store_endpoints == (
        "127.0.0.1:2379", "10.0.0.2:2379")


def test_skiffs_own_store_is_no_external_etcd(tmp_path):
    config = cluster.render_config(tmp_path, ClusterSettings())
    assert cluster.configured_etcd_servers(config.read_text()) == ()


def test_etcd_servers_are_normalized():
    assert cluster.parse_etcd_servers(" http://127.0.0.1:2379/ ,http://etcd-1:2379,,"
                                      "http://127.0.0.1:2379") == (
        "http://127.0.0.1:2379", "http://etcd-1:2379")
    assert cluster.parse_etcd_servers("http://[::1]:2379") == ("http://[::1]:2379",)
    assert cluster.parse_etcd_servers("") == ()


@pytest.mark.parametrize(("url", "says"), [
    ("127.0.0.1:2379", "is not a client URL http://host:port"),
    ("http://127.0.0.1", "is not a client URL http://host:port"),
    ("http://:2379", "is not a client URL http://host:port"),
    ("unix:///run/etcd.sock", "is not a client URL http://host:port"),
    ("http://127.0.0.1:70000", "out of range"),
    ("http://127.0.0.1:port", "etcd server 'http://127.0.0.1:port'"),
    ("https://127.0.0.1:2379", "TLS to etcd is not supported"),
    ("http://127.0.0.1:2379/v3", "nothing after it"),
    ("http://user@127.0.0.1:2379", "nothing after it"),
])
def test_a_bad_etcd_url_is_refused_by_name(url, says):
    with pytest.raises(ValueError, match=says) as refused:
        cluster.parse_etcd_servers(f"http://127.0.0.1:2379,{url}")
    assert repr(url) in str(refused.value)
    with pytest.raises(ValueError, match=says):
        ClusterSettings(etcd_servers=(url,))


def test_etcd_servers_from_the_environment_or_the_flag(monkeypatch, capsys):
    monkeypatch.setenv("SKIFF_ETCD_SERVERS", "http://127.0.0.1:2379")
    parser = cluster._parser()
    assert cluster.settings_from_args(parser.parse_args(["up"])).etcd_servers == (
        "http://127.0.0.1:2379",)
    flag = parser.parse_args(["up", "--etcd-servers", "http://127.0.0.1:3379"])
    assert cluster.settings_from_args(flag).etcd_servers == ("http://127.0.0.1:3379",)

    with pytest.raises(SystemExit) as exited:
        cluster.main(["up", "--etcd-servers", "etcd:2379"])
    assert exited.value.code == 2
    assert "etcd server 'etcd:2379' is not a client URL" in capsys.readouterr().err


def test_usage_names_the_existing_etcd(tmp_path):
    text = cluster.usage(tmp_path, ClusterSettings(etcd_servers=ETCD), None)
    assert f"etcd (existing, not managed):   {','.join(ETCD)}" in text
    assert "store (etcd v3 API)" not in text


def test_the_kubelets_network_plugin_and_state_directory(tmp_path):
    docker = _programs(cluster.render_config(
        tmp_path, ClusterSettings(nodes=2, network_plugin="docker")))
    assert _flag(docker["kubelet-node-2"], "--network-plugin") == "docker"
    bridge = _programs(cluster.render_config(tmp_path, ClusterSettings(nodes=2)))
    argv = bridge["kubelet-node-2"]
    assert _flag(argv, "--network-plugin") == "bridge"
    assert _flag(argv, "--cluster-cidr") == "10.244.0.0/16"
    assert _flag(argv, "--root-dir") == str(tmp_path / "kubelet-node-2")
    with pytest.raises(ValueError, match="unknown network plugin 'flannel'"):
        ClusterSettings(network_plugin="flannel")


def test_proxies_get_the_mode_the_ranges_and_their_nodes_bridge(tmp_path, monkeypatch):
    programs = _programs(cluster.render_config(tmp_path, ClusterSettings(nodes=2)))
    proxy = programs["proxy-node-2"]
    assert _flag(proxy, "--proxy-mode") == "userspace"
    assert _flag(proxy, "--cluster-cidr") == "10.244.0.0/16"
    assert _flag(proxy, "--service-cluster-ip-range") == "10.96.0.0/12"
    assert _flag(proxy, "--pod-bridge-interface") == "skb-node-2"
    assert _flag(programs["apiserver"], "--service-cluster-ip-range") == "10.96.0.0/12"
    nft = _programs(cluster.render_config(tmp_path, ClusterSettings(proxy_mode="nftables")))
    assert _flag(nft["proxy-node-1"], "--proxy-mode") == "nftables"
    # The docker plugin has no bridge of Skiff's for the proxy to know.
    docker = _programs(cluster.render_config(tmp_path, ClusterSettings(network_plugin="docker")))
    assert "--pod-bridge-interface" not in docker["proxy-node-1"]
    assert _flag(docker["proxy-node-1"], "--proxy-mode") == "userspace"

    monkeypatch.setenv("SKIFF_PROXY_MODE", "nftables")
    parser = cluster._parser()
    assert cluster.settings_from_args(parser.parse_args(["up"])).proxy_mode == "nftables"
    args = parser.parse_args(["up", "--proxy-mode", "userspace"])
    assert cluster.settings_from_args(args).proxy_mode == "userspace"
    with pytest.raises(ValueError, match="unknown proxy mode 'ipvs'"):
        ClusterSettings(proxy_mode="ipvs")


def test_each_node_runs_a_dns_on_its_bridge_gateway(tmp_path):
    config = cluster.render_config(tmp_path, ClusterSettings(nodes=2))
    programs = _programs(config)
    for index, node in ((1, "node-1"), (2, "node-2")):
        dns = programs[f"dns-{node}"]
        pod_cidr = ipaddress.ip_network(_flag(programs[f"kubelet-{node}"], "--pod-cidr"))
        # The first address of the node's podCIDR: the gateway on its bridge.
        assert _flag(dns, "--listen") == f"{pod_cidr.network_address + 1}:53"
        assert _flag(dns, "--register-endpoints") == "kube-system/kube-dns"
        assert _flag(dns, "--cluster-domain") == "cluster.local"
        assert cluster.LocalNode(index).gateway == str(pod_cidr.network_address + 1)
    assert cluster.configured_dns(config.read_text()) == ["node-1", "node-2"]


def test_the_kube_dns_service_is_selectorless_at_the_tenth_address():
    service = kube_dns_service()
    assert (service.metadata.namespace, service.metadata.name) == ("kube-system", "kube-dns")
    assert service.spec.cluster_ip == "10.96.0.10" and not service.spec.selector
    assert [(p.name, p.port, p.protocol) for p in service.spec.ports] == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]
    network = ipaddress.ip_network(cluster.SERVICE_CIDR)
    assert ipaddress.ip_address(service.spec.cluster_ip) == network.network_address + 10


def test_a_guestbook_answer_crosses_both_tiers():
    assert crossed_both_tiers("frontend-1-a -> backend-2-b: hello from the backend")
    assert not crossed_both_tiers("frontend-1-a -> backend unreachable: bad address")
    assert not crossed_both_tiers("hello-1-a")


def test_usage_names_the_guestbook_curls_and_the_network(tmp_path):
    book = ServiceAnswers("http://127.0.0.1:30081/", "http://10.96.12.7:80/",
                          "frontend-x -> backend-y: hello from the backend")
    demo = DemoEndpoints("http://127.0.0.1:30080/hostname", "http://10.96.0.77:80/hostname",
                         "hello-abc-123", guestbook=book)
    text = cluster.usage(tmp_path, ClusterSettings(nodes=2), demo)
    assert "curl 127.0.0.1:30081/ " in text and "curl 10.96.12.7/ " in text
    assert "frontend-x -> backend-y" in text
    assert "bridge plugin, proxy userspace" in text and "cluster DNS 10.96.0.10" in text
    docker = cluster.usage(tmp_path, ClusterSettings(network_plugin="docker"), None)
    assert "docker plugin" in docker and "cluster DNS" not in docker


def test_the_bridge_plugin_needs_root():
    cluster.check_privileges(ClusterSettings(), euid=0)
    cluster.check_privileges(ClusterSettings(network_plugin="docker"), euid=1000)
    with pytest.raises(cluster.UpFailed, match="--network-plugin docker"):
        cluster.check_privileges(ClusterSettings(), euid=1000)


def test_skiff_down_finds_every_docker_user_entry_of_skiffs():
    from skiff.kubelet import podnet

    listing = "\n".join([
        "-N DOCKER-USER",
        '-A DOCKER-USER -s 10.244.1.0/24 -m comment --comment "skiff node n1" -j ACCEPT',
        '-A DOCKER-USER -d 10.96.0.0/12 -m comment --comment "skiff cluster traffic" -j ACCEPT',
        '-A DOCKER-USER -s 10.1.0.0/16 -m comment --comment "someone else" -j ACCEPT',
        "-A DOCKER-USER -j RETURN",
    ])
    assert [r[-3] for r in podnet.docker_user_rules(listing, None, "skiff")] == [
        "skiff node n1", "skiff cluster traffic"]
    assert len(podnet.docker_user_rules(listing, None)) == 1


def test_without_a_checked_cluster_ip_no_curl_to_it_is_printed(tmp_path):
    demo = DemoEndpoints("http://127.0.0.1:30080/hostname", "", "hello-abc-123")
    text = cluster.usage(tmp_path, ClusterSettings(network_plugin="docker"), demo)
    assert "curl 127.0.0.1:30080/hostname" in text and "through the proxy" not in text
