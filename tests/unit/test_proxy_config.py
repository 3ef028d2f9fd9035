"""The proxy's flags: Kubernetes' names, defaults, and bad values refused by name."""

from __future__ import annotations

import pytest

from services.proxy.__main__ import settings_of
from services.proxy.config import parse_args


def test_defaults_are_userspace_with_kubernetes_ranges():
    config = parse_args(["--node-name", "node-1"])
    assert config.mode == "userspace"
    assert (config.cluster_cidr, config.service_cidr) == ("10.244.0.0/16", "10.96.0.0/12")
    assert config.pod_bridge is None and config.nodeport_addresses == ()
    assert config.udp_timeout == 30.0
    settings = settings_of(config)
    assert settings.table == "skiff-proxy-node-1" and settings.pod_bridge == ""


def test_every_flag_reaches_the_rules_settings():
    config = parse_args([
        "--node-name", "node-2", "--proxy-mode", "nftables", "--pod-bridge-interface",
        "skb-node-2", "--cluster-cidr", "10.244.0.0/16", "--service-cluster-ip-range",
        "10.96.0.0/12", "--nodeport-addresses", "10.112.0.1, 10.112.0.2",
        "--udp-timeout", "250ms", "--min-sync-period", "100ms", "--sync-period", "1m",
        "--node-address", "127.0.1.2"])
    assert config.udp_timeout == 0.25
    assert (config.min_sync_period, config.sync_period) == (0.1, 60.0)
    settings = settings_of(config)
    assert settings.mode == "nftables" and settings.pod_bridge == "skb-node-2"
    assert settings.node_addresses == ("10.112.0.1", "10.112.0.2")
    assert settings.table == "skiff-proxy-node-2"


@pytest.mark.parametrize("argv, flag", [
    (["--proxy-mode", "ipvs"], "--proxy-mode"),
    (["--cluster-cidr", "10.244.0.0/33"], "--cluster-cidr"),
    (["--service-cluster-ip-range", "nonsense"], "--service-cluster-ip-range"),
    (["--pod-bridge-interface", "a-bridge-name-too-long"], "--pod-bridge-interface"),
    (["--udp-timeout", "soon"], "--udp-timeout"),
    (["--nodeport-addresses", "10.112.0.300"], "10.112.0.300"),
])
def test_bad_values_are_refused_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--node-name", "n1", *argv])
    assert flag in capsys.readouterr().err
