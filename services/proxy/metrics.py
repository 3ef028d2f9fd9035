"""The proxy's Prometheus metrics, per service port (labels namespace, service, port).

The forwarder counts into plain integers on a :class:`PortStats` (one attribute add per
chunk forwarded: a ``prometheus_client`` counter takes a lock on every ``inc``, which
shows at hundreds of MB/s), and :class:`ProxyCollector` turns them into metric
families when Prometheus scrapes. A service port that is removed stops being reported
(its series end, as a deleted pod's do).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from services.proxy.loadbalancer import ServicePortName

_LABELS = ("namespace", "service", "port")


class PortStats:
    """Counters of one service port, written by its connections, read at scrape time."""

    __slots__ = ("active", "backend_errors", "bytes_to_backend", "bytes_to_client",
                 "connections", "rejected")

    def __init__(self) -> None:
        #: Connections accepted (whether or not a backend was found for them).
        self.connections = 0
        #: Connections open now (accepted and not yet closed).
        self.active = 0
        #: Connections closed at once because no backend was ready or all failed.
        self.rejected = 0
        #: Backend connects that were refused, failed or timed out.
        self.backend_errors = 0
        self.bytes_to_backend = 0
        self.bytes_to_client = 0


class ProxyCollector(Collector):
    """Reports every live service port's :class:`PortStats` (``ports()`` says which)."""

    def __init__(self, ports: Callable[[], Iterable[tuple[ServicePortName, PortStats]]]
                 ) -> None:
        self._ports = ports

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        connections = CounterMetricFamily(
            "skiff_proxy_connections", "Connections accepted for a service port", labels=_LABELS)
        active = GaugeMetricFamily(
            "skiff_proxy_active_connections", "Connections open now", labels=_LABELS)
        rejected = CounterMetricFamily(
            "skiff_proxy_rejected_connections",
            "Connections closed at once: no ready backend, or every backend failed",
            labels=_LABELS)
        errors = CounterMetricFamily(
            "skiff_proxy_backend_errors",
            "Backend connects refused, failed or timed out", labels=_LABELS)
        transferred = CounterMetricFamily(
            "skiff_proxy_bytes", "Bytes forwarded", labels=(*_LABELS, "direction"))
        for name, stats in self._ports():
            labels = [name.namespace, name.name, name.port]
            connections.add_metric(labels, stats.connections)
            active.add_metric(labels, stats.active)
            rejected.add_metric(labels, stats.rejected)
            errors.add_metric(labels, stats.backend_errors)
            transferred.add_metric([*labels, "to_backend"], stats.bytes_to_backend)
            transferred.add_metric([*labels, "to_client"], stats.bytes_to_client)
        yield from (connections, active, rejected, errors, transferred)


def register(ports: Callable[[], Iterable[tuple[ServicePortName, PortStats]]]) -> None:
    """Add the proxy's collector to the default registry (what ``skiff.metrics.serve`` serves)."""
    REGISTRY.register(ProxyCollector(ports))
