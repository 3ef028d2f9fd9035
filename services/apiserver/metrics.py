"""Watch cache figures as Prometheus metrics, read from the caches when scraped.

The caches keep plain counters (no locking, no per-event metric calls on the hot
path); this collector turns them into metric families at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.apiserver.cacher import Cacher


class WatchCacheCollector(Collector):
    """One sample per kind of each watch cache figure."""

    def __init__(self, cachers: Mapping[str, Cacher]) -> None:
        self._cachers = cachers

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        gauges = {
            "watchers": GaugeMetricFamily("skiff_apiserver_watch_cache_watchers",
                                          "Watchers served by the watch cache", labels=["kind"]),
            "revision": GaugeMetricFamily("skiff_apiserver_watch_cache_revision",
                                          "Store revision the watch cache has seen",
                                          labels=["kind"]),
        }
        counters = {
            "events_received": CounterMetricFamily(
                "skiff_apiserver_watch_cache_events_received",
                "Store changes applied to the watch cache", labels=["kind"]),
            "events_dispatched": CounterMetricFamily(
                "skiff_apiserver_watch_cache_events_dispatched",
                "Events handed to watchers", labels=["kind"]),
            "watchers_terminated": CounterMetricFamily(
                "skiff_apiserver_watch_cache_watchers_terminated",
                "Watchers ended for falling behind", labels=["kind"]),
            "relists": CounterMetricFamily(
                "skiff_apiserver_watch_cache_relists",
                "Times the cache listed the store again", labels=["kind"]),
        }
        for kind, cacher in self._cachers.items():
            gauges["watchers"].add_metric([kind], cacher.watcher_count)
            gauges["revision"].add_metric([kind], cacher.revision)
            for name, family in counters.items():
                family.add_metric([kind], getattr(cacher, name))
        yield from gauges.values()
        yield from counters.values()
