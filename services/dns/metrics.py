"""The DNS server's Prometheus metrics.

The server counts into plain integers on :class:`DnsStats` (a ``prometheus_client``
metric takes a lock on every update, which shows at thousands of queries a second),
and :class:`DnsCollector` turns them into metric families when Prometheus scrapes:

- ``skiff_dns_requests_total{transport}``: queries received (udp, tcp);
- ``skiff_dns_responses_total{rcode}``: replies sent, by rcode name;
- ``skiff_dns_forwarded_total``, ``skiff_dns_forward_failures_total``: queries sent
  upstream, and those no upstream answered;
- ``skiff_dns_cache_hits_total``: replies served from the packed-answer cache;
- ``skiff_dns_request_duration_seconds``: receipt to reply sent (histogram);
- ``skiff_dns_services``: Services with records now.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator

import dns.rcode
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector

#: Histogram bounds (seconds): cached answers take tens of microseconds, forwarded ones
#: milliseconds to the forward timeout.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
           0.5, 1.0, 2.5, 5.0)


class DnsStats:
    """Counters the server writes and the collector reads."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.responses: Counter[int] = Counter()
        self.forwarded = 0
        #: Per bucket of :data:`BUCKETS` (and one past the last): replies that took
        #: at most that long.
        self.duration_counts = [0] * (len(BUCKETS) + 1)
        self.duration_sum = 0.0

    def observe(self, rcode: int, seconds: float) -> None:
        """One reply sent, ``seconds`` after its query came."""
        self.responses[rcode] += 1
        self.duration_counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.duration_sum += seconds


class DnsCollector(Collector):
    """Reports :class:`DnsStats` and a few figures read from callables at scrape time."""

    def __init__(self, stats: DnsStats, *, services: Callable[[], int],
                 cache_hits: Callable[[], int], forward_failures: Callable[[], int]) -> None:
        self._stats = stats
        self._services = services
        self._cache_hits = cache_hits
        self._forward_failures = forward_failures

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily
                                  | HistogramMetricFamily]:
        stats = self._stats
        requests = CounterMetricFamily("skiff_dns_requests", "Queries received",
                                       labels=("transport",))
        for transport, n in sorted(stats.requests.items()):
            requests.add_metric([transport], n)
        responses = CounterMetricFamily("skiff_dns_responses", "Replies sent, by rcode",
                                        labels=("rcode",))
        for rcode, n in sorted(stats.responses.items()):
            responses.add_metric([dns.rcode.to_text(rcode)], n)
        yield requests
        yield responses
        yield CounterMetricFamily("skiff_dns_forwarded", "Queries sent upstream",
                                  value=stats.forwarded)
        yield CounterMetricFamily("skiff_dns_forward_failures",
                                  "Forwarded queries no upstream answered",
                                  value=self._forward_failures())
        yield CounterMetricFamily("skiff_dns_cache_hits",
                                  "Replies served from the packed-answer cache",
                                  value=self._cache_hits())
        cumulative, buckets = 0, []
        for bound, n in zip((*BUCKETS, float("inf")), stats.duration_counts, strict=True):
            cumulative += n
            buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
        yield HistogramMetricFamily("skiff_dns_request_duration_seconds",
                                    "From a query's receipt to its reply sent",
                                    buckets=buckets, sum_value=stats.duration_sum)
        yield GaugeMetricFamily("skiff_dns_services", "Services with records now",
                                value=self._services())


def register(collector: DnsCollector) -> None:
    """Add the collector to the default registry (what ``skiff.metrics.serve`` serves)."""
    REGISTRY.register(collector)
