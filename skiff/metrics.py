"""Prometheus metrics, served over HTTP by every daemon that is given a metrics address.

Each daemon defines its own collectors with ``prometheus_client`` at module level and
calls :func:`serve` once; the endpoint answers ``GET /metrics`` (and ``/health`` for
probes that cannot speak gRPC).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import prometheus_client


def parse_url(url: str) -> tuple[str, int]:
    """``http://127.0.0.1:2381`` -> ``("127.0.0.1", 2381)``; a bare ``host:port`` works too."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname or not parts.port:
        raise ValueError(f"{url!r} is not an address of the form http://HOST:PORT")
    return parts.hostname, parts.port


def serve(url: str) -> tuple[str, int]:
    """Start the metrics endpoint on a daemon thread; returns the bound address."""
    host, port = parse_url(url)
    prometheus_client.start_http_server(port, addr=host)
    return host, port
