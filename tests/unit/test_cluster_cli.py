"""``skiff`` (skiff/cli/cluster.py): the supervisord configuration rendered for N nodes,
the flags and environment variables of ``skiff up``, and what it prints. Nothing starts."""

from __future__ import annotations

import configparser
import ipaddress
import shlex
from pathlib import Path

import pytest

from skiff.cli import cluster
from skiff.cli.cluster import ClusterSettings, DemoEndpoints


def _programs(path: Path) -> dict[str, list[str]]:
    """Each [program:NAME]'s command line, split as a shell would."""
    parser = configparser.RawConfigParser()
    parser.read_string(path.read_text())
    return {section.removeprefix("program:"): shlex.split(parser[section]["command"])
            for section in parser.sections() if section.startswith("program:")}


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_config_for_three_nodes_has_a_kubelet_and_a_proxy_each(tmp_path):
    programs = _programs(cluster.render_config(tmp_path, ClusterSettings(nodes=3)))

    assert set(programs) == {
        "store-0", "store-1", "store-2", "apiserver", "scheduler", "controller-manager",
        "kubelet-node-1", "proxy-node-1", "kubelet-node-2", "proxy-node-2",
        "kubelet-node-3", "proxy-node-3"}
    kubelets = {name: argv for name, argv in programs.items() if name.startswith("kubelet-")}
    # Distinct ports, addresses and pod subnets: nodes never collide.
    assert {(_flag(a, "--address"), _flag(a, "--port")) for a in kubelets.values()} == {
        ("127.0.0.1", "10250"), ("127.0.1.2", "10252"), ("127.0.1.3", "10254")}
    assert sorted(_flag(a, "--pod-cidr") for a in kubelets.values()) == [
        "10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    assert _flag(programs["proxy-node-3"], "--node-address") == "127.0.1.3"
    assert _flag(programs["proxy-node-3"], "--health-listen") == "127.0.0.1:10360"
    assert cluster.configured_nodes((tmp_path / "supervisord.conf").read_text()) == [
        "node-1", "node-2", "node-3"]


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
    demo = DemoEndpoints("http://127.0.0.1:30080/hostname", "http://127.10.0.7:80/hostname",
                         "hello-abc-123")
    text = cluster.usage(tmp_path, ClusterSettings(nodes=2), demo)

    assert "curl 127.0.0.1:30080/hostname" in text
    assert "curl 127.10.0.7/hostname" in text
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


def test_the_kubelets_network_plugin_and_state_directory(tmp_path):
    docker = _programs(cluster.render_config(tmp_path, ClusterSettings(nodes=2)))
    assert _flag(docker["kubelet-node-2"], "--network-plugin") == "docker"
    bridge = _programs(cluster.render_config(
        tmp_path, ClusterSettings(nodes=2, network_plugin="bridge")))
    argv = bridge["kubelet-node-2"]
    assert _flag(argv, "--network-plugin") == "bridge"
    assert _flag(argv, "--cluster-cidr") == "10.244.0.0/16"
    assert _flag(argv, "--root-dir") == str(tmp_path / "kubelet-node-2")
    with pytest.raises(ValueError, match="unknown network plugin 'flannel'"):
        ClusterSettings(network_plugin="flannel")
