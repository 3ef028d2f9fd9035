"""skiff-dns's flags and its metrics, without a server."""

from __future__ import annotations

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from services.dns.config import DEFAULT_LISTEN, parse_args, parse_listen
from services.dns.metrics import DnsCollector, DnsStats


def test_defaults_read_the_upstreams_from_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 10.0.0.2\n")
    config = parse_args(["--resolv-conf", str(conf)])
    assert config.listen == (parse_listen(DEFAULT_LISTEN),)
    assert config.upstreams == (("10.0.0.2", 53),)
    assert config.zone == "cluster.local."


def test_flags_override(tmp_path):
    config = parse_args(["--listen", "127.0.0.1:5353", "--listen", "127.0.1.2:53",
                         "--upstream", "127.0.0.1:5300, 10.0.0.3",
                         "--cluster-domain", "K8s.Test.", "--forward-timeout", "0.5",
                         "--health-listen", ""])
    assert config.listen == (("127.0.0.1", 5353), ("127.0.1.2", 53))
    assert config.upstreams == (("127.0.0.1", 5300), ("10.0.0.3", 53))
    assert config.zone == "k8s.test." and config.forward_timeout == 0.5
    assert config.health_listen is None


@pytest.mark.parametrize("argv", [["--listen", "127.0.0.1"], ["--listen", ":53"],
                                  ["--upstream", "10.0.0.1:x"], ["--cluster-domain", "."],
                                  ["--forward-timeout", "0"]])
def test_bad_flags_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "skiff-dns: error:" in capsys.readouterr().err


def test_metrics_report_rcodes_and_a_cumulative_histogram():
    stats = DnsStats()
    stats.requests["udp"] += 3
    stats.observe(0, 0.00005)
    stats.observe(0, 0.002)
    stats.observe(3, 7.0)  # past the last bucket
    registry = CollectorRegistry()
    registry.register(DnsCollector(stats, services=lambda: 12, cache_hits=lambda: 1,
                                   forward_failures=lambda: 0))
    text = generate_latest(registry).decode()
    assert 'skiff_dns_responses_total{rcode="NOERROR"} 2.0' in text
    assert 'skiff_dns_responses_total{rcode="NXDOMAIN"} 1.0' in text
    assert 'skiff_dns_requests_total{transport="udp"} 3.0' in text
    assert 'skiff_dns_request_duration_seconds_bucket{le="0.0001"} 1.0' in text
    assert 'skiff_dns_request_duration_seconds_bucket{le="0.0025"} 2.0' in text
    assert 'skiff_dns_request_duration_seconds_bucket{le="+Inf"} 3.0' in text
    assert "skiff_dns_services 12.0" in text
