"""The proxy's metrics: per service port counters reported under Prometheus names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from services.proxy.loadbalancer import ServicePortName
from services.proxy.metrics import PortStats, ProxyCollector


def test_counters_are_reported_per_service_port_and_vanish_with_it():
    stats = PortStats()
    stats.connections, stats.active, stats.rejected, stats.backend_errors = 7, 2, 1, 3
    stats.bytes_to_backend, stats.bytes_to_client = 100, 2000
    ports = {ServicePortName("ns", "web", "http"): stats}
    registry = CollectorRegistry()
    registry.register(ProxyCollector(lambda: list(ports.items())))

    text = generate_latest(registry).decode()
    labels = 'namespace="ns",port="http",service="web"'
    assert f"skiff_proxy_connections_total{{{labels}}} 7.0" in text
    assert f"skiff_proxy_active_connections{{{labels}}} 2.0" in text
    assert f"skiff_proxy_rejected_connections_total{{{labels}}} 1.0" in text
    assert f"skiff_proxy_backend_errors_total{{{labels}}} 3.0" in text
    assert f'skiff_proxy_bytes_total{{direction="to_backend",{labels}}} 100.0' in text
    assert f'skiff_proxy_bytes_total{{direction="to_client",{labels}}} 2000.0' in text

    ports.clear()
    assert "web" not in generate_latest(registry).decode()
